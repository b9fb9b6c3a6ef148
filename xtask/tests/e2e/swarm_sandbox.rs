//! End-to-end: the swarm sandbox itself (issue 14 item 3): three engines in network namespaces,
//! reachable, pulling from the sandbox registry, tasks talking across nodes on an overlay
//! network, and `down --swarm` removing everything `up --swarm` created.

use crate::common::*;

fn engine(name: &str) -> String {
    let st = state();
    st["swarm"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| format!("docker -H unix://{}", n["socket"].as_str().unwrap()))
        .unwrap()
}

/// What `up --swarm` leaves on the machine: namespaces, bridge, rule, runtime folder, processes.
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
    if sh("iptables -C DOCKER-USER -i xtsw0 -o xtsw0 -j ACCEPT").code == 0 {
        left.push("iptables rule".into());
    }
    if std::path::Path::new("/run/xtsw").exists() {
        left.push("/run/xtsw".into());
    }
    let ps = sh("ps -eo args | grep -E 'xtsw|10.213.0' | grep -v grep");
    left.extend(ps.stdout.lines().map(|l| format!("process {l}")));
    if std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains("/run/xtsw")
    {
        left.push("mounts".into());
    }
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
    ensure_swarm();
    // Idempotent: a second `up` reuses what runs.
    let r = xtask(&repo(), &["sandbox", "up", "--swarm"], &[]);
    assert!(
        r.stderr.contains("swarm sandbox already running"),
        "{}",
        r.all()
    );
    let nodes = sh(&format!(
        "{} node ls --format '{{{{.Hostname}}}} {{{{.Status}}}} {{{{.ManagerStatus}}}}'",
        engine("xtsw-m1")
    ));
    assert_eq!(
        nodes.stdout.lines().filter(|l| l.contains("Ready")).count(),
        3,
        "{}",
        nodes.stdout
    );
    let labels = sh(&format!(
        "{} node inspect xtsw-w1 xtsw-w2 --format '{{{{index .Spec.Labels \"observer\"}}}}'",
        engine("xtsw-m1")
    ));
    assert_eq!(labels.stdout, "true\ntrue\n");
    // The manager over SSH, host key pinned: its shell's docker is the manager's engine.
    let ssh = sh(&format!(
        "ssh -n -i '{k}' -o UserKnownHostsFile='{kh}' -o StrictHostKeyChecking=yes -o BatchMode=yes -p 2222 {u}@10.213.0.11 \"docker info --format '{{{{.Swarm.LocalNodeState}}}} {{{{.Name}}}}'\"",
        k = sandbox_dir().join("ssh/client_ed25519").display(),
        kh = sandbox_dir().join("ssh/known_hosts").display(),
        u = state()["user"].as_str().unwrap()
    ));
    assert_eq!(ssh.stdout.trim(), "active xtsw-m1", "{}", ssh.all());
}

#[test]
#[ignore = "e2e: needs the swarm sandbox; run by `cargo xtask ci`"]
pub fn swarm_sandbox_nodes_pull_from_the_registry_and_talk_over_an_overlay() {
    ensure_sandbox();
    ensure_swarm();
    let st = state();
    let reg = format!("127.0.0.1:{}", st["registry_port"]);
    let base = st["base_image"].as_str().unwrap().to_string();
    let probe = format!("{reg}/xtsw-probe:{}", unique());
    let login = |docker: &str| {
        format!(
            "d=$(mktemp -d) && export DOCKER_CONFIG=$d && {docker} login -u observer-ci --password-stdin {reg} >/dev/null 2>&1 < '{}'",
            sandbox_dir().join("registry/token").display()
        )
    };
    let r = sh(&format!(
        "{} && docker tag {base} {probe} && docker push -q {probe} >/dev/null; rc=$?; rm -rf $d; exit $rc",
        login("docker")
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    // A worker pulls it by the very 127.0.0.1 name.
    let w1 = engine("xtsw-w1");
    let r = sh(&format!(
        "{} && {w1} pull -q {probe}; rc=$?; rm -rf $d; exit $rc",
        login(&w1)
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    // A service on one worker answers a container on the other, over an overlay network (DNS
    // round robin: this kernel has no ip_vs for Swarm's virtual IPs).
    let m = engine("xtsw-m1");
    let net = format!("xtsw-probe-{}", unique());
    let r = sh(&format!(
        "{m} network create -d overlay --attachable {net} >/dev/null && {l} && {m} service create -q -d --with-registry-auth --endpoint-mode dnsrr --name {net} --network {net} --constraint node.hostname==xtsw-w1 {probe} python3 -m http.server 8080 >/dev/null; rc=$?; rm -rf $d; exit $rc",
        l = login(&m)
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    let w2 = engine("xtsw-w2");
    let mut answered = String::new();
    for _ in 0..60 {
        let r = sh(&format!(
            "{w2} run --rm --network {net} {probe} timeout 20 python3 -c \"import urllib.request;print(urllib.request.urlopen('http://{net}:8080/', timeout=5).status)\" 2>&1"
        ));
        answered = r.stdout.clone();
        if r.code == 0 && r.stdout.trim() == "200" {
            break;
        }
        // The image reaches w2 through the registry the first time.
        sh(&format!(
            "{} && {w2} pull -q {probe}; rm -rf $d",
            login(&w2)
        ));
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    sh(&format!("{m} service rm {net} >/dev/null"));
    for _ in 0..30 {
        if sh(&format!("{m} network rm {net}")).code == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert_eq!(answered.trim(), "200", "across the overlay: {answered}");
}
