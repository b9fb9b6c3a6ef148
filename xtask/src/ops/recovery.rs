//! The rollout's recovery branches: a failed candidate is removed (the running version never
//! stopped), a failed handoff hands back, and under `--strategy recreate` a failed gate rolls
//! back to the last good version.

use super::env_text;
use super::run::{print_fenced, Run, Verdict};
use crate::core::contract::CONTAINER;
use crate::core::exit;
use crate::core::records::Outcome;
use crate::core::signals;
use crate::server::gate::Gate;
use anyhow::Result;

/// The gate failed under `--strategy recreate`: report, record, and roll back (or not).
pub fn gate_failed(run: &mut Run, gate: Gate) -> Result<Verdict> {
    let (version, last_good, c) = (run.version, run.last_good, run.c);
    let logs = run
        .x
        .exec(&run.st.logs())
        .map(|o| o.stdout)
        .unwrap_or_default();
    eprintln!("\nhealth gate FAILED for {version}:");
    for f in &gate.failed {
        eprintln!("  - {}", run.sh.mask(f));
    }
    print_fenced(run.sh, "last 50 lines of the container log:", &logs);
    let mut rec = run.record(Outcome::Failed, run.o.kind, version);
    rec.failed = gate.failed.clone();
    run.x.run_step(&run.st.history(&rec))?;
    if !run.o.rollback {
        eprintln!("--no-rollback: {version} is left running for debugging\nrecover: cargo xtask rollback --env {}", run.env.name);
        return Ok((
            "failed (left running: --no-rollback)".into(),
            exit::FAILED,
            None,
        ));
    }
    if last_good.is_empty() || last_good == version {
        let _ = run.x.run_step(&run.st.down(c));
        eprintln!("no last good version to roll back to: the failed container is stopped; the service is DOWN");
        return Ok((
            "failed, nothing to roll back to".into(),
            exit::UNHEALTHY,
            None,
        ));
    }
    eprintln!("\n==> rolling back to {last_good}");
    let (sh, env) = (run.sh, run.env);
    let rb = (|| -> Result<Gate> {
        run.x
            .run_step(&run.st.upload_env(env_text(sh, env, last_good)?))?;
        super::start_and_gate(run.x, &run.st, last_good, c)
    })();
    let ok = matches!(&rb, Ok(g) if g.passed());
    let rec = rollback_record(run, ok, last_good);
    if ok {
        run.x.run_step(&run.st.history(&rec))?;
        return Ok((
            "rolled back".into(),
            exit::ROLLED_BACK,
            Some(last_good.to_string()),
        ));
    }
    let _ = run.x.run_step(&run.st.history(&rec));
    let why = match rb {
        Ok(g) => g.failed.join("; "),
        Err(e) => format!("{e:#}"),
    };
    eprintln!(
        "\n!!!!! ROLLBACK FAILED: neither {version} nor {last_good} is healthy on {}: {}\nrecover by hand:\n  cargo xtask status --env {env}\n  cargo xtask lock status --env {env}\n  cargo xtask rollback --env {env} --to <a version that worked>\n  ssh to the server: cd {dir} && docker logs {CONTAINER}",
        run.st.server,
        run.sh.mask(&why),
        env = run.env.name,
        dir = run.env.remote_dir
    );
    Ok(("rollback failed".into(), exit::UNHEALTHY, None))
}

/// The candidate did not start, failed its gate or its soak: the running version never stopped.
/// Removes only what this run created, puts `.env` back, records the failure.
pub fn candidate_failed(run: &mut Run, failed: Vec<String>) -> Result<Verdict> {
    let version = run.version;
    let logs = run
        .x
        .exec(&run.st.candidate_logs())
        .map(|o| o.stdout)
        .unwrap_or_default();
    eprintln!("\n{version} FAILED before the handoff:");
    for f in &failed {
        eprintln!("  - {}", run.sh.mask(f));
    }
    print_fenced(run.sh, "last 50 lines of the candidate's log:", &logs);
    let _ = run.x.run_step(&run.st.remove_candidate());
    let _ = run.x.run_step(&run.st.restore_env());
    let mut rec = run.record(Outcome::Failed, run.o.kind, version);
    rec.failed = failed;
    let _ = run.x.run_step(&run.st.history(&rec));
    if run.running.is_empty() {
        eprintln!("nothing was running before, and {version} did not pass: the service is DOWN\nrecover: fix the release, then `cargo xtask deploy --env {}`", run.env.name);
        return Ok(("failed, nothing runs".into(), exit::UNHEALTHY, None));
    }
    eprintln!(
        "{} never stopped and keeps observing; nothing else was changed",
        run.running
    );
    Ok((
        "failed before the handoff".into(),
        exit::ROLLED_BACK,
        Some(crate::server::tag_of(run.running)),
    ))
}

/// The old instance stopped but the candidate did not take the archive over: start the old one
/// again and remove the candidate.
pub fn hand_back_before_up(run: &mut Run, why: String) -> Result<Verdict> {
    eprintln!(
        "\nthe handoff FAILED: {}\n==> handing back to {}",
        run.sh.mask(&why),
        run.running
    );
    let _ = run.x.run_step(&run.st.remove_candidate());
    let _ = run.x.run_step(&run.st.restore_env());
    // Exit 3 says the last good version runs and is healthy: it must pass the gate again.
    let old = crate::server::tag_of(run.running);
    let back = run.x.run_step(&run.st.start_old()).and_then(|_| {
        let gate = super::gate(run.x, &run.st, &old)?;
        if gate.passed() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(gate.failed.join("; ")))
        }
    });
    let mut rec = run.record(Outcome::Failed, run.o.kind, run.version);
    rec.failed = vec![why];
    let _ = run.x.run_step(&run.st.history(&rec));
    match back {
        Ok(()) => Ok((
            "handoff failed; handed back".into(),
            exit::ROLLED_BACK,
            Some(old),
        )),
        Err(e) => {
            eprintln!(
                "!!!!! {CONTAINER} is not healthy again after the failed handoff: {}\nrecover: cargo xtask rollback --env {} --to {old}",
                run.sh.mask(&format!("{e:#}")),
                run.env.name
            );
            Ok(("handoff and hand-back failed".into(), exit::UNHEALTHY, None))
        }
    }
}

