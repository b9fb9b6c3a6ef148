//! `cargo xtask exec [-i] -- CMD…`: a command in the running container (`docker exec`, every
//! word quoted), over the one SSH connection. Its exit status is the command's.

use crate::config;
use crate::core::contract::CONTAINER;
use crate::core::exit::{exit_code, usage};
use crate::core::signals;
use crate::ctx::Ctx;
use crate::ops::{self, stream::Ended};
use crate::server::logs::exec;
use anyhow::{Context, Result};
use clap::Args;
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Args)]
#[command(after_help = "Exit codes:
  N    the command's own exit status (0 when it succeeded); docker's 125-127 when the container
       does not run or the command cannot start; 255 when ssh failed
  1/2  the tool failed before running it (connection, config; 2: bad usage, or engine swarm)
130  interrupted by Ctrl-C without -i (143: SIGTERM): ssh stopped; the command may still run")]
pub struct Exec {
    #[arg(long, default_value = "production")]
    env: String,
    /// Interactive: stdin forwarded, and a TTY (`docker exec -it`, `ssh -t`) when this terminal is one.
    #[arg(short, long)]
    interactive: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<String>,
}

impl Exec {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        if env.is_swarm() {
            return Err(usage(format!(
                "exec: {} runs on a swarm (engine: swarm): its container is a task on some node; \
                 find it with `docker service ps observer_qts-observer` on the manager and run \
                 `docker exec` there",
                env.name
            )));
        }
        let tty = self.interactive && std::io::stdin().is_terminal();
        let text = exec(&self.cmd, self.interactive, tty);
        let (mut x, server) = ops::connect(sh, &env, false)?;
        let expr = if tty {
            x.interactive(&server.name, &text)?
        } else {
            x.stream(&server.name, &text, self.interactive)?
        };
        let handle = expr.start().context("starting ssh")?;
        let ended = if tty {
            // Raw mode: Ctrl-C is a keystroke for the remote command, not a signal here.
            Ended::Exited(handle.wait().context("waiting for ssh")?.status.code())
        } else {
            ops::stream::wait(&handle, || {}, Duration::ZERO)?
        };
        match ended {
            Ended::Exited(Some(0)) => Ok(()),
            Ended::Exited(code) => {
                // The command's status, silently: what it printed says why.
                drop(x);
                std::process::exit(code.unwrap_or(255));
            }
            Ended::Signal(sig) => Err(exit_code(
                format!(
                    "exec: interrupted by {}: ssh stopped; the command may still run in {CONTAINER}",
                    signals::name(sig)
                ),
                signals::exit_code(sig),
            )),
        }
    }
}
