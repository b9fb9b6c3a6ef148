//! Snapshots on the server's side: the record types (`ID.manifest.json`), the id and entry rules,
//! and the scripts that tar the deploy root, write the archive, finish it (checksum, manifest
//! last), list, read, extract, move the current state aside and prune.

use super::q;
use crate::config::Env;
use crate::core::exit::usage;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path};

/// The bytes before a file's old end whose hash proves it was only appended to (4 KiB): the
/// read-back hashes each file's last `WINDOW` bytes (issue 13 item 2, `server::snapshot_delta`).
pub const WINDOW: u64 = 4096;

/// One tar entry as the manifest records it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Entry {
    pub path: String,
    /// `file`, `dir`, `symlink`, `hardlink`, `char-device`, `block-device`, `fifo`, `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes.
    pub size: u64,
    pub mode: u32,
    /// Lowercase hex, files only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<String>,
}

/// `ID.manifest.json`, written last: without it a snapshot is incomplete.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Manifest {
    pub id: String,
    /// RFC 3339 UTC.
    pub created: String,
    pub env: String,
    pub server: String,
    /// The version running when the snapshot was taken (empty: none).
    pub version: String,
    pub no_logs: bool,
    pub archive: ArchiveInfo,
    pub entries: Vec<Entry>,
    /// JSON-lines files captured while being appended to: bytes after their last newline, which
    /// a restore cuts off so that every line of the restored file parses. For an incremental
    /// snapshot: those of the whole state it restores (its chain applied).
    pub partial_tails: Vec<PartialTail>,
    /// Incremental snapshots (issue 13 item 2): the parent this one applies on top of. All
    /// empty for a full snapshot, and in every manifest written before issue 13.
    #[serde(flatten, default)]
    pub delta: Delta,
    /// The deploy root's state as this snapshot restores it, one record per path: what the next
    /// incremental snapshot compares the live files with. Absent in snapshots streamed through
    /// the controller and in those written before issue 13 item 2 (the next one is then full).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub state: Option<Vec<FileState>>,
}

impl Manifest {
    /// `, incremental on PARENT` for an incremental snapshot, else empty (for messages).
    pub fn incremental_note(&self) -> String {
        self.delta
            .parent
            .as_ref()
            .map(|p| format!(", incremental on {p}"))
            .unwrap_or_default()
    }
}

/// The incremental part of a manifest (`server::snapshot_delta`, issue 13 item 2). A snapshot
/// with a `parent` restores as: its chain's full snapshot, then each delta in order — paths in
/// `removed` deleted, the archive extracted, each of `appends` concatenated onto its file.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// The snapshot this one applies on top of (`None`: a full snapshot).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parent: Option<String>,
    /// Deltas between this snapshot and its chain's full snapshot (0: full).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub depth: u32,
    /// Files stored by their appended bytes only: the archive's entry
    /// `.xtask-append/<path>` holds the bytes from `offset` on.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub appends: Vec<Append>,
    /// Paths of the parent's state that are gone (or changed kind), deleted before extracting.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub removed: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A file stored by what was appended to it since the parent snapshot.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// The file, relative to the deploy root.
    pub path: String,
    /// Its size in the parent's state, in bytes: the appended bytes start there.
    pub offset: u64,
}

/// One path of the deploy root in a snapshot's `state`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub path: String,
    /// `find -printf %y`: `f` file, `d` directory, `l` symlink, another letter for the rest.
    pub kind: String,
    /// Bytes as archived (files).
    pub size: u64,
    /// The modification time `find -printf %T@` gave before the archive was written (empty:
    /// unknown, so the next incremental snapshot stores the file whole).
    pub mtime: String,
    /// The inode number.
    pub ino: u64,
    /// sha256 of the file's last `window_len` bytes as archived (files; at most
    /// `snapshot_delta::WINDOW`): checked again on the live file before only its appended bytes
    /// are stored, so a file rewritten in place is stored whole.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub window: Option<String>,
    #[serde(skip_serializing_if = "is_zero64", default)]
    pub window_len: u64,
}

