//! The rollout of one version on one server, and its rollback decision tree. Over ONE SSH
//! connection: probe, lock, upload, pull while the old version still runs (digest checked), the
//! mounted folders' ownership, the pre-deploy snapshot, start, health gate, record, prune images
//! and snapshots, unlock.
//! When the gate fails: the failed criteria and the container's log, then (unless disabled) the
//! last good version is started again through the same gate.
//!
//! The happy path is ONE list of steps ([`plan`]): `--dry-run` prints it and the run executes it
//! in order (a unit test asserts the ids match).

use super::run::{timings, Run};
pub use super::run::{Options, Payload, Strategy, Verdict};
use super::steps::Steps;
use super::{recovery, snapshot};
use crate::compose::Compose;
use crate::config::Env;
use crate::core::contract::CONTAINER;
use crate::core::exit::{self, exit_code, fail};
use crate::core::records::{HistoryRecord, LastGood, Outcome, StepTime};
use crate::core::signals;
use crate::core::util::{env_nonempty, round3};
use crate::ctx::Ctx;
use crate::plan::{Executor, Plan};
use crate::registry::{self, Client, Creds};
use crate::server;
use crate::server::handoff::CANDIDATE;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

/// The happy path of a deploy on one server, in order: what `--dry-run` prints and the run
/// executes. Values only known at run time (the history record's timings, the images to prune)
/// are shown as placeholders.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    st: &Steps,
    version: &str,
    digest: &str,
    c: Compose,
    creds: Option<&Creds>,
    pay: &Payload,
    snapshot: bool,
    strategy: Strategy,
) -> Plan {
    let mut p = Plan::default();
    p.push(st.verify(version));
    p.push(st.probe());
    p.push(st.lock(&pay.holder));
    p.push(st.upload(
        "upload-compose",
        "docker-compose.server.yml",
        pay.compose.clone(),
    ));
    p.push(st.upload(
        "upload-config",
        "deployment_config.json",
        pay.config.clone(),
    ));
    p.push(st.keep_env());
    p.push(st.upload_env(pay.env_text.clone()));
    p.push(st.dirs());
    p.push(st.pull(version, creds));
    p.push(st.chown(version));
    if snapshot {
        p.push(st.snapshot());
    }
    if strategy == Strategy::Handoff {
        p.push(st.clean_candidate());
        p.push(st.candidate(version, c));
        p.push(st.candidate_gate(version));
        p.push(st.soak());
        p.push(st.handoff());
    }
    p.push(st.up(version, c));
    p.push(st.gate(version));
    if strategy == Strategy::Handoff {
        p.push(st.release_candidate());
        p.push(st.remove_candidate());
    }
    p.push(st.record(&LastGood {
        version: version.into(),
        digest: digest.into(),
    }));
    p.push(st.history(&HistoryRecord {
        kind: "deploy".into(),
        version: version.into(),
        digest: Some(digest.into()),
        outcome: Outcome::Success,
        ..HistoryRecord::default()
    }));
    p.push(st.prune());
    p.push(st.prune_snapshots());
    p.push(st.unlock(&pay.holder.id));
    p
}

/// The JSON summary (`--json`) and the GitHub step summary.
#[derive(Serialize)]
pub struct Summary {
    pub env: String,
    pub server: String,
    pub version: String,
    pub digest: String,
    pub outcome: String,
    pub exit_code: u8,
    pub rolled_back_to: Option<String>,
    pub steps: Vec<StepTime>,
    pub elapsed_s: f64,
}

/// Verifies `version` in the registry and against the digest recorded in the annotated git tag
/// (`provenance`; an image index and its own platform image are the same image), then rolls it
/// out over `x`, whose SSH session may already be open (rollback reads the history first): still
/// one connection.
pub fn deploy<'a>(
    sh: &'a Ctx,
    env: &'a Env,
    version: &str,
    o: &Options,
    mut x: Executor<'a>,
) -> Result<()> {
    let t0 = Instant::now();
    let creds = registry::credentials(sh, env);
    let digest = verify(sh, env, version, o, &mut x)?;
    let result = rollout(sh, env, version, &digest, o, &mut x, creds.as_ref());
    finish(sh, env, version, &digest, o, &x, t0, result)
}

