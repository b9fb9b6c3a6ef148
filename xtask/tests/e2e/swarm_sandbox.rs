//! End-to-end: the swarm sandbox itself (issue 14; `cargo xtask sandbox up --swarm`): three
//! engines in network namespaces, ready and labelled, the manager reachable over SSH with its
//! pinned host key, a worker pulling from the sandbox registry by its `127.0.0.1` name, tasks on
//! different workers talking over an overlay network, a node stopped and started again, and
//! `down --swarm` removing everything `up --swarm` created. Every test leaves the swarm up (the
//! swarm deploy's tests use it) and removes the services and networks it created.

use crate::common::*;
use std::time::{Duration, Instant};

/// `docker -H unix://<socket>` of a node, from the recorded state.
fn engine(name: &str) -> String {
    let st = state();
    st["swarm"]["nodes"]
        .as_array()
        .expect("the swarm is recorded")
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| format!("docker -H unix://{}", n["socket"].as_str().unwrap()))
        .unwrap()
}

/// Shell text that logs `docker` (a CLI, possibly with `-H`) into the sandbox registry with a
/// throwaway `DOCKER_CONFIG` in `$d` (the token on stdin, never in a command line or output).
/// The caller removes `$d`.
fn login(docker: &str) -> String {
    format!(
        "d=$(mktemp -d) && export DOCKER_CONFIG=$d && {docker} login -u observer-ci --password-stdin {reg} >/dev/null 2>&1 < '{tok}'",
        reg = registry(),
        tok = sandbox_dir().join("registry/token").display()
    )
}

/// Runs `script` after `login(docker)`, then removes the throwaway config.
fn with_login(docker: &str, script: &str) -> Run {
    sh(&format!(
        "{} && {script}; rc=$?; rm -rf \"$d\"; exit $rc",
        login(docker)
    ))
}

/// Pushes the sandbox base image as `127.0.0.1:<port>/xtsw-probe:<unique>`: its name.
fn push_probe() -> String {
    let base = state()["base_image"].as_str().unwrap().to_string();
    let probe = format!("{}/xtsw-probe:{}", registry(), unique());
    let r = with_login(
        "docker",
        &format!("docker tag {base} {probe} && docker push -q {probe} >/dev/null && docker rmi {probe} >/dev/null"),
    );
    assert_eq!(r.code, 0, "pushing {probe}: {}", r.all());
    probe
}

/// `(hostname, status)` of every node as the manager reports it.
fn node_states() -> Vec<(String, String)> {
    let r = sh(&format!(
        "{} node ls --format '{{{{.Hostname}}}} {{{{.Status}}}}'",
        engine("xtsw-m1")
    ));
    r.stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(h, s)| (h.to_string(), s.to_string()))
        .collect()
}

