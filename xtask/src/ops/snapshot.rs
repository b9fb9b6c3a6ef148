//! Snapshot operations over the one SSH connection (contract §1 "tar backup", §7 "check the data
//! volume"). Since issue 13 a snapshot is made and verified ON the server (`tar | zstd -T0`, GNU
//! tar's listing and per-entry sha256 read back from the archive written): only a small reply
//! crosses the connection and the xtask writes the manifest from it, last, by rename. Without
//! GNU tar, zstd or sha256sum on the server, the stream through the controller
//! (`ops::snapshot_stream`, how every earlier snapshot was made) is the fallback, with a warning.
//! Both make the same three files; `verify` and `restore` read either.

use super::snapshot_delta as delta;
use super::snapshot_stream::{self as stream, check_stream, Made};
pub use super::snapshot_stream::{read_back, read_manifest};
use super::steps::Steps;
use crate::config::Env;
use crate::core::exit::fail;
use crate::core::records::{HistoryRecord, Outcome};
use crate::core::util::{now_rfc3339, random_hex, round3};
use crate::ctx::Ctx;
use crate::plan::{Executor, Step};
use crate::server::snapshot::{self as ss, Access, Delta, Listed, Manifest};
use crate::server::snapshot_delta as sd;
use crate::server::snapshot_remote as sr;
use anyhow::Result;

fn new_id() -> Result<String> {
    let t = now_rfc3339().replace(['-', ':'], "");
    Ok(format!("{t}-{}", random_hex(3)?))
}

/// Where a snapshot is made and checked (issue 13 item 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// On the server: it has GNU tar, zstd and sha256sum.
    Server,
    /// Streamed through the controller; the tools the server lacks (empty: asked for, `--stream`).
    Stream(Vec<String>),
}

/// What the `snapshot-tools` step found on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where snapshots are made and checked.
    pub route: Route,
    /// Whether the deploy user is root (else the files of the image's user are reached through
    /// a container: [`access`]).
    pub root: bool,
}

/// The route for `server`: [`Route::Server`] when it has every tool of `sr::TOOLS`, otherwise
/// the stream, with a warning naming what is missing (printed once per call); and whether the
/// deploy user is root.
pub fn route(x: &mut Executor, server: &str) -> Result<Found> {
    let out = x.exec(
        &Step::remote(
            "snapshot-tools",
            "Check the server's snapshot tools (tar, zstd, sha256sum) and the deploy user",
            server,
            sr::tools(),
        )
        .read_only(),
    )?;
    let reply = if out.ok { out.stdout.as_str() } else { "" };
    Ok(Found {
        route: choose(sr::missing_tools(reply)),
        root: sr::is_root(reply),
    })
}

/// How the scripts reach the files of the image's user (uid 10001; issue 13 item 3): directly
/// for a root deploy user; else as root in a container of `image` (an image present on the
/// server: the version being deployed or restored, or the running one). A non-root deploy user
/// without such an image is refused (exit 1) before anything is touched; `what` names the
/// operation and `recover` the way out.
pub fn access(root: bool, image: Option<String>, what: &str, recover: &str) -> Result<Access> {
    match (root, image) {
        (true, _) => Ok(Access::Direct),
        (false, Some(image)) => Ok(Access::Container(image)),
        (false, None) => Err(fail(format!(
            "refusing to {what}: the deploy user is not root, so the files of the image's user (uid {}) are reached as root in a container of the observer image, and no image is known here (nothing runs and none is recorded); nothing was stopped or changed\n{recover}",
            crate::core::contract::QTS_UID
        ))),
    }
}

/// The route for the tools a server lacks: none missing → on the server; else the stream, with a
/// warning on stderr.
pub fn choose(missing: Vec<String>) -> Route {
    if missing.is_empty() {
        return Route::Server;
    }
    eprintln!(
        "    warning: {} missing on the server: the snapshot streams through this machine instead (slower; issue 13 — scripts/provision-server.sh installs them)",
        missing.join(", ")
    );
    Route::Stream(missing)
}

/// Takes a snapshot of `server`'s deploy root (used by `snapshot create` and by `deploy`): on the
/// server when it can ([`route`]), else streamed; with `incremental`, on top of the newest
/// suitable snapshot (`ops::snapshot_delta`), full when there is none or the delta fails; a
/// non-root deploy user's tar runs in a container of `image` ([`access`]: refused without one).
/// Errors: a failed write removes the partial file and fails (exit 1).
pub fn create(
    x: &mut Executor,
    env: &Env,
    server: &str,
    version: &str,
    image: Option<String>,
    kind: Kind,
) -> Result<Manifest> {
    let found = route(x, server)?;
    let a = create_access(env, found.root, image)?;
    create_by(x, env, server, version, &found.route, &a, kind)
}

