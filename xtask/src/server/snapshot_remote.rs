//! Snapshots made and checked ON the server (issue 13 item 1): the scripts that detect the tools,
//! write `ID.tar.zst.partial` with `tar | zstd -T0`, read an archive back (its size and sha256,
//! GNU tar's listing of every entry, and each file's sha256 through `--to-command`), extract a
//! verified archive, and the parser of the read-back reply. Only that small reply crosses the
//! connection; the xtask builds the same `ID.manifest.json` as the streaming path
//! (`server::snapshot`) from it.

use super::q;
use super::snapshot::{check_entry, untar, Access, Entry, PartialTail};
use crate::config::Env;
use anyhow::{bail, Result};

/// What a server-side snapshot needs on the server (issue 13): GNU tar, zstd, sha256sum.
pub const TOOLS: [&str; 4] = ["tar", "gnu-tar", "zstd", "sha256sum"];

/// The shell function every script here uses to check a pipeline's recorded statuses: `st`
/// holds words like `z0 t1` (a letter per stage, then its exit status); `ok z0` is true when
/// stage `z` exited 0.
pub(super) const OK_FN: &str = "ok() { case \" $st \" in *\" $1 \"*) return 0;; esac; return 1; }";

/// The sha256 of stdin, printed as `HASH <name>`: `openssl dgst -sha256 -r` when the server has
/// it (it uses the CPU's SHA instructions: ~7× coreutils' `sha256sum` on the sandbox), else
/// `sha256sum` (issue 13: the per-entry hashing is most of a snapshot's time).
pub(super) const SHA256: &str =
    "if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi";

/// Prints `tool NAME yes|no` for each of [`TOOLS`] (`gnu-tar`: `tar --version` says GNU tar),
/// then `uid N`: the deploy user's uid (not root: the files of the image's user are reached
/// through a container, [`Access::Container`]).
pub fn tools() -> String {
    "for t in tar zstd sha256sum; do if command -v \"$t\" >/dev/null 2>&1; then echo \"tool $t yes\"; else echo \"tool $t no\"; fi; done; if tar --version 2>/dev/null | grep -q 'GNU tar'; then echo 'tool gnu-tar yes'; else echo 'tool gnu-tar no'; fi; echo \"uid $(id -u)\"".to_string()
}

/// Whether [`tools`]' output says the deploy user is root (an empty or unreadable reply: not).
pub fn is_root(out: &str) -> bool {
    out.lines().any(|l| l.trim() == "uid 0")
}

/// The tools of [`TOOLS`] that [`tools`]' output does not report present (all of them for an
/// empty or unreadable reply: the caller falls back to the stream).
pub fn missing_tools(out: &str) -> Vec<String> {
    TOOLS
        .iter()
        .filter(|t| !out.lines().any(|l| l.trim() == format!("tool {t} yes")))
        .map(|t| t.to_string())
        .collect()
}

/// Writes `<backups>/<partial>` and reads it in the same pass (issue 13: one pass over the
/// data): `tar -cf - | tee FIFO | zstd -q -T0 -3 | tee PARTIAL | sha256`, while GNU tar reads
/// the uncompressed stream from the FIFO for the listing and each file's hashes
/// ([`to_command`]). Prints [`read_back`]'s reply for the archive written. tar's exit 1 ("file
/// changed as we read it") is accepted; any other failure of any stage (a full disk) removes
/// the partial file and exits 1. tar -c runs as `access` says (through a container: the deploy
/// root mounted read-only); everything else, and the partial file, stay the deploy user's.
pub fn create(env: &Env, no_logs: bool, partial: &str, access: &Access) -> String {
    let dirs = if no_logs {
        "config data .deploy"
    } else {
        "config data logs .deploy"
    };
    format!(
        "{OK_FN}; cd {r} && set -- && for d in {dirs}; do [ -e \"$d\" ] && set -- \"$@\" \"$d\"; done; mkdir -p {b} && p={b}/{p} && t=$(mktemp -d {b}/.create.XXXXXX) || exit 1; trap 'rm -rf \"$t\"' EXIT; mkfifo \"$t/f\" || exit 1; export XT=\"$t/tail\"; {{ tar -xvvf - -P --numeric-owner --quoting-style=c --index-file=\"$t/idx\" --to-command={cmd} < \"$t/f\" > \"$t/sums\"; echo \"x$?\" > \"$t/xs\"; }} & exec 4>&1; st=$( {{ {{ {tar}; echo \"t$?\" >&3; }} | {{ tee \"$t/f\"; echo \"e$?\" >&3; }} | {{ zstd -q -T0 -3; echo \"z$?\" >&3; }} | {{ tee \"$p\"; echo \"w$?\" >&3; }} | {{ {SHA256}; echo \"a$?\" >&3; }} > \"$t/sha\"; }} 3>&1 >&4 | tr '\\n' ' '); wait; st=\"$st $(cat \"$t/xs\" 2>/dev/null)\"; if ok e0 && ok z0 && ok w0 && ok a0 && ok x0 && {{ ok t0 || ok t1; }} && s=$(stat -c %s -- \"$p\") && read -r h _ < \"$t/sha\"; then echo \"A $s $h\"; sed 's/^/L /' \"$t/idx\"; cat \"$t/sums\"; exit 0; fi; rm -f \"$p\"; echo \"writing the snapshot failed (tar, tee, zstd, hashing: $st; disk full?)\" >&2; exit 1",
        r = q(&env.remote_dir),
        b = q(&env.backups_dir),
        p = q(partial),
        cmd = dq(&to_command()),
        tar = access.run(
            &env.remote_dir,
            true,
            false,
            "tar",
            "-cf - --numeric-owner --exclude=.deploy/lock \"$@\""
        ),
    )
}

