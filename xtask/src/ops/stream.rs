//! A streamed remote command (`logs -f`, `exec`) waited for while watching for SIGINT/SIGTERM
//! (`core::signals`): on the first signal the caller's `stop` runs (for `logs -f`: closing the
//! script's stdin, which ends it on the server), then the command gets `grace` to end before its
//! ssh is killed.

use crate::core::signals;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

/// How a streamed command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself with this status (`None`: killed by a signal).
    Exited(Option<i32>),
    /// The tool received this signal and stopped it.
    Signal(i32),
}

/// Waits for `handle` (polled every 20 ms).
pub fn wait(handle: &duct::Handle, stop: impl FnOnce(), grace: Duration) -> Result<Ended> {
    let what = "waiting for the remote command";
    loop {
        if let Some(out) = handle.try_wait().context(what)? {
            return Ok(Ended::Exited(out.status.code()));
        }
        if let Some(sig) = signals::pending() {
            stop();
            let t = Instant::now();
            while t.elapsed() < grace {
                if handle.try_wait().context(what)?.is_some() {
                    return Ok(Ended::Signal(sig));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = handle.kill();
            return Ok(Ended::Signal(sig));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
