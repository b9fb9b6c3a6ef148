//! `bench gap` on the swarm sandbox (issue 14): the archive hole across a good and a broken
//! Swarm update (start-first, same node), beside the compose handoff on one host, in one run.

use super::cases::{Bed, A, B, BENCH_IMAGES, BROKEN};
use super::stats::{largest_gap, row};
use crate::config;
use crate::sandbox_state;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;

const ENV: &str = "sandbox-swarm";

/// The archive in the named volume of the node that runs the observer now.
fn archive(c: &Bed) -> Result<String> {
    let (ok, out, _) = c.run(&["status", "--env", ENV, "--json"])?;
    if !ok {
        bail!("status --env {ENV} failed");
    }
    let v: Value = serde_json::from_str(&out).context("status --json")?;
    let node = v["node"].as_str().unwrap_or("").to_string();
    let st = sandbox_state::load(c.sh).context("the sandbox state")?;
    let sw = st.swarm.context("the swarm sandbox is not up")?;
    let n = sw
        .nodes
        .iter()
        .find(|n| n.name == node)
        .with_context(|| format!("no task runs (node {node:?})"))?;
    Ok(std::fs::read_to_string(
        PathBuf::from(&n.data_root).join("volumes/observer_config/_data/observer/observer.jsonl"),
    )
    .unwrap_or_default())
}

fn deploy(c: &Bed, env: &str, tag: &str) -> Result<(bool, String)> {
    let (ok, out, _) = c.run(
        &[
            &[
                "deploy",
                "--env",
                env,
                "--tag",
                tag,
                "--no-snapshot",
                "--json",
            ][..],
            &BENCH_IMAGES[..],
        ]
        .concat(),
    )?;
    Ok((ok, out))
}

fn exit_code(out: &str) -> i64 {
    serde_json::from_str::<Value>(out)
        .ok()
        .and_then(|v| v["exit_code"].as_i64())
        .unwrap_or(-1)
}

/// Rows: the hole across a good update (baseline: the compose handoff's `handoff_good`, measured
/// in the same run) and across a broken one (baseline: a broken compose handoff, measured here).
pub fn gap_rows(c: &Bed, handoff_good: &[f64]) -> Result<Vec<Value>> {
    let file = config::load(c.sh)?;
    config::environment(c.sh, &file, ENV)?;
    let (mut good, mut broken, mut handoff_broken) = (Vec::new(), Vec::new(), Vec::new());
    // The compose handoff with the broken image (the service runs A or B from `gap`).
    for _ in 0..c.runs {
        c.settle();
        let from = c.archive().lines().count();
        let (ok, out) = deploy(c, "sandbox", BROKEN)?;
        if ok || exit_code(&out) != 3 {
            bail!("the broken bench image on compose: expected exit 3");
        }
        c.settle();
        handoff_broken.push(largest_gap(&c.archive(), from));
    }
    let (ok, _) = deploy(c, ENV, A)?;
    if !ok {
        bail!("deploy {A} to {ENV} failed");
    }
    let mut next = B;
    for _ in 0..c.runs {
        c.settle();
        let before = archive(c)?;
        let from = before.lines().count();
        let (ok, _) = deploy(c, ENV, next)?;
        if !ok {
            bail!("deploy {next} to {ENV} failed");
        }
        c.settle();
        good.push(largest_gap(&archive(c)?, from));
        next = if next == A { B } else { A };
        let from = archive(c)?.lines().count();
        let (ok, out) = deploy(c, ENV, BROKEN)?;
        if ok || exit_code(&out) != 3 {
            bail!("the broken bench image on the swarm: expected exit 3 (Swarm rolled back)");
        }
        c.settle();
        broken.push(largest_gap(&archive(c)?, from));
    }
    Ok(vec![
        row(
            "largest archive hole across a good deploy: swarm start-first (baseline: compose handoff)",
            "s",
            handoff_good,
            &good,
        ),
        row(
            "largest archive hole across a broken deploy: swarm rolled back (baseline: compose handoff)",
            "s",
            &handoff_broken,
            &broken,
        ),
    ])
}