/// `s` as one double-quoted shell word (`\\`, `"`, `$` and backquotes escaped).
fn dq(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            o.push('\\');
        }
        o.push(c);
    }
    o.push('"');
    o
}

/// The command GNU tar runs per regular file when reading an archive: prints `S <sha256>`, then
/// `W <sha256>` of its last [`WINDOW`](super::snapshot::WINDOW) bytes, and for a `.jsonl` file
/// `T <bytes of its last line> <hex of its last byte>` (from `tail -n 1`: the bytes after the
/// last newline when the content does not end in one). The content passes once through `tee`;
/// its last 64 KiB are kept in `$XT` for `W` and `T` (a partial last line longer than that is
/// cut to its last 64 KiB).
fn to_command() -> String {
    format!("exec 4>&1; {{ tee /dev/fd/3 | {{ {SHA256}; }} | sed 's/^/S /' >&4; }} 3>&1 | tail -c 65536 > \"$XT\" || exit 1; tail -c {w} \"$XT\" | {{ {SHA256}; }} | sed 's/^/W /'; case $TAR_FILENAME in *.jsonl) t=$(tail -n 1 \"$XT\" | od -An -v -tx1 | awk '{{ for (i = 1; i <= NF; i++) {{ n++; l = $i }} }} END {{ print n + 0, l }}') && echo \"T $t\";; esac", w = super::snapshot::WINDOW)
}

/// Reads `<backups>/<file>` back on the server and prints, in this order: `A <size> <sha256>`
/// (the archive), `L <line>` per entry (`tar -tv --quoting-style=c`, archive order, names as
/// stored: `-P`; GNU tar's `--index-file`), then `S`/`W`/`T` lines per regular file (see
/// [`to_command`]; nothing is extracted). One decompression. Exits 1 when the archive is absent
/// or a stage fails; the listing is printed even then, so that an unsafe entry is named. Used by
/// `verify` and `restore` ([`create`] prints the same reply).
pub fn read_back(env: &Env, file: &str) -> String {
    format!(
        "{OK_FN}; if cd {b} && f={f} && [ -f \"$f\" ] && s=$(stat -c %s -- \"$f\") && h=$({SHA256} < \"$f\") && echo \"A $s ${{h%% *}}\" && t=$(mktemp -d); then trap 'rm -rf \"$t\"' EXIT; export XT=\"$t/tail\"; exec 4>&1; st=$( {{ {{ zstd -dcq < \"$f\"; echo \"z$?\" >&3; }} | {{ tar -xvvf - -P --numeric-owner --quoting-style=c --index-file=\"$t/idx\" --to-command={cmd} > \"$t/sums\"; echo \"x$?\" >&3; }}; }} 3>&1 >&4 | tr '\\n' ' '); sed 's/^/L /' \"$t/idx\"; cat \"$t/sums\"; if ok z0 && ok x0; then exit 0; fi; fi; echo \"reading {f} back failed (zstd, tar: $st)\" >&2; exit 1",
        b = q(&env.backups_dir),
        f = q(file),
        cmd = dq(&to_command()),
    )
}

