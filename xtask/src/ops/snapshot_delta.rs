//! Incremental snapshots over the one connection (issue 13 item 2; the scripts and rules are in
//! `server::snapshot_delta`). A deploy's pre-deploy snapshot applies on top of the newest valid
//! snapshot that records a `state` (same `no_logs`, fewer than `MAX_DEPTH` deltas deep) and
//! stores only what changed; with no such parent, or when anything in the incremental path
//! fails, it is a full snapshot (said aloud). `verify` and `restore` read the whole chain.

use super::snapshot_stream::read_manifest;
use crate::config::Env;
use crate::core::exit::fail;
use crate::plan::{Executor, Step};
use crate::server::snapshot::{
    self as ss, Access, Append, Delta, FileState, Manifest, PartialTail,
};
use crate::server::snapshot_delta as sd;
use anyhow::{Context, Result};

/// Scans the deploy root ([`sd::scan`]) and, with `parents`, reads the snapshots' manifests in
/// the same round trip. The scan is `None` (with a note) when it fails or cannot be parsed: the
/// snapshot then records no state and the next one is full. The manifests are the complete
/// snapshots whose archive has the recorded size (`snapshot list`'s "valid"), oldest first.
pub fn scan(
    x: &mut Executor,
    env: &Env,
    server: &str,
    no_logs: bool,
    parents: bool,
) -> (Option<Vec<sd::Scanned>>, Vec<Manifest>) {
    let step = Step::remote(
        "snapshot-scan",
        if parents {
            "List the deploy root's paths (kind, size, mtime, inode) and the snapshots' manifests"
        } else {
            "List the deploy root's paths (kind, size, mtime, inode)"
        },
        server,
        sd::scan(env, no_logs, parents),
    )
    .read_only();
    let out = match x.exec(&step) {
        Ok(o) => o,
        Err(_) => {
            eprintln!("    note: the deploy root could not be scanned: the next snapshot is full");
            return (None, Vec::new());
        }
    };
    let mut valid: Vec<Manifest> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.splitn(4, ' ');
            let (tag, _id, size) = (w.next()?, w.next()?, w.next()?.parse::<u64>().ok()?);
            let m: Manifest = serde_json::from_str(w.next()?).ok()?;
            (tag == "M" && m.archive.size == size).then_some(m)
        })
        .collect();
    valid.sort_by(|a, b| a.id.cmp(&b.id));
    if !out.ok {
        eprintln!("    note: the deploy root could not be scanned: the next snapshot is full");
        return (None, valid);
    }
    match sd::parse_scan(&out.stdout) {
        Ok(v) => (Some(v), valid),
        Err(e) => {
            eprintln!("    note: {e:#}: the next snapshot is full");
            (None, valid)
        }
    }
}

/// The parent an incremental snapshot builds on: the newest of `valid` made for `env`, with the
/// same `no_logs`, a recorded state, and fewer than [`sd::MAX_DEPTH`] deltas under it.
pub fn choose_parent<'m>(valid: &'m [Manifest], env: &str, no_logs: bool) -> Option<&'m Manifest> {
    valid.iter().rev().find(|m| {
        m.env == env && m.no_logs == no_logs && m.state.is_some() && m.delta.depth < sd::MAX_DEPTH
    })
}

/// What an incremental create hands to the manifest writer.
pub struct Made {
    pub rb: crate::server::snapshot_remote::ReadBack,
    pub delta: Delta,
    pub state: Vec<FileState>,
    pub tails: Vec<PartialTail>,
}

/// Writes `partial` as a delta on top of `parent` (the plan from `scanned`) and reads it back.
/// Errors leave the partial file for the caller to remove.
pub fn create(
    x: &mut Executor,
    env: &Env,
    server: &str,
    parent: &Manifest,
    scanned: &[sd::Scanned],
    partial: &str,
    access: &Access,
) -> Result<Made> {
    let before = parent.state.as_deref().unwrap_or_default();
    let plan = sd::plan(before, scanned);
    let out = x.exec(&Step::remote(
        "snapshot-create-delta",
        format!(
            "Archive what changed since {} ({} whole, {} appended, {} unchanged)",
            parent.id,
            plan.whole.len(),
            plan.candidates.len(),
            plan.unchanged.len()
        ),
        server,
        sd::create(env, &plan, partial, access),
    ))?;
    let appended = sd::appended(&out.stdout);
    let appends: Vec<Append> = plan
        .candidates
        .iter()
        .filter(|c| appended.contains(&c.path))
        .map(|c| Append {
            path: c.path.clone(),
            offset: c.offset,
        })
        .collect();
    let rb = super::snapshot_stream::reply(&out, partial, server)?;
    let state = sd::state_after(before, scanned, &rb.entries, &rb.windows, &appends);
    let tails = sd::tails_after(
        &parent.partial_tails,
        &state,
        &rb.entries,
        &rb.partial_tails,
        &appends,
    );
    Ok(Made {
        rb,
        delta: Delta {
            parent: Some(parent.id.clone()),
            depth: parent.delta.depth + 1,
            appends,
            removed: plan.removed,
        },
        state,
        tails,
    })
}

/// `m`'s chain, its full snapshot first and `m` last: each parent's manifest read in turn.
/// Exit 1 naming the first missing parent, a loop, or an append whose offset is not the file's
/// size in the parent's state (the chain does not fit together).
pub fn chain(x: &mut Executor, env: &Env, server: &str, m: &Manifest) -> Result<Vec<Manifest>> {
    let mut v = vec![m.clone()];
    while let Some(p) = v.last().and_then(|c| c.delta.parent.clone()) {
        if v.len() > 64 || v.iter().any(|c| c.id == p) {
            return Err(fail(format!("snapshot {}: its chain loops at {p}", m.id)));
        }
        ss::validate_id(&p)?;
        let child = v.last().map(|c| c.id.clone()).unwrap_or_default();
        let pm = read_manifest(x, env, server, &p).map_err(|e| {
            fail(format!(
                "snapshot {child} is incremental on {p}, which cannot be read: {e:#}"
            ))
        })?;
        v.push(pm);
    }
    v.reverse();
    for w in v.windows(2) {
        fits(&w[0], &w[1])?;
    }
    Ok(v)
}

/// Checks that delta `child` applies on `parent`: each append starts at the file's size in the
/// parent's state.
pub fn fits(parent: &Manifest, child: &Manifest) -> Result<()> {
    let state = parent.state.as_deref().unwrap_or_default();
    for a in &child.delta.appends {
        let size = state.iter().find(|s| s.path == a.path).map(|s| s.size);
        if size != Some(a.offset) {
            return Err(fail(format!(
                "snapshot {} appends to {} at byte {}, but {} records {}",
                child.id,
                a.path,
                a.offset,
                parent.id,
                size.map_or("no such file".to_string(), |s| format!("{s} bytes"))
            )));
        }
    }
    Ok(())
}

/// Applies delta `m` in the deploy root (after its parent's state was restored there).
pub fn apply(
    x: &mut Executor,
    env: &Env,
    server: &str,
    m: &Manifest,
    access: &Access,
) -> Result<()> {
    x.run_step(&Step::remote(
        "apply-delta",
        format!(
            "Apply {} ({} removed, {} appended, its sha256 checked again first)",
            m.id,
            m.delta.removed.len(),
            m.delta.appends.len()
        ),
        server,
        sd::apply(env, m, access),
    ))
    .map(|_| ())
    .with_context(|| format!("applying the incremental snapshot {}", m.id))
}