fn is_zero64(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ArchiveInfo {
    /// `ID.tar.zst`.
    pub file: String,
    /// Bytes.
    pub size: u64,
    pub sha256: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartialTail {
    pub path: String,
    pub keep_bytes: u64,
}

/// A snapshot id: `[A-Za-z0-9.-]`, at most 64, not starting with `.` or `-` (exit 2 otherwise).
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "invalid snapshot id {id:?}: letters, digits, '-' and '.' only (see `snapshot list`)"
        )))
    }
}

/// Refuses what a restore must never write: absolute paths, `..` components, links pointing out
/// of the target, device files. Checked on every entry BEFORE anything is extracted.
pub fn check_entry(path: &str, kind: &str, link: Option<&str>) -> std::result::Result<(), String> {
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(format!("absolute path {path:?}"));
    }
    if p.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    }) {
        return Err(format!("path {path:?} has a '..' component"));
    }
    match kind {
        "file" | "dir" => Ok(()),
        "symlink" | "hardlink" => {
            let target = link.unwrap_or("");
            let t = Path::new(target);
            if t.is_absolute() {
                return Err(format!(
                    "{kind} {path:?} points to the absolute path {target:?}"
                ));
            }
            // Resolve lexically: a symlink is relative to its directory, a hard link to the root.
            let mut depth: i64 = if kind == "symlink" {
                p.components().count() as i64 - 1
            } else {
                0
            };
            for c in t.components() {
                match c {
                    Component::ParentDir => depth -= 1,
                    Component::Normal(_) => depth += 1,
                    _ => {}
                }
                if depth < 0 {
                    return Err(format!(
                        "{kind} {path:?} points outside the target ({target:?})"
                    ));
                }
            }
            Ok(())
        }
        other => Err(format!(
            "{other} entry {path:?} (device and special files are refused)"
        )),
    }
}

fn backups(env: &Env) -> String {
    q(&env.backups_dir)
}

/// The three files of a snapshot, as absolute paths on the server.
pub fn files(env: &Env, id: &str) -> Vec<String> {
    vec![
        format!("{}/{id}.tar.zst", env.backups_dir),
        format!("{}/{id}.tar.zst.sha256", env.backups_dir),
        format!("{}/{id}.manifest.json", env.backups_dir),
    ]
}

/// Who touches the files of the image's user (uid 10001) in a snapshot's scripts (issue 13
/// item 3): the deploy root's `config/`, `logs/` and `data/` belong to that user, and a file of
/// mode 0600 there is unreadable to anyone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The deploy user is root: `tar`, `mv` and `truncate` run directly.
    Direct,
    /// A non-root deploy user (in the `docker` group, as production's is): they run as root in a
    /// throwaway container of this image (the route the ownership repair, `app::chown`, takes),
    /// without network, never pulling, the folder they touch mounted at its own path. zstd stays
    /// on the host side of the pipe (the image has none).
    Container(String),
}

impl Access {
    /// `program args` (shell text, already quoted) run as this access runs it, in `dir`: for
    /// [`Access::Container`], `dir` is mounted (read-only with `ro`) at its own path and is the
    /// working directory, and `stdin` keeps stdin open (`-i`).
    pub fn run(&self, dir: &str, ro: bool, stdin: bool, program: &str, args: &str) -> String {
        self.run_with(&[(dir, ro)], stdin, program, args)
    }

