//! Incremental snapshots (issue 13 item 2): a pre-deploy snapshot costs what changed since the
//! previous one, not the archive's size. Pure builders and the pure decision:
//!
//! - [`scan`] lists the deploy root's paths with kind, size, mtime and inode (GNU `find`);
//! - [`plan`] compares that with the parent snapshot's `state`: a file with the same inode,
//!   size and mtime is **unchanged** (not stored; the quick check rsync and git's index make); a
//!   file with the same inode that grew is an **append candidate**; everything else is stored
//!   **whole**; parent paths that are gone (or changed kind) are **removed**;
//! - [`create`] checks each append candidate's last [`WINDOW`] bytes before its old end against
//!   the parent's recorded hash ON the server (a file rewritten in place fails it and is stored
//!   whole), copies only the appended bytes to `.xtask-append/<path>`, and archives them with the
//!   whole files through `tar | zstd -T0`; the archive is then read back like a full one;
//! - [`apply`] restores one delta on top of its parent's restored state;
//! - [`state_after`] and [`tails_after`] compute the state and partial tails the new manifest
//!   records.
//!
//! Time, disk and wire bytes are then those of the changed files, the appended bytes and one
//! `find` over the (few) paths of the deploy root.

use super::q;
use super::snapshot::{Access, Append, Entry, FileState, Manifest, PartialTail};
use super::snapshot_remote::{OK_FN, SHA256};
use crate::config::Env;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

pub use super::snapshot::WINDOW;
/// The folder inside a delta's archive (and, while a restore applies it, inside the deploy root)
/// that holds appended bytes: `.xtask-append/<path>`.
pub const APPEND_DIR: &str = ".xtask-append";
/// Deltas allowed on one full snapshot: the next pre-deploy snapshot after that is full, so a
/// restore reads at most this many deltas and a chain's full snapshot is renewed.
pub const MAX_DEPTH: u32 = 8;

/// The directories a snapshot covers (`.deploy/lock` is left out; `.env` is not under them).
fn dirs(no_logs: bool) -> &'static str {
    if no_logs {
        "config data .deploy"
    } else {
        "config data logs .deploy"
    }
}

/// Prints `F KIND SIZE MTIME INODE PATH` per path under the snapshot's directories (`find
/// -printf '%y %s %T@ %i %p'`), `.deploy/lock` excluded; with `parents`, first
/// `server::snapshot::list`'s lines (the candidates for a parent), in the same round trip. Exit
/// 0 with no `F` lines when none of the directories exists.
pub fn scan(env: &Env, no_logs: bool, parents: bool) -> String {
    let list = if parents {
        format!("( {} ); ", super::snapshot::list(env))
    } else {
        String::new()
    };
    format!(
        "{list}cd {r} && set -- && for d in {d}; do [ -e \"$d\" ] && set -- \"$@\" \"$d\"; done; [ $# -eq 0 ] || find \"$@\" -path .deploy/lock -prune -o -printf 'F %y %s %T@ %i %p\\n'",
        r = q(&env.remote_dir),
        d = dirs(no_logs)
    )
}

/// One line of [`scan`]'s output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub kind: String,
    pub size: u64,
    pub mtime: String,
    pub ino: u64,
    pub path: String,
}

/// Parses [`scan`]'s `F` lines. Errors on a malformed line or a path with a control character
/// (a newline in a name would make the listing ambiguous): the caller then takes a full snapshot.
pub fn parse_scan(out: &str) -> Result<Vec<Scanned>> {
    let mut v = Vec::new();
    for l in out.lines().filter_map(|l| l.strip_prefix("F ")) {
        let mut w = l.splitn(5, ' ');
        let mut next = || {
            w.next()
                .ok_or_else(|| anyhow::anyhow!("short scan line {l:?}"))
        };
        let kind = next()?.to_string();
        let size = next()?.parse()?;
        let mtime = next()?.to_string();
        let ino = next()?.parse()?;
        let path = next()?.to_string();
        if kind.len() != 1 || path.is_empty() || path.chars().any(|c| c.is_control()) {
            bail!("unusable scan line {l:?}");
        }
        v.push(Scanned {
            kind,
            size,
            mtime,
            ino,
            path,
        });
    }
    Ok(v)
}