/// The `verify` step: `version`'s digest in the registry, checked against the digest recorded in
/// its annotated git tag (`provenance`). Returns the digest.
pub fn verify(sh: &Ctx, env: &Env, version: &str, o: &Options, x: &mut Executor) -> Result<String> {
    let image = env.image(version);
    let st = Steps::new(env, &env.servers[0].name);
    x.step_of(&st.verify(version), |_| {
        let mut client = Client::new(sh, env);
        let d = client
            .digest(env.repo_path(), version)?
            .ok_or_else(|| fail(format!("{image} is not in the registry: release it first (`cargo xtask release {version} --env {}`)", env.name)))?;
        super::provenance::verify(sh, env, version, &d, o.allow_unverified, &mut client)?;
        Ok(d)
    })
}

/// Reports a rollout's verdict (summary, `--json`, GitHub step summary) and turns it into the
/// command's result.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    sh: &Ctx,
    env: &Env,
    version: &str,
    digest: &str,
    o: &Options,
    x: &Executor,
    t0: Instant,
    result: Result<Verdict>,
) -> Result<()> {
    let (outcome, code, rolled_back_to, err) = match result {
        Ok((out, code, to)) => (out, code, to, None),
        Err(e) => ("failed".to_string(), exit::code_of(&e), None, Some(e)),
    };
    let out = Summary {
        env: env.name.clone(),
        server: env.servers[0].name.clone(),
        version: version.to_string(),
        digest: digest.to_string(),
        outcome,
        exit_code: code,
        rolled_back_to,
        steps: timings(x),
        elapsed_s: round3(t0.elapsed().as_secs_f64()),
    };
    step_summary(sh, &out);
    if o.json {
        println!("{}", sh.mask(&serde_json::to_string_pretty(&out)?));
    }
    if let Some(e) = err {
        return Err(e);
    }
    match code {
        0 if o.dry_run => Ok(()),
        0 => {
            eprintln!(
                "\n{} {version} to {}: healthy ({:.1}s)",
                o.kind, out.server, out.elapsed_s
            );
            Ok(())
        }
        exit::ROLLED_BACK => Err(exit_code(
            format!(
                "{version} failed its health gate; rolled back to {} which is healthy again",
                out.rolled_back_to.clone().unwrap_or_default()
            ),
            exit::ROLLED_BACK,
        )),
        exit::RECORD_FAILED => Err(exit_code(
            format!("{version} is deployed and healthy, but {}", out.outcome),
            exit::RECORD_FAILED,
        )),
        c => Err(exit_code(format!("{version} failed ({})", out.outcome), c)),
    }
}

