//! `cargo xtask prune [--dry-run] [--env NAME]`: the repository's images beyond `keep_images` and
//! the snapshots beyond `keep_snapshots` (and stale partial files) on the server, never the
//! running or the last good version, nor the snapshot `rollback --restore` would pick (issue 15;
//! the rules and the run are `ops::prune_all`'s).

use crate::config;
use crate::core::exit::usage;
use crate::ctx::Ctx;
use crate::ops::{self, prune_all};
use anyhow::Result;
use clap::Args;

#[derive(Args)]
#[command(after_help = "Exit codes:
  0  pruned (or nothing to prune); under --dry-run: listed, nothing removed
  1  the deploy lock is held, or a step failed (the lock is released; what was removed before
     the failure is printed)
  2  bad usage or an invalid config (nothing touched)")]
pub struct Prune {
    /// The environment (deployment_config.json).
    #[arg(long, default_value = "production")]
    env: String,
    /// List what would be removed (the same scan and the same rules); remove nothing, take no lock.
    #[arg(long)]
    dry_run: bool,
}

impl Prune {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        if env.is_swarm() {
            return Err(usage(format!(
                "{}: prune drives one compose server; a swarm's nodes keep their own images (`docker image prune` on each node)",
                env.name
            )));
        }
        let (mut x, server) = ops::connect(sh, &env, self.dry_run)?;
        let o = prune_all::run(&mut x, &env, &server.name)?;
        let c = &o.choice;
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        println!(
            "kept images: {} (keep_images {}; never {})",
            if c.kept_images.is_empty() {
                "none".to_string()
            } else {
                c.kept_images.join(" ")
            },
            env.cfg.keep_images,
            if c.protected_images.is_empty() {
                "the running or last good version: none recorded".to_string()
            } else {
                c.protected_images.join(", ")
            }
        );
        println!(
            "kept snapshots: {} (keep_snapshots {}; restore targets: {})",
            if c.snapshots.keep.is_empty() {
                "none".to_string()
            } else {
                c.snapshots.keep.join(" ")
            },
            env.cfg.keep_snapshots,
            if c.snapshots.protected.is_empty() {
                "none".to_string()
            } else {
                c.snapshots.protected.join(", ")
            }
        );
        for i in &o.removed {
            println!(
                "{verb} {:<8} {:<40} {:>10}",
                i.kind,
                i.name,
                prune_all::human(i.size)
            );
        }
        for r in &o.refused {
            println!("kept image in use: {r}");
        }
        let total: u64 = o.removed.iter().map(|i| i.size).sum();
        if o.removed.is_empty() {
            println!("nothing to prune");
        } else {
            println!(
                "{} {} in {} item(s) (an image counts the layers no other image uses)",
                if self.dry_run {
                    "would free at least"
                } else {
                    "freed at least"
                },
                prune_all::human(total),
                o.removed.len()
            );
        }
        Ok(())
    }
}
