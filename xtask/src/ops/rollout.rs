//! The rollout of one version on one server, and its rollback decision tree. Over ONE SSH
//! connection: probe, lock, upload, pull while the old version still runs (digest checked), the
//! mounted folders' ownership, the pre-deploy snapshot, start, health gate, record, prune, unlock.
//! When the gate fails: the failed criteria and the container's log, then (unless disabled) the
//! last good version is started again through the same gate.
//!
//! The happy path is ONE list of steps ([`plan`]): `--dry-run` prints it and the run executes it
//! in order (a unit test asserts the ids match).

use super::snapshot;
use super::steps::Steps;
use super::{env_text, who};
use crate::compose::Compose;
use crate::config::Env;
use crate::core::contract::{COMPOSE_PATH, CONFIG_PATH, CONTAINER};
use crate::core::exit::{self, exit_code, fail};
use crate::core::records::{HistoryRecord, LastGood, LockHolder, Outcome, StepTime};
use crate::core::util::{env_nonempty, epoch, hostname, now_rfc3339, random_hex, round3, tail};
use crate::ctx::Ctx;
use crate::plan::{Executor, Plan, Step};
use crate::registry::{self, Client, Creds};
use crate::server::{self, app, gate::Gate};
use anyhow::{Context, Result};
use serde::Serialize;
use std::time::Instant;

/// How a rollout behaves.
pub struct Options {
    /// Roll back to the last good version when the gate fails.
    pub rollback: bool,
    pub no_snapshot: bool,
    pub dry_run: bool,
    pub json: bool,
    /// `deploy` or `rollback` (recorded in the history).
    pub kind: &'static str,
    /// Deploy a version lower than the running one (`--allow-downgrade`; rollback).
    pub allow_downgrade: bool,
    /// Deploy without a digest recorded in the annotated git tag (`--allow-unverified`).
    pub allow_unverified: bool,
}

/// What a deploy uploads and feeds on stdin, read before anything runs.
pub struct Payload {
    pub compose: Vec<u8>,
    pub config: Vec<u8>,
    pub env_text: String,
    pub holder: LockHolder,
}

impl Payload {
    pub fn read(sh: &Ctx, env: &Env, version: &str, kind: &str) -> Result<Payload> {
        Ok(Payload {
            compose: std::fs::read(sh.path(COMPOSE_PATH)).context("reading the compose file")?,
            config: std::fs::read(sh.path(CONFIG_PATH))
                .context("reading deployment_config.json")?,
            env_text: env_text(sh, env, version)?,
            holder: LockHolder {
                id: random_hex(8)?,
                operation: kind.to_string(),
                who: who(),
                host: hostname(),
                pid: std::process::id(),
                version: version.to_string(),
                started: now_rfc3339(),
                started_epoch: epoch(),
            },
        })
    }
}

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
    p.push(st.upload_env(pay.env_text.clone()));
    p.push(st.dirs());
    p.push(st.pull(version, creds));
    p.push(st.chown(version));
    if snapshot {
        p.push(st.snapshot());
    }
    p.push(st.up(version, c));
    p.push(st.gate(version));
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

fn timings(x: &Executor) -> Vec<StepTime> {
    x.timings
        .iter()
        .map(|(s, t)| StepTime {
            step: s.clone(),
            seconds: round3(*t),
        })
        .collect()
}

/// Verifies `version` in the registry and against the digest recorded in the annotated git tag
/// (`provenance`), then rolls it out over `x`, whose SSH session may already be open (rollback
/// reads the history first): still one connection.
pub fn deploy<'a>(
    sh: &'a Ctx,
    env: &'a Env,
    version: &str,
    o: &Options,
    mut x: Executor<'a>,
) -> Result<()> {
    let t0 = Instant::now();
    let creds = registry::credentials(sh, env);
    let image = env.image(version);
    let server = env.servers[0].name.clone();
    let st = Steps::new(env, &server);
    let digest = x.step_of(&st.verify(version), |_| {
        let d = Client::new(sh, env)
            .digest(env.repo_path(), version)?
            .ok_or_else(|| fail(format!("{image} is not in the registry: release it first (`cargo xtask release {version} --env {}`)", env.name)))?;
        super::provenance::verify(sh, env, version, &d, o.allow_unverified)?;
        Ok(d)
    })?;
    let result = rollout(sh, env, version, &digest, o, &mut x, creds.as_ref());
    finish(sh, env, version, &digest, o, &x, t0, result)
}

/// The result of a rollout: (outcome, exit code, rolled back to).
pub type Verdict = (String, u8, Option<String>);

