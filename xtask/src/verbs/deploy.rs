//! `cargo xtask deploy`: verify the release, then over ONE SSH connection: lock, upload, pull
//! before stop, start, health gate, record; roll back automatically when the gate fails
//! (`ops::rollout`).

use crate::config;
use crate::core::exit::{usage, DEPLOY_EXIT_CODES};
use crate::core::util::env_nonempty;
use crate::core::{contract::APP_SECRETS, version};
use crate::ctx::Ctx;
use crate::ops::{self, rollout};
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
}

impl Deploy {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        for n in APP_SECRETS {
            if let Some(v) = env_nonempty(n) {
                sh.secret(&v);
            }
        }
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
        let env = config::environment(sh, &file, &self.env)?;
        let o = rollout::Options {
            strategy: self.strategy,
            rollback: !self.no_rollback,
            no_snapshot: self.no_snapshot,
            dry_run: self.dry_run,
            json: self.json,
            kind: "deploy",
        };
        let (x, _) = ops::connect(sh, &env, o.dry_run)?;
        rollout::deploy(sh, &env, &version, &o, x)
    }
}
