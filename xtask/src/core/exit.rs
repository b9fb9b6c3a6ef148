//! Exit codes, written once: the `--help` texts, README's table and the errors that carry a code
//! all come from here.

use std::fmt;

/// A check or a step failed before the running service was touched.
pub const FAILED: u8 = 1;
/// Bad usage, an invalid version or an invalid config: nothing was touched.
pub const USAGE: u8 = 2;
/// The new version failed its health gate; the last good version is back and healthy.
pub const ROLLED_BACK: u8 = 3;
/// The rollback failed too (or a first deploy failed): the service is NOT healthy.
pub const UNHEALTHY: u8 = 4;
/// The new version passed its gate and runs, but recording it (`last_good_tag`, the history)
/// failed: the server's records still name the previous version (issue 12). Running the same
/// deploy again verifies the running version and repairs the records.
pub const RECORD_FAILED: u8 = 5;

/// The table printed by `--help` (general form).
pub const EXIT_CODES: &str = "Exit codes:
  0  success
  1  a check or a step failed (nothing further was changed)
  2  bad usage, an invalid version or an invalid config (nothing was touched)
  3  deploy: the new version failed (gate, soak or handoff); the last good version runs and is healthy
  4  deploy: the hand-back or rollback failed too (or a first deploy failed): the service is NOT healthy
  5  deploy: the new version runs and is healthy, but recording it failed (run the same deploy again)
130  interrupted by SIGINT (143: SIGTERM): stopped at a safe point, lock released (the message says where)";

/// The table printed by `deploy --help` and `rollback --help`.
pub const DEPLOY_EXIT_CODES: &str = "Exit codes:
  0  deployed and healthy (or the version asked for already runs and is healthy)
  1  refused or failed before the running service was touched (or --no-rollback left the failed version)
  2  bad usage or an invalid version (nothing touched)
  3  the new version failed (gate, soak or handoff; on a swarm: Swarm rolled the update back);
     the last good version runs and is healthy
  4  the hand-back or rollback failed too, or a first deploy failed (on a swarm: the update or
     its rollback did not converge): the service is NOT healthy
  5  the new version runs and is healthy, but recording it (last_good_tag, history) failed:
     run the same deploy again (it verifies the running version and repairs the records)
130  interrupted by SIGINT (143: SIGTERM): before the handoff, what this run started is removed
     and the running version never stopped; after it, the deploy was finished; lock released";

/// An error that carries the process exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub msg: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}
impl std::error::Error for Exit {}

/// Exit code 1: a check failed or the work failed; nothing (more) was changed.
pub fn fail(msg: impl Into<String>) -> anyhow::Error {
    exit_code(msg, FAILED)
}

/// Exit code 2: bad usage or an invalid config; nothing was touched.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    exit_code(msg, USAGE)
}

/// An error with an explicit exit code (one of the constants above).
pub fn exit_code(msg: impl Into<String>, code: u8) -> anyhow::Error {
    Exit {
        code,
        msg: msg.into(),
    }
    .into()
}

/// The exit code an error carries anywhere in its chain (1 when none does).
pub fn code_of(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Exit>().map(|x| x.code))
        .unwrap_or(FAILED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_survive_context() {
        let e = usage("bad").context("outer").context("outermost");
        assert_eq!(code_of(&e), 2);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), 1);
    }
}
