//! `cargo xtask rollback`: the last good version (or `--to`), through the same rollout and gate;
//! `--restore` restores the snapshot taken before the running version was deployed.

use crate::config;
use crate::core::exit::{fail, DEPLOY_EXIT_CODES};
use crate::core::records::Outcome;
use crate::core::version;
use crate::ctx::Ctx;
use crate::ops::{self, rollout, secrets, snapshot};
use crate::server::snapshot::validate_id;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
#[command(after_help = DEPLOY_EXIT_CODES)]
pub struct Rollback {
    #[arg(long, default_value = "production")]
    env: String,
    /// The version to go back to (default: the last good version that is not the one running).
    #[arg(long, conflicts_with = "restore")]
    to: Option<String>,
    /// Restore the snapshot taken before the running version was deployed: the data goes back
    /// too, and the version recorded in the snapshot is started.
    #[arg(long)]
    restore: bool,
    /// How the version goes back in: `handoff` (default) or `recreate`.
    #[arg(long, value_enum, default_value = "handoff")]
    strategy: rollout::Strategy,
    #[arg(long)]
    dry_run: bool,
    /// For a secret this shell lacks, keep the value in the server's current .env (instead of
    /// refusing, exit 2). A value this shell has still wins.
    #[arg(long)]
    keep_server_secrets: bool,
    /// Go back to a version with no digest recorded in its annotated git tag (says so loudly).
    #[arg(long)]
    allow_unverified: bool,
    /// When a live holder has the deploy lock, wait up to SECONDS for it (as `deploy --lock-wait`).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    lock_wait: u64,
}

impl Rollback {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let mut env = config::environment(sh, &file, &self.env)?;
        if let Some(v) = &self.to {
            version::validate(v)?;
        }
        env.keep_server_secrets = self.keep_server_secrets;
        secrets::preflight(sh, &env)?;
        // The history is read over the same connection the deploy then uses.
        let (mut x, server) = ops::connect(sh, &env, self.dry_run)?;
        secrets::check_kept(&mut x, &env, &server.name)?;
        if env.is_swarm() {
            if self.restore {
                return Err(crate::core::exit::usage(format!(
                    "{}: --restore applies to compose environments (a swarm's archive lives in the running node's volume)",
                    env.name
                )));
            }
            let flags = (self.dry_run, self.allow_unverified, self.lock_wait);
            return swarm_rollback(sh, &env, self.to, flags, x);
        }
        if self.restore {
            let (running, hist) = ops::running_and_history(&mut x, &env, &server.name)?;
            // The same rule the snapshot prune protects (`ops::prune`, issue 12).
            let id = ops::prune::restore_target(&hist, &running).ok_or_else(|| {
                fail(format!(
                    "no pre-deploy snapshot recorded for the running version {running}"
                ))
            })?;
            validate_id(&id)?;
            if self.dry_run {
                eprintln!("would restore snapshot {id} (taken before {running} was deployed)");
                return Ok(());
            }
            snapshot::restore(sh, &mut x, &env, &server.name, &id)?;
            return Ok(());
        }
        let target = match self.to {
            Some(v) => v,
            None => {
                let (running, hist) = ops::running_and_history(&mut x, &env, &server.name)?;
                previous_good(&hist, &running)?
            }
        };
        sh.say(&format!("rollback to {target}"));
        let o = rollout::Options {
            strategy: self.strategy,
            rollback: false,
            no_snapshot: false,
            dry_run: self.dry_run,
            json: false,
            kind: "rollback",
            // Going back is the point: a lower version is expected.
            allow_downgrade: true,
            allow_unverified: self.allow_unverified,
            lock_wait_s: self.lock_wait,
        };
        rollout::deploy(sh, &env, &target, &o, x)
    }
}

/// A swarm's rollback: the last good version before the running one (or `--to`), by its recorded
/// digest, through the same Swarm rollout (`ops::swarm`).
fn swarm_rollback<'a>(
    sh: &'a Ctx,
    env: &'a config::Env,
    to: Option<String>,
    (dry_run, allow_unverified, lock_wait_s): (bool, bool, u64),
    mut x: crate::plan::Executor<'a>,
) -> Result<()> {
    let server = env.servers[0].name.clone();
    let target = match to {
        Some(v) => v,
        None => {
            let st = ops::swarm::SwarmSteps::new(env, &server);
            let running = ops::swarm::running_version(&ops::swarm::probe(&mut x, &st)?);
            let hist = ops::read_history(&mut x, &server, env, 200)?;
            previous_good(&hist, &running)?
        }
    };
    sh.say(&format!("rollback to {target}"));
    let o = rollout::Options {
        strategy: rollout::Strategy::Handoff,
        rollback: false,
        no_snapshot: true,
        dry_run,
        json: false,
        kind: "rollback",
        allow_downgrade: true,
        allow_unverified,
        lock_wait_s,
    };
    ops::swarm::deploy(sh, env, &target, &o, x)
}

/// The newest version the history records as deployed successfully that is not `running`: what
/// `rollback` goes back to without `--to` (compose and swarm alike).
fn previous_good(hist: &[crate::core::records::HistoryRecord], running: &str) -> Result<String> {
    hist.iter()
        .rev()
        .filter(|r| r.outcome == Outcome::Success)
        .map(|r| r.version.as_str())
        .find(|v| !v.is_empty() && *v != running)
        .map(|s| s.to_string())
        .ok_or_else(|| {
            fail(format!(
                "no earlier good version in the history (running: {running}); pass --to VERSION"
            ))
        })
}