/// What to snapshot, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kind {
    /// Leave `logs/` out.
    pub no_logs: bool,
    /// On top of the newest suitable snapshot (issue 13 item 2) when there is one.
    pub incremental: bool,
}

/// [`access`] for a snapshot's `create`, with its way out.
pub fn create_access(env: &Env, root: bool, image: Option<String>) -> Result<Access> {
    access(
        root,
        image,
        "snapshot",
        &format!(
            "deploy a version first (`cargo xtask deploy --env {} --tag VERSION`), or snapshot as root",
            env.name
        ),
    )
}

/// [`create`] by a chosen route and access (the stream is always full).
pub fn create_by(
    x: &mut Executor,
    env: &Env,
    server: &str,
    version: &str,
    route: &Route,
    access: &Access,
    kind: Kind,
) -> Result<Manifest> {
    let Kind {
        no_logs,
        incremental,
    } = kind;
    let id = new_id()?;
    if let Route::Stream(_) = route {
        return stream::create(x, env, server, &id, version, no_logs, access);
    }
    let partial = format!("{id}.tar.zst.partial");
    let (scanned, valid) = delta::scan(x, env, server, no_logs, incremental);
    if let (true, Some(scanned)) = (incremental, &scanned) {
        match delta::choose_parent(&valid, &env.name, no_logs) {
            Some(parent) => {
                match delta::create(x, env, server, parent, scanned, &partial, access) {
                    Ok(d) => {
                        let made = Made {
                            id: &id,
                            partial: &partial,
                            version,
                            no_logs,
                            size: d.rb.size,
                            sha256: &d.rb.sha256,
                            entries: d.rb.entries,
                            partial_tails: d.tails,
                            delta: d.delta,
                            state: Some(d.state),
                        };
                        return stream::write_manifest(x, env, server, made);
                    }
                    Err(e) => {
                        stream::remove_partial(x, env, server, &partial);
                        eprintln!("    warning: the incremental snapshot failed ({e:#}): taking a full one");
                    }
                }
            }
            None => x.sh.say(&format!(
                "    no snapshot to build on (none with a recorded state, or its chain is {} deep): a full snapshot",
                sd::MAX_DEPTH
            )),
        }
    }
    let made = (|| -> Result<sr::ReadBack> {
        let out = x.exec(&Step::remote(
            "snapshot-create",
            "Archive, compress and hash every entry on the server (one pass: tar | zstd -T0)",
            server,
            sr::create(env, no_logs, &partial, access),
        ))?;
        stream::reply(&out, &partial, server)
    })();
    let rb = match made {
        Ok(rb) => rb,
        Err(e) => {
            stream::remove_partial(x, env, server, &partial);
            return Err(fail(format!(
                "snapshot failed, the partial file was removed: {e:#}"
            )));
        }
    };
    let state = scanned.map(|sc| sd::state_after(&[], &sc, &rb.entries, &rb.windows, &[]));
    let made = Made {
        id: &id,
        partial: &partial,
        version,
        no_logs,
        size: rb.size,
        sha256: &rb.sha256,
        entries: rb.entries,
        partial_tails: rb.partial_tails,
        delta: Delta::default(),
        state,
    };
    stream::write_manifest(x, env, server, made)
}

/// Checks snapshot `m` against its archive: on the server ([`Route::Server`]: only the results
/// cross) or by streaming it. An incremental snapshot is checked with its whole chain (every
/// archive, and that each delta fits its parent). Exit 1 naming the first mismatch or unsafe
/// entry. Returns the chain, full snapshot first (`[m]` for a full one).
pub fn verify(
    x: &mut Executor,
    env: &Env,
    server: &str,
    m: &Manifest,
    route: &Route,
) -> Result<Vec<Manifest>> {
    let chain = if m.delta.parent.is_some() {
        delta::chain(x, env, server, m)?
    } else {
        vec![m.clone()]
    };
    for c in &chain {
        match route {
            Route::Stream(_) if c.delta.parent.is_some() => {
                return Err(fail(format!(
                    "snapshot {} is incremental: it is checked and restored on the server, which lacks {}",
                    c.id,
                    sr::TOOLS.join(", ")
                )))
            }
            Route::Stream(_) => check_stream(x, env, server, c, None)?,
            Route::Server => {
                let checked =
                    read_back(x, env, server, &c.archive.file).and_then(|rb| compare(c, &rb));
                checked.map_err(|e| {
                    if c.id == m.id {
                        e
                    } else {
                        fail(format!("{e:#}\n(in {}, a parent of {})", c.id, m.id))
                    }
                })?;
            }
        }
    }
    Ok(chain)
}