/// Everything after the controller-side verification, over `x`.
pub fn rollout<'a>(
    sh: &'a Ctx,
    env: &'a Env,
    version: &str,
    digest: &str,
    o: &Options,
    x: &mut Executor<'a>,
    creds: Option<&Creds>,
) -> Result<Verdict> {
    let server = env.servers[0].name.clone();
    let st = Steps::new(env, &server);
    let probe = super::probe(x, &st)?;
    super::provenance::check_downgrade(
        &server::tag_of(&probe.running),
        version,
        o.allow_downgrade,
    )?;
    let c = crate::compose::choose(&probe.compose).map_err(|e| fail(format!("{server}: {e:#}")))?;
    let last_good = probe
        .last_good
        .as_ref()
        .map(|l| l.version.clone())
        .unwrap_or_default();
    sh.say(&format!(
        "    compose: {}; running: {}; last good: {}",
        c.describe(),
        if probe.running.is_empty() {
            "nothing"
        } else {
            &probe.running
        },
        if last_good.is_empty() {
            "none"
        } else {
            &last_good
        }
    ));
    let pay = Payload::read(sh, env, version, o.kind)?;
    let running_version = server::tag_of(&probe.running);
    // The version asked for runs and nothing it is given changed: verify it, stop nothing. (A
    // changed `.env` — a new secret value — or config redeploys the same version by handoff.)
    let verify_only = !probe.running.is_empty()
        && running_version == version
        && probe.state.starts_with("running")
        && probe.files == pay.hashes();
    let mut strategy = o.strategy;
    if strategy == Strategy::Handoff
        && !probe.running.is_empty()
        && probe.writer.is_empty()
        && probe.state.starts_with("running")
    {
        eprintln!("    the running observer holds no writer lock (a version from before the handoff): this deploy stops it first (recreate)");
        strategy = Strategy::Recreate;
    }
    let mut run = Run {
        sh,
        env,
        st,
        x,
        pay,
        locked: false,
        c,
        version,
        digest,
        last_good: &last_good,
        running: &probe.running,
        o,
        strategy,
        snapshot: None,
        t0: Instant::now(),
    };
    if verify_only {
        let result = verify_running(&mut run);
        run.unlock();
        return match signals::pending() {
            Some(sig) => interrupted_verdict(sig, version, result),
            None => result,
        };
    }
    let plan = plan(
        &run.st,
        version,
        digest,
        c,
        creds,
        &run.pay,
        !o.no_snapshot,
        strategy,
    );
    if o.dry_run {
        eprintln!("==> Plan (dry run: nothing below is run)");
        plan.print(sh);
        return Ok(("planned (dry run)".into(), 0, None));
    }
    run.x.interruptible = false;
    let result = execute(&mut run, &plan);
    run.unlock();
    match signals::pending() {
        Some(sig) => interrupted_verdict(sig, version, result),
        None => result,
    }
}

/// A rollout that received `sig`: exit `128 + sig` with what happened, unless the service is NOT
/// healthy (exit 4 stays 4: it is what a person must act on first).
fn interrupted_verdict(sig: i32, version: &str, result: Result<Verdict>) -> Result<Verdict> {
    let name = signals::name(sig);
    let code = signals::exit_code(sig);
    match result {
        Ok((outcome, exit::UNHEALTHY, to)) => Ok((
            format!("{outcome} (and interrupted by {name})"),
            exit::UNHEALTHY,
            to,
        )),
        Ok((_, 0, _)) => Err(exit_code(
            format!("interrupted by {name} after the old version stopped: the deploy was finished; {version} runs and is healthy; the lock is released"),
            code,
        )),
        Ok((outcome, _, to)) => Err(exit_code(
            format!(
                "interrupted by {name}: {outcome}{}; the lock is released",
                to.map(|t| format!("; {t} runs")).unwrap_or_default()
            ),
            code,
        )),
        Err(e) if exit::code_of(&e) == exit::UNHEALTHY || exit::code_of(&e) == code => Err(e),
        Err(e) => Err(exit_code(
            format!("interrupted by {name}: {e:#}"),
            code,
        )),
    }
}

/// Redeploying the version that runs: verify it, stop nothing (exit 0 healthy, 1 not). When the
/// server's records do not name it as the last good version (a deploy whose recording failed,
/// exit 5), a healthy verification writes them again under the lock (history kind `repair`).
fn verify_running(run: &mut Run) -> Result<Verdict> {
    let (x, st, version) = (&mut *run.x, &run.st, run.version);
    run.sh.say(&format!(
        "    {version} is already running: verifying it (nothing is stopped or changed)"
    ));
    let mut gate = super::gate_step(x, &st.gate(version))?;
    // This run did not start it: its start line is in its own output (`docker logs`), and
    // `logs/observer.log` may have been rotated since.
    gate.failed.retain(|f| {
        let rotated = f.starts_with("start-line instance ");
        if rotated {
            eprintln!("    (its start line is in its container log; logs/observer.log was rotated since it started)");
        }
        !rotated
    });
    if gate.passed() && run.last_good != version {
        eprintln!(
            "    the records name {} as the last good version: writing {version}'s records again",
            if run.last_good.is_empty() {
                "nothing"
            } else {
                run.last_good
            }
        );
        let lock = run.st.lock(&run.pay.holder);
        run.lock(&lock)?;
        // Under the lock, the two records are written (or fail) as one step: a signal now
        // waits for them, then the lock is released.
        run.x.interruptible = false;
        let lg = LastGood {
            version: version.into(),
            digest: run.digest.into(),
        };
        let rec = run.record(Outcome::Success, "repair", version);
        let (record, history) = (run.st.record(&lg), run.st.history(&rec));
        run.x
            .run_step(&record)
            .and_then(|_| run.x.run_step(&history))
            .map_err(|e| {
                exit_code(
                    format!(
                        "{version} runs and is healthy, but repairing its records failed: {e:#}"
                    ),
                    exit::RECORD_FAILED,
                )
            })?;
        Ok((
            "already running and healthy; records repaired".into(),
            0,
            None,
        ))
    } else if gate.passed() {
        Ok(("already running and healthy".into(), 0, None))
    } else {
        Err(fail(format!(
            "{version} is running but not healthy: {} (nothing was stopped; deploy another version or `cargo xtask rollback`)",
            gate.failed.join("; ")
        )))
    }
}