/// Reports a rollout's verdict (summary, `--json`, GitHub step summary) and turns it into the
/// command's result.
#[allow(clippy::too_many_arguments)]
fn finish(
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
    let probe = server::probe::parse(&x.run_step(&st.probe())?.stdout);
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
    eprintln!(
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
    );
    let pay = Payload::read(sh, env, version, o.kind)?;
    let plan = plan(&st, version, digest, c, creds, &pay, !o.no_snapshot);
    if o.dry_run {
        eprintln!("==> Plan (dry run: nothing below is run)");
        plan.print(sh);
        return Ok(("planned (dry run)".into(), 0, None));
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
        snapshot: None,
        t0: Instant::now(),
    };
    let result = run.steps(&plan);
    run.unlock();
    result
}

/// One server's rollout in progress.
struct Run<'r, 'a> {
    sh: &'a Ctx,
    env: &'a Env,
    st: Steps<'a>,
    x: &'r mut Executor<'a>,
    pay: Payload,
    locked: bool,
    c: Compose,
    version: &'r str,
    digest: &'r str,
    last_good: &'r str,
    running: &'r str,
    o: &'r Options,
    snapshot: Option<String>,
    t0: Instant,
}

impl Run<'_, '_> {
    /// Executes the plan's steps in order (verify and probe have run already).
    fn steps(&mut self, plan: &Plan) -> Result<Verdict> {
        for step in &plan.steps {
            match step.id {
                "verify" | "probe" => {}
                "lock" => self.lock(step)?,
                "pull" => self.pull(step)?,
                "snapshot" => {
                    let (env, server) = (self.env, self.st.server.clone());
                    let old = server::tag_of(self.running);
                    let m = self
                        .x
                        .step_of(step, |x| snapshot::create(x, env, &server, &old, false))?;
                    eprintln!("    snapshot {} ({} bytes)", m.id, m.archive.size);
                    self.snapshot = Some(m.id);
                }
                "gate" => {
                    // Anything before this point failed → the running service was never
                    // touched (exit 1).
                    let gate = super::gate(self.x, &self.st, self.version)?;
                    if !gate.passed() {
                        return self.gate_failed(gate);
                    }
                }
                "history" => {
                    let rec = self.record(Outcome::Success, self.o.kind, self.version);
                    self.x.run_step(&self.st.history(&rec))?;
                }
                "prune" => self.prune(step)?,
                "unlock" => self.unlock(),
                _ => {
                    self.x.run_step(step)?;
                }
            }
        }
        Ok(("success".into(), 0, None))
    }

    fn record(&self, outcome: Outcome, kind: &str, version: &str) -> HistoryRecord {
        HistoryRecord {
            kind: kind.into(),
            version: version.into(),
            digest: (version == self.version).then(|| self.digest.to_string()),
            outcome,
            who: who(),
            when: now_rfc3339(),
            previous: self.running.to_string(),
            snapshot: self.snapshot.clone(),
            rollback_of: (version != self.version).then(|| self.version.to_string()),
            failed: Vec::new(),
            duration_s: round3(self.t0.elapsed().as_secs_f64()),
            steps: timings(self.x),
        }
    }

    fn lock(&mut self, step: &Step) -> Result<()> {
        let ttl = self.env.cfg.lock_ttl_s;
        let env = self.env;
        self.x.step_of(step, |x| {
            for attempt in 0..2 {
                let out = x.exec(step)?;
                if out.ok {
                    return Ok(());
                }
                let text = out.stdout.lines().next().unwrap_or("").to_string();
                let h: LockHolder = serde_json::from_str(&text).unwrap_or_default();
                if attempt == 0 && super::holder_dead_here(&h) {
                    eprintln!(
                        "    the lock's holder (pid {} on this machine, deploying {}) is gone: breaking its lock",
                        h.pid, h.version
                    );
                    x.run(&Steps::new(env, &server_of(step)).unlock(&h.id))?;
                    continue;
                }
                let age = epoch().saturating_sub(h.started_epoch);
                let stale = if age > ttl { format!(" — STALE (older than the {ttl}s TTL): break it with `cargo xtask lock release --force`") } else { String::new() };
                return Err(fail(format!(
                    "the deploy lock is held by {} (pid {}, {} {}, since {}){stale}",
                    if h.who.is_empty() { "unknown" } else { &h.who },
                    h.pid,
                    if h.operation.is_empty() { "deploying" } else { &h.operation },
                    h.version,
                    h.started
                )));
            }
            Err(fail("the deploy lock could not be taken"))
        })?;
        self.locked = true;
        Ok(())
    }

