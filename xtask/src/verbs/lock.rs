//! `cargo xtask lock status|release [--force]`: inspect or break the server's deploy lock.

use crate::config;
use crate::core::exit::fail;
use crate::core::liveness::{judge_here, Liveness};
use crate::core::records::LockHolder;
use crate::core::util::epoch;
use crate::ctx::Ctx;
use crate::ops;
use crate::plan::Step;
use crate::server::lock;
use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct Lock {
    #[command(subcommand)]
    cmd: LockCmd,
    #[arg(long, default_value = "production", global = true)]
    env: String,
}

#[derive(Subcommand)]
enum LockCmd {
    /// Who holds the deploy lock, since when, and whether it is stale.
    Status,
    /// Release the lock: a stale one (older than the TTL, its holder's process on this machine
    /// gone, or its workflow run finished) as it is; one that is not stale needs --force.
    Release {
        #[arg(long)]
        force: bool,
    },
}

impl Lock {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        let (mut x, server) = ops::connect(sh, &env, false)?;
        let out = x.run(
            &Step::remote("lock-read", "Read the lock", &server.name, lock::read(&env)).read_only(),
        )?;
        let text = out.stdout.trim();
        if text.is_empty() {
            println!("lock: free");
            return Ok(());
        }
        let h: LockHolder = serde_json::from_str(text).unwrap_or_default();
        let age = epoch().saturating_sub(h.started_epoch);
        let verdict = judge_here(&h, env.cfg.lock_ttl_s);
        let stale = matches!(verdict, Liveness::Stale(_));
        println!(
            "lock: held by {} (pid {}, {} {}, since {}, {age}s ago{}){}",
            h.who,
            h.pid,
            if h.operation.is_empty() {
                "deploying"
            } else {
                &h.operation
            },
            h.version,
            h.started,
            h.workflow_run
                .as_ref()
                .map(|r| format!(", workflow run {}", r.url))
                .unwrap_or_default(),
            match &verdict {
                Liveness::Stale(why) => format!(" — STALE: {why}"),
                Liveness::Alive(why) => format!(" — alive: {why}"),
                Liveness::Unknown => format!(
                    " — cannot tell from here whether it runs; stale after the {}s TTL",
                    env.cfg.lock_ttl_s
                ),
            }
        );
        match self.cmd {
            LockCmd::Status => Ok(()),
            LockCmd::Release { force } => {
                // A stale lock is released by its holder's id: if that holder released it and
                // someone else took the lock in between, theirs stays.
                let stale_by_id = stale && !h.id.is_empty();
                if !force && !stale_by_id {
                    return Err(fail(if stale {
                        "the lock is stale but its holder record is unreadable: pass --force to break it"
                    } else {
                        "the lock is held and not stale; a deploy may be running: pass --force to break it"
                    }));
                }
                let (script, how) = if force {
                    (lock::force_release(&env), "forced")
                } else {
                    (lock::release(&env, &h.id), "stale")
                };
                x.run(&Step::remote(
                    "lock-break",
                    "Break the lock",
                    &server.name,
                    script,
                ))?;
                let after = x.run(
                    &Step::remote("lock-read", "Read the lock", &server.name, lock::read(&env))
                        .read_only(),
                )?;
                if after.stdout.trim().is_empty() {
                    println!("lock: released ({how})");
                    Ok(())
                } else {
                    Err(fail(
                        "lock: still held (another holder may have taken it meanwhile; theirs is left alone): see `lock status`",
                    ))
                }
            }
        }
    }
}
