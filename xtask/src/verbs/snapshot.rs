//! `cargo xtask snapshot create|list|verify|restore|prune|download`: verified backups of the
//! server's deploy root (the streams are in `ops::snapshot`, the scripts in `server::snapshot`).

use crate::config;
use crate::core::contract::CONTAINER;
use crate::core::exit::{fail, usage};
use crate::ctx::Ctx;
use crate::ops::{self, snapshot, steps::Steps};
use crate::server::{self, snapshot as ss};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::io;
use std::path::PathBuf;

#[derive(Args)]
pub struct Snapshot {
    #[command(subcommand)]
    cmd: SnapshotCmd,
    /// The environment (deployment_config.json).
    #[arg(long, default_value = "production", global = true)]
    env: String,
    /// Print JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Snapshot config/ (with the archive), data/, logs/ and .deploy/ (never .env).
    Create {
        /// Leave logs/ out.
        #[arg(long)]
        no_logs: bool,
        /// Stream the archive through this machine, as before issue 13 (the fallback when the
        /// server lacks zstd; the default makes it on the server).
        #[arg(long)]
        stream: bool,
        /// Store only what changed since the newest snapshot that records its state (as
        /// deploys do; issue 13): appended bytes of grown files, changed files whole. Full
        /// when there is no such snapshot or its chain is 8 deltas deep.
        #[arg(long, conflicts_with = "stream")]
        incremental: bool,
    },
    /// Every snapshot with its state (valid / incomplete / corrupt).
    List,
    /// Re-hash the archive and every entry against the manifest.
    Verify { id: String },
    /// Verify, stop the service, move the current state aside, extract, start the recorded version.
    Restore {
        id: String,
        /// Required when not interactive.
        #[arg(long)]
        yes: bool,
    },
    /// Keep the newest N valid snapshots (default: the environment's keep_snapshots).
    Prune {
        #[arg(long)]
        keep: Option<usize>,
    },
    /// Copy a snapshot's three files to a local directory (hash checked).
    Download {
        id: String,
        #[arg(long, default_value = ".")]
        to: PathBuf,
    },
}

fn confirm(id: &str, yes: bool) -> Result<()> {
    use std::io::IsTerminal;
    if yes {
        return Ok(());
    }
    if !io::stdin().is_terminal() {
        return Err(usage(
            "restore replaces the server's state: pass --yes when not interactive",
        ));
    }
    eprint!(
        "restore {id}: the service stops and the current state is moved aside. Continue? [y/N] "
    );
    let mut line = String::new();
    io::stdin().read_line(&mut line)?;
    if line.trim().eq_ignore_ascii_case("y") {
        Ok(())
    } else {
        Err(fail("restore cancelled"))
    }
}

