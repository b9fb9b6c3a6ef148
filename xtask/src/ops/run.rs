//! One server's rollout in progress: the state the rollout and its recovery branches share, and
//! the steps with logic of their own (lock, pull, prune, records).

use super::steps::Steps;
use super::{env_text, who};
use crate::compose::Compose;
use crate::config::Env;
use crate::core::contract::{COMPOSE_PATH, CONFIG_PATH};
use crate::core::exit::fail;
use crate::core::liveness::{self, Liveness};
use crate::core::records::{HistoryRecord, LockHolder, Outcome, StepTime, MAINTENANCE};
use crate::core::util::{now_rfc3339, random_hex, round3, tail};
use crate::ctx::Ctx;
use crate::plan::{Cmd, Executor, Step};
use crate::server::{app, lock};
use anyhow::{Context, Result};
use std::time::Instant;

/// How a new version replaces the running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// Start beside the running version, gate and soak it, then hand the archive over.
    Handoff,
    /// Stop-then-start (hosts that cannot run two instances); roll back on a failed gate.
    Recreate,
}

/// How a rollout behaves.
pub struct Options {
    pub strategy: Strategy,
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
    /// Seconds to wait for a lock held by a live holder before refusing (`--lock-wait`; 0: none).
    pub lock_wait_s: u64,
}

/// What a deploy uploads and feeds on stdin, read before anything runs.
pub struct Payload {
    pub compose: Vec<u8>,
    pub config: Vec<u8>,
    pub env_text: String,
    pub holder: LockHolder,
}

impl Payload {
    /// sha256 of what the deploy uploads: `.env`, the compose file, `deployment_config.json`
    /// (the order the probe reports the server's).
    pub fn hashes(&self) -> Vec<String> {
        use sha2::{Digest, Sha256};
        [self.env_text.as_bytes(), &self.compose, &self.config]
            .iter()
            .map(|b| crate::core::util::hex(&Sha256::digest(b)))
            .collect()
    }

    pub fn read(sh: &Ctx, env: &Env, version: &str, kind: &str) -> Result<Payload> {
        Ok(Payload {
            compose: std::fs::read(sh.path(COMPOSE_PATH)).context("reading the compose file")?,
            config: std::fs::read(sh.path(CONFIG_PATH))
                .context("reading deployment_config.json")?,
            env_text: env_text(sh, env, version)?,
            holder: crate::core::liveness::holder(random_hex(8)?, kind, who(), version),
        })
    }
}

/// The result of a rollout: (outcome, exit code, rolled back to).
pub type Verdict = (String, u8, Option<String>);

/// One server's rollout in progress.
pub struct Run<'r, 'a> {
    pub sh: &'a Ctx,
    pub env: &'a Env,
    pub st: Steps<'a>,
    pub x: &'r mut Executor<'a>,
    pub pay: Payload,
    pub locked: bool,
    pub c: Compose,
    pub version: &'r str,
    pub digest: &'r str,
    pub last_good: &'r str,
    pub running: &'r str,
    pub o: &'r Options,
    /// The strategy this run uses (a legacy running observer forces recreate).
    pub strategy: Strategy,
    pub snapshot: Option<String>,
    pub t0: Instant,
}

impl Run<'_, '_> {
    pub fn record(&self, outcome: Outcome, kind: &str, version: &str) -> HistoryRecord {
        super::stamp(
            self.sh,
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
                ..HistoryRecord::default()
            },
        )
    }

    pub fn lock(&mut self, step: &Step) -> Result<()> {
        take_lock(self.x, self.env, step, self.o.lock_wait_s)?;
        self.locked = true;
        Ok(())
    }

    /// Releases this run's lock; a lock that cannot be released, or that is no longer this run's
    /// (someone broke it meanwhile), is reported with what to do.
    pub fn unlock(&mut self) {
        if self.locked {
            // Never refused by a pending signal: releasing the lock is part of every safe stop.
            let interruptible = std::mem::replace(&mut self.x.interruptible, false);
            let released = self.x.run_step(&self.st.unlock(&self.pay.holder.id));
            self.x.interruptible = interruptible;
            match released {
                Err(e) => eprintln!(
                    "warning: the deploy lock could NOT be released: {}
release it: cargo xtask lock release --env {}",
                    self.sh.mask(&format!("{e:#}")),
                    self.env.name
                ),
                Ok(out) if out.stdout.trim() != "released" => eprintln!(
                    "warning: the deploy lock was no longer this run's ({}): someone broke it meanwhile; see `cargo xtask lock status --env {}`",
                    out.stdout.trim(),
                    self.env.name
                ),
                Ok(_) => {}
            }
            self.locked = false;
        }
    }

    pub fn pull(&mut self, step: &Step) -> Result<()> {
        let out = self.x.run_step(step)?;
        // issue 17: the image may carry several digests (a platform manifest and an index).
        let all = crate::registry::repo_digests(&out.stdout, &self.env.repo());
        let got = if all.iter().any(|d| d == self.digest) {
            self.digest.to_string()
        } else {
            all.join(" ")
        };
        if got != self.digest {
            return Err(fail(format!(
                "the server pulled {} with digest {got}, but the registry serves {}: refusing to start it",
                self.env.image(self.version),
                self.digest
            )));
        }
        self.sh.say(&format!("    pulled {got}"));
        Ok(())
    }

    pub fn prune(&mut self, step: &Step) -> Result<()> {
        let keep = self.env.cfg.keep_images as usize;
        let listing = self.x.run_step(step)?;
        let doomed = app::prune_candidates(&listing.stdout, keep, &[self.version, self.last_good]);
        if !doomed.is_empty() {
            self.x.run(&self.st.rmi(&doomed))?;
        }
        Ok(())
    }
}

