//! `cargo xtask status`: per server, the running version and digest, health, last good version,
//! lock, recent history.

use crate::config;
use crate::core::contract::CONTAINER;
use crate::core::records::{LastGood, LockHolder};
use crate::ctx::Ctx;
use crate::ops;
use crate::plan::Step;
use crate::server::{self, field, probe};
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct Status {
    #[arg(long, default_value = "production")]
    env: String,
    #[arg(long)]
    json: bool,
}

impl Status {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        let (mut x, server) = ops::connect(sh, &env, false)?;
        if env.is_swarm() {
            return ops::swarm::status(sh, &env, &mut x, self.json);
        }
        let out = x.run(
            &Step::remote("status", "Status", &server.name, probe::status_script(&env)).read_only(),
        )?;
        let hist = ops::read_history(&mut x, &server.name, &env, 5)?;
        let o = &out.stdout;
        // issue 12: a `qts-observer` of another compose project is not the deployed service.
        let foreign = probe::parse_foreign(o);
        let service_foreign = foreign.iter().any(|f| f.container == CONTAINER);
        let version = if service_foreign {
            String::new()
        } else {
            server::tag_of(field(o, "image"))
        };
        let digest = server::digest_in(field(o, "digests"), &env.repo()).unwrap_or_default();
        let (state, started) = if service_foreign {
            ("", "")
        } else {
            (field(o, "state"), field(o, "started"))
        };
        let lock = field(o, "lock");
        let last_good = LastGood::parse(field(o, "last_good"));
        let holder: Option<LockHolder> = serde_json::from_str(lock).ok();
        let v = serde_json::json!({
            "env": env.name, "server": server.name, "version": version, "digest": digest,
            "state": state, "started": started,
            "last_good_tag": last_good.as_ref().map(|l| &l.version),
            "last_good_digest": last_good.as_ref().map(|l| &l.digest),
            "lock": holder, "history": hist, "foreign": foreign,
        });
        if self.json {
            println!("{}", sh.mask(&serde_json::to_string_pretty(&v)?));
            return Ok(());
        }
        println!(
            "server     {} ({}@{}:{})",
            server.name, server.user, server.host, server.port
        );
        println!(
            "running    {} {}",
            if version.is_empty() {
                "nothing"
            } else {
                &version
            },
            digest
        );
        if service_foreign {
            println!("container  none of the observer project's under the name {CONTAINER}");
        } else {
            println!(
                "container  {} (started {})",
                if state.is_empty() { "absent" } else { state },
                started
            );
        }
        for f in &foreign {
            println!("FOREIGN    {}; {}", f.describe(), f.recovery());
        }
        println!(
            "last good  {}",
            last_good
                .map(|l| format!("{} {}", l.version, l.digest))
                .unwrap_or_else(|| "none".into())
        );
        println!("lock       {}", if lock.is_empty() { "free" } else { lock });
        println!("history (last 5):");
        for h in &hist {
            println!(
                "  {} {} {} {} by {}",
                h.when,
                h.kind,
                h.version,
                h.outcome.as_str(),
                h.who
            );
        }
        Ok(())
    }
}
