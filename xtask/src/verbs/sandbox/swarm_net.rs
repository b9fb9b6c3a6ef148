//! The swarm sandbox's layout and network: its names and addresses, the bridge `xtsw0` with one
//! network namespace per node on it (veth pairs), the iptables rule that lets bridged traffic
//! through the main engine's FORWARD policy (DROP), and the socat forwarders that make the
//! sandbox registry (and its token service) reachable from every node by the very
//! `127.0.0.1:<port>` name the releases carry.

use super::daemons::find_program;
use crate::ctx::Ctx;
use crate::sandbox_state::{Paths, State};
use crate::transport::spawn_daemon;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use xshell::cmd;

/// The bridge in the root namespace.
pub const BRIDGE: &str = "xtsw0";
/// The bridge's address: the nodes' default route and the forwarders' address.
pub const GATEWAY: &str = "10.213.0.1";
/// (name, address, role): the name is the network namespace, the hostname and the node's name.
pub const NODES: [(&str, &str, &str); 3] = [
    ("xtsw-m1", "10.213.0.11", "manager"),
    ("xtsw-w1", "10.213.0.12", "worker"),
    ("xtsw-w2", "10.213.0.13", "worker"),
];
/// The manager's sshd port (on the manager's address).
pub const SSH_PORT: u16 = 2222;
/// The placement label (value `true`) set on both workers.
pub const LABEL: &str = "observer";
/// Overlay networks come from here, away from the bridge's 10.213.0.0/24.
pub const ADDR_POOL: &str = "10.220.0.0/16";
/// The engines' sockets, exec roots and PID files (short: a unix socket path has 108 bytes).
pub const RUN: &str = "/run/xtsw";

/// Runs a one-shot command; a non-zero exit is an error naming it.
pub fn run(sh: &Ctx, c: xshell::Cmd<'_>) -> Result<()> {
    sh.read(c).map(|_| ())
}

/// `/run/xtsw/<name>`.
pub fn run_dir(name: &str) -> PathBuf {
    Path::new(RUN).join(name)
}

/// The unix socket of `name`'s engine.
pub fn socket(name: &str) -> String {
    run_dir(name).join("docker.sock").display().to_string()
}

/// `target/sandbox/swarm/<name>`: the engine's data root, config and log.
pub fn node_dir(p: &Paths, name: &str) -> PathBuf {
    p.swarm().join(name)
}

/// The network namespace's file (what `nsenter --net=` takes).
pub fn netns(name: &str) -> String {
    format!("/var/run/netns/{name}")
}

/// The chain holding the bridge's ACCEPT rule: `DOCKER-USER` (the main engine jumps there from
/// FORWARD before its own rules), or FORWARD itself when the main engine manages no iptables.
fn chain(sh: &Ctx) -> &'static str {
    if sh.ok(cmd!(sh, "iptables -n -L DOCKER-USER")) {
        "DOCKER-USER"
    } else {
        "FORWARD"
    }
}

/// The bridge, the three namespaces with their veth pairs, and the ACCEPT rule.
pub fn create(sh: &Ctx) -> Result<()> {
    let cidr = format!("{GATEWAY}/24");
    run(sh, cmd!(sh, "ip link add {BRIDGE} type bridge"))?;
    run(sh, cmd!(sh, "ip addr add {cidr} dev {BRIDGE}"))?;
    run(sh, cmd!(sh, "ip link set {BRIDGE} up"))?;
    for (name, addr, _) in NODES {
        let veth = format!("v{name}");
        let addr = format!("{addr}/24");
        run(sh, cmd!(sh, "ip netns add {name}"))?;
        run(
            sh,
            cmd!(
                sh,
                "ip link add {veth} type veth peer name eth0 netns {name}"
            ),
        )?;
        run(sh, cmd!(sh, "ip link set {veth} master {BRIDGE} up"))?;
        run(sh, cmd!(sh, "ip -n {name} addr add {addr} dev eth0"))?;
        run(sh, cmd!(sh, "ip -n {name} link set eth0 up"))?;
        run(sh, cmd!(sh, "ip -n {name} link set lo up"))?;
        run(sh, cmd!(sh, "ip -n {name} route add default via {GATEWAY}"))?;
    }
    let chain = chain(sh);
    if !sh.ok(cmd!(
        sh,
        "iptables -C {chain} -i {BRIDGE} -o {BRIDGE} -j ACCEPT"
    )) {
        run(
            sh,
            cmd!(sh, "iptables -I {chain} -i {BRIDGE} -o {BRIDGE} -j ACCEPT"),
        )
        .context("letting the swarm bridge's traffic through iptables")?;
    }
    Ok(())
}

