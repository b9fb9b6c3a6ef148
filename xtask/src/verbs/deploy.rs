//! `cargo xtask deploy`: check the secrets (`ops::secrets`), verify the release against its
//! recorded digest (`ops::provenance`), then over ONE SSH connection: refuse a downgrade, lock,
//! upload, pull before stop, start, health gate, record; roll back automatically when the gate
//! fails (`ops::rollout`).

use crate::config;
use crate::core::exit::{usage, DEPLOY_EXIT_CODES};
use crate::core::util::env_nonempty;
use crate::core::version;
use crate::ctx::Ctx;
use crate::ops::{self, rollout, secrets};
use anyhow::Result;
use clap::Args;

#[derive(Args)]
#[command(after_help = DEPLOY_EXIT_CODES)]
pub struct Deploy {
    /// The environment (deployment_config.json).
    #[arg(long, default_value = "production")]
    env: String,
    /// The version to deploy (default: GITHUB_REF_NAME when GITHUB_REF is refs/tags/...).
    #[arg(long)]
    tag: Option<String>,
    /// How the new version replaces the running one: `handoff` (the running version keeps
    /// observing until its successor is gated and soaked) or `recreate` (stop, then start: for
    /// hosts that cannot run two instances).
    #[arg(long, value_enum, default_value = "handoff")]
    strategy: rollout::Strategy,
    /// With --strategy recreate: on a failed health gate, leave the failed version running for
    /// debugging (exit 1).
    #[arg(long)]
    no_rollback: bool,
    /// Skip the pre-deploy snapshot of the server's state.
    #[arg(long)]
    no_snapshot: bool,
    /// Print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// For a secret this shell lacks, keep the value in the server's current .env (instead of
    /// refusing, exit 2). A value this shell has still wins.
    #[arg(long)]
    keep_server_secrets: bool,
    /// Deploy a version lower than the one running (SemVer precedence); refused otherwise.
    #[arg(long)]
    allow_downgrade: bool,
    /// Deploy even when no digest is recorded for the version in its annotated git tag (says so
    /// loudly). A digest that differs from the recorded one is refused regardless.
    #[arg(long)]
    allow_unverified: bool,
    /// When a live holder (another deploy, a maintenance window) has the deploy lock, wait up to
    /// SECONDS for it to be released instead of failing (polled on the server, over the one SSH
    /// connection). A stale lock is broken at once, as without it.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    lock_wait: u64,
}

impl Deploy {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let version =
            match self.tag.clone() {
                Some(t) => t,
                None => match (env_nonempty("GITHUB_REF"), env_nonempty("GITHUB_REF_NAME")) {
                    (Some(r), Some(n)) if r.starts_with("refs/tags/") => n,
                    _ => return Err(usage(
                        "no version: pass --tag vX.Y.Z (or run on a tag push in GitHub Actions)",
                    )),
                },
            };
        version::validate(&version)?;
        let file = config::load(sh)?;
        let mut env = config::environment(sh, &file, &self.env)?;
        env.keep_server_secrets = self.keep_server_secrets;
        secrets::preflight(sh, &env)?;
        let o = rollout::Options {
            strategy: self.strategy,
            rollback: !self.no_rollback,
            no_snapshot: self.no_snapshot,
            dry_run: self.dry_run,
            json: self.json,
            kind: "deploy",
            allow_downgrade: self.allow_downgrade,
            allow_unverified: self.allow_unverified,
            lock_wait_s: self.lock_wait,
        };
        if env.is_swarm() {
            if self.strategy == rollout::Strategy::Recreate || self.no_rollback {
                return Err(usage(format!(
                    "{}: a swarm updates start-first and rolls back on failure (engine: swarm); --strategy recreate and --no-rollback apply to compose environments only",
                    env.name
                )));
            }
            if !self.no_snapshot {
                eprintln!("note: {}: no pre-deploy snapshot on a swarm (the archive lives in the running node's volume; see README \"Docker Swarm\")", env.name);
            }
        }
        let (mut x, server) = ops::connect(sh, &env, o.dry_run)?;
        secrets::check_kept(&mut x, &env, &server.name)?;
        if env.is_swarm() {
            return ops::swarm::deploy(sh, &env, &version, &o, x);
        }
        rollout::deploy(sh, &env, &version, &o, x)
    }
}