/// A file whose appended bytes alone may be stored, once the server has checked its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: String,
    /// The parent's size of the file (bytes): the appended bytes start here.
    pub offset: u64,
    /// The window checked: bytes `[offset - window_len, offset)`, and their sha256.
    pub window_len: u64,
    pub window: String,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Archived as they are: directories and links (their entry only), new and changed files.
    pub whole: Vec<String>,
    pub candidates: Vec<Candidate>,
    /// Parent paths gone, or of another kind now: deleted before the delta is extracted.
    pub removed: Vec<String>,
    /// Files left out: the parent's copy is this one's.
    pub unchanged: Vec<String>,
}

/// Decides, path by path, what an incremental snapshot on top of `parent` stores (see the
/// module's rules).
pub fn plan(parent: &[FileState], now: &[Scanned]) -> Plan {
    let before: BTreeMap<&str, &FileState> = parent.iter().map(|s| (s.path.as_str(), s)).collect();
    let mut p = Plan::default();
    for s in now {
        let old = before.get(s.path.as_str()).filter(|o| o.kind == s.kind);
        match (s.kind.as_str(), old) {
            ("f", Some(o)) if o.ino == s.ino && o.size == s.size && o.mtime == s.mtime => {
                p.unchanged.push(s.path.clone())
            }
            ("f", Some(o)) if o.ino == s.ino && s.size >= o.size && o.size > 0 => {
                match (&o.window, o.window_len) {
                    (Some(w), n) if n > 0 && n <= o.size => p.candidates.push(Candidate {
                        path: s.path.clone(),
                        offset: o.size,
                        window_len: n,
                        window: w.clone(),
                    }),
                    _ => p.whole.push(s.path.clone()),
                }
            }
            _ => p.whole.push(s.path.clone()),
        }
    }
    let now_kind: BTreeMap<&str, &str> = now
        .iter()
        .map(|s| (s.path.as_str(), s.kind.as_str()))
        .collect();
    for o in parent {
        if now_kind.get(o.path.as_str()) != Some(&o.kind.as_str()) {
            p.removed.push(o.path.clone());
        }
    }
    p
}

/// Writes `<backups>/<partial>`: the plan's whole paths (`--no-recursion`) and, for each
/// candidate whose window still hashes as recorded, its bytes from `offset` on as
/// `.xtask-append/<path>` (a candidate that fails the check is archived whole). Prints `append
/// PATH` or `whole PATH` per candidate, then the partial file's read-back
/// (`snapshot_remote::read_back`'s reply, in the same round trip). The part that reads the
/// deploy root (the checks, the
/// copies into a working folder of the backups folder, `tar -c`) runs as `access` says (through
/// a container for a non-root deploy user: the image user's files may be unreadable to others);
/// zstd and the partial file stay the deploy user's. Any failed stage removes the partial file
/// and exits 1.
pub fn create(env: &Env, p: &Plan, partial: &str, access: &Access) -> String {
    let mut inner = "s=$(mktemp -d \"$1/.delta.XXXXXX\") || exit 1; trap 'rm -rf \"$s\"' EXIT; : > \"$s/whole\" && : > \"$s/append\" || exit 1; ".to_string();
    for chunk in p.whole.chunks(64) {
        let words: Vec<String> = chunk.iter().map(|w| q(w)).collect();
        inner += &format!(
            "printf '%s\\n' {} >> \"$s/whole\" || exit 1; ",
            words.join(" ")
        );
    }
    if !p.candidates.is_empty() {
        inner += &format!(
            "a() {{ w=$(tail -c +$(($2 - $3 + 1)) -- \"$1\" | head -c \"$3\" | {{ {SHA256}; }}) && [ \"${{w%% *}}\" = \"$4\" ] && mkdir -p \"$s/{APPEND_DIR}/$(dirname -- \"$1\")\" && tail -c +$(($2 + 1)) -- \"$1\" > \"$s/{APPEND_DIR}/$1\" && printf '%s\\n' \"{APPEND_DIR}/$1\" >> \"$s/append\" && echo \"append $1\" >&2 && return 0; rm -f \"$s/{APPEND_DIR}/$1\"; printf '%s\\n' \"$1\" >> \"$s/whole\" && echo \"whole $1\" >&2; }}; "
        );
        for c in &p.candidates {
            inner += &format!(
                "a {} {} {} {} || exit 1; ",
                q(&c.path),
                c.offset,
                c.window_len,
                q(&c.window)
            );
        }
    }
    inner += "tar -cf - --numeric-owner --no-recursion -T \"$s/whole\" -C \"$s\" -T \"$s/append\"";
    let runner = access.run_with(
        &[(&env.remote_dir, true), (&env.backups_dir, false)],
        false,
        "sh",
        &format!("-c {} sh {}", q(&inner), q(&env.backups_dir)),
    );
    format!(
        "{OK_FN}; cd {r} && mkdir -p {b} && p={b}/{pt} && t=$(mktemp -d) || exit 1; trap 'rm -rf \"$t\"' EXIT; exec 4>&1; st=$( {{ {{ {runner} 2> \"$t/log\"; echo \"t$?\" >&3; }} | {{ zstd -q -T0 -3 > \"$p\"; echo \"z$?\" >&3; }}; }} 3>&1 >&4 | tr '\\n' ' '); grep -E '^(append|whole) ' \"$t/log\"; grep -vE '^(append|whole) ' \"$t/log\" >&2; if ok z0 && {{ ok t0 || ok t1; }}; then rm -rf \"$t\"; {rb}; fi; rm -f \"$p\"; echo \"writing the incremental snapshot failed (tar, zstd: $st)\" >&2; exit 1",
        r = q(&env.remote_dir),
        b = q(&env.backups_dir),
        pt = q(partial),
        rb = super::snapshot_remote::read_back(env, partial),
    )
}

