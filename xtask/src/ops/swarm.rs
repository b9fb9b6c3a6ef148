//! The rollout on a Docker Swarm (issue 14), over ONE SSH connection to the manager: probe,
//! lock, upload the stack file and `.env`, pause the other labelled nodes (the new task starts
//! beside the old one, on the node holding the archive), `docker stack deploy`, watch the
//! service's `UpdateStatus` until Swarm settles, soak, resume the paused nodes, record, unlock.
//!
//! `docker stack deploy` returns before anything converged and the CLI exits 0 after Swarm rolled
//! an update back: the verdict comes from the watch, with the deploy exit codes: 0 the new spec
//! converged and its task stayed running for the soak; 3 Swarm rolled back (the last good version
//! runs); 4 neither converged (paused update or rollback, or the watch timed out); 5 records
//! failed after a healthy deploy.

use super::run::{timings, Options, Payload, Run, Verdict};
use super::steps::Steps;
use super::who;
use crate::compose::{self, Compose};
use crate::config::Env;
use crate::core::contract::COMPOSE_PATH;
use crate::core::exit::{self, fail};
use crate::core::records::{HistoryRecord, LastGood, Outcome};
use crate::core::util::{now_rfc3339, round3};
use crate::ctx::Ctx;
use crate::plan::{Executor, Plan, Step};
use crate::registry::Creds;
use crate::server::swarm::{self, Probe, SERVICE, STACK_FILE};
use anyhow::Result;
use std::time::Instant;

/// Every step of a Swarm rollout, built in one place (the plan, the run and the tests).
pub struct SwarmSteps<'a> {
    pub base: Steps<'a>,
}

impl<'a> SwarmSteps<'a> {
    pub fn new(env: &'a Env, server: &str) -> SwarmSteps<'a> {
        SwarmSteps {
            base: Steps::new(env, server),
        }
    }
    fn env(&self) -> &'a Env {
        self.base.env
    }
    fn remote(&self, id: &'static str, title: impl Into<String>, script: String) -> Step {
        Step::remote(id, title, &self.base.server, script)
    }
    pub fn probe(&self) -> Step {
        self.remote(
            "probe",
            format!(
                "Connect to {} and probe the swarm (service, tasks, nodes)",
                self.base.server
            ),
            swarm::probe(self.env()),
        )
        .read_only()
    }
    pub fn upload_stack(&self, text: String) -> Step {
        self.remote(
            "upload-stack",
            format!("Upload {STACK_FILE} (image pinned by digest)"),
            crate::server::app::upload(self.env(), STACK_FILE, "644"),
        )
        .data_stdin(text.into_bytes())
    }
    pub fn resume(&self) -> Step {
        self.remote(
            "resume",
            "Resume the nodes a deploy paused",
            swarm::resume_paused(self.env()),
        )
    }
    pub fn pause(&self, lock_id: &str) -> Step {
        self.remote(
            "pause",
            format!(
                "Pause the other `{}=true` nodes: the new task starts beside the old one (single writer)",
                self.env().placement_label()
            ),
            swarm::pause_others(self.env(), lock_id),
        )
    }
    pub fn stack_deploy(&self, creds: Option<&Creds>) -> Step {
        let data = creds
            .map(|c| format!("{}\n{}\n", c.user, c.token))
            .unwrap_or_default();
        self.remote(
            "stack-deploy",
            format!(
                "docker stack deploy {} (start-first, rollback on failure)",
                swarm::STACK
            ),
            swarm::deploy(self.env(), creds.is_some()),
        )
        .secret_stdin(data.into_bytes())
    }
    /// Seconds the watch waits for Swarm to settle: the health timeout twice (the new task and,
    /// after a failure, the rollback's), the monitor window twice, and a minute for pulls.
    pub fn watch_timeout(&self) -> u64 {
        let c = &self.env().cfg;
        2 * c.health_timeout_s + 2 * c.soak_s.max(5) + 60
    }
    /// `hold`: the node the update is kept on (the running task's), "" for none.
    pub fn watch(&self, image: &str, b: &Before) -> Step {
        self.remote(
            "watch",
            format!(
                "Watch {SERVICE} until Swarm settles (UpdateStatus, tasks; at most {}s)",
                self.watch_timeout()
            ),
            swarm::watch(
                self.env(),
                image,
                &b.since,
                &b.index,
                &b.hold,
                self.watch_timeout(),
            ),
        )
        .read_only()
    }
    pub fn soak(&self, image: &str) -> Step {
        self.remote(
            "soak",
            format!(
                "Soak: the new task keeps running for {}s (no restart, no reschedule)",
                self.env().cfg.soak_s
            ),
            swarm::soak(image, self.env().cfg.soak_s),
        )
        .read_only()
    }
    pub fn service_rollback(&self) -> Step {
        self.remote(
            "service-rollback",
            format!("docker service rollback {SERVICE} (to its previous spec)"),
            swarm::rollback(),
        )
    }
    pub fn logs(&self) -> Step {
        self.remote("logs", "Service logs and recent tasks", swarm::logs())
            .read_only()
    }
}