fn step_summary(sh: &Ctx, o: &Summary) {
    let Some(path) = env_nonempty("GITHUB_STEP_SUMMARY") else {
        return;
    };
    let mut md = format!(
        "## observer deploy: {} → {} on {}\n\n| | |\n|---|---|\n| outcome | **{}** (exit {}) |\n| digest | `{}` |\n| elapsed | {:.1}s |\n\n| step | seconds |\n|---|---|\n",
        o.version, o.env, o.server, o.outcome, o.exit_code, o.digest, o.elapsed_s
    );
    for s in &o.steps {
        md.push_str(&format!(
            "| {} | {:.1} |\n",
            s.step.replace('|', "/"),
            s.seconds
        ));
    }
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        let _ = f.write_all(sh.mask(&md).as_bytes());
    }
}

/// Executes the plan's steps in order (verify and probe have run already); a failing step of
/// the handoff takes its recovery branch.
fn execute(run: &mut Run, plan: &Plan) -> Result<Verdict> {
    // After the old version stopped (or a healthy gate), an interrupted run finishes the deploy:
    // it is the shortest way back to one healthy service.
    let mut finishing = false;
    // A record that could not be written after a healthy gate (exit 5).
    let mut unrecorded: Vec<String> = Vec::new();
    for step in &plan.steps {
        match execute_step(run, step, &mut finishing, &mut unrecorded) {
            Ok(None) => {}
            Ok(Some(v)) => return Ok(v),
            // A step that failed with a signal pending (a second signal cuts the command in
            // flight short) before the old version stopped: undo this run as for a signal
            // between steps, never leave its candidate or its `.env` behind.
            Err(e) => match (finishing, signals::pending()) {
                (false, Some(sig)) if !past_the_point_of_no_return(run, step.id) => {
                    eprintln!("    {}", run.sh.mask(&format!("{e:#}")));
                    return recovery::interrupted(run, sig, &step.title);
                }
                _ => return Err(e),
            },
        }
    }
    if !unrecorded.is_empty() {
        return Ok(recovery::unrecorded(run, &unrecorded));
    }
    Ok(("success".into(), 0, None))
}