/// The candidate took over, but the recreated service did not start or failed its gate: the
/// service goes back to the previous version (standby behind the candidate), then the candidate
/// stops and the previous version takes the archive over again.
pub fn hand_back_after_up(run: &mut Run, failed: Vec<String>) -> Result<Verdict> {
    let version = run.version;
    let old = crate::server::tag_of(run.running);
    eprintln!("\n{version} FAILED in {CONTAINER} after the handoff:");
    for f in &failed {
        eprintln!("  - {}", run.sh.mask(f));
    }
    let mut rec = run.record(Outcome::Failed, run.o.kind, version);
    rec.failed = failed;
    let _ = run.x.run_step(&run.st.history(&rec));
    if old.is_empty() {
        eprintln!("!!!!! no previous version to hand back to; {version} keeps observing in the candidate container\nrecover: cargo xtask status --env {}", run.env.name);
        return Ok(("failed after the handoff".into(), exit::UNHEALTHY, None));
    }
    eprintln!("==> handing back to {old}");
    let c = run.c;
    let back = (|| -> Result<bool> {
        run.x.run_step(&run.st.restore_env())?;
        run.x.run_step(&run.st.up(&old, c))?;
        let gate = super::gate(run.x, &run.st, &old)?;
        if !gate.passed() {
            return Ok(false);
        }
        run.x.run_step(&run.st.release_candidate())?;
        let _ = run.x.run_step(&run.st.remove_candidate());
        Ok(true)
    })();
    let ok = matches!(back, Ok(true));
    let rec = rollback_record(run, ok, &old);
    let _ = run.x.run_step(&run.st.history(&rec));
    if ok {
        Ok(("handed back".into(), exit::ROLLED_BACK, Some(old)))
    } else {
        eprintln!(
            "!!!!! the hand-back to {old} failed too; {version} keeps observing in the candidate container\nrecover by hand:\n  cargo xtask status --env {env}\n  cargo xtask rollback --env {env} --to {old}",
            env = run.env.name
        );
        Ok(("hand-back failed".into(), exit::UNHEALTHY, None))
    }
}

/// The history record of going back to `version` (no digest: it was verified when deployed).
fn rollback_record(run: &Run, ok: bool, version: &str) -> crate::core::records::HistoryRecord {
    let outcome = if ok {
        Outcome::Success
    } else {
        Outcome::Failed
    };
    let mut rec = run.record(outcome, "rollback", version);
    rec.digest = None;
    rec
}

/// A SIGINT/SIGTERM before `before` (a step before the point of no return: the running version
/// never stopped): undo what this run started — the candidate, the new `.env` — record it, and
/// stop with exit `128 + sig` (the lock is released by the caller).
pub fn interrupted(run: &mut Run, sig: i32, before: &str) -> Result<Verdict> {
    let name = signals::name(sig);
    eprintln!("\n!!! {name}: stopping before the step `{before}` and undoing this run's changes");
    if run.x.done.contains(&"candidate") {
        let _ = run.x.run_step(&run.st.remove_candidate());
    }
    if run.x.done.contains(&"upload-env") {
        let _ = run.x.run_step(&run.st.restore_env());
    }
    let why = format!("interrupted by {name} before `{before}`");
    if run.locked {
        let mut rec = run.record(Outcome::Failed, run.o.kind, run.version);
        rec.failed = vec![why.clone()];
        let _ = run.x.run_step(&run.st.history(&rec));
    }
    let now = if run.running.is_empty() {
        "nothing was running, and nothing runs now".to_string()
    } else {
        format!("{} never stopped and keeps observing", run.running)
    };
    Err(exit::exit_code(
        format!(
            "{why}: undone ({}); {now}; the lock is released. Deploy again when ready: cargo xtask deploy --env {} --tag {}",
            if run.x.done.contains(&"candidate") {
                "the candidate removed, .env put back"
            } else if run.x.done.contains(&"upload-env") {
                ".env put back"
            } else {
                "nothing had changed"
            },
            run.env.name,
            run.version
        ),
        signals::exit_code(sig),
    ))
}

/// The new version passed its gate and runs, but its records could not be written (`errors`):
/// says so, what the records still say, and how to repair them (exit 5).
pub fn unrecorded(run: &mut Run, errors: &[String]) -> Verdict {
    let version = run.version;
    eprintln!(
        "\n!!!!! {version} passed its gate and runs on {}, but recording it FAILED:",
        run.st.server
    );
    for e in errors {
        eprintln!("  - {}", run.sh.mask(e));
    }
    eprintln!(
        "the server's records still name {} as the last good version.\nrepair: cargo xtask deploy --env {} --tag {version}   (verifies the running version and writes its records again)",
        if run.last_good.is_empty() {
            "nothing"
        } else {
            run.last_good
        },
        run.env.name
    );
    (
        format!(
            "recording it failed ({}); repair with `cargo xtask deploy --env {} --tag {version}`",
            errors
                .iter()
                .map(|e| e.split(':').next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(", "),
            run.env.name
        ),
        exit::RECORD_FAILED,
        None,
    )
}