/// The `append PATH` lines of [`create`]'s output: the candidates stored by their appended bytes.
pub fn appended(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("append "))
        .map(str::to_string)
        .collect()
}

/// Applies delta `m` on top of its parent's state in the deploy root: checks that
/// `<backups>/<archive>` still has its sha256, then (as `access` says: through a container for
/// a non-root deploy user, whose image user's files these are) deletes `removed`, extracts the
/// archive, concatenates each append onto its file (whose size must be the recorded offset),
/// removes `.xtask-append` and gives `.deploy` back to the deploy user. Any failure exits 1
/// naming it.
pub fn apply(env: &Env, m: &Manifest, access: &Access) -> String {
    let mut inner = format!("trap 'rm -rf {APPEND_DIR}' EXIT; ");
    for chunk in m.delta.removed.chunks(64) {
        let words: Vec<String> = chunk.iter().map(|w| q(w)).collect();
        inner += &format!("rm -rf -- {} || exit 1; ", words.join(" "));
    }
    inner += "tar -xf - --numeric-owner || exit 1; ";
    if !m.delta.appends.is_empty() {
        inner += &format!("c() {{ n=$(stat -c %s -- \"$1\") || exit 1; if [ \"$n\" != \"$2\" ]; then echo \"$1 has $n bytes where {id} appends at $2\" >&2; exit 1; fi; cat -- \"{APPEND_DIR}/$1\" >> \"$1\" || exit 1; }}; ", id = m.id);
        for a in &m.delta.appends {
            inner += &format!("c {} {}; ", q(&a.path), a.offset);
        }
    }
    inner += "if [ -d .deploy ]; then chown -R \"$1\" .deploy || exit 1; fi";
    let runner = access.run_with(
        &[(&env.remote_dir, false)],
        true,
        "sh",
        &format!("-c {} sh \"$(id -u):$(id -g)\"", q(&inner)),
    );
    format!(
        "{OK_FN}; cd {r} || exit 1; f={b}/{f}; if ! printf '%s  %s\\n' {sha} \"$f\" | sha256sum -c --status; then echo \"{f} changed since it was verified: nothing was extracted\" >&2; exit 1; fi; exec 4>&1; st=$( {{ {{ zstd -dcq < \"$f\"; echo \"z$?\" >&3; }} | {{ {runner}; echo \"x$?\" >&3; }}; }} 3>&1 >&4 | tr '\\n' ' '); if ok z0 && ok x0; then exit 0; fi; echo \"applying {f} failed (zstd, tar: $st)\" >&2; exit 1",
        r = q(&env.remote_dir),
        b = q(&env.backups_dir),
        f = q(&m.archive.file),
        sha = q(&m.archive.sha256),
    )
}