/// What the probe saw of the service before the deploy, for the watch: its `UpdateStatus`
/// start ("" when there is no service), its spec's version index, and the node of its running
/// task (the node the update is kept on; "" for none).
#[derive(Debug, Clone, Default)]
pub struct Before {
    pub since: String,
    pub index: String,
    pub hold: String,
}

impl Before {
    pub fn of(p: &Probe) -> Before {
        let svc = p.service.as_ref();
        Before {
            since: svc.map(|s| s.update_started.clone()).unwrap_or_default(),
            index: svc.map(|s| s.spec_index.clone()).unwrap_or_default(),
            hold: p.running_task().map(|t| t.node.clone()).unwrap_or_default(),
        }
    }
}

/// The happy path, in order: what `--dry-run` prints and the run executes. `since` is the
/// service's `UpdateStatus.StartedAt` before the deploy ("" when there is no service).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    st: &SwarmSteps,
    version: &str,
    digest: &str,
    stack: &str,
    creds: Option<&Creds>,
    pay: &Payload,
    before: &Before,
) -> Plan {
    let image = swarm::pinned(st.env(), digest);
    let mut p = Plan::default();
    p.push(st.base.verify(version));
    p.push(st.probe());
    p.push(st.base.lock(&pay.holder));
    p.push(st.upload_stack(stack.to_string()));
    p.push(st.base.keep_env());
    p.push(st.base.upload_env(pay.env_text.clone()));
    p.push(st.resume());
    p.push(st.pause(&pay.holder.id));
    p.push(st.stack_deploy(creds));
    p.push(st.watch(&image, before));
    p.push(st.soak(&image));
    p.push(st.resume());
    p.push(st.base.record(&LastGood {
        version: version.into(),
        digest: digest.into(),
    }));
    p.push(st.base.history(&HistoryRecord {
        kind: "deploy".into(),
        version: version.into(),
        digest: Some(digest.into()),
        outcome: Outcome::Success,
        ..HistoryRecord::default()
    }));
    p.push(st.base.unlock(&pay.holder.id));
    p
}

/// Runs the probe and refuses an engine that is not an active swarm manager, or a swarm without
/// a ready, active node carrying the placement label (exit 1, nothing changed).
pub fn probe(x: &mut Executor, st: &SwarmSteps) -> Result<Probe> {
    let step = st.probe();
    let out = x.step_of(&step, |x| x.exec(&step))?;
    let p = swarm::parse(&out.stdout);
    if !out.ok {
        return Err(fail(format!(
            "{}: the probe failed: {}",
            st.base.server,
            out.stderr.trim()
        )));
    }
    if !p.is_manager() {
        return Err(fail(format!(
            "{} is not an active swarm manager (docker info: swarm={:?}): `engine: swarm` needs the manager's address in `servers`",
            st.base.server, p.swarm
        )));
    }
    Ok(p)
}

/// The version the service runs (its `observer.version` label; "" when there is no service).
pub fn running_version(p: &Probe) -> String {
    p.service
        .as_ref()
        .map(|s| s.version.clone())
        .unwrap_or_default()
}