/// Runs the lock step `step` (`Steps::lock`, the holder on stdin) under its header. A held lock
/// is judged (`core::liveness`): a stale holder's lock is broken (by its id) and taken; a live or
/// unknown one (or a maintenance window) is waited for up to `wait_s` seconds on the server
/// (`server::lock::acquire_wait`, over the same connection), then refused with exit 1 naming the
/// holder, its maintenance message, and how to recover.
pub fn take_lock(x: &mut Executor, env: &Env, step: &Step, wait_s: u64) -> Result<()> {
    let ttl = env.cfg.lock_ttl_s;
    x.step_of(step, |x| {
        let (mut broke, mut waited) = (false, false);
        let mut attempt = step.clone();
        loop {
            let out = x.exec(&attempt)?;
            if out.ok {
                return Ok(());
            }
            let text = out.stdout.lines().next().unwrap_or("").to_string();
            let h: LockHolder = serde_json::from_str(&text).unwrap_or_default();
            let verdict = liveness::judge_here(&h, ttl);
            if let (false, Liveness::Stale(why)) = (broke, &verdict) {
                eprintln!(
                    "    the lock's holder ({} {}, pid {}) is stale: {why}; breaking its lock",
                    operation(&h),
                    h.version,
                    h.pid
                );
                x.run(&Steps::new(env, &server_of(step)).unlock(&h.id))?;
                broke = true;
                continue;
            }
            if wait_s > 0 && !waited && !matches!(verdict, Liveness::Stale(_)) {
                x.sh.say(&format!(
                    "    the lock is held by {} ({} {}): waiting up to {wait_s}s for it to be released",
                    who_of(&h),
                    operation(&h),
                    h.version
                ));
                // A maintenance window with an end is waited for only until that end: then it
                // is stale and broken (the loop judges it again), not waited on for all of
                // --lock-wait.
                let wait_for = if h.operation == crate::core::records::MAINTENANCE
                    && h.expires_epoch > 0
                {
                    wait_s.min(
                        h.expires_epoch
                            .saturating_sub(crate::core::util::epoch())
                            .saturating_add(1),
                    )
                } else {
                    wait_s
                };
                attempt.cmd = Cmd::Remote(lock::acquire_wait(env, wait_for));
                waited = true;
                continue;
            }
            let waited = if waited {
                format!(" (waited {wait_s}s)")
            } else {
                String::new()
            };
            return Err(fail(refusal(&h, &verdict, env, ttl) + &waited));
        }
    })
}

fn operation(h: &LockHolder) -> &str {
    if h.operation.is_empty() {
        "deploying"
    } else {
        &h.operation
    }
}

fn who_of(h: &LockHolder) -> &str {
    if h.who.is_empty() {
        "unknown"
    } else {
        &h.who
    }
}

/// Why a held lock refuses this run, naming its holder (and a maintenance window's message).
pub fn refusal(h: &LockHolder, verdict: &Liveness, env: &Env, ttl: u64) -> String {
    if h.operation == MAINTENANCE {
        return format!(
            "a maintenance window is open: \"{}\" (the deploy lock is held by {} since {}{}): deploys, rollbacks and restores are refused until `cargo xtask lock release --env {}` ends it",
            h.message,
            who_of(h),
            h.started,
            if h.expires_epoch > 0 {
                format!(", until {}", crate::core::util::rfc3339(h.expires_epoch))
            } else {
                String::new()
            },
            env.name
        );
    }
    let judged = match verdict {
        Liveness::Alive(why) => format!(" — alive: {why}"),
        Liveness::Unknown => format!(" — it may still be running (another machine or PID namespace); it becomes stale after the {ttl}s TTL, or break it with `cargo xtask lock release --force --env {}` once you know it is dead", env.name),
        Liveness::Stale(why) => format!(" — stale ({why}) but it could not be broken"),
    };
    format!(
        "the deploy lock is held by {} (pid {}, {} {}, since {}){}{judged}",
        who_of(h),
        h.pid,
        operation(h),
        h.version,
        h.started,
        h.workflow_run
            .as_ref()
            .map(|r| format!(", workflow run {}", r.url))
            .unwrap_or_default(),
    )
}

pub fn server_of(step: &Step) -> String {
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

pub fn timings(x: &Executor) -> Vec<StepTime> {
    x.timings
        .iter()
        .map(|(s, t)| StepTime {
            step: s.clone(),
            seconds: round3(*t),
        })
        .collect()
}