/// The state a snapshot made from `scanned` restores: each archived path (whole) with the
/// size and window the read-back gave; each appended file at `offset + appended bytes`; each
/// unchanged one as the parent recorded it. mtime and inode come from the scan taken before the
/// archive was written (a path archived but not scanned gets no mtime: stored whole next time).
pub fn state_after(
    parent: &[FileState],
    scanned: &[Scanned],
    entries: &[Entry],
    windows: &[(String, String)],
    appends: &[Append],
) -> Vec<FileState> {
    let win: BTreeMap<&str, &str> = windows
        .iter()
        .map(|(p, w)| (p.as_str(), w.as_str()))
        .collect();
    let before: BTreeMap<&str, &FileState> = parent.iter().map(|s| (s.path.as_str(), s)).collect();
    let scan: BTreeMap<&str, &Scanned> = scanned.iter().map(|s| (s.path.as_str(), s)).collect();
    let mut out: BTreeMap<String, FileState> = BTreeMap::new();
    let kind_letter = |k: &str| match k {
        "file" => "f",
        "dir" => "d",
        "symlink" => "l",
        _ => "?",
    };
    let windowed = |path: &str, size: u64| -> (Option<String>, u64) {
        match win.get(path) {
            Some(w) if size > 0 => (Some(w.to_string()), size.min(WINDOW)),
            _ => (None, 0),
        }
    };
    for e in entries {
        if e.path == APPEND_DIR || e.path.starts_with(&format!("{APPEND_DIR}/")) {
            continue;
        }
        let (mtime, ino) = scan
            .get(e.path.as_str())
            .map(|s| (s.mtime.clone(), s.ino))
            .unwrap_or_default();
        let (window, window_len) = windowed(&e.path, e.size);
        out.insert(
            e.path.clone(),
            FileState {
                path: e.path.clone(),
                kind: kind_letter(&e.kind).into(),
                size: if e.kind == "file" { e.size } else { 0 },
                mtime,
                ino,
                window,
                window_len,
            },
        );
    }
    for a in appends {
        let staged = format!("{APPEND_DIR}/{}", a.path);
        let Some(e) = entries.iter().find(|e| e.path == staged) else {
            continue;
        };
        let (Some(s), Some(old)) = (scan.get(a.path.as_str()), before.get(a.path.as_str())) else {
            continue;
        };
        let (window, window_len) = match windowed(&staged, e.size) {
            (Some(w), n) => (Some(w), n),
            _ => (old.window.clone(), old.window_len),
        };
        out.insert(
            a.path.clone(),
            FileState {
                path: a.path.clone(),
                kind: "f".into(),
                size: a.offset + e.size,
                mtime: s.mtime.clone(),
                ino: s.ino,
                window,
                window_len,
            },
        );
    }
    for s in scanned {
        if out.contains_key(&s.path) {
            continue;
        }
        if let Some(o) = before.get(s.path.as_str()).filter(|o| o.kind == s.kind) {
            out.insert(s.path.clone(), (*o).clone());
        }
    }
    out.into_values().collect()
}

