//! `cargo xtask logs`: the container's log (`docker logs`; `docker service logs` on a swarm) and
//! `<remote_dir>/logs/observer.log`, each line prefixed by its source (`[container] `,
//! `[observer.log] `), over the one SSH connection. `-f` streams both until Ctrl-C (exit 130).

use crate::config;
use crate::core::exit::fail;
use crate::core::signals;
use crate::ctx::Ctx;
use crate::ops::{self, stream::Ended};
use crate::plan::Step;
use crate::server::logs::{script, Query};
use anyhow::{Context, Result};
use clap::Args;
use std::time::{Duration, SystemTime};

/// Lines per source when neither `-n` nor `--since` is given.
pub const DEFAULT_LINES: usize = 100;

#[derive(Args)]
#[command(after_help = "Exit codes:
  0  printed (with -f: the stream ended by itself)
  1  the connection or the remote command failed
  2  bad usage or config
130  -f stopped by Ctrl-C (SIGINT; 143: SIGTERM), the remote side stopped too")]
pub struct Logs {
    #[arg(long, default_value = "production")]
    env: String,
    /// Follow both sources until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// Only lines from this long ago on (42m, 2h, 1d; the controller's clock).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// The last N lines of each source (default 100, or all with --since).
    #[arg(short = 'n', long = "lines")]
    lines: Option<usize>,
    /// Only lines matching this extended regular expression (`grep -E`, on the server).
    #[arg(long)]
    grep: Option<String>,
}

impl Logs {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        let since = match self.since {
            Some(d) => Some(since_time(SystemTime::now(), d)?),
            None => None,
        };
        let tail = match (self.lines, &since) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_LINES),
        };
        let qy = Query {
            tail,
            since,
            grep: self.grep,
            follow: self.follow,
        };
        let text = script(&env, &qy);
        let has_grep = qy.grep.is_some();
        let (mut x, server) = ops::connect(sh, &env, false)?;
        if !self.follow {
            let out = x
                .run(&Step::remote("logs", "Logs", &server.name, text).read_only())
                .map_err(|e| {
                    if has_grep && format!("{e:#}").contains("--grep is not an extended RE") {
                        crate::core::exit::usage(format!(
                            "logs: the server's grep refused --grep: {e:#}"
                        ))
                    } else {
                        e
                    }
                })?;
            print!("{}", sh.mask(&out.stdout));
            eprint!("{}", sh.mask(&out.stderr));
            return Ok(());
        }
        // The script ends when its stdin closes: this pipe's writer, dropped on Ctrl-C.
        let (reader, writer) = os_pipe::pipe().context("creating a pipe")?;
        let handle = x
            .stream(&server.name, &text, true)?
            .stdin_file(reader)
            .start()
            .context("starting ssh")?;
        match ops::stream::wait(&handle, move || drop(writer), Duration::from_secs(5))? {
            Ended::Exited(Some(0)) => Ok(()),
            Ended::Exited(Some(2)) if has_grep => Err(crate::core::exit::usage(
                "logs -f: the server's grep refused --grep (its message is above)",
            )),
            Ended::Exited(code) => Err(fail(format!(
                "logs -f on {}: the remote side ended with {} (the connection was lost?); run it again",
                server.name,
                code.map_or("a signal".into(), |c| format!("exit {c}"))
            ))),
            Ended::Signal(sig) => {
                // The documented way to stop following: said once, not as an error.
                eprintln!(
                    "logs -f: stopped by {} (the remote side stopped too)",
                    signals::name(sig)
                );
                drop(x);
                std::process::exit(i32::from(signals::exit_code(sig)));
            }
        }
    }
}

/// `--since D` as the RFC 3339 time `now - D` (seconds). Errors: a D reaching before 1970 (exit 2;
/// humantime's formatter panics on such a time).
fn since_time(now: SystemTime, d: Duration) -> Result<String> {
    match now.checked_sub(d) {
        Some(t) if t >= SystemTime::UNIX_EPOCH => {
            Ok(humantime::format_rfc3339_seconds(t).to_string())
        }
        _ => Err(crate::core::exit::usage(format!(
            "--since {}: reaches before 1970; give a shorter duration",
            humantime::format_duration(d)
        ))),
    }
}

#[cfg(test)]
mod since_tests {
    use super::*;

    #[test]
    fn since_before_the_epoch_is_a_usage_error_not_a_panic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_370_000);
        assert_eq!(
            since_time(now, Duration::from_secs(60)).unwrap(),
            "2026-12-04T07:39:00Z"
        );
        let e = since_time(now, Duration::from_secs(99_999 * 86_400)).unwrap_err();
        assert_eq!(crate::core::exit::code_of(&e), crate::core::exit::USAGE);
        assert!(since_time(now, Duration::from_secs(1_796_370_001)).is_err());
    }
}