    /// [`Access::run`] with several folders mounted (each at its own path, read-only when its
    /// flag says so); the first is the working directory.
    pub fn run_with(
        &self,
        dirs: &[(&str, bool)],
        stdin: bool,
        program: &str,
        args: &str,
    ) -> String {
        match self {
            Access::Direct => format!("{program} {args}"),
            Access::Container(image) => {
                let mounts: Vec<String> = dirs
                    .iter()
                    .map(|(d, ro)| format!("-v {d}:{d}{}", if *ro { ":ro" } else { "" }, d = q(d)))
                    .collect();
                format!(
                    "docker run --rm{i} --user 0 --network none --pull never {m} -w {w} --entrypoint {program} {img} {args}",
                    i = if stdin { " -i" } else { "" },
                    m = mounts.join(" "),
                    w = q(dirs.first().map_or("/", |d| d.0)),
                    img = q(image),
                )
            }
        }
    }
}

/// Extracts the tar on stdin into `dir` (owners kept, `--numeric-owner`). Through a container
/// ([`Access::Container`]) `dir/.deploy` (the deploy user's records) is then given back to the
/// deploy user: it keeps writing them after a restore.
pub fn untar(dir: &str, access: &Access) -> String {
    match access {
        Access::Direct => format!("tar -xf - --numeric-owner -C {}", q(dir)),
        Access::Container(_) => access.run(
            dir,
            false,
            true,
            "sh",
            &format!(
                "-c {} sh {} \"$(id -u):$(id -g)\"",
                q("tar -xf - --numeric-owner -C \"$1\" && if [ -d \"$1/.deploy\" ]; then chown -R \"$2\" \"$1/.deploy\"; fi"),
                q(dir)
            ),
        ),
    }
}

/// Streams the deploy root's state as a tar on stdout (`.deploy/lock` and `.env` excluded; tar's
/// exit 1, "file changed as we read it", is accepted: the archive is consistent per file), tar
/// run as `access` says.
pub fn tar(env: &Env, no_logs: bool, access: &Access) -> String {
    let dirs = if no_logs {
        "config data .deploy"
    } else {
        "config data logs .deploy"
    };
    format!(
        "cd {} && set -- && for d in {dirs}; do [ -e \"$d\" ] && set -- \"$@\" \"$d\"; done; {}; rc=$?; [ $rc -le 1 ]",
        q(&env.remote_dir),
        access.run(
            &env.remote_dir,
            true,
            false,
            "tar",
            "-cf - --numeric-owner --exclude=.deploy/lock \"$@\""
        )
    )
}

/// Writes stdin to `<backups>/<partial>`.
pub fn write_partial(env: &Env, partial: &str) -> String {
    let b = backups(env);
    format!("mkdir -p {b} && cat > {b}/{}", q(partial))
}

/// Removes a partial archive after a failure.
pub fn remove_partial(env: &Env, partial: &str) -> String {
    format!("rm -f {}/{}", backups(env), q(partial))
}

/// Renames the partial archive, writes its `.sha256` and then the manifest (from stdin), last.
pub fn finish(env: &Env, id: &str, partial: &str, file: &str, sha256: &str) -> String {
    format!(
        "cd {b} && mv -f {p} {f} && printf '%s  %s\\n' {sha} {f} > {f}.sha256 && cat > {id}.manifest.json.tmp && mv -f {id}.manifest.json.tmp {id}.manifest.json",
        b = backups(env),
        p = q(partial),
        f = q(file),
        sha = q(sha256),
        id = q(id),
    )
}

/// Prints a file of the backups folder (`name` relative to it).
pub fn cat(env: &Env, name: &str) -> String {
    format!("cat {}/{}", backups(env), q(name))
}

/// Prints `M ID SIZE MANIFEST-JSON` per complete snapshot and `I ID SIZE` per incomplete one.
pub fn list(env: &Env) -> String {
    format!(
        "[ -d {b} ] || exit 0; cd {b} || exit 1; for f in *.tar.zst *.tar.zst.partial; do [ -e \"$f\" ] || continue; id=${{f%%.tar.zst*}}; s=$(stat -c %s \"$f\"); if [ \"$f\" = \"$id.tar.zst\" ] && [ -e \"$id.manifest.json\" ]; then printf 'M %s %s ' \"$id\" \"$s\"; tr -d '\\n' < \"$id.manifest.json\"; echo; else echo \"I $id $s\"; fi; done",
        b = backups(env)
    )
}