/// The partial tails of the state a delta restores: the parent's, for files the delta leaves as
/// they were; the read-back's, for files archived whole; for an appended file, the offset plus
/// the appended bytes up to their last newline (or the parent's tail when no newline was
/// appended).
pub fn tails_after(
    parent: &[PartialTail],
    state: &[FileState],
    entries: &[Entry],
    read_back: &[PartialTail],
    appends: &[Append],
) -> Vec<PartialTail> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let kept: BTreeMap<&str, ()> = state.iter().map(|s| (s.path.as_str(), ())).collect();
    let appended: BTreeMap<&str, u64> = appends
        .iter()
        .map(|a| (a.path.as_str(), a.offset))
        .collect();
    for t in read_back {
        if let Some(p) = t.path.strip_prefix(&format!("{APPEND_DIR}/")) {
            let offset = appended.get(p).copied().unwrap_or(0);
            let keep = if t.keep_bytes == 0 {
                parent
                    .iter()
                    .find(|o| o.path == p)
                    .map_or(offset, |o| o.keep_bytes)
            } else {
                offset + t.keep_bytes
            };
            out.insert(p.to_string(), keep);
        } else {
            out.insert(t.path.clone(), t.keep_bytes);
        }
    }
    let archived = |p: &str| appended.contains_key(p) || entries.iter().any(|e| e.path == p);
    for t in parent {
        if kept.contains_key(t.path.as_str()) && !archived(&t.path) {
            out.insert(t.path.clone(), t.keep_bytes);
        }
    }
    out.into_iter()
        .map(|(path, keep_bytes)| PartialTail { path, keep_bytes })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(path: &str, kind: &str, size: u64, mtime: &str, ino: u64, w: Option<&str>) -> FileState {
        FileState {
            path: path.into(),
            kind: kind.into(),
            size,
            mtime: mtime.into(),
            ino,
            window: w.map(str::to_string),
            window_len: if w.is_some() { size.min(WINDOW) } else { 0 },
        }
    }

    fn sc(path: &str, kind: &str, size: u64, mtime: &str, ino: u64) -> Scanned {
        Scanned {
            kind: kind.into(),
            size,
            mtime: mtime.into(),
            ino,
            path: path.into(),
        }
    }

    fn entry(path: &str, kind: &str, size: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: kind.into(),
            size,
            mode: 0o644,
            sha256: None,
            link: None,
        }
    }

    #[test]
    fn the_scan_parses_and_refuses_ambiguous_names() {
        let v = parse_scan("M x 1 {}\nF d 4096 1.5 7 config\nF f 10 2.25 8 config/a b.jsonl\n")
            .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1], sc("config/a b.jsonl", "f", 10, "2.25", 8));
        assert!(parse_scan("F f 10 2.25 8 config/a\tb\n").is_err());
        assert!(parse_scan("F f ten 2.25 8 config/a\n").is_err());
        assert!(parse_scan("").unwrap().is_empty());
    }

    #[test]
    fn the_plan_stores_what_changed_and_only_appended_bytes() {
        let w = Some("aa");
        let parent = vec![
            st("config", "d", 0, "1", 1, None),
            st("config/observer/observer.jsonl", "f", 9000, "5", 2, w),
            st("config/same", "f", 10, "5", 3, w),
            st("config/rewritten", "f", 10, "5", 4, w),
            st("config/shrunk", "f", 10, "5", 5, w),
            st("config/new-inode", "f", 10, "5", 6, w),
            st("logs/observer.log.1", "f", 10, "5", 7, w),
            st("config/was-file", "f", 10, "5", 8, w),
            st("config/empty", "f", 0, "5", 9, None),
        ];
        let now = vec![
            sc("config", "d", 0, "9", 1),
            sc("config/observer/observer.jsonl", "f", 9100, "9", 2),
            sc("config/same", "f", 10, "5", 3),
            sc("config/rewritten", "f", 10, "9", 4),
            sc("config/shrunk", "f", 4, "9", 5),
            sc("config/new-inode", "f", 20, "9", 60),
            sc("config/was-file", "d", 0, "9", 8),
            sc("config/empty", "f", 5, "9", 9),
            sc("config/brand-new", "f", 5, "9", 10),
        ];
        let p = plan(&parent, &now);
        assert_eq!(p.unchanged, vec!["config/same"]);
        // Same inode, not smaller: a candidate (the server's window check decides).
        let c: Vec<(&str, u64, u64)> = p
            .candidates
            .iter()
            .map(|c| (c.path.as_str(), c.offset, c.window_len))
            .collect();
        assert_eq!(
            c,
            vec![
                ("config/observer/observer.jsonl", 9000, 4096),
                ("config/rewritten", 10, 10)
            ]
        );
        assert_eq!(
            p.whole,
            vec![
                "config",
                "config/shrunk",
                "config/new-inode",
                "config/was-file",
                "config/empty",
                "config/brand-new"
            ]
        );
        assert_eq!(p.removed, vec!["logs/observer.log.1", "config/was-file"]);
        // No parent state: everything whole, nothing removed.
        let p = plan(&[], &now);
        assert_eq!(p.whole.len(), now.len());
        assert!(p.candidates.is_empty() && p.removed.is_empty());
    }

    #[test]
    fn the_state_after_a_delta_is_the_whole_state() {
        let w = Some("aa");
        let parent = vec![
            st("config", "d", 0, "1", 1, None),
            st("config/observer/observer.jsonl", "f", 9000, "5", 2, w),
            st("config/same", "f", 10, "5", 3, w),
            st("logs/gone", "f", 10, "5", 7, w),
        ];
        let scanned = vec![
            sc("config", "d", 0, "9", 1),
            sc("config/observer/observer.jsonl", "f", 9100, "9", 2),
            sc("config/same", "f", 10, "5", 3),
            sc("config/new", "f", 5, "9", 10),
        ];
        let entries = vec![
            entry("config", "dir", 0),
            entry("config/new", "file", 5),
            entry(".xtask-append/config/observer/observer.jsonl", "file", 120),
        ];
        let windows = vec![
            ("config/new".to_string(), "n5".to_string()),
            (
                ".xtask-append/config/observer/observer.jsonl".to_string(),
                "d120".to_string(),
            ),
        ];
        let appends = vec![Append {
            path: "config/observer/observer.jsonl".into(),
            offset: 9000,
        }];
        let s = state_after(&parent, &scanned, &entries, &windows, &appends);
        let by = |p: &str| s.iter().find(|x| x.path == p).cloned();
        let a = by("config/observer/observer.jsonl").unwrap();
        // Grown by what the archive holds (120 bytes, more than the scan saw: still appending).
        assert_eq!(
            (a.size, a.window.as_deref(), a.window_len),
            (9120, Some("d120"), 120)
        );
        assert_eq!(by("config/same"), Some(parent[2].clone()));
        assert_eq!(by("config/new").unwrap().window.as_deref(), Some("n5"));
        assert_eq!(by("logs/gone"), None);
        assert_eq!(s.len(), 4);
        assert!(!s.iter().any(|x| x.path.starts_with(APPEND_DIR)));
    }

    #[test]
    fn partial_tails_follow_the_chain() {
        let t = |p: &str, k: u64| PartialTail {
            path: p.into(),
            keep_bytes: k,
        };
        let state = vec![
            st("config/a.jsonl", "f", 100, "1", 1, None),
            st("config/b.jsonl", "f", 100, "1", 2, None),
            st("config/c.jsonl", "f", 100, "1", 3, None),
            st("config/d.jsonl", "f", 100, "1", 4, None),
        ];
        let parent = vec![
            t("config/a.jsonl", 90),
            t("config/b.jsonl", 90),
            t("config/c.jsonl", 90),
            t("config/gone.jsonl", 5),
        ];
        let appends = vec![
            Append {
                path: "config/b.jsonl".into(),
                offset: 95,
            },
            Append {
                path: "config/d.jsonl".into(),
                offset: 50,
            },
        ];
        // a: untouched (parent's tail); b: appended without a newline (parent's tail);
        // c: archived whole and now complete (no tail); d: appended, cut inside the delta.
        let entries = vec![
            entry("config/c.jsonl", "file", 100),
            entry(".xtask-append/config/b.jsonl", "file", 5),
            entry(".xtask-append/config/d.jsonl", "file", 50),
        ];
        let rb = vec![
            t(".xtask-append/config/b.jsonl", 0),
            t(".xtask-append/config/d.jsonl", 30),
        ];
        let got = tails_after(&parent, &state, &entries, &rb, &appends);
        assert_eq!(
            got,
            vec![
                t("config/a.jsonl", 90),
                t("config/b.jsonl", 90),
                t("config/d.jsonl", 80)
            ]
        );
    }
}
