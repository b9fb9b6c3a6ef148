//! `cargo xtask gaps`: the archive-continuity report. Every hole longer than 1.5 intervals in
//! `config/observer/*.jsonl` over the window, its length and the records missed, computed on the
//! server (the image's Python), matched to the deploys, rollbacks and restores of the history
//! that overlap it, or "no deploy: the service was down".

use crate::config;
use crate::core::exit::usage;
use crate::ctx::Ctx;
use crate::ops;
use anyhow::Result;
use clap::Args;
use std::time::Duration;

#[derive(Args)]
#[command(after_help = "Exit codes:
  0  the report was printed (-q: no hole longer than --max-hole)
  1  -q: a hole is longer than --max-hole (nothing printed); otherwise the report failed
  2  bad usage or config (or engine swarm)")]
pub struct Gaps {
    #[arg(long, default_value = "production")]
    env: String,
    /// The window: holes that end within this long ago (24h, 90m, 7d).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    since: Duration,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
    /// With the global -q/--quiet (`cargo xtask -q gaps` or `gaps -q`): print nothing, exit 1 when
    /// a hole is longer than this, 0 otherwise (for monitoring). The longest acceptable hole (5s, 2m; default: 3 intervals).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_hole: Option<Duration>,
}

impl Gaps {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        if env.is_swarm() {
            return Err(usage(format!(
                "gaps: {} runs on a swarm (engine: swarm): the archive lives on the node that runs \
                 the task, which this report does not reach yet; run `python3 -m observer.check` \
                 there",
                env.name
            )));
        }
        let (mut x, server) = ops::connect(sh, &env, false)?;
        let (raw, history) = ops::gaps::fetch(&mut x, &env, &server.name, self.since.as_secs())?;
        let report = ops::gaps::report(
            &env,
            &server.name,
            &raw,
            &history,
            self.max_hole.map(|d| d.as_secs_f64()),
        );
        if sh.verbosity == crate::ctx::Verbosity::Quiet {
            if report.exceeds() {
                drop(x);
                std::process::exit(1);
            }
            return Ok(());
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", ops::gaps::render(&report));
        }
        Ok(())
    }
}