/// Verifies `version` (registry and provenance, as the compose rollout), then rolls it out on the
/// swarm over `x`. `o.kind` is `deploy` or `rollback`.
pub fn deploy<'a>(
    sh: &'a Ctx,
    env: &'a Env,
    version: &str,
    o: &Options,
    mut x: Executor<'a>,
) -> Result<()> {
    let t0 = Instant::now();
    let creds = crate::registry::credentials(sh, env);
    let digest = super::rollout::verify(sh, env, version, o, &mut x)?;
    let result = rollout(sh, env, version, &digest, o, &mut x, creds.as_ref());
    super::rollout::finish(sh, env, version, &digest, o, &x, t0, result)
}

/// The rollout after the controller-side verification.
fn rollout<'a>(
    sh: &'a Ctx,
    env: &'a Env,
    version: &str,
    digest: &str,
    o: &Options,
    x: &mut Executor<'a>,
    creds: Option<&Creds>,
) -> Result<Verdict> {
    let server = env.servers[0].name.clone();
    let st = SwarmSteps::new(env, &server);
    let p = probe(x, &st)?;
    let running = running_version(&p);
    super::provenance::check_downgrade(&running, version, o.allow_downgrade)?;
    let eligible = p.eligible();
    eprintln!(
        "    swarm: {} node(s), {} ready with {}=true; running: {}; last good: {}",
        p.nodes.len(),
        eligible.len(),
        env.placement_label(),
        p.running_task()
            .map(|t| format!("{running} on {}", t.node))
            .unwrap_or_else(|| "nothing".into()),
        p.last_good
            .as_ref()
            .map(|l| l.version.as_str())
            .unwrap_or("none")
    );
    if eligible.is_empty() {
        return Err(fail(format!(
            "no ready, active node carries the label {label}=true, so Swarm could place the observer nowhere (nothing was changed): label one with `docker node update --label-add {label}=true NODE`",
            label = env.placement_label()
        )));
    }
    let pay = Payload::read(sh, env, version, o.kind)?;
    let model = compose::parse_yaml(&String::from_utf8_lossy(&pay.compose))
        .map_err(|e| fail(format!("{COMPOSE_PATH}: {e}")))?;
    let stack = swarm::stack_file(env, &model, version, digest)
        .map_err(|e| fail(format!("{COMPOSE_PATH}: {e:#}")))?;
    let image = swarm::pinned(env, digest);
    let before = Before::of(&p);
    let files = stack_hashes(&pay.env_text, &stack);
    let same = p.service.as_ref().is_some_and(|s| s.image == image)
        && p.running_task().is_some_and(|t| t.image == image)
        && p.files == files;
    let plan = plan(&st, version, digest, &stack, creds, &pay, &before);
    if o.dry_run {
        eprintln!("==> Plan (dry run: nothing below is run)");
        plan.print(sh);
        eprintln!(
            "==> {STACK_FILE} (uploaded by upload-stack)\n{}",
            sh.mask(&stack)
        );
        return Ok(("planned (dry run)".into(), 0, None));
    }
    let last_good = p
        .last_good
        .as_ref()
        .map(|l| l.version.clone())
        .unwrap_or_default();
    let mut run = Run {
        sh,
        env,
        st: Steps::new(env, &server),
        x,
        pay,
        locked: false,
        c: Compose::V2, // unused by the swarm rollout (lock and unlock only)
        version,
        digest,
        last_good: &last_good,
        running: &running,
        o,
        strategy: super::run::Strategy::Handoff,
        snapshot: None,
        t0: Instant::now(),
    };
    run.x.interruptible = false;
    let result = if same {
        repair::already_running(&mut run, &st)
    } else {
        execute(&mut run, &st, &plan)
    };
    // Whatever happened: the nodes this run paused are resumed, the lock released.
    if run.locked {
        let resumed = run.x.run_step(&st.resume());
        for l in resumed.iter().flat_map(|o| o.stdout.lines()) {
            eprintln!("    {}", l.trim());
        }
        if let Err(e) = resumed {
            eprintln!(
                "warning: resuming the paused nodes failed: {} — the next deploy resumes them, or by hand: docker node update --availability active --label-rm {} NODE",
                sh.mask(&format!("{e:#}")),
                swarm::PAUSED_LABEL
            );
        }
    }
    run.unlock();
    result
}

