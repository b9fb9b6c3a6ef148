//! `status` and `check-env --remote` on a swarm (issue 14).

use super::{running_version, SwarmSteps};
use crate::config::Env;
use crate::ctx::Ctx;
use crate::plan::{Executor, Step};
use crate::server::swarm::{self, SERVICE};
use anyhow::Result;

/// `status` on a swarm: the service, its tasks per node, the nodes, last good and the lock.
pub fn status(sh: &Ctx, env: &Env, x: &mut Executor, json: bool) -> Result<()> {
    let server = env.servers[0].name.clone();
    let step = Step::remote(
        "status",
        "Read the swarm's state",
        &server,
        swarm::status(env),
    )
    .read_only();
    let out = x.run(&step)?;
    let p = swarm::parse(&out.stdout);
    if json {
        let v = serde_json::json!({
            "env": env.name,
            "engine": "swarm",
            "manager": server,
            "swarm": p.swarm,
            "version": running_version(&p),
            "image": p.service.as_ref().map(|s| s.image.clone()),
            "update": p.service.as_ref().map(|s| s.update.clone()),
            "node": p.running_task().map(|t| t.node.clone()),
            "state": p.running_task().map(|t| t.state.clone()).unwrap_or_else(|| "not running".into()),
            "tasks": p.tasks.iter().map(|t| serde_json::json!({
                "id": t.id, "node": t.node, "desired": t.desired, "state": t.state,
                "image": t.image, "error": t.error,
            })).collect::<Vec<_>>(),
            "nodes": p.nodes.iter().map(|n| serde_json::json!({
                "hostname": n.hostname, "state": n.state, "availability": n.availability,
                "role": n.role, "label": n.label, "paused_by_deploy": !n.paused_by.is_empty(),
            })).collect::<Vec<_>>(),
            "last_good": p.last_good.as_ref().map(|l| format!("{} {}", l.version, l.digest)),
            "lock": (!p.lock.is_empty()).then(|| p.lock.clone()),
        });
        println!("{}", sh.mask(&serde_json::to_string_pretty(&v)?));
        return Ok(());
    }
    println!("env: {} (swarm, manager {server})", env.name);
    match &p.service {
        None => println!("service: none ({SERVICE} does not exist)"),
        Some(s) => println!(
            "service: {SERVICE} {} ({}), update: {}",
            s.version, s.image, s.update
        ),
    }
    match p.running_task() {
        Some(t) => println!("running: on {} — {}", t.node, t.state),
        None => println!("running: no task runs"),
    }
    println!("tasks:");
    for t in &p.tasks {
        println!(
            "  {:<12} {:<10} desired {:<8} {} {}",
            &t.id[..t.id.len().min(12)],
            t.node,
            t.desired,
            t.state,
            sh.mask(&t.error)
        );
    }
    println!("nodes:");
    for n in &p.nodes {
        println!(
            "  {:<10} {:<6} {:<7} {:<8} {}={}{}",
            n.hostname,
            n.state,
            n.availability,
            n.role,
            env.placement_label(),
            if n.label.is_empty() { "-" } else { &n.label },
            if n.paused_by.is_empty() {
                ""
            } else {
                " (paused by a deploy)"
            }
        );
    }
    println!(
        "last good: {}",
        p.last_good
            .as_ref()
            .map(|l| format!("{} {}", l.version, l.digest))
            .unwrap_or_else(|| "none".into())
    );
    println!("lock: {}", if p.lock.is_empty() { "free" } else { &p.lock });
    Ok(())
}

/// `check-env --remote` on a swarm: (check, ok, detail) rows: the manager reachable and active,
/// every node ready, the placement label on a ready node, the deploy root writable.
pub fn remote_checks(env: &Env, x: &mut Executor) -> Result<Vec<(String, bool, String)>> {
    let server = env.servers[0].name.clone();
    let st = SwarmSteps::new(env, &server);
    let out = x.run(&st.probe())?;
    let p = swarm::parse(&out.stdout);
    let mut rows = vec![(
        format!("swarm manager {server}"),
        p.is_manager(),
        format!("docker info: {}", p.swarm),
    )];
    for n in &p.nodes {
        rows.push((
            format!("node {}", n.hostname),
            n.state == "ready",
            format!(
                "{} {} {}={}",
                n.state,
                n.availability,
                env.placement_label(),
                if n.label.is_empty() { "-" } else { &n.label }
            ),
        ));
    }
    let eligible = p.eligible().len();
    rows.push((
        format!("placement label {}=true", env.placement_label()),
        eligible > 0,
        format!("{eligible} ready, active node(s) carry it"),
    ));
    Ok(rows)
}
