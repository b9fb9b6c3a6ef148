//! What `sandbox status` says about the swarm sandbox: healthy (every engine, forwarder and the
//! manager's sshd running as recorded, three nodes ready) or what is missing.

use super::swarm_engine as engine;
use super::swarm_net::{self as net, NODES};
use super::swarm_sshd as sshd;
use crate::ctx::Ctx;
use crate::sandbox_state::{Paths, State, SwarmState};

/// Whether everything recorded runs: every engine, the forwarders (for the current ports), the
/// sshd (with the current configuration), and the manager reports three ready nodes.
fn healthy(sh: &Ctx, p: &Paths, st: &State, sw: &SwarmState) -> bool {
    sw.nodes.iter().all(|n| engine::alive(p, n))
        && net::forwarders_ok(&sw.forward_pids, st)
        && sshd::current(p, sw.sshd_pid)
        && engine::ready_count(sh, &sw.manager().name) == NODES.len()
}

/// One line for `sandbox status`.
pub fn describe(sh: &Ctx, p: &Paths, st: &State) -> String {
    let Some(sw) = &st.swarm else {
        return "not up (`cargo xtask sandbox up --swarm`)".into();
    };
    if healthy(sh, p, st, sw) {
        return format!(
            "{} nodes ready ({}), manager sshd {}@{}:{}",
            NODES.len(),
            sw.nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            st.user,
            sw.ssh_host,
            sw.ssh_port
        );
    }
    let nodes = engine::node_states(sh, &sw.manager().name);
    let stopped: Vec<&str> = sw
        .nodes
        .iter()
        .filter(|n| !engine::alive(p, n))
        .map(|n| n.name.as_str())
        .collect();
    format!(
        "DEGRADED: {} of {} nodes ready{}{}{} (`cargo xtask sandbox node start NAME`, or `cargo xtask sandbox up --swarm`)",
        nodes.iter().filter(|(_, s)| s == "Ready").count(),
        NODES.len(),
        if stopped.is_empty() {
            String::new()
        } else {
            format!("; engine stopped: {}", stopped.join(", "))
        },
        if net::forwarders_ok(&sw.forward_pids, st) {
            ""
        } else {
            "; registry forwarders not running for the current ports"
        },
        if sshd::current(p, sw.sshd_pid) {
            ""
        } else {
            "; the manager's sshd not running or outdated"
        },
    )
}

/// The `swarm` object of `sandbox status --json`: the recorded state, whether it is healthy, and
/// each node's status as the manager reports it.
pub fn status_json(sh: &Ctx, p: &Paths, st: &State) -> serde_json::Value {
    let Some(sw) = &st.swarm else {
        return serde_json::json!({"up": false, "healthy": false, "state": describe(sh, p, st)});
    };
    let reported = engine::node_states(sh, &sw.manager().name);
    let nodes: Vec<serde_json::Value> = sw
        .nodes
        .iter()
        .map(|n| {
            let mut v = serde_json::to_value(n).unwrap_or_default();
            v["engine_running"] = engine::alive(p, n).into();
            v["status"] = reported
                .iter()
                .find(|(h, _)| *h == n.name)
                .map(|(_, s)| s.clone())
                .into();
            v
        })
        .collect();
    let mut v = serde_json::to_value(sw).unwrap_or_default();
    v["up"] = true.into();
    v["healthy"] = healthy(sh, p, st, sw).into();
    v["state"] = describe(sh, p, st).into();
    v["nodes"] = nodes.into();
    v
}