/// The manifest against what the archive holds now (entries in order, then the archive).
pub fn compare(m: &Manifest, rb: &sr::ReadBack) -> Result<()> {
    for (i, e) in rb.entries.iter().enumerate() {
        let want = m
            .entries
            .get(i)
            .ok_or_else(|| fail(format!("entry {} is not in the manifest", e.path)))?;
        if want != e {
            return Err(fail(format!(
                "mismatch at {}: manifest says {} bytes sha256 {}, archive has {} bytes sha256 {}",
                e.path,
                want.size,
                want.sha256.as_deref().unwrap_or("-"),
                e.size,
                e.sha256.as_deref().unwrap_or("-")
            )));
        }
    }
    if rb.entries.len() != m.entries.len() {
        return Err(fail(format!(
            "the archive has {} entries, the manifest {}",
            rb.entries.len(),
            m.entries.len()
        )));
    }
    if rb.sha256 != m.archive.sha256 || rb.size != m.archive.size {
        return Err(fail(format!(
            "archive {} has sha256 {} ({} bytes); the manifest says {} ({} bytes)",
            m.archive.file, rb.sha256, rb.size, m.archive.sha256, m.archive.size
        )));
    }
    Ok(())
}

/// Every snapshot in the backups folder with its state.
pub fn list(x: &mut Executor, env: &Env, server: &str) -> Result<Vec<Listed>> {
    let out = x.run(&Step::remote("list", "List snapshots", server, ss::list(env)).read_only())?;
    Ok(ss::parse_list(env, &out.stdout))
}