/// sha256 of `.env` and the stack file, the order the probe reports the manager's.
fn stack_hashes(env_text: &str, stack: &str) -> Vec<String> {
    use sha2::{Digest, Sha256};
    [env_text.as_bytes(), stack.as_bytes()]
        .iter()
        .map(|b| crate::core::util::hex(&Sha256::digest(b)))
        .collect()
}

fn history(run: &Run, outcome: Outcome, failed: Vec<String>) -> HistoryRecord {
    super::stamp(
        run.sh,
        HistoryRecord {
            kind: run.o.kind.into(),
            version: run.version.into(),
            digest: Some(run.digest.into()),
            outcome,
            who: who(),
            when: now_rfc3339(),
            previous: run.running.to_string(),
            snapshot: None,
            rollback_of: None,
            failed,
            duration_s: round3(run.t0.elapsed().as_secs_f64()),
            steps: timings(run.x),
            ..HistoryRecord::default()
        },
    )
}

/// Prints the service's logs and recent tasks after a failure.
fn show_logs(run: &mut Run, st: &SwarmSteps) {
    if let Ok(out) = run.x.run(&st.logs()) {
        super::run::print_fenced(
            run.sh,
            "--- the service's last 50 log lines and recent tasks",
            &out.stdout,
        );
    }
}

/// Records a failed rollout in the history (best effort) and returns its verdict.
fn failed(run: &mut Run, st: &SwarmSteps, why: Vec<String>, outcome: String, code: u8) -> Verdict {
    show_logs(run, st);
    let rec = history(run, Outcome::Failed, why);
    if let Err(e) = run.x.run_step(&run.st.history(&rec)) {
        eprintln!(
            "warning: the history record could not be written: {}",
            run.sh.mask(&format!("{e:#}"))
        );
    }
    let to = (code == exit::ROLLED_BACK).then(|| {
        if run.running.is_empty() {
            "the previous spec".to_string()
        } else {
            run.running.to_string()
        }
    });
    (outcome, code, to)
}