impl Snapshot {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let mut env = config::environment(sh, &file, &self.env)?;
        match &self.cmd {
            SnapshotCmd::Verify { id }
            | SnapshotCmd::Restore { id, .. }
            | SnapshotCmd::Download { id, .. } => ss::validate_id(id)?,
            _ => {}
        }
        if let SnapshotCmd::Restore { id, yes } = &self.cmd {
            // A restore rewrites .env for the restored version: the secrets this shell lacks
            // keep their server values (README "Secrets"); checked before anything stops.
            env.keep_server_secrets = true;
            ops::secrets::preflight(sh, &env)?;
            confirm(id, *yes)?;
        }
        let (mut x, server) = ops::connect(sh, &env, false)?;
        let s = server.name.clone();
        match self.cmd {
            SnapshotCmd::Create {
                no_logs,
                stream,
                incremental,
            } => {
                let probe =
                    server::probe::parse(&x.run_step(&Steps::new(&env, &s).probe())?.stdout);
                // A foreign `qts-observer` (issue 12) is not the deployed version.
                let version = if probe.foreign.iter().any(|f| f.container == CONTAINER) {
                    String::new()
                } else {
                    server::tag_of(&probe.running)
                };
                let found = snapshot::route(&mut x, &s)?;
                let route = if stream {
                    snapshot::Route::Stream(vec![])
                } else {
                    found.route
                };
                // A non-root deploy user's tar runs in a container of the running version's
                // image, else the last good one's (issue 13 item 3); refused without either.
                let last_good = probe.last_good.map(|l| l.version).unwrap_or_default();
                let image = [version.as_str(), last_good.as_str()]
                    .into_iter()
                    .find(|v| !v.is_empty())
                    .map(|v| env.image(v));
                let access = snapshot::create_access(&env, found.root, image)?;
                let m = x.step("Create the snapshot", |x| {
                    let kind = snapshot::Kind {
                        no_logs,
                        incremental,
                    };
                    snapshot::create_by(x, &env, &s, &version, &route, &access, kind)
                })?;
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({"id": m.id, "size": m.archive.size, "sha256": m.archive.sha256, "entries": m.entries.len(), "version": m.version, "parent": m.delta.parent, "appends": m.delta.appends.len()})
                    );
                } else {
                    println!(
                        "snapshot {} ({} bytes, {} entries, sha256 {}{})",
                        m.id,
                        m.archive.size,
                        m.entries.len(),
                        m.archive.sha256,
                        m.incremental_note()
                    );
                }
            }
            SnapshotCmd::List => {
                let v = snapshot::list(&mut x, &env, &s)?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    for l in &v {
                        let on = l
                            .parent
                            .as_ref()
                            .map(|p| format!("  (on {p})"))
                            .unwrap_or_default();
                        println!(
                            "{:<28} {:<10} {:>12}  {}  {}{on}",
                            l.id, l.state, l.size, l.created, l.version
                        );
                    }
                }
            }
            SnapshotCmd::Verify { id } => {
                let route = snapshot::route(&mut x, &s)?.route;
                let chain = x.step(&format!("Verify snapshot {id}"), |x| {
                    let m = snapshot::read_manifest(x, &env, &s, &id)?;
                    snapshot::verify(x, &env, &s, &m, &route)
                })?;
                if chain.len() > 1 {
                    let ids: Vec<&str> = chain.iter().map(|c| c.id.as_str()).collect();
                    println!("snapshot {id}: valid (its chain: {})", ids.join(" <- "));
                } else {
                    println!("snapshot {id}: valid");
                }
            }
            SnapshotCmd::Restore { id, .. } => {
                ops::secrets::check_kept(&mut x, &env, &s)?;
                let undo = snapshot::restore(sh, &mut x, &env, &s, &id)?;
                if self.json {
                    println!(
                        "{}",
                        serde_json::json!({"id": id, "undo": format!("{}/{undo}", env.remote_dir)})
                    );
                }
            }
            SnapshotCmd::Prune { keep } => {
                // The same rule as a deploy's prune (issue 12): never the snapshot
                // `rollback --restore` would pick for the running or the last good version.
                let keep = keep.unwrap_or(env.cfg.keep_snapshots as usize).max(1);
                let probe = server::probe::parse(&x.run(&Steps::new(&env, &s).probe())?.stdout);
                let running = server::tag_of(&probe.running);
                let last_good = probe.last_good.map(|l| l.version).unwrap_or_default();
                let sel = x.step("Prune snapshots", |x| {
                    ops::prune::prune(x, &env, &s, keep, &[&running, &last_good], None)
                })?;
                println!(
                    "kept {} valid snapshot(s), deleted {}, removed {} stale partial file(s)",
                    sel.keep.len(),
                    sel.delete.len(),
                    sel.stale.len()
                );
            }
            SnapshotCmd::Download { id, to } => {
                // An incremental snapshot needs its chain: every snapshot of it is downloaded.
                let m = snapshot::read_manifest(&mut x, &env, &s, &id)?;
                let chain = if m.delta.parent.is_some() {
                    ops::snapshot_delta::chain(&mut x, &env, &s, &m)?
                } else {
                    vec![m]
                };
                std::fs::create_dir_all(&to)?;
                for m in &chain {
                    for f in [
                        m.archive.file.clone(),
                        format!("{}.sha256", m.archive.file),
                        format!("{}.manifest.json", m.id),
                    ] {
                        let sha =
                            ops::snapshot_stream::download(&mut x, &env, &s, &f, &to.join(&f))?;
                        if f == m.archive.file && sha != m.archive.sha256 {
                            return Err(fail(format!(
                                "downloaded {f} has sha256 {sha}, the manifest says {}",
                                m.archive.sha256
                            )));
                        }
                    }
                }
                if chain.len() > 1 {
                    println!(
                        "{id} is incremental: its chain of {} snapshots was downloaded",
                        chain.len()
                    );
                }
                println!("downloaded {id} to {}", to.display());
            }
        }
        Ok(())
    }
}