/// The partial files a `snapshot create` leaves when it is killed: the archive being streamed
/// (`ID.tar.zst.partial`) and the manifest being written (`ID.manifest.json.tmp`).
pub const PARTIAL_SUFFIXES: [&str; 2] = [".tar.zst.partial", ".manifest.json.tmp"];

/// The working folders a snapshot made on the server keeps in the backups folder while it runs
/// (`.create.XXXXXX`: the FIFO and the listing; `.delta.XXXXXX`: appended bytes), removed by
/// the script itself unless it was killed.
pub const WORK_DIRS: [&str; 2] = [".create.", ".delta."];

/// What a prune needs, in one round trip (issue 12 item 5): [`list`]'s lines, then
/// `P AGE_S NAME` per partial file or working folder (age in seconds since its last write; a
/// folder's newest file counts), then `H JSON` per line of `.deploy/history.jsonl` (what
/// `rollback --restore` reads).
pub fn prune_scan(env: &Env) -> String {
    let globs = PARTIAL_SUFFIXES
        .iter()
        .map(|s| format!("*{s}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "( {list} ) || exit 1; now=$(date +%s) || exit 1; if [ -d {b} ]; then cd {b} || exit 1; for f in {globs}; do [ -e \"$f\" ] || continue; a=$(stat -c %Y \"$f\") || exit 1; echo \"P $((now - a)) $f\"; done; for f in {dirs}; do [ -d \"$f\" ] || continue; a=$(stat -c %Y \"$f\" \"$f\"/* 2>/dev/null | sort -n | tail -n 1); echo \"P $((now - ${{a:-$now}})) $f\"; done; fi; if [ -e {h} ]; then sed 's/^/H /' {h} || exit 1; fi",
        list = list(env),
        dirs = WORK_DIRS.map(|d| format!("{d}*")).join(" "),
        b = backups(env),
        h = q(&format!("{}/history.jsonl", super::deploy_dir(env)))
    )
}

/// A partial file [`prune_scan`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// The file's name in the backups folder.
    pub name: String,
    /// Seconds since it was last written.
    pub age_s: u64,
}

/// The `P` lines of [`prune_scan`]'s output (a name with a `/` is skipped).
pub fn parse_partials(out: &str) -> Vec<Partial> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("P ")?.splitn(2, ' ');
            let age_s = w.next()?.parse().ok()?;
            let name = w.next()?.to_string();
            (!name.is_empty() && !name.contains('/')).then_some(Partial { name, age_s })
        })
        .collect()
}

/// The `H` lines of [`prune_scan`]'s output: the history's JSON lines, as written.
pub fn history_lines(out: &str) -> impl Iterator<Item = &str> {
    out.lines().filter_map(|l| l.strip_prefix("H "))
}

/// Removes files (and a killed create's working folders) of the backups folder (`names` relative
/// to it, without `/`; nothing when empty).
pub fn remove_files(env: &Env, names: &[String]) -> String {
    let files: Vec<String> = names.iter().map(|n| q(n)).collect();
    format!("cd {} && rm -rf -- {}", backups(env), files.join(" "))
}

/// One line of [`list`]'s output.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Listed {
    pub id: String,
    /// `valid`, `incomplete` or `corrupt`.
    pub state: String,
    pub size: u64,
    pub created: String,
    pub version: String,
    pub files: Vec<String>,
    /// The parent of an incremental snapshot (`None`: full, or not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// Parses [`list`]'s output, sorted by id (which sorts by time).