/// The steps after the probe; `Ok` carries the verdict.
fn execute(run: &mut Run, st: &SwarmSteps, plan: &Plan) -> Result<Verdict> {
    let before = if run.running.is_empty() {
        "nothing".to_string()
    } else {
        run.running.to_string()
    };
    let mut created = false;
    let mut unrecorded = Vec::new();
    for step in &plan.steps {
        match step.id {
            "verify" | "probe" => {}
            "lock" => run.lock(step)?,
            "stack-deploy" => {
                if let Err(e) = run.x.run_step(step) {
                    let _ = run.x.run_step(&run.st.restore_env());
                    let why = format!("{e:#}");
                    return Ok(failed(
                        run,
                        st,
                        vec![why.clone()],
                        format!("docker stack deploy failed; {before} keeps running"),
                        exit::FAILED,
                    ));
                }
            }
            "watch" => {
                let out = run.x.step_of(step, |x| x.exec(step))?;
                let outcome = swarm::watch_outcome(&out.stdout).to_string();
                let p = swarm::parse(&out.stdout);
                eprintln!("    Swarm: {outcome}");
                for t in p.tasks.iter().take(4) {
                    eprintln!(
                        "    task {} on {}: {} {}",
                        &t.id[..t.id.len().min(12)],
                        t.node,
                        t.state,
                        run.sh.mask(&t.error)
                    );
                }
                match outcome.as_str() {
                    "completed" => {}
                    // The stack deploy changed nothing (the service already had this spec, e.g.
                    // after Swarm rolled back to it): no update comes; the soak still judges it.
                    "unchanged" => {}
                    "created" => created = true,
                    "rollback_completed" => {
                        let msg = p.service.map(|s| s.message).unwrap_or_default();
                        eprintln!(
                            "\n!!! Swarm rolled {} back ({}): {before} runs again",
                            run.version,
                            run.sh.mask(&msg)
                        );
                        return Ok(failed(
                            run,
                            st,
                            vec![format!("swarm rolled back: {msg}")],
                            format!("Swarm rolled back; {before} runs"),
                            exit::ROLLED_BACK,
                        ));
                    }
                    other => {
                        return Ok(failed(
                            run,
                            st,
                            vec![format!("swarm update: {other}")],
                            format!(
                                "Swarm did not converge ({other}); see the tasks above — recover with `docker service rollback {SERVICE}` on the manager or `cargo xtask rollback --env {}`",
                                run.env.name
                            ),
                            exit::UNHEALTHY,
                        ));
                    }
                }
            }
            "soak" => {
                let out = run.x.step_of(step, |x| x.exec(step))?;
                eprintln!("    {}", out.stdout.trim());
                if !out.stdout.starts_with("ok soak") {
                    let why = out
                        .stdout
                        .trim()
                        .trim_start_matches("fail soak ")
                        .to_string();
                    if created {
                        return Ok(failed(
                            run,
                            st,
                            vec![why],
                            "the new service did not stay running (no earlier version to go back to)".into(),
                            exit::UNHEALTHY,
                        ));
                    }
                    return Ok(soak_failed(run, st, why, &before));
                }
            }
            "record" => {
                if let Err(e) = run.x.run_step(step) {
                    unrecorded.push(format!("last_good_tag: {e:#}"));
                }
            }
            "history" => {
                let rec = history(run, Outcome::Success, Vec::new());
                if let Err(e) = run.x.run_step(&run.st.history(&rec)) {
                    unrecorded.push(format!("history: {e:#}"));
                }
            }
            "unlock" => run.unlock(),
            "pause" | "resume" => {
                let out = run.x.run_step(step)?;
                for l in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
                    eprintln!("    {}", l.trim());
                }
            }
            _ => {
                run.x.run_step(step)?;
            }
        }
    }
    if !unrecorded.is_empty() {
        return Ok((
            format!(
                "its records could not be written: {}",
                unrecorded.join("; ")
            ),
            exit::RECORD_FAILED,
            None,
        ));
    }
    Ok(("success".into(), 0, None))
}

/// The update converged but its task did not stay running: Swarm rolls back to the previous
/// spec; exit 3 when that converged, 4 otherwise.
fn soak_failed(run: &mut Run, st: &SwarmSteps, why: String, before: &str) -> Verdict {
    eprintln!(
        "\n!!! {} failed its soak ({why}): rolling back",
        run.version
    );
    let since = run
        .x
        .run(&st.probe())
        .ok()
        .and_then(|o| swarm::parse(&o.stdout).service)
        .map(|s| s.update_started)
        .unwrap_or_default();
    let back = run.x.run_step(&st.service_rollback()).and_then(|_| {
        // No image to find running: the rollback's outcome comes from its UpdateStatus only.
        let w = st.watch(
            "(rollback)",
            &Before {
                since,
                ..Before::default()
            },
        );
        run.x.run_step(&w)
    });
    match back {
        Ok(out) if swarm::watch_outcome(&out.stdout) == "rollback_completed" => failed(
            run,
            st,
            vec![format!("soak: {why}")],
            format!("failed its soak; Swarm rolled back; {before} runs"),
            exit::ROLLED_BACK,
        ),
        Ok(out) => {
            let o = swarm::watch_outcome(&out.stdout).to_string();
            failed(
                run,
                st,
                vec![format!("soak: {why}"), format!("rollback: {o}")],
                format!("failed its soak and the rollback did not converge ({o}): `docker service ps {SERVICE}` on the manager"),
                exit::UNHEALTHY,
            )
        }
        Err(e) => failed(
            run,
            st,
            vec![format!("soak: {why}"), format!("rollback: {e:#}")],
            format!("failed its soak and `docker service rollback` failed: {e:#}"),
            exit::UNHEALTHY,
        ),
    }
}

mod repair;
mod status;

pub use status::{remote_checks, status};

#[cfg(test)]
mod tests;