fn status_of(node: &str) -> String {
    node_states()
        .into_iter()
        .find(|(h, _)| h == node)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

/// Polls until `f()`, at most `limit`: the time it took, or None.
fn poll(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

/// What `up --swarm` leaves on the machine: namespaces, bridge, rule, folders, processes, mounts.
fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    for n in ["xtsw-m1", "xtsw-w1", "xtsw-w2"] {
        if std::path::Path::new("/var/run/netns").join(n).exists() {
            left.push(format!("netns {n}"));
        }
    }
    if std::path::Path::new("/sys/class/net/xtsw0").exists() {
        left.push("bridge xtsw0".into());
    }
    for chain in ["DOCKER-USER", "FORWARD"] {
        if sh(&format!(
            "iptables -C {chain} -i xtsw0 -o xtsw0 -j ACCEPT 2>/dev/null"
        ))
        .code
            == 0
        {
            left.push(format!("iptables rule in {chain}"));
        }
    }
    for dir in [
        std::path::PathBuf::from("/run/xtsw"),
        sandbox_dir().join("swarm"),
    ] {
        if dir.exists() {
            left.push(dir.display().to_string());
        }
    }
    // Processes of the swarm sandbox carry one of these in their command line.
    let ps = sh(
        "ps -eo args | grep -E '/run/xtsw/|target/sandbox/swarm/|bind=10\\.213\\.0\\.1,|TCP:10\\.213\\.0\\.1:' | grep -v grep",
    );
    left.extend(ps.stdout.lines().map(|l| format!("process {l}")));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let swarm_dir = sandbox_dir().join("swarm").display().to_string();
    left.extend(
        mounts
            .lines()
            .filter(|l| l.contains("/run/xtsw") || l.contains(&swarm_dir))
            .map(|l| format!("mount {l}")),
    );
    left
}

#[test]
#[ignore = "e2e: needs the swarm sandbox; run by `cargo xtask ci`"]
pub fn swarm_sandbox_down_removes_everything_then_up_recreates_it() {
    ensure_sandbox();
    ensure_swarm();
    let r = xtask(&repo(), &["sandbox", "down", "--swarm"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(leftovers(), Vec::<String>::new());
    assert!(state()["swarm"].is_null());
    // The ordinary sandbox is untouched.
    let r = xtask(&repo(), &["sandbox", "status"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("swarm       not up"), "{}", r.stdout);
    ensure_swarm();
    // Idempotent: a second `up` reuses what runs.
    let r = xtask(&repo(), &["sandbox", "up", "--swarm"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("swarm sandbox already running"),
        "{}",
        r.all()
    );
}

#[test]
#[ignore = "e2e: needs the swarm sandbox; run by `cargo xtask ci`"]
pub fn swarm_sandbox_nodes_ready_labelled_and_the_manager_reached_by_ssh() {
    ensure_sandbox();
    ensure_swarm();
    let m = engine("xtsw-m1");
    let nodes = sh(&format!(
        "{m} node ls --format '{{{{.Hostname}}}} {{{{.Status}}}} {{{{.ManagerStatus}}}}'"
    ));
    let mut lines: Vec<&str> = nodes.stdout.lines().map(str::trim).collect();
    lines.sort();
    assert_eq!(
        lines,
        vec!["xtsw-m1 Ready Leader", "xtsw-w1 Ready", "xtsw-w2 Ready"],
        "{}",
        nodes.all()
    );
    let labels = sh(&format!(
        "{m} node inspect xtsw-m1 xtsw-w1 xtsw-w2 --format '{{{{.Description.Hostname}}}}={{{{index .Spec.Labels \"observer\"}}}}'"
    ));
    assert_eq!(
        labels.stdout,
        "xtsw-m1=\nxtsw-w1=true\nxtsw-w2=true\n",
        "{}",
        labels.all()
    );
    // The manager over SSH, its host key pinned: a session's docker is the manager's engine,
    // and the deploy's history folder is writable there.
    let st = state();
    let user = st["user"].as_str().unwrap();
    let server = sandbox_dir().join("swarm/server/observer");
    let ssh = sh(&format!(
        "ssh -n -i '{k}' -o UserKnownHostsFile='{kh}' -o StrictHostKeyChecking=yes -o BatchMode=yes -p 2222 {user}@10.213.0.11 \"docker info --format '{{{{.Swarm.LocalNodeState}}}} {{{{.Name}}}}' && test -w '{server}' && hostname\"",
        k = sandbox_dir().join("ssh/client_ed25519").display(),
        kh = sandbox_dir().join("ssh/known_hosts").display(),
        server = server.display(),
    ));
    assert_eq!(ssh.code, 0, "{}", ssh.all());
    assert_eq!(ssh.stdout, "active xtsw-m1\nxtsw-m1\n", "{}", ssh.all());
    // `status` says so, and `--json` carries the recorded swarm.
    let r = xtask(&repo(), &["sandbox", "status", "--json"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["swarm"]["healthy"], true, "{}", r.stdout);
    assert_eq!(v["swarm"]["ssh_host"], "10.213.0.11");
    assert_eq!(v["swarm"]["ssh_port"], 2222);
    assert_eq!(v["swarm"]["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(v["swarm"]["nodes"][1]["status"], "Ready");
}

#[test]
#[ignore = "e2e: needs the swarm sandbox; run by `cargo xtask ci`"]
pub fn swarm_sandbox_worker_pulls_from_the_registry_by_its_127_name() {
    ensure_sandbox();
    ensure_swarm();
    let probe = push_probe();
    let w1 = engine("xtsw-w1");
    let r = with_login(&w1, &format!("{w1} pull -q {probe}"));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.trim(), probe);
    let r = sh(&format!("{w1} image inspect -f '{{{{.Id}}}}' {probe}"));
    assert_eq!(r.code, 0, "{}", r.all());
    sh(&format!("{w1} rmi {probe}"));
}

/// Removes a test's service and overlay network from the swarm, whatever the test's outcome.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let m = engine("xtsw-m1");
        let name = &self.0;
        sh(&format!("{m} service rm {name} >/dev/null 2>&1"));
        // The network goes once the service's tasks (and the attached container) are gone.
        poll(Duration::from_secs(30), || {
            sh(&format!("{m} network rm {name} >/dev/null 2>&1")).code == 0
                || sh(&format!("{m} network inspect {name} >/dev/null 2>&1")).code != 0
        });
    }
}

#[test]
#[ignore = "e2e: needs the swarm sandbox; run by `cargo xtask ci`"]
pub fn swarm_sandbox_overlay_reaches_a_service_on_another_worker() {
    ensure_sandbox();
    ensure_swarm();
    let probe = push_probe();
    let m = engine("xtsw-m1");
    let net = format!("xtsw-probe-{}", unique());
    let _cleanup = Cleanup(net.clone());
    // A service on w1 (DNS round robin: this kernel has no ip_vs for Swarm's virtual IPs).
    let r = with_login(
        &m,
        &format!(
            "{m} network create -d overlay --attachable {net} >/dev/null && {m} service create -q -d --with-registry-auth --endpoint-mode dnsrr --name {net} --network {net} --constraint node.hostname==xtsw-w1 {probe} python3 -m http.server 8080 >/dev/null"
        ),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let running = poll(Duration::from_secs(60), || {
        sh(&format!(
            "{m} service ps {net} --filter desired-state=running --format '{{{{.Node}}}} {{{{.CurrentState}}}}'"
        ))
        .stdout
        .starts_with("xtsw-w1 Running")
    });
    assert!(running.is_some(), "the service's task never ran on xtsw-w1");
    // A container on w2 attached to the same overlay asks it by name.
    let w2 = engine("xtsw-w2");
    let r = with_login(&w2, &format!("{w2} pull -q {probe} >/dev/null"));
    assert_eq!(r.code, 0, "{}", r.all());
    let mut answered = String::new();
    let ok = poll(Duration::from_secs(60), || {
        let r = sh(&format!(
            "{w2} run --rm --network {net} {probe} timeout 20 python3 -c \"import urllib.request;print(urllib.request.urlopen('http://{net}:8080/', timeout=5).status)\" 2>&1"
        ));
        answered = r.stdout.clone();
        r.code == 0 && r.stdout.trim() == "200"
    });
    sh(&format!("{w2} rmi {probe} >/dev/null 2>&1"));
    assert!(ok.is_some(), "across the overlay: {answered}");
}

/// Starts the node again should the test fail while it is stopped.
struct Restart(&'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        xtask(&repo(), &["sandbox", "node", "start", self.0], &[]);
    }
}

#[test]
#[ignore = "e2e: needs the swarm sandbox; run by `cargo xtask ci`"]
pub fn swarm_sandbox_node_stop_is_seen_down_and_start_ready_again() {
    ensure_sandbox();
    ensure_swarm();
    let node = "xtsw-w2";
    let _restart = Restart(node);
    let t = Instant::now();
    let r = xtask(&repo(), &["sandbox", "node", "stop", node], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let stopped = t.elapsed();
    assert!(state()["swarm"]["nodes"][2]["dockerd_pid"].is_null());
    let down = poll(Duration::from_secs(90), || status_of(node) == "Down")
        .unwrap_or_else(|| panic!("the manager never saw {node} down: {:?}", node_states()));
    eprintln!(
        "{node}: engine stopped in {:.1}s, the manager saw it Down {:.1}s after that",
        stopped.as_secs_f64(),
        down.as_secs_f64()
    );
    let r = xtask(&repo(), &["sandbox", "status"], &[]);
    assert!(r.stdout.contains("DEGRADED"), "{}", r.stdout);
    assert!(r.stdout.contains("engine stopped: xtsw-w2"), "{}", r.stdout);
    let t = Instant::now();
    let r = xtask(&repo(), &["sandbox", "node", "start", node], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    eprintln!(
        "{node}: started and Ready again in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(status_of(node), "Ready", "{:?}", node_states());
    assert!(state()["swarm"]["nodes"][2]["dockerd_pid"].is_u64());
    // Everything is as `up --swarm` wants it: it reuses the swarm.
    let r = xtask(&repo(), &["sandbox", "up", "--swarm"], &[]);
    assert!(
        r.stderr.contains("swarm sandbox already running"),
        "{}",
        r.all()
    );
}
