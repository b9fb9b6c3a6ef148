//! `cargo xtask setup` on the server's side (issue 15): one read-only check of what a deploy
//! needs there (who the deploy user is, docker, compose v2, zstd, the deploy root, `.deploy/` and
//! the backups folder with their owner, mode and free space), parsed into [`Facts`]; and the
//! script that makes the folders the deploy user may make.

use super::{deploy_dir, field, q};
use crate::config::Env;

/// The folders setup looks after: (key, path on the server). The deploy root comes before
/// `.deploy/` inside it.
pub fn dirs(env: &Env) -> [(&'static str, String); 3] {
    [
        ("root", env.remote_dir.clone()),
        ("deploy", deploy_dir(env)),
        ("backups", env.backups_dir.clone()),
    ]
}

/// Prints `key=value` lines: `uid`, `gid`, `user`, `group`, `groups` (space separated),
/// `docker` (the engine's version; empty when it does not answer this user), `compose`
/// (`docker compose version --short`; empty without compose v2), `zstd` (its path), and per
/// folder KEY of [`dirs`]: `dir.KEY=missing|symlink|other|dir UID GID MODE w|-` (`w`: writable and
/// searchable by this user), `anc.KEY=w|- PATH` (the nearest existing folder at or above it,
/// and whether this user may create in it) and `free.KEY=KB` (free space there). Changes nothing.
pub fn check(env: &Env) -> String {
    let calls: Vec<String> = dirs(env)
        .iter()
        .map(|(k, p)| format!("d {k} {}", q(p)))
        .collect();
    format!(
        "echo \"uid=$(id -u)\"; echo \"gid=$(id -g)\"; echo \"user=$(id -un)\"; echo \"group=$(id -gn)\"; echo \"groups=$(id -nG)\"; echo \"docker=$(docker version --format '{{{{.Server.Version}}}}' 2>/dev/null)\"; echo \"compose=$(docker compose version --short 2>/dev/null)\"; echo \"zstd=$(command -v zstd)\"; d() {{ p=$2; if [ -L \"$p\" ]; then s=symlink; elif [ -d \"$p\" ]; then s=\"dir $(stat -c '%u %g %a' -- \"$p\")\"; if [ -w \"$p\" ] && [ -x \"$p\" ]; then s=\"$s w\"; else s=\"$s -\"; fi; elif [ -e \"$p\" ]; then s=other; else s=missing; fi; a=$p; while [ ! -e \"$a\" ] && [ \"$a\" != / ]; do a=$(dirname -- \"$a\"); done; if [ -d \"$a\" ] && [ -w \"$a\" ] && [ -x \"$a\" ]; then w=w; else w=-; fi; echo \"dir.$1=$s\"; echo \"anc.$1=$w $a\"; echo \"free.$1=$(df -Pk -- \"$a\" 2>/dev/null | awk 'NR==2{{print $4}}')\"; }}; {}",
        calls.join("; ")
    )
}

/// A folder's state, as [`check`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Missing,
    Symlink,
    /// Exists and is not a folder.
    Other,
    Dir {
        uid: u32,
        gid: u32,
        /// Permission bits (`0o750`).
        mode: u32,
        /// Writable and searchable by the connecting user.
        writable: bool,
    },
}

/// One folder of [`dirs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    pub key: &'static str,
    pub path: String,
    pub state: State,
    /// The nearest existing folder at or above `path`.
    pub ancestor: String,
    /// Whether the connecting user may create entries in `ancestor`.
    pub ancestor_writable: bool,
    /// Free space on `ancestor`'s file system, KiB (`None`: unknown).
    pub free_kb: Option<u64>,
}

/// What [`check`] printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub groups: Vec<String>,
    /// The engine's version ("": docker does not answer this user).
    pub docker: String,
    /// compose v2's version ("": absent).
    pub compose: String,
    /// zstd's path ("": absent).
    pub zstd: String,
    pub dirs: Vec<Dir>,
}

/// Parses [`check`]'s output (`dirs` gives the folders' keys and paths). A missing or garbled
/// `uid` reads as `u32::MAX` (never root).
pub fn parse(env: &Env, out: &str) -> Facts {
    let num = |k: &str| field(out, k).parse::<u32>().unwrap_or(u32::MAX);
    Facts {
        uid: num("uid"),
        gid: num("gid"),
        user: field(out, "user").to_string(),
        group: field(out, "group").to_string(),
        groups: field(out, "groups")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        docker: field(out, "docker").to_string(),
        compose: field(out, "compose").to_string(),
        zstd: field(out, "zstd").to_string(),
        dirs: dirs(env)
            .into_iter()
            .map(|(key, path)| {
                let d = field(out, &format!("dir.{key}"));
                let w: Vec<&str> = d.split_whitespace().collect();
                let state = match w.as_slice() {
                    ["missing"] | [] => State::Missing,
                    ["symlink"] => State::Symlink,
                    ["dir", uid, gid, mode, wr] => State::Dir {
                        uid: uid.parse().unwrap_or(u32::MAX),
                        gid: gid.parse().unwrap_or(u32::MAX),
                        mode: u32::from_str_radix(mode, 8).unwrap_or(0o777),
                        writable: *wr == "w",
                    },
                    _ => State::Other,
                };
                let anc = field(out, &format!("anc.{key}"));
                let (aw, ancestor) = anc.split_once(' ').unwrap_or(("-", anc));
                Dir {
                    key,
                    path,
                    state,
                    ancestor: ancestor.to_string(),
                    ancestor_writable: aw == "w",
                    free_kb: field(out, &format!("free.{key}")).parse().ok(),
                }
            })
            .collect(),
    }
}

/// A change setup makes itself (the connecting user has the right).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `mkdir -p` the folder, then mode `mode`.
    Create { path: String, mode: u32 },
    /// Set the folder's mode.
    Chmod { path: String, mode: u32 },
    /// Give the folder to `uid:gid` (only when connected as root).
    Chown { path: String, uid: u32, gid: u32 },
}

impl Action {
    /// One line for people: `create /opt/observer (mode 750)`.
    pub fn describe(&self) -> String {
        match self {
            Action::Create { path, mode } => format!("create {path} (mode {mode:o})"),
            Action::Chmod { path, mode } => format!("chmod {mode:o} {path}"),
            Action::Chown { path, uid, gid } => format!("chown {uid}:{gid} {path}"),
        }
    }
}

/// Runs `actions` in order, stopping at the first failure; prints `done ACTION` per step.
pub fn apply(actions: &[Action]) -> String {
    let mut s = vec!["set -e".to_string()];
    for a in actions {
        let line = match a {
            Action::Create { path, mode } => {
                format!("mkdir -p -- {p}; chmod {mode:o} -- {p}", p = q(path))
            }
            Action::Chmod { path, mode } => format!("chmod {mode:o} -- {}", q(path)),
            Action::Chown { path, uid, gid } => format!("chown {uid}:{gid} -- {}", q(path)),
        };
        s.push(format!(
            "{line}; echo {}",
            q(&format!("done {}", a.describe()))
        ));
    }
    s.join("; ")
}
