//! `cargo xtask`: build, push, tag, deploy, snapshot, roll back and check the observer.
//! This file only parses and dispatches. The layers, each using only those below it (a unit test
//! in `layers.rs` enforces it): `core` → `ctx`, `sandbox_state` → `config`, `transport`,
//! `compose`, `registry` → `plan` → `server` → `ops` → `verbs` → `main`.

mod compose;
mod config;
mod core;
mod ctx;
#[cfg(test)]
mod layers;
mod ops;
mod plan;
mod registry;
mod sandbox_state;
mod server;
mod transport;
mod verbs;

use crate::core::exit::{code_of, EXIT_CODES};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use verbs::*;

#[derive(Parser)]
#[command(name = "cargo xtask", version, about = "Deployment automation of the observer service", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Print each remote script (secrets masked; they travel on stdin) on stderr as it runs.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    /// Print only the result: no step headers or progress (warnings and errors still print).
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// The local stand-in for GHCR and the VM: a registry and an sshd on 127.0.0.1.
    Sandbox(sandbox::Sandbox),
    /// Check tools, contract variables, secrets (set/unset only), paths and the compose contract.
    CheckEnv(check_env::CheckEnv),
    /// Build, push and tag an immutable release (vX.Y.Z), verified by digest.
    Release(release::Release),
    /// Deploy a released version over SSH behind a health gate; roll back on failure.
    Deploy(deploy::Deploy),
    /// Go back to the last good version (or --to VERSION) through the same health gate.
    Rollback(rollback::Rollback),
    /// Per server: running version and digest, health, last good version, lock, recent history.
    Status(status::Status),
    /// Inspect or break the server's deploy lock.
    Lock(lock::Lock),
    /// See it work: sandbox up, release two demo versions, deploy both, print status.
    Demo,
    /// Verified backups of the server's state: create, list, verify, restore, prune, download.
    Snapshot(snapshot::Snapshot),
    /// Benchmarks against a baseline, side by side: gap, overhead, rollback, snapshot, build.
    Bench(bench::Bench),
    /// The container's log and logs/observer.log (-f follows until Ctrl-C).
    Logs(logs::Logs),
    /// Run a command in the running container (-i: interactive, with a TTY).
    Exec(exec::Exec),
    /// The audit trail: every deploy, rollback and restore, who, from where, outcome, duration.
    History(history::History),
    /// The resolved environment, with the source of each value; secrets masked.
    Config(show_config::ShowConfig),
    /// Remove images and snapshots beyond retention (never the running or last good).
    Prune(prune::Prune),
    /// Prepare a provisioned server over SSH; say what provision-server.sh must do as root.
    Setup(setup::Setup),
    /// The archive-continuity report: every hole in the archive, matched to the history.
    Gaps(gaps::Gaps),
    /// Run every test and linter (the command README.md and .ci/run use).
    Ci(ci::Ci),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let mut sh = match ctx::Ctx::new() {
        Ok(sh) => sh,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    sh.verbosity = ctx::Verbosity::of(cli.verbose, cli.quiet);
    let result = match cli.cmd {
        Cmd::Sandbox(c) => c.run(&sh),
        Cmd::CheckEnv(c) => c.run(&sh),
        Cmd::Ci(c) => c.run(&sh),
        Cmd::Bench(c) => c.run(&sh),
        Cmd::Demo => demo::run(&sh),
        Cmd::Release(c) => c.run(&sh),
        Cmd::Deploy(c) => c.run(&sh),
        Cmd::Rollback(c) => c.run(&sh),
        Cmd::Status(c) => c.run(&sh),
        Cmd::Lock(c) => c.run(&sh),
        Cmd::Snapshot(c) => c.run(&sh),
        Cmd::Logs(c) => c.run(&sh),
        Cmd::Exec(c) => c.run(&sh),
        Cmd::History(c) => c.run(&sh),
        Cmd::Config(c) => c.run(&sh),
        Cmd::Prune(c) => c.run(&sh),
        Cmd::Setup(c) => c.run(&sh),
        Cmd::Gaps(c) => c.run(&sh),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(sh.report(&e, code_of(&e))),
    }
}
