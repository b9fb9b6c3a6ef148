//! The deploy lock: `mkdir <remote_dir>/.deploy/lock` (atomic on every POSIX file system) with the
//! holder record (`core::records::LockHolder`) fed on stdin.

use super::{deploy_dir, q};
use crate::config::Env;

/// Takes the lock, writing stdin as the holder; prints `acquired`, or the current holder's
/// record and `held` (exit 1).
pub fn acquire(env: &Env) -> String {
    let d = q(&deploy_dir(env));
    format!("mkdir -p {d} && if mkdir {d}/lock 2>/dev/null; then cat > {d}/lock/holder.json && echo acquired; else cat {d}/lock/holder.json 2>/dev/null; echo; echo held; exit 1; fi")
}

/// [`acquire`], waiting up to `wait_s` seconds (polling once a second, on the server: one
/// connection) while the lock is held (`deploy --lock-wait`). Prints `acquired`, or after the
/// wait the holder's record and `held` (exit 1).
pub fn acquire_wait(env: &Env, wait_s: u64) -> String {
    let d = q(&deploy_dir(env));
    format!("mkdir -p {d} && i=0; while ! mkdir {d}/lock 2>/dev/null; do if [ \"$i\" -ge {wait_s} ]; then cat {d}/lock/holder.json 2>/dev/null; echo; echo held; exit 1; fi; sleep 1; i=$((i+1)); done; cat > {d}/lock/holder.json && echo acquired")
}

/// Releases the lock only when the holder record carries `id`: prints `released`, `absent` (no
/// lock) or `not-ours` (another holder's: left alone); exits non-zero when it cannot be removed.
pub fn release(env: &Env, id: &str) -> String {
    let d = q(&deploy_dir(env));
    format!(
        "if [ ! -d {d}/lock ]; then echo absent; elif grep -q {} {d}/lock/holder.json 2>/dev/null; then rm -rf {d}/lock && echo released; else echo not-ours; fi",
        q(id)
    )
}

/// Prints the holder record (nothing when the lock is free).
pub fn read(env: &Env) -> String {
    format!(
        "cat {}/lock/holder.json 2>/dev/null; true",
        q(&deploy_dir(env))
    )
}

/// Breaks the lock whoever holds it (`lock release --force`).
pub fn force_release(env: &Env) -> String {
    format!("rm -rf {}/lock", q(&deploy_dir(env)))
}