/// Restores snapshot `id`: verify, lock, stop, move aside, extract, cut partial tails, start the
/// recorded version behind the health gate. Returns the folder the replaced state was moved to
/// (relative to the deploy root).
pub fn restore(sh: &Ctx, x: &mut Executor, env: &Env, server: &str, id: &str) -> Result<String> {
    let t0 = std::time::Instant::now();
    let Found { route, root } = route(x, server)?;
    let (m, chain) = x.step(&format!("Verify snapshot {id}"), |x| {
        let m = read_manifest(x, env, server, id)?;
        let chain = verify(x, env, server, &m, &route)?;
        Ok((m, chain))
    })?;
    let base = chain.first().cloned().unwrap_or_else(|| m.clone());
    let st = Steps::new(env, server);
    let probe = super::probe(x, &st)?;
    let c = crate::compose::choose(&probe.compose)?;
    // The image a non-root deploy user reaches the image user's files through (issue 13 item 3):
    // the restored version's (pulled below, before anything stops), else the running one's.
    // Without one, refused here: nothing is locked or stopped yet.
    let running = crate::server::tag_of(&probe.running);
    let image = [m.version.as_str(), running.as_str()]
        .into_iter()
        .find(|v| !v.is_empty())
        .map(|v| env.image(v));
    let access = access(
        root,
        image.clone(),
        &format!("restore {id}"),
        &format!(
            "restore as root, or deploy a version first (`cargo xtask deploy --env {e} --tag VERSION`), then `cargo xtask snapshot restore {id} --env {e} --yes`",
            e = env.name
        ),
    )?;
    let lock_id = format!("restore-{id}");
    let holder =
        crate::core::liveness::holder(lock_id.clone(), "restore", super::who(), &m.version);
    // A live holder (a deploy, a maintenance window) refuses the restore, naming it; a stale one
    // is broken (`ops::run::take_lock`).
    super::run::take_lock(x, env, &st.lock(&holder), 0).map_err(|e| {
        fail(format!(
            "{e:#}\nrefusing to restore: nothing was stopped or changed"
        ))
    })?;
    // From here on a signal never stops the restore between its steps: once the service
    // stops, only a started service (or a failure saying it is down) is a safe end.
    x.interruptible = false;
    let stop_here = |x: &mut Executor, before: &str| -> Result<()> {
        match crate::core::signals::pending() {
            Some(sig) => {
                let _ = x.run(&st.unlock(&lock_id));
                Err(crate::plan::interrupted(sig, before))
            }
            None => Ok(()),
        }
    };
    let undo = format!(
        ".restore-undo/{}-before-{id}",
        now_rfc3339().replace(['-', ':'], "")
    );
    // The recorded version's image must be here BEFORE anything stops (it may have been pruned).
    stop_here(x, "pull")?;
    if !m.version.is_empty() {
        let creds = crate::registry::credentials(sh, env);
        if let Err(e) = x.run_step(&st.pull(&m.version, creds.as_ref())) {
            let _ = x.run(&st.unlock(&lock_id));
            return Err(fail(format!(
                "{e:#}\n{} cannot be pulled: nothing was stopped or changed",
                env.image(&m.version)
            )));
        }
    }
    stop_here(x, "Stop the service")?;
    let r = (|| -> Result<()> {
        x.run_step(&st.stop(c))?;
        x.run_step(&Step::remote(
            "aside",
            format!("Move the current state aside to {undo}"),
            server,
            ss::move_aside(env, &undo, &access),
        ))?;
        match &route {
            Route::Server => {
                x.run_step(&Step::remote(
                    "extract",
                    format!("Extract {} (its sha256 checked again first)", base.id),
                    server,
                    sr::extract(
                        env,
                        &base.archive.file,
                        &base.archive.sha256,
                        &env.remote_dir,
                        &access,
                    ),
                ))?;
            }
            Route::Stream(_) => x.step(&format!("Extract {id}"), |x| {
                check_stream(x, env, server, &m, Some((&env.remote_dir, &access)))
            })?,
        }
        for d in chain.iter().skip(1) {
            delta::apply(x, env, server, d, &access)?;
        }
        for t in &m.partial_tails {
            x.run_step(&Step::remote(
                "tail",
                format!("Cut the partial last line of {}", t.path),
                server,
                ss::cut_tail(env, t, &access),
            ))?;
        }
        x.run_step(&Step::remote(
            "keep-history",
            "Keep the audit trail: the current history goes back over the snapshot's",
            server,
            ss::keep_history(env, &undo),
        ))?;
        // Every path under config/, logs/ and data/ belongs to the image's user again (a file
        // the snapshot captured with another owner included).
        if let Some(image) = &image {
            x.run_step(&Step::remote(
                "chown",
                "Give config/ logs/ data/ to the image's user (uid 10001) where needed",
                server,
                crate::server::app::chown(env, image),
            ))?;
        }
        Ok(())
    })();
    let started = r.and_then(|_| {
        if m.version.is_empty() {
            eprintln!("    the snapshot records no running version: not starting anything");
            return Ok(());
        }
        x.run_step(&st.upload_env(super::env_text(sh, env, &m.version)?))?;
        let gate = super::start_and_gate(x, &st, &m.version, c)?;
        if !gate.passed() {
            return Err(fail(format!(
                "restored, but {} failed its health gate: {}",
                m.version,
                gate.failed.join("; ")
            )));
        }
        Ok(())
    });
    // The audit trail and the deploy-outcome textfile (issue 15), best effort under the lock.
    let rec = super::stamp(
        sh,
        HistoryRecord {
            kind: "restore".into(),
            version: m.version.clone(),
            outcome: if started.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failed
            },
            who: super::who(),
            when: now_rfc3339(),
            previous: probe.running.clone(),
            snapshot: Some(id.to_string()),
            failed: started
                .as_ref()
                .err()
                .map(|e| vec![sh.mask(&format!("{e:#}"))])
                .unwrap_or_default(),
            duration_s: round3(t0.elapsed().as_secs_f64()),
            steps: super::run::timings(x),
            ..HistoryRecord::default()
        },
    );
    if let Err(e) = x.run_step(&st.history(&rec)) {
        eprintln!(
            "warning: the restore could not be recorded in the history: {}",
            sh.mask(&format!("{e:#}"))
        );
    }
    let _ = x.run(&st.unlock(&lock_id));
    started.map_err(|e| {
        fail(format!(
            "{e:#}\nthe state before the restore is kept in {}/{undo}",
            env.remote_dir
        ))
    })?;
    eprintln!(
        "restored {id}; the state before it is kept in {}/{undo}",
        env.remote_dir
    );
    if let Some(sig) = crate::core::signals::pending() {
        return Err(crate::core::exit::exit_code(
            format!(
                "interrupted by {} during the restore: the restore was finished and {} runs; the lock is released",
                crate::core::signals::name(sig),
                m.version
            ),
            crate::core::signals::exit_code(sig),
        ));
    }
    Ok(undo)
}