    fn unlock(&mut self) {
        if self.locked {
            if let Err(e) = self.x.run_step(&self.st.unlock(&self.pay.holder.id)) {
                eprintln!("warning: the deploy lock could not be released: {e:#}");
            }
            self.locked = false;
        }
    }

    fn pull(&mut self, step: &Step) -> Result<()> {
        let out = self.x.run_step(step)?;
        let got = server::digest_in(&out.stdout, &self.env.repo()).unwrap_or_default();
        if got != self.digest {
            return Err(fail(format!(
                "the server pulled {} with digest {got}, but the registry serves {}: refusing to start it",
                self.env.image(self.version),
                self.digest
            )));
        }
        eprintln!("    pulled {got}");
        Ok(())
    }

    fn prune(&mut self, step: &Step) -> Result<()> {
        let keep = self.env.cfg.keep_images as usize;
        let listing = self.x.run_step(step)?;
        let doomed = app::prune_candidates(&listing.stdout, keep, &[self.version, self.last_good]);
        if !doomed.is_empty() {
            self.x.run(&self.st.rmi(&doomed))?;
        }
        Ok(())
    }

    /// The gate failed: report, record, and roll back (or not).
    fn gate_failed(&mut self, gate: Gate) -> Result<Verdict> {
        let (version, last_good, c) = (self.version, self.last_good, self.c);
        let logs = self
            .x
            .exec(&self.st.logs())
            .map(|o| o.stdout)
            .unwrap_or_default();
        eprintln!("\nhealth gate FAILED for {version}:");
        for f in &gate.failed {
            eprintln!("  - {}", self.sh.mask(f));
        }
        print_fenced(self.sh, "last 50 lines of the container log:", &logs);
        let mut rec = self.record(Outcome::Failed, self.o.kind, version);
        rec.failed = gate.failed.clone();
        self.x.run_step(&self.st.history(&rec))?;
        if !self.o.rollback {
            eprintln!("--no-rollback: {version} is left running for debugging\nrecover: cargo xtask rollback --env {}", self.env.name);
            return Ok((
                "failed (left running: --no-rollback)".into(),
                exit::FAILED,
                None,
            ));
        }
        if last_good.is_empty() || last_good == version {
            let _ = self.x.run_step(&self.st.down(c));
            eprintln!("no last good version to roll back to: the failed container is stopped; the service is DOWN");
            return Ok((
                "failed, nothing to roll back to".into(),
                exit::UNHEALTHY,
                None,
            ));
        }
        eprintln!("\n==> rolling back to {last_good}");
        let (sh, env) = (self.sh, self.env);
        let rb = (|| -> Result<Gate> {
            self.x
                .run_step(&self.st.upload_env(env_text(sh, env, last_good)?))?;
            super::start_and_gate(self.x, &self.st, last_good, c)
        })();
        let ok = matches!(&rb, Ok(g) if g.passed());
        let mut rec = self.record(
            if ok {
                Outcome::Success
            } else {
                Outcome::Failed
            },
            "rollback",
            last_good,
        );
        rec.digest = None;
        if ok {
            self.x.run_step(&self.st.history(&rec))?;
            return Ok((
                "rolled back".into(),
                exit::ROLLED_BACK,
                Some(last_good.to_string()),
            ));
        }
        let _ = self.x.run_step(&self.st.history(&rec));
        let why = match rb {
            Ok(g) => g.failed.join("; "),
            Err(e) => format!("{e:#}"),
        };
        eprintln!(
            "\n!!!!! ROLLBACK FAILED: neither {version} nor {last_good} is healthy on {}: {}\nrecover by hand:\n  cargo xtask status --env {env}\n  cargo xtask lock status --env {env}\n  cargo xtask rollback --env {env} --to <a version that worked>\n  ssh to the server: cd {dir} && docker logs {CONTAINER}",
            self.st.server,
            self.sh.mask(&why),
            env = self.env.name,
            dir = self.env.remote_dir
        );
        Ok(("rollback failed".into(), exit::UNHEALTHY, None))
    }
}

fn server_of(step: &Step) -> String {
    match &step.host {
        crate::plan::Host::Server(s) => s.clone(),
        crate::plan::Host::Local => String::new(),
    }
}

/// Prints remote output so that it cannot inject GitHub workflow commands (`::stop-commands::`).
pub fn print_fenced(sh: &Ctx, title: &str, text: &str) {
    let fence = random_hex(8).unwrap_or_else(|_| "obsfence".into());
    if sh.gha {
        println!("::stop-commands::{fence}");
    }
    eprintln!("{title}\n{}", tail(&sh.mask(text), 50));
    if sh.gha {
        println!("::{fence}::");
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
