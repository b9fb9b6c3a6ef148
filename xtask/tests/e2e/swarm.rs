//! End-to-end: deploys to the swarm sandbox (issue 14): three real engines in network
//! namespaces, the manager reached over SSH.

use crate::common::*;
use crate::release::version;
use std::path::PathBuf;

const ENV: &str = "sandbox-swarm";
const SERVICE: &str = "observer_qts-observer";

/// `(name, socket, data_root)` of every swarm node.
fn nodes() -> Vec<(String, String, String)> {
    let st = state();
    st["swarm"]["nodes"]
        .as_array()
        .expect("the swarm sandbox is up")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["socket"].as_str().unwrap().to_string(),
                n["data_root"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn node(name: &str) -> (String, String, String) {
    nodes().into_iter().find(|n| n.0 == name).unwrap()
}

/// `docker` against the manager's engine.
fn manager(args: &str) -> Run {
    let (_, sock, _) = node("xtsw-m1");
    sh(&format!("docker -H unix://{sock} {args}"))
}

/// Connections the manager's sshd accepted so far.
fn accepted() -> usize {
    std::fs::read_to_string(sandbox_dir().join("swarm/sshd.log"))
        .unwrap_or_default()
        .matches("Accepted publickey")
        .count()
}

fn server_dir() -> PathBuf {
    sandbox_dir().join("swarm/server/observer")
}

/// The archive in `node`'s named volume.
fn archive(node_name: &str) -> Vec<String> {
    let (_, _, root) = node(node_name);
    std::fs::read_to_string(
        PathBuf::from(root).join("volumes/observer_config/_data/observer/observer.jsonl"),
    )
    .unwrap_or_default()
    .lines()
    .map(str::to_string)
    .collect()
}

/// Removes the stack and the tool's records from an earlier run, waiting until no task is left.
fn clean_stack() {
    manager("stack rm observer >/dev/null 2>&1");
    for _ in 0..60 {
        let left = sh(&nodes()
            .iter()
            .map(|(_, s, _)| format!("docker -H unix://{s} ps -aq --filter label=com.docker.stack.namespace=observer"))
            .collect::<Vec<_>>()
            .join("; "));
        let net = manager("network ls -q --filter name=observer_observer");
        if left.stdout.trim().is_empty() && net.stdout.trim().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let _ = std::fs::remove_dir_all(server_dir());
}

fn status(c: &Clone) -> serde_json::Value {
    let r = c.xtask(&["status", "--env", ENV, "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str(&r.stdout).unwrap()
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    for _ in 0..secs {
        if ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("timed out after {secs}s waiting for {what}");
}

#[test]
#[ignore = "e2e: needs the swarm sandbox; run by `cargo xtask ci`"]
pub fn swarm_deploy_rollback_node_loss_and_dry_run() {
    ensure_sandbox();
    ensure_swarm();
    clean_stack();
    let c = Clone::new("swarm");
    let (v1, v2) = (version(), version());
    for v in [&v1, &v2] {
        let r = c.xtask(&["release", v, "--env", "sandbox"]);
        assert_eq!(r.code, 0, "{}", r.all());
    }

    // check-env --remote checks the swarm.
    let r = c.xtask(&["check-env", "--env", ENV, "--remote"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("swarm manager"), "{}", r.stdout);
    assert!(
        r.stdout.contains("placement label observer=true"),
        "{}",
        r.stdout
    );

    // The dry run prints the exact commands and the stack file, and changes nothing.
    let r = c.xtask(&["deploy", "--env", ENV, "--tag", &v1, "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for s in [
        "docker stack deploy --with-registry-auth --resolve-image never -c observer-stack.yml observer",
        "docker service inspect",
        "observer.paused-by-deploy",
        "\"order\": \"start-first\"",
        "\"failure_action\": \"rollback\"",
        "/observer@sha256:",
    ] {
        assert!(r.stderr.contains(s), "dry run lacks {s:?}:\n{}", r.stderr);
    }
    assert!(
        !manager("service ls --format '{{.Name}}'")
            .stdout
            .contains(SERVICE),
        "a dry run must not create the service"
    );

    // A good deploy, then a second one: same node, the other labelled node paused meanwhile.
    let r = c.xtask(&["deploy", "--env", ENV, "--tag", &v1]);
    assert_eq!(r.code, 0, "{}", r.all());
    let s = status(&c);
    assert_eq!(s["version"], v1.as_str(), "{s}");
    let first = s["node"].as_str().unwrap().to_string();
    assert!(first.starts_with("xtsw-w"), "{s}");
    let digest = sh(&format!(
        "cat '{}'",
        server_dir().join(".deploy/last_good_tag").display()
    ));
    assert!(digest.stdout.starts_with(&format!("{v1} sha256:")));
    wait_for("records in the archive", 30, || archive(&first).len() > 5);
    let from = archive(&first).len();

    let before = accepted();
    let r = c.xtask(&["deploy", "--env", ENV, "--tag", &v2]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(accepted() - before, 1, "one SSH connection per deploy");
    assert!(r.stderr.contains("paused xtsw-w"), "{}", r.stderr);
    assert!(r.stderr.contains("resumed xtsw-w"), "{}", r.stderr);
    let s = status(&c);
    assert_eq!(s["version"], v2.as_str(), "{s}");
    assert_eq!(
        s["node"],
        first.as_str(),
        "the update must stay on the archive's node"
    );
    let hole = crate::deploy::largest_hole_in(&archive(&first), from);
    assert!(hole < 3.0, "a {hole:.2}s hole across the swarm update");
    assert!(
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["availability"] == "active" && n["paused_by_deploy"] == false),
        "every node resumed: {s}"
    );

    // A broken release: Swarm rolls it back; the CLI's exit 0 becomes our exit 3.
    c.git("checkout -q main");
    let svc = c.dir.join("app/src/observer/service.py");
    std::fs::write(
        &svc,
        std::fs::read_to_string(&svc)
            .unwrap()
            .replace("return 200, body", "return 503, body"),
    )
    .unwrap();
    c.git("commit -q -am broken");
    c.publish();
    let bad = version();
    let r = c.xtask(&["release", &bad, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = c.xtask(&["deploy", "--env", ENV, "--tag", &bad]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("Swarm rolled"), "{}", r.stderr);
    let s = status(&c);
    assert_eq!(s["version"], v2.as_str(), "the last good version runs: {s}");
    assert!(s["state"].as_str().unwrap().starts_with("Running"), "{s}");
    let hist = std::fs::read_to_string(server_dir().join(".deploy/history.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(hist.lines().last().unwrap()).unwrap();
    assert_eq!(last["version"], bad.as_str());
    assert_eq!(last["outcome"], "failed");
    assert!(
        std::fs::read_to_string(server_dir().join(".deploy/last_good_tag"))
            .unwrap()
            .starts_with(&v2)
    );
    // Deploying the running version again after Swarm rolled back to it: the stack deploy changes
    // nothing, no update comes, and the watch says so at once instead of timing out.
    let r = c.xtask(&["deploy", "--env", ENV, "--tag", &v2]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("Swarm: unchanged"), "{}", r.stderr);

    // A worker's engine stops: Swarm reschedules the observer on the other labelled node.
    let s = status(&c);
    let on = s["node"].as_str().unwrap().to_string();
    let other = if on == "xtsw-w1" {
        "xtsw-w2"
    } else {
        "xtsw-w1"
    };
    let r = xtask(&repo(), &["sandbox", "node", "stop", &on], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    wait_for("the observer rescheduled", 120, || {
        let s = status(&c);
        s["node"] == other && s["state"].as_str().unwrap_or("").starts_with("Running")
    });
    let r = c.xtask(&["status", "--env", ENV]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("running: on {other}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains(&on) && l.contains("down")),
        "status shows the lost node: {}",
        r.stdout
    );
    wait_for("records on the new node", 30, || archive(other).len() > 5);
    let r = xtask(&repo(), &["sandbox", "node", "start", &on], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    wait_for("the node back", 60, || {
        status(&c)["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["hostname"] == on.as_str() && n["state"] == "ready")
    });

    // rollback: back to v1 by its recorded digest.
    let r = c.xtask(&["rollback", "--env", ENV]);
    assert_eq!(r.code, 0, "{}", r.all());
    let s = status(&c);
    assert_eq!(s["version"], v1.as_str(), "{s}");
    assert!(s["image"]
        .as_str()
        .unwrap()
        .contains(digest.stdout.split_whitespace().nth(1).unwrap()));
    clean_stack();
}