pub fn parse_list(env: &Env, out: &str) -> Vec<Listed> {
    let mut v = Vec::new();
    for l in out.lines() {
        let mut w = l.splitn(4, ' ');
        let (tag, id, size) = (
            w.next().unwrap_or(""),
            w.next().unwrap_or("").to_string(),
            w.next().unwrap_or("0").parse().unwrap_or(0),
        );
        let (state, created, version, parent) = match tag {
            "M" => match serde_json::from_str::<Manifest>(w.next().unwrap_or("")) {
                Ok(m) if m.archive.size == size => ("valid", m.created, m.version, m.delta.parent),
                Ok(m) => ("corrupt", m.created, m.version, m.delta.parent),
                Err(_) => ("corrupt", String::new(), String::new(), None),
            },
            "I" => ("incomplete", String::new(), String::new(), None),
            _ => continue,
        };
        v.push(Listed {
            files: files(env, &id),
            id,
            state: state.into(),
            size,
            created,
            version,
            parent,
        });
    }
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// Extracts a tar from stdin into `dir` ([`untar`]).
pub fn extract(dir: &str, access: &Access) -> String {
    format!("cd {} && {}", q(dir), untar(dir, access))
}

/// Moves `config data logs` and the history/last-good records into `<remote_dir>/<undo>` (made
/// by the deploy user); the folders of the image's user move as `access` says. Any failed move
/// fails the script.
pub fn move_aside(env: &Env, undo: &str, access: &Access) -> String {
    let r = q(&env.remote_dir);
    let u = q(undo);
    format!(
        "cd {r} && mkdir -p {u}/.deploy && for f in .deploy/history.jsonl .deploy/last_good_tag; do if [ -e \"$f\" ]; then mv \"$f\" {u}/.deploy/ || exit 1; fi; done && set -- && for d in config data logs; do if [ -e \"$d\" ]; then set -- \"$@\" \"$d\"; fi; done && if [ $# -gt 0 ]; then {}; fi",
        access.run(&env.remote_dir, false, false, "mv", &format!("-- \"$@\" {u}/"))
    )
}

/// After a restore's extraction: the audit trail moved aside by [`move_aside`] goes back over the
/// snapshot's copy, so `.deploy/history.jsonl` stays append-only (every deploy, rollback and
/// restore since the snapshot was taken stays recorded; the restore appends its own record).
pub fn keep_history(env: &Env, undo: &str) -> String {
    let u = q(&format!("{undo}/.deploy/history.jsonl"));
    format!(
        "cd {} && if [ -e {u} ]; then mkdir -p .deploy && mv -f {u} .deploy/history.jsonl; fi",
        q(&env.remote_dir)
    )
}

/// Cuts a restored JSON-lines file after its last whole line (as `access` says).
pub fn cut_tail(env: &Env, t: &PartialTail, access: &Access) -> String {
    access.run(
        &env.remote_dir,
        false,
        false,
        "truncate",
        &format!(
            "-s {} {}",
            t.keep_bytes,
            q(&format!("{}/{}", env.remote_dir, t.path))
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_entries_are_refused() {
        assert!(check_entry("config/observer/observer.jsonl", "file", None).is_ok());
        assert!(check_entry("config", "dir", None).is_ok());
        assert!(check_entry("config/a/link", "symlink", Some("../b")).is_ok());
        for (p, k, l) in [
            ("../evil", "file", None),
            ("config/../../evil", "file", None),
            ("/etc/passwd", "file", None),
            ("config/etc", "symlink", Some("/etc")),
            ("config/x", "symlink", Some("../../outside")),
            ("config/h", "hardlink", Some("../outside")),
            ("config/h", "hardlink", Some("/etc/shadow")),
            ("dev/null", "char-device", None),
            ("fifo", "fifo", None),
        ] {
            assert!(check_entry(p, k, l).is_err(), "{p} {k} {l:?}");
        }
    }

    #[test]
    fn ids() {
        assert!(validate_id("20261128T212800Z-a1b2c3").is_ok());
        for bad in ["", "../x", "a b", "$(id)", "-x", ".hidden", "a/b"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