/// Extracts `<backups>/<file>` into `dir` after checking it still has `sha256` (the archive
/// verified entry by entry just before); any failed stage exits 1. tar runs as `access` says
/// ([`untar`]), zstd on the host.
pub fn extract(env: &Env, file: &str, sha256: &str, dir: &str, access: &Access) -> String {
    format!(
        "{OK_FN}; cd {b} || exit 1; f={f}; if ! printf '%s  %s\\n' {sha} \"$f\" | sha256sum -c --status; then echo \"{f} changed since it was verified: nothing was extracted\" >&2; exit 1; fi; exec 4>&1; st=$( {{ {{ zstd -dcq < \"$f\"; echo \"z$?\" >&3; }} | {{ {untar}; echo \"x$?\" >&3; }}; }} 3>&1 >&4 | tr '\\n' ' '); if ok z0 && ok x0; then exit 0; fi; echo \"extracting {f} failed (zstd, tar: $st)\" >&2; exit 1",
        b = q(&env.backups_dir),
        f = q(file),
        sha = q(sha256),
        untar = untar(dir, access),
    )
}

/// What [`read_back`] printed: the archive's size (bytes) and sha256, its entries in archive
/// order (as the manifest records them) and the partial tails of its `.jsonl` files.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadBack {
    pub size: u64,
    pub sha256: String,
    pub entries: Vec<Entry>,
    pub partial_tails: Vec<PartialTail>,
    /// Per regular file, in archive order: its path and the sha256 of its last
    /// `min(size, WINDOW)` bytes (empty for a reply without `W` lines).
    pub windows: Vec<(String, String)>,
}