/// One step of [`execute`]: `Some` ends the run with that verdict.
fn execute_step(
    run: &mut Run,
    step: &crate::plan::Step,
    finishing: &mut bool,
    unrecorded: &mut Vec<String>,
) -> Result<Option<Verdict>> {
    if let (false, Some(sig)) = (*finishing, signals::pending()) {
        if past_the_point_of_no_return(run, step.id) {
            eprintln!(
                "\n!!! {} received after {} stopped: finishing the deploy of {}",
                signals::name(sig),
                if run.running.is_empty() {
                    "nothing"
                } else {
                    run.running
                },
                run.version
            );
            *finishing = true;
        } else {
            return recovery::interrupted(run, sig, &step.title).map(Some);
        }
    }
    match step.id {
        "verify" | "probe" => {}
        "lock" => run.lock(step)?,
        "pull" => run.pull(step)?,
        "snapshot" => {
            let (env, server) = (run.env, run.st.server.clone());
            let old = server::tag_of(run.running);
            // A non-root deploy user's tar runs in a container of the image just pulled.
            let image = Some(env.image(run.version));
            let m = run.x.step_of(step, |x| {
                snapshot::create(
                    x,
                    env,
                    &server,
                    &old,
                    image,
                    snapshot::Kind {
                        no_logs: false,
                        incremental: true,
                    },
                )
            })?;
            run.sh.say(&format!(
                "    snapshot {} ({} bytes{})",
                m.id,
                m.archive.size,
                m.incremental_note()
            ));
            run.snapshot = Some(m.id);
        }
        "candidate" => {
            if let Err(e) = run.x.run_step(step) {
                return recovery::candidate_failed(run, vec![format!("{e:#}")]).map(Some);
            }
        }
        "candidate-gate" => {
            let gate = super::gate_step(run.x, step)?;
            if !gate.passed() {
                return recovery::candidate_failed(run, gate.failed).map(Some);
            }
        }
        "soak" => {
            let out = run.x.step_of(step, |x| x.exec(step))?;
            run.sh.say(&format!("    {}", out.stdout.trim()));
            if !out.stdout.starts_with("ok soak") {
                let why = out.stdout.trim().trim_start_matches("fail ").to_string();
                return recovery::candidate_failed(run, vec![why]).map(Some);
            }
        }
        "handoff" => {
            if let Err(e) = run.x.run_step(step) {
                return recovery::hand_back_before_up(run, format!("{e:#}")).map(Some);
            }
        }
        "up" if run.strategy == Strategy::Handoff => {
            if let Err(e) = run.x.run_step(step) {
                return recovery::hand_back_after_up(run, vec![format!("{e:#}")]).map(Some);
            }
        }
        "gate" => {
            let gate = super::gate_step(run.x, step)?;
            if !gate.passed() {
                return match run.strategy {
                    Strategy::Handoff => recovery::hand_back_after_up(run, gate.failed),
                    // Anything before this point failed → the running service was never
                    // touched (exit 1).
                    Strategy::Recreate => recovery::gate_failed(run, gate),
                }
                .map(Some);
            }
        }
        "release-candidate" => {
            if let Err(e) = run.x.run_step(step) {
                eprintln!(
                        "\n!!!!! {CONTAINER} did not take the archive over from {CANDIDATE}: {}\nrecover by hand: docker start {CANDIDATE} (it resumes appending), then `cargo xtask status --env {}`",
                        run.sh.mask(&format!("{e:#}")),
                        run.env.name
                    );
                return Ok(Some((
                    "handoff to the service failed".into(),
                    exit::UNHEALTHY,
                    None,
                )));
            }
        }
        "remove-candidate" => {
            let _ = run.x.run_step(step);
        }
        "record" => {
            if let Err(e) = run.x.run_step(step) {
                unrecorded.push(format!("last_good_tag: {e:#}"));
            }
        }
        "history" => {
            let rec = run.record(Outcome::Success, run.o.kind, run.version);
            if let Err(e) = run.x.run_step(&run.st.history(&rec)) {
                unrecorded.push(format!("history: {e:#}"));
            }
        }
        "prune" => {
            if let Err(e) = run.prune(step) {
                eprintln!(
                    "warning: pruning old images failed (the deploy stands): {}",
                    run.sh.mask(&format!("{e:#}"))
                );
            }
        }
        // issue 12: never turns a healthy deploy into a failure (a warning, exit 0).
        "prune-snapshots" => super::prune::after_deploy(run, step),
        "unlock" => run.unlock(),
        _ => {
            run.x.run_step(step)?;
        }
    }
    Ok(None)
}

/// Whether stopping before `id` would leave the service worse than finishing: the old version
/// has stopped (the handoff, or a recreate's `up`, ran), or the new one already passed its gate.
fn past_the_point_of_no_return(run: &Run, id: &str) -> bool {
    let stopped = match run.strategy {
        Strategy::Handoff => run.x.done.contains(&"handoff"),
        Strategy::Recreate => run.x.done.contains(&"up"),
    };
    stopped
        || matches!(
            id,
            "release-candidate" | "remove-candidate" | "record" | "history" | "prune" | "unlock"
        )
}