/// Removes the namespaces, the veth pairs, the bridge and exactly the ACCEPT rule (each only
/// when present: also the leftovers of a machine restart or a killed `up`). Best effort.
pub fn remove(sh: &Ctx) {
    for (name, _, _) in NODES {
        if Path::new(&netns(name)).exists() {
            let _ = run(sh, cmd!(sh, "ip netns del {name}"));
        }
        let veth = format!("v{name}");
        if Path::new("/sys/class/net").join(&veth).exists() {
            let _ = run(sh, cmd!(sh, "ip link del {veth}"));
        }
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        let _ = run(sh, cmd!(sh, "ip link del {BRIDGE}"));
    }
    for chain in ["DOCKER-USER", "FORWARD"] {
        while sh.ok(cmd!(
            sh,
            "iptables -C {chain} -i {BRIDGE} -o {BRIDGE} -j ACCEPT"
        )) {
            if run(
                sh,
                cmd!(sh, "iptables -D {chain} -i {BRIDGE} -o {BRIDGE} -j ACCEPT"),
            )
            .is_err()
            {
                break;
            }
        }
    }
}

/// The ports the forwarders must carry: the registry's, and the token service's in token mode
/// (the registry's challenge names `http://127.0.0.1:<token port>/token` as the realm).
pub fn forwarded_ports(st: &State) -> BTreeSet<u16> {
    let token = if st.auth() == "token" {
        st.token_port
    } else {
        0
    };
    [st.registry_port, token]
        .into_iter()
        .filter(|p| *p != 0)
        .collect()
}

/// The port a running socat forwarder listens on (`TCP-LISTEN:<port>,…` in its command line).
fn listen_port(pid: u32) -> Option<u16> {
    let c = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let c = String::from_utf8_lossy(&c);
    let mut args = c.split('\0');
    if !args.next().is_some_and(|a| a.ends_with("socat")) {
        return None;
    }
    let arg = args.find(|a| a.starts_with("TCP-LISTEN:"))?;
    arg["TCP-LISTEN:".len()..].split(',').next()?.parse().ok()
}

/// Whether the recorded forwarders all run and carry exactly the ports `st` needs (one in the
/// root namespace and one per node for each port).
pub fn forwarders_ok(pids: &[u32], st: &State) -> bool {
    let want = forwarded_ports(st);
    let mut seen = Vec::new();
    for pid in pids {
        match listen_port(*pid) {
            Some(port) => seen.push(port),
            None => return false,
        }
    }
    seen.len() == want.len() * (NODES.len() + 1) && seen.iter().all(|p| want.contains(p))
}

/// Stops the recorded forwarders (each only when it still is one of ours).
pub fn stop_forwarders(pids: &[u32]) {
    for pid in pids {
        if listen_port(*pid).is_some() {
            super::daemons::stop_pid(*pid, Path::new("TCP-LISTEN:"), "socat");
        }
    }
}

/// Starts the forwarders: for each port, socat on the bridge address → 127.0.0.1 in the root
/// namespace, and in each node's namespace 127.0.0.1 → the bridge address. Their PIDs.
pub fn start_forwarders(p: &Paths, st: &State) -> Result<Vec<u32>> {
    let socat = find_program("socat").context("socat not found")?;
    let nsenter = find_program("nsenter").context("nsenter not found")?;
    let log = p.swarm().join("socat.log");
    let mut pids = Vec::new();
    for port in forwarded_ports(st) {
        pids.push(spawn_daemon(
            &socat,
            &[
                format!("TCP-LISTEN:{port},bind={GATEWAY},fork,reuseaddr"),
                format!("TCP:127.0.0.1:{port}"),
            ],
            &log,
        )?);
        for (name, _, _) in NODES {
            // nsenter execs socat: the PID is socat's.
            pids.push(spawn_daemon(
                &nsenter,
                &[
                    format!("--net={}", netns(name)),
                    socat.display().to_string(),
                    format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
                    format!("TCP:{GATEWAY}:{port}"),
                ],
                &log,
            )?);
        }
    }
    super::daemons::wait_until(
        "the registry forwarders",
        &log,
        Duration::from_secs(5),
        || {
            pids.iter().all(|pid| listen_port(*pid).is_some())
                && forwarded_ports(st).iter().all(|port| {
                    format!("{GATEWAY}:{port}")
                        .parse::<SocketAddr>()
                        .is_ok_and(|a| {
                            TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok()
                        })
                })
        },
    )?;
    Ok(pids)
}
