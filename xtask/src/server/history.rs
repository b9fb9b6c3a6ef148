//! `.deploy/last_good_tag` and `.deploy/history.jsonl` (records in `core::records`).

use super::{deploy_dir, q};
use crate::config::Env;
use crate::core::records::LastGood;

/// Writes `last_good_tag` atomically (temp file + rename).
pub fn record_last_good(env: &Env, lg: &LastGood) -> String {
    let d = q(&deploy_dir(env));
    format!(
        "printf '%s %s\\n' {v} {dg} > {d}/last_good_tag.tmp && mv -f {d}/last_good_tag.tmp {d}/last_good_tag",
        v = q(&lg.version),
        dg = q(&lg.digest)
    )
}

/// Appends stdin (one JSON line) to the history.
pub fn append(env: &Env) -> String {
    format!("cat >> {}/history.jsonl", q(&deploy_dir(env)))
}

/// Prints the last `n` history lines.
pub fn read(env: &Env, n: usize) -> String {
    format!(
        "tail -n {n} {}/history.jsonl 2>/dev/null; true",
        q(&deploy_dir(env))
    )
}
