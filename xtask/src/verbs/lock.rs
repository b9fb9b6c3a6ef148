//! `cargo xtask lock status|acquire|release`: inspect the server's deploy lock, open a maintenance
//! window (issue 15), or release and break the lock.

use crate::config;
use crate::core::exit::fail;
use crate::core::liveness::{judge_here, Liveness};
use crate::core::records::{LockHolder, MAINTENANCE};
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
    /// Open a maintenance window: take the deploy lock with a message (-m MSG [--for 2h]).
    ///
    /// The lock's operation is `maintenance`. Deploys, rollbacks and restores are refused (exit 1, naming the message and who holds it)
    /// until `lock release`, or until the end given with --for. The lock outlives this command:
    /// it is never judged stale because its process exited, nor by `lock_ttl_s`.
    Acquire {
        /// Why (shown to everyone the lock refuses, and by `lock status`).
        #[arg(short, long, value_name = "MSG")]
        message: String,
        /// End the window by itself after this long (`90m`, `2h`): after that it is stale and the
        /// next deploy breaks it. Without it the window lasts until `lock release`.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Release the lock: a maintenance window, or a stale lock (older than the TTL, its holder's
    /// process on this machine gone, or its workflow run finished), as it is (no id needed);
    /// another one that is not stale needs --force.
    Release {
        #[arg(long)]
        force: bool,
    },
}

impl Lock {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        if let LockCmd::Acquire { message, .. } = &self.cmd {
            check_message(message)?; // before any connection
        }
        let (mut x, server) = ops::connect(sh, &env, false)?;
        if let LockCmd::Acquire { message, duration } = &self.cmd {
            return acquire(&mut x, &env, &server.name, message, *duration);
        }
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
        let maintenance = h.operation == MAINTENANCE;
        if maintenance {
            println!("lock: maintenance window: \"{}\"", h.message);
        }
        println!(
            "lock: held by {} (pid {}, {}, since {}, {age}s ago{}){}",
            h.who,
            h.pid,
            [
                if h.operation.is_empty() {
                    "deploying"
                } else {
                    &h.operation
                },
                &h.version
            ]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
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
            LockCmd::Status | LockCmd::Acquire { .. } => Ok(()),
            LockCmd::Release { force } => {
                // A stale lock (or a maintenance window) is released by its holder's id: if that
                // holder released it and someone else took the lock in between, theirs stays.
                let stale_by_id = (stale || maintenance) && !h.id.is_empty();
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
                    (
                        lock::release(&env, &h.id),
                        if maintenance {
                            "maintenance window ended"
                        } else {
                            "stale"
                        },
                    )
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

/// The end (Unix s) of a window of `d` from `start`. Errors: an end after 9999 (exit 2, before the
/// lock is taken: an RFC 3339 time cannot show it); without --for a window has no end.
fn window_end(start: u64, d: std::time::Duration) -> Result<u64> {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    match start.checked_add(d.as_secs()) {
        Some(end) if end <= LAST => Ok(end),
        _ => Err(crate::core::exit::usage(format!(
            "lock acquire --for {}: ends after the year 9999; give a shorter duration, or leave --for out for a window that lasts until `lock release`",
            humantime::format_duration(d)
        ))),
    }
}

/// A maintenance window's message: says why (not blank), one line of at most 200 characters with
/// no control characters (it is printed by every refused deploy and by `lock status`). Exit 2.
fn check_message(message: &str) -> Result<()> {
    let why = if message.trim().is_empty() {
        "must say why"
    } else if message.chars().count() > 200 {
        "is longer than 200 characters"
    } else if message.chars().any(char::is_control) {
        "holds a control character (a newline, a tab, an escape): one plain line"
    } else {
        return Ok(());
    };
    Err(crate::core::exit::usage(format!(
        "lock acquire: -m MSG {why}; nothing was changed on the server"
    )))
}

/// `lock acquire -m MSG [--for D]`: takes the lock as a maintenance window (the holder record of
/// this process, operation `maintenance`, the message and its end). A held lock refuses it (exit 1)
/// naming the holder; a stale one is broken first (`ops::run::take_lock`).
fn acquire(
    x: &mut crate::plan::Executor,
    env: &config::Env,
    server: &str,
    message: &str,
    duration: Option<std::time::Duration>,
) -> Result<()> {
    check_message(message)?;
    let mut h = crate::core::liveness::holder(
        crate::core::util::random_hex(8)?,
        MAINTENANCE,
        ops::who(),
        "",
    );
    h.message = message.to_string();
    h.expires_epoch = match duration {
        Some(d) => window_end(h.started_epoch, d)?,
        None => 0,
    };
    let st = ops::steps::Steps::new(env, server);
    ops::run::take_lock(x, env, &st.lock(&h), 0)?;
    println!(
        "lock: maintenance window open: \"{message}\"; deploys, rollbacks and restores are refused {}",
        match duration {
            Some(_) => format!(
                "until {} (or `cargo xtask lock release --env {}`)",
                crate::core::util::rfc3339(h.expires_epoch),
                env.name
            ),
            None => format!("until `cargo xtask lock release --env {}`", env.name),
        }
    );
    Ok(())
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn a_window_message_is_one_plain_line() {
        assert!(check_message("disk swap, back at 14:00").is_ok());
        for bad in [
            "",
            "  ",
            "a\nb",
            "\u{1b}[31mred",
            "tab\there",
            &"x".repeat(201),
        ] {
            let e = check_message(bad).unwrap_err();
            assert_eq!(crate::core::exit::code_of(&e), 2, "{bad:?}");
        }
    }

    #[test]
    fn a_window_ending_after_9999_is_refused_before_the_lock() {
        let d = |s| std::time::Duration::from_secs(s);
        assert_eq!(window_end(1_796_370_000, d(7200)).unwrap(), 1_796_377_200);
        let e = window_end(1_796_370_000, d(99_999_999 * 86_400)).unwrap_err();
        assert_eq!(crate::core::exit::code_of(&e), crate::core::exit::USAGE);
        assert!(window_end(1_796_370_000, d(u64::MAX)).is_err());
        assert!(crate::core::util::rfc3339(253_402_300_799).starts_with("9999-12-31"));
    }
}