/// Unquotes a `--quoting-style=c` name starting at `s[0] == '"'`; returns it and the rest.
fn unquote(s: &str) -> Option<(String, &str)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), &s[i + 1..])),
            b'\\' if i + 1 < b.len() => {
                let c = b[i + 1];
                i += 2;
                match c {
                    b'0'..=b'7' => {
                        let mut v = (c - b'0') as u32;
                        for _ in 0..2 {
                            if i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                                v = v * 8 + (b[i] - b'0') as u32;
                                i += 1;
                            }
                        }
                        out.push(v as u8);
                    }
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'v' => out.push(11),
                    other => out.push(other),
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// The permission bits (07777) of an `ls`-style mode string (`drwxr-sr-x`).
fn mode_bits(m: &str) -> u32 {
    let c: Vec<char> = m.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('-');
    let mut v = 0;
    for (k, (r, w, x)) in [(1, 2, 3), (4, 5, 6), (7, 8, 9)].into_iter().enumerate() {
        let shift = 6 - 3 * k as u32;
        if at(r) == 'r' {
            v |= 4 << shift;
        }
        if at(w) == 'w' {
            v |= 2 << shift;
        }
        let special = [0o4000, 0o2000, 0o1000][k];
        match at(x) {
            'x' => v |= 1 << shift,
            's' | 't' => v |= (1 << shift) | special,
            'S' | 'T' => v |= special,
            _ => {}
        }
    }
    v
}

/// One `L` line (`tar -tv --numeric-owner --quoting-style=c`) as a manifest entry (sha256 unset).
fn listed(line: &str) -> Result<Entry> {
    let q0 = line
        .find('"')
        .ok_or_else(|| anyhow::anyhow!("no quoted name in the listing line {line:?}"))?;
    let words: Vec<&str> = line[..q0].split_whitespace().collect();
    let (path, rest) =
        unquote(&line[q0..]).ok_or_else(|| anyhow::anyhow!("bad name in {line:?}"))?;
    let perms = words.first().copied().unwrap_or("");
    let kind = match perms.chars().next() {
        Some('-') | Some('C') => "file",
        Some('d') => "dir",
        Some('l') => "symlink",
        Some('h') => "hardlink",
        Some('c') => "char-device",
        Some('b') => "block-device",
        Some('p') => "fifo",
        _ => "other",
    };
    let rest = rest.trim_start();
    let link = ["-> ", "link to "]
        .iter()
        .find_map(|p| rest.strip_prefix(p))
        .and_then(unquote)
        .map(|(t, _)| t);
    Ok(Entry {
        path: path.trim_end_matches('/').to_string(),
        kind: kind.into(),
        size: words.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
        mode: mode_bits(perms),
        sha256: None,
        link: if kind == "symlink" || kind == "hardlink" {
            link
        } else {
            None
        },
    })
}

/// Parses [`read_back`]'s reply. Every entry is checked with `check_entry` first: an unsafe
/// one is an error naming it (`Err(Ok(message))`), whatever else the reply holds; a reply that
/// is incomplete (a failed stage, counts that do not match) is `Err(Err(..))`.
pub fn parse_read_back(out: &str) -> std::result::Result<ReadBack, Result<String>> {
    let mut entries = Vec::new();
    for l in out.lines().filter_map(|l| l.strip_prefix("L ")) {
        let e = listed(l).map_err(Err)?;
        check_entry(&e.path, &e.kind, e.link.as_deref()).map_err(Ok)?;
        entries.push(e);
    }
    let full = || -> Result<ReadBack> {
        let (size, sha256) = out
            .lines()
            .find_map(|l| {
                let mut w = l.strip_prefix("A ")?.split(' ');
                Some((w.next()?.parse::<u64>().ok()?, w.next()?.to_string()))
            })
            .ok_or_else(|| anyhow::anyhow!("no archive line in the reply"))?;
        // (sha256, optional (bytes of the last line, hex of the last byte)) per regular file.
        let mut sums: Vec<(String, Option<(u64, String)>)> = Vec::new();
        let mut windows_seen: Vec<String> = Vec::new();
        for l in out.lines() {
            if let Some(w) = l.strip_prefix("W ") {
                windows_seen.push(w.split(' ').next().unwrap_or("").to_string());
            } else if let Some(s) = l.strip_prefix("S ") {
                sums.push((s.split(' ').next().unwrap_or("").to_string(), None));
            } else if let Some(t) = l.strip_prefix("T ") {
                let mut w = t.split(' ');
                let n = w.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let last = w.next().unwrap_or("").to_string();
                match sums.last_mut() {
                    Some(s) => s.1 = Some((n, last)),
                    None => bail!("a T line before any S line"),
                }
            }
        }
        let files = entries.iter().filter(|e| e.kind == "file").count();
        if files != sums.len() {
            bail!(
                "{} files listed but {} hashed: the reply is incomplete",
                files,
                sums.len()
            );
        }
        let mut entries = entries.clone();
        let windows = if windows_seen.is_empty() {
            Vec::new()
        } else if windows_seen.len() == sums.len() {
            let files = entries.iter().filter(|e| e.kind == "file");
            files.map(|e| e.path.clone()).zip(windows_seen).collect()
        } else {
            bail!(
                "{} files hashed but {} windows: the reply is incomplete",
                sums.len(),
                windows_seen.len()
            );
        };
        let mut tails = Vec::new();
        let mut it = sums.into_iter();
        for e in entries.iter_mut().filter(|e| e.kind == "file") {
            let (sha, tail) = it.next().unwrap_or_default();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("no sha256 for {}", e.path);
            }
            e.sha256 = Some(sha);
            if let Some((n, last)) = tail {
                if e.path.ends_with(".jsonl") && e.size > 0 && last != "0a" {
                    tails.push(PartialTail {
                        path: e.path.clone(),
                        keep_bytes: e.size.saturating_sub(n),
                    });
                }
            }
        }
        Ok(ReadBack {
            size,
            sha256,
            entries,
            partial_tails: tails,
            windows,
        })
    };
    full().map_err(Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_names_and_links() {
        assert_eq!(mode_bits("drwxr-sr-x"), 0o2755);
        assert_eq!(mode_bits("-rw-r--r--"), 0o644);
        assert_eq!(mode_bits("-rwsr-xr-T"), 0o5754);
        let e =
            listed("lrwxrwxrwx 0/0 0 2026-12-01 08:24 \"config/a/l\\\"nk\" -> \"../x\"").unwrap();
        assert_eq!(
            (e.path.as_str(), e.kind.as_str(), e.link.as_deref()),
            ("config/a/l\"nk", "symlink", Some("../x"))
        );
        let e = listed("hrw-r--r-- 0/0 0 2026-12-01 08:24 \"a\\303\\251\" link to \"b\"").unwrap();
        assert_eq!((e.path.as_str(), e.link.as_deref()), ("aé", Some("b")));
        let e = listed("drwxr-xr-x 0/0 0 2026-12-01 08:24 \"config/\"").unwrap();
        assert_eq!((e.path.as_str(), e.size, e.link), ("config", 0, None));
    }

    #[test]
    fn missing_tools_fall_back() {
        assert_eq!(missing_tools(""), TOOLS.to_vec());
        let all = "tool tar yes\ntool zstd no\ntool sha256sum yes\ntool gnu-tar yes\n";
        assert_eq!(missing_tools(all), vec!["zstd".to_string()]);
        assert!(missing_tools(&all.replace("zstd no", "zstd yes")).is_empty());
    }

    #[test]
    fn unsafe_entries_win_over_an_incomplete_reply() {
        let out = "L -rw-r--r-- 0/0 1 1970-01-01 00:00 \"../../evil\"\n";
        assert!(matches!(parse_read_back(out), Err(Ok(m)) if m.contains("..")));
        let out = "A 10 ab\nL -rw-r--r-- 0/0 1 1970-01-01 00:00 \"config/x\"\n";
        assert!(matches!(parse_read_back(out), Err(Err(_))));
    }
}
