//! Layer 4: pure builders of what runs on the server. Each function takes the environment and
//! typed arguments and returns POSIX `sh` script text (every interpolated value validated or
//! quoted), or parses what such a script printed. Nothing here runs anything; golden tests pin
//! every script's exact text (`server/golden/`), and `sh -n` and `shellcheck -s sh` check them.

pub mod app;
pub mod gaps;
pub mod gate;
pub mod handoff;
pub mod history;
pub mod lock;
pub mod logs;
pub mod probe;
pub mod prune;
pub mod setup;
pub mod snapshot;
pub mod snapshot_delta;
pub mod snapshot_remote;
pub mod swarm;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_day_two;

use crate::config::Env;
use crate::core::util::sh_quote;
use crate::core::version;

/// Quotes one word for the remote shell.
pub fn q(s: &str) -> String {
    sh_quote(s)
}

/// `<remote_dir>/.deploy`: the tool's records on the server.
pub fn deploy_dir(env: &Env) -> String {
    format!("{}/.deploy", env.remote_dir)
}

/// The value of `key=` in `key=value` lines ("" when absent), trimmed.
pub fn field<'o>(out: &'o str, key: &str) -> &'o str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or("")
        .trim()
}

/// The version tag of an image reference (`repo:tag`), or "" when it is not a version.
pub fn tag_of(image: &str) -> String {
    image
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| version::is_valid(t))
        .unwrap_or("")
        .to_string()
}

/// The digest for `repo` in `docker image inspect`'s `.RepoDigests` JSON list.
pub fn digest_in(repo_digests_json: &str, repo: &str) -> Option<String> {
    let list: Vec<String> = serde_json::from_str(repo_digests_json.trim()).ok()?;
    list.iter()
        .find_map(|d| d.strip_prefix(&format!("{repo}@")).map(|s| s.to_string()))
}
