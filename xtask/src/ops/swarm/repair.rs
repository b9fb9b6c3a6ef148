//! Redeploying the version that already runs on the swarm (issue 14).

use super::{history, SwarmSteps};
use crate::core::exit;
use crate::core::records::{LastGood, Outcome};
use crate::ops::run::{Run, Verdict};
use anyhow::Result;

/// The version asked for runs with the same stack file and `.env`: nothing is redeployed, but
/// under the lock the nodes a dead deploy left paused are resumed and, when the records do not
/// name this version as the last good one (a deploy killed after Swarm converged), they are
/// written (history kind `repair`).
pub(super) fn already_running(run: &mut Run, st: &SwarmSteps) -> Result<Verdict> {
    eprintln!(
        "    {} already runs with this stack and .env: nothing is redeployed",
        run.version
    );
    let lock = run.st.lock(&run.pay.holder);
    run.lock(&lock)?;
    let out = run.x.run_step(&st.resume())?;
    for l in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
        eprintln!("    {}", l.trim());
    }
    if run.last_good == run.version {
        run.unlock();
        return Ok(("already running".into(), 0, None));
    }
    eprintln!(
        "    the records name {} as the last good version: writing {}'s records again",
        if run.last_good.is_empty() {
            "nothing"
        } else {
            run.last_good
        },
        run.version
    );
    let lg = LastGood {
        version: run.version.into(),
        digest: run.digest.into(),
    };
    let mut rec = history(run, Outcome::Success, Vec::new());
    rec.kind = "repair".into();
    let (record, hist) = (run.st.record(&lg), run.st.history(&rec));
    run.x
        .run_step(&record)
        .and_then(|_| run.x.run_step(&hist))
        .map_err(|e| {
            crate::core::exit::exit_code(
                format!(
                    "{} runs, but repairing its records failed: {e:#}",
                    run.version
                ),
                exit::RECORD_FAILED,
            )
        })?;
    run.unlock();
    Ok(("already running; records repaired".into(), 0, None))
}
