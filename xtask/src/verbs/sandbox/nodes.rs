//! The swarm sandbox (issue 14): three real Docker engines, each in its own network namespace
//! on the bridge `xtsw0` (10.213.0.1/24), joined into one swarm; the manager's sshd on
//! 10.213.0.11:2222 (the sandbox's client key, its host key pinned in the sandbox's
//! `known_hosts`), running in the manager's network namespace and in a private mount namespace
//! where the manager engine's socket is bind-mounted on `/run/docker.sock`; socat forwarders so
//! that every node pulls the sandbox registry by the same `127.0.0.1:<port>` name the releases
//! carry (docker treats 127.0.0.0/8 registries as insecure: no daemon setting needed).
//!
//! Each engine: `dockerd` with its own `--data-root` (`target/sandbox/swarm/<node>/data`),
//! `--exec-root`, `-H unix://…`, `--pidfile` and `--config-file` (the storage driver copied from
//! `/etc/docker/daemon.json`, whose `data-root` must not be inherited), started with `nsenter
//! --net=/var/run/netns/<node> unshare --uts` (`ip netns exec` remounts /sys, and dockerd then
//! fails with "Devices cgroup isn't mounted"). The main engine sets iptables FORWARD to DROP and
//! bridged traffic passes iptables: `up` inserts `DOCKER-USER -i xtsw0 -o xtsw0 -j ACCEPT` and
//! `down` removes exactly that rule. Root only.

use super::daemons::{find_program, pid_alive, stop_pid};
use crate::core::util::is_root;
use crate::ctx::Ctx;
use crate::sandbox_state::{self, Paths, State, SwarmNode, SwarmState};
use crate::transport::spawn_daemon;
use anyhow::{bail, Context, Result};
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xshell::cmd;

pub const BRIDGE: &str = "xtsw0";
pub const GATEWAY: &str = "10.213.0.1";
/// (name, address, role).
pub const NODES: [(&str, &str, &str); 3] = [
    ("xtsw-m1", "10.213.0.11", "manager"),
    ("xtsw-w1", "10.213.0.12", "worker"),
    ("xtsw-w2", "10.213.0.13", "worker"),
];
pub const SSH_PORT: u16 = 2222;
/// The placement label (value `true`) set on both workers.
pub const LABEL: &str = "observer";
/// Overlay networks come from here, away from the bridge's 10.213.0.0/24.
const ADDR_POOL: &str = "10.220.0.0/16";
const RUN: &str = "/run/xtsw";

/// Runs a one-shot command; a non-zero exit is an error naming it.
fn run(sh: &Ctx, c: xshell::Cmd<'_>) -> Result<()> {
    sh.read(c).map(|_| ())
}

fn run_dir(name: &str) -> PathBuf {
    Path::new(RUN).join(name)
}

fn socket(name: &str) -> String {
    run_dir(name).join("docker.sock").display().to_string()
}

/// `docker -H unix://<socket of name> args…` (one-shot).
fn docker(sh: &Ctx, name: &str, args: &[&str]) -> Result<String> {
    let host = format!("unix://{}", socket(name));
    sh.read(cmd!(sh, "docker -H {host} {args...}"))
}

fn engine_answers(sh: &Ctx, name: &str) -> bool {
    docker(sh, name, &["info", "--format", "{{.ID}}"]).is_ok()
}

fn node_dir(p: &Paths, name: &str) -> PathBuf {
    p.swarm().join(name)
}

fn dockerd_config(p: &Paths, name: &str) -> PathBuf {
    node_dir(p, name).join("daemon.json")
}

/// The storage driver of the main engine's `/etc/docker/daemon.json` (none: the default).
fn storage_driver() -> Option<String> {
    let text = fs::read_to_string("/etc/docker/daemon.json").ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["storage-driver"].as_str().map(str::to_string)
}

/// Is everything recorded running: every engine, the sshd, the forwarders, three ready nodes?
fn healthy(sh: &Ctx, p: &Paths, sw: &SwarmState, registry_port: u16) -> bool {
    let engines = sw.nodes.iter().all(|n| {
        n.dockerd_pid
            .is_some_and(|pid| pid_alive(pid, &dockerd_config(p, &n.name)))
    });
    let sshd = sw
        .sshd_pid
        .is_some_and(|pid| pid_alive(pid, &p.swarm().join("sshd_config")));
    // The first forwarder serves the registry's current port; all of them run.
    let marker = format!("TCP:127.0.0.1:{registry_port}");
    let fwd = sw
        .forward_pids
        .first()
        .is_some_and(|pid| pid_alive(*pid, Path::new(&marker)))
        && sw
            .forward_pids
            .iter()
            .all(|pid| pid_alive(*pid, Path::new("TCP-LISTEN:")));
    engines && sshd && fwd && ready_nodes(sh) == NODES.len()
}

fn ready_nodes(sh: &Ctx) -> usize {
    docker(sh, NODES[0].0, &["node", "ls", "--format", "{{.Status}}"])
        .map(|o| o.lines().filter(|l| *l == "Ready").count())
        .unwrap_or(0)
}

/// `sandbox up --swarm`: starts (or reuses) the swarm sandbox; `st` is the ordinary sandbox's
/// state (registry, ssh keys) and receives the swarm's.
pub fn up(sh: &Ctx, p: &Paths, st: &mut State) -> Result<()> {
    if !is_root() {
        bail!("`sandbox up --swarm` needs root (network namespaces, bridges, dockerd)");
    }
    for prog in ["dockerd", "nsenter", "unshare", "socat", "ip", "iptables"] {
        find_program(prog).with_context(|| {
            format!("{prog} not found (scripts/install-prereqs.sh installs the sandbox's packages)")
        })?;
    }
    if let Some(sw) = st.swarm.clone() {
        if healthy(sh, p, &sw, st.registry_port) {
            pin_host_key(p)?;
            eprintln!(
                "swarm sandbox already running ({} nodes ready)",
                NODES.len()
            );
            return Ok(());
        }
        eprintln!("swarm sandbox: something recorded is not running; recreating it");
        teardown(sh, p, st);
    } else {
        // Leftovers of a machine restart or a killed `up`: names this sandbox owns.
        teardown_network(sh);
    }
    let t0 = Instant::now();
    network(sh)?;
    let mut sw = SwarmState {
        bridge: BRIDGE.into(),
        gateway: GATEWAY.into(),
        ssh_host: NODES[0].1.into(),
        ssh_port: SSH_PORT,
        label: LABEL.into(),
        ..SwarmState::default()
    };
    for (name, addr, role) in NODES {
        let pid = start_engine(p, name)?;
        sw.nodes.push(SwarmNode {
            name: name.into(),
            addr: addr.into(),
            role: role.into(),
            socket: socket(name),
            dockerd_pid: Some(pid),
            data_root: node_dir(p, name).join("data").display().to_string(),
            labels: if role == "worker" {
                vec![format!("{LABEL}=true")]
            } else {
                Vec::new()
            },
        });
    }
    // Recorded as soon as something runs, so that `down` finds it even if the rest fails.
    st.swarm = Some(sw.clone());
    sandbox_state::save(p, st)?;
    for n in &sw.nodes {
        wait_engine(sh, p, &n.name)?;
    }
    form_swarm(sh)?;
    sw.forward_pids = forwarders(p, st)?;
    st.swarm = Some(sw.clone());
    sandbox_state::save(p, st)?;
    sw.sshd_pid = Some(start_sshd(p)?);
    st.swarm = Some(sw);
    sandbox_state::save(p, st)?;
    fs::create_dir_all(p.swarm().join("server/observer"))?;
    eprintln!(
        "swarm sandbox up in {:.1}s: {} (manager, sshd {}:{SSH_PORT}), {} and {} (workers, {LABEL}=true)",
        t0.elapsed().as_secs_f64(),
        NODES[0].0,
        NODES[0].1,
        NODES[1].0,
        NODES[2].0
    );
    Ok(())
}

/// The bridge, the three namespaces with their veth pairs, and the DOCKER-USER rule.
fn network(sh: &Ctx) -> Result<()> {
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
    if !sh.ok(cmd!(
        sh,
        "iptables -C DOCKER-USER -i {BRIDGE} -o {BRIDGE} -j ACCEPT"
    )) {
        run(
            sh,
            cmd!(
                sh,
                "iptables -I DOCKER-USER -i {BRIDGE} -o {BRIDGE} -j ACCEPT"
            ),
        )?;
    }
    Ok(())
}

/// Starts `name`'s engine in its namespace (its own hostname): the dockerd's PID (nsenter and
/// unshare exec it).
fn start_engine(p: &Paths, name: &str) -> Result<u32> {
    let dir = node_dir(p, name);
    let run = run_dir(name);
    fs::create_dir_all(dir.join("data"))?;
    fs::create_dir_all(&run)?;
    let config = dockerd_config(p, name);
    let mut c = serde_json::json!({});
    if let Some(d) = storage_driver() {
        c["storage-driver"] = d.into();
    }
    fs::write(&config, serde_json::to_string_pretty(&c)?)?;
    let script = format!(
        "hostname {name} && exec dockerd --config-file {cfg} --data-root {data} --exec-root {exec} -H unix://{sock} --pidfile {pidf}",
        cfg = config.display(),
        data = dir.join("data").display(),
        exec = run.join("exec").display(),
        sock = socket(name),
        pidf = run.join("docker.pid").display(),
    );
    let nsenter = find_program("nsenter").context("nsenter")?;
    spawn_daemon(
        &nsenter,
        &[
            format!("--net=/var/run/netns/{name}"),
            "unshare".into(),
            "--uts".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
        &dir.join("dockerd.log"),
    )
}

fn wait_engine(sh: &Ctx, p: &Paths, name: &str) -> Result<()> {
    super::daemons::wait_until(
        &format!("dockerd {name}"),
        &node_dir(p, name).join("dockerd.log"),
        Duration::from_secs(60),
        || engine_answers(sh, name),
    )
}

/// `swarm init` on the manager, `swarm join` of both workers, their labels; waits until all
/// three nodes are ready.
fn form_swarm(sh: &Ctx) -> Result<()> {
    let (m, maddr, _) = NODES[0];
    let listen = format!("{maddr}:2377");
    docker(
        sh,
        m,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            maddr,
            "--listen-addr",
            &listen,
            "--default-addr-pool",
            ADDR_POOL,
        ],
    )
    .context("docker swarm init on the manager")?;
    let token = docker(sh, m, &["swarm", "join-token", "-q", "worker"])?;
    for (name, addr, _) in &NODES[1..] {
        docker(
            sh,
            name,
            &[
                "swarm",
                "join",
                "--token",
                token.trim(),
                "--advertise-addr",
                addr,
                &listen,
            ],
        )
        .with_context(|| format!("docker swarm join of {name}"))?;
    }
    let label = format!("{LABEL}=true");
    for (name, _, _) in &NODES[1..] {
        docker(sh, m, &["node", "update", "--label-add", &label, name])?;
    }
    let t = Instant::now();
    while ready_nodes(sh) < NODES.len() {
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the swarm's nodes did not all become ready within 60s");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// socat: the bridge address → the registry (and the token service) in the root namespace, and
/// in each node's namespace 127.0.0.1 → the bridge address. The root forwarder comes first.
fn forwarders(p: &Paths, st: &State) -> Result<Vec<u32>> {
    let socat = find_program("socat").context("socat")?;
    let nsenter = find_program("nsenter").context("nsenter")?;
    let log = p.swarm().join("socat.log");
    let mut ports = vec![st.registry_port];
    if st.token_port != 0 {
        ports.push(st.token_port);
    }
    let mut pids = Vec::new();
    for port in ports {
        pids.push(spawn_daemon(
            &socat,
            &[
                format!("TCP-LISTEN:{port},bind={GATEWAY},fork,reuseaddr"),
                format!("TCP:127.0.0.1:{port}"),
            ],
            &log,
        )?);
        for (name, _, _) in NODES {
            pids.push(spawn_daemon(
                &nsenter,
                &[
                    format!("--net=/var/run/netns/{name}"),
                    socat.display().to_string(),
                    format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
                    format!("TCP:{GATEWAY}:{port}"),
                ],
                &log,
            )?);
        }
    }
    Ok(pids)
}

/// Adds the manager's `[10.213.0.11]:2222` line (the sandbox's host key) to the sandbox's
/// `known_hosts`, when missing (the ordinary sshd's start rewrites that file).
fn pin_host_key(p: &Paths) -> Result<()> {
    let kh = fs::read_to_string(p.known_hosts()).context("the sandbox's known_hosts")?;
    let host = format!("[{}]:{SSH_PORT}", NODES[0].1);
    if kh.lines().any(|l| l.starts_with(&format!("{host} "))) {
        return Ok(());
    }
    let key = kh
        .lines()
        .find(|l| l.starts_with("[127.0.0.1]:"))
        .and_then(|l| l.split_once(' '))
        .map(|(_, k)| k.to_string())
        .context(
            "the sandbox's host key is not in its known_hosts (run `cargo xtask sandbox up`)",
        )?;
    fs::write(p.known_hosts(), format!("{kh}{host} {key}\n"))?;
    Ok(())
}

/// The manager's sshd: the ordinary sandbox sshd's configuration on 10.213.0.11:2222, in the
/// manager's network namespace and a private mount namespace whose `/run/docker.sock` is the
/// manager engine's.
fn start_sshd(p: &Paths) -> Result<u32> {
    let base = fs::read_to_string(p.ssh().join("sshd_config"))
        .context("the sandbox's sshd_config (run `cargo xtask sandbox up`)")?;
    let config = p.swarm().join("sshd_config");
    let mut out = String::new();
    for l in base.lines() {
        let key = l.split_whitespace().next().unwrap_or("");
        match key {
            "Port" => out.push_str(&format!("Port {SSH_PORT}\n")),
            "ListenAddress" => out.push_str(&format!("ListenAddress {}\n", NODES[0].1)),
            "PidFile" => out.push_str(&format!(
                "PidFile {}\n",
                run_dir("sshd").join("sshd.pid").display()
            )),
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    fs::create_dir_all(run_dir("sshd"))?;
    fs::write(&config, out)?;
    pin_host_key(p)?;
    let sshd = find_program("sshd").context("sshd not found")?;
    let script = format!(
        "mount --bind {sock} /run/docker.sock && exec {sshd} -D -e -f {cfg}",
        sock = socket(NODES[0].0),
        sshd = sshd.display(),
        cfg = config.display()
    );
    let nsenter = find_program("nsenter").context("nsenter")?;
    let log = p.swarm().join("sshd.log");
    let pid = spawn_daemon(
        &nsenter,
        &[
            format!("--net=/var/run/netns/{}", NODES[0].0),
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
        &log,
    )?;
    let addr: SocketAddr = format!("{}:{SSH_PORT}", NODES[0].1).parse()?;
    super::daemons::wait_until("the manager's sshd", &log, Duration::from_secs(10), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })?;
    Ok(pid)
}

/// Stops a node's engine: SIGTERM, then SIGKILL after 30 s (a dockerd stops its containers
/// first, each within its stop grace period; a shorter wait would leave them running).
fn stop_engine(p: &Paths, n: &SwarmNode) {
    let Some(pid) = n.dockerd_pid else { return };
    let marker = dockerd_config(p, &n.name);
    if !pid_alive(pid, &marker) {
        return;
    }
    // SAFETY: kill(2) on a PID whose command line names this node's dockerd config.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let t = Instant::now();
    while pid_alive(pid, &marker) && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if pid_alive(pid, &marker) {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// `sandbox node stop NAME`.
pub fn node_stop(sh: &Ctx, p: &Paths, st: &mut State, name: &str) -> Result<()> {
    let _ = sh;
    let sw = st
        .swarm
        .as_mut()
        .context("the swarm sandbox is not up (`cargo xtask sandbox up --swarm`)")?;
    let n = sw
        .nodes
        .iter_mut()
        .find(|n| n.name == name)
        .with_context(|| format!("no node {name} (nodes: xtsw-m1, xtsw-w1, xtsw-w2)"))?;
    stop_engine(p, n);
    n.dockerd_pid = None;
    sandbox_state::save(p, st)?;
    eprintln!("{name}: engine stopped");
    Ok(())
}

/// `sandbox node start NAME`: the engine again, in the same namespace (it rejoins the swarm).
pub fn node_start(sh: &Ctx, p: &Paths, st: &mut State, name: &str) -> Result<()> {
    let sw = st
        .swarm
        .as_mut()
        .context("the swarm sandbox is not up (`cargo xtask sandbox up --swarm`)")?;
    let n = sw
        .nodes
        .iter_mut()
        .find(|n| n.name == name)
        .with_context(|| format!("no node {name} (nodes: xtsw-m1, xtsw-w1, xtsw-w2)"))?;
    if n.dockerd_pid
        .is_some_and(|pid| pid_alive(pid, &dockerd_config(p, name)))
    {
        eprintln!("{name}: engine already running");
        return Ok(());
    }
    n.dockerd_pid = Some(start_engine(p, name)?);
    sandbox_state::save(p, st)?;
    wait_engine(sh, p, name)?;
    eprintln!("{name}: engine started");
    Ok(())
}

/// Removes everything `up --swarm` created: processes by recorded PID, the namespaces, the
/// bridge, the DOCKER-USER rule, the engines' files. Best effort, idempotent.
pub fn teardown(sh: &Ctx, p: &Paths, st: &mut State) {
    if let Some(sw) = st.swarm.take() {
        if let Some(pid) = sw.sshd_pid {
            stop_pid(pid, &p.swarm().join("sshd_config"), "the manager's sshd");
        }
        for pid in &sw.forward_pids {
            stop_pid(*pid, Path::new("TCP:"), "socat");
        }
        for n in &sw.nodes {
            stop_engine(p, n);
        }
    }
    teardown_network(sh);
    // Anything still mounted under the engines' folders (a killed dockerd's overlays).
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let root = p.swarm().display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&root) || m.starts_with(RUN))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = run(sh, cmd!(sh, "umount -l {m}"));
    }
    let _ = fs::remove_dir_all(p.swarm());
    let _ = fs::remove_dir_all(RUN);
    let _ = sandbox_state::save(p, st);
}

/// The namespaces, the bridge and the DOCKER-USER rule (each only when present).
fn teardown_network(sh: &Ctx) {
    for (name, _, _) in NODES {
        if Path::new("/var/run/netns").join(name).exists() {
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
    while sh.ok(cmd!(
        sh,
        "iptables -C DOCKER-USER -i {BRIDGE} -o {BRIDGE} -j ACCEPT"
    )) {
        if run(
            sh,
            cmd!(
                sh,
                "iptables -D DOCKER-USER -i {BRIDGE} -o {BRIDGE} -j ACCEPT"
            ),
        )
        .is_err()
        {
            break;
        }
    }
}

/// One line for `sandbox status`.
pub fn describe(sh: &Ctx, p: &Paths, st: &State) -> String {
    match &st.swarm {
        None => "not up (`cargo xtask sandbox up --swarm`)".into(),
        Some(sw) if healthy(sh, p, sw, st.registry_port) => format!(
            "{} nodes ready ({}), manager sshd {}:{}",
            NODES.len(),
            sw.nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            sw.ssh_host,
            sw.ssh_port
        ),
        Some(_) => format!(
            "recorded but not all running ({} of {} nodes ready; `cargo xtask sandbox up --swarm` recreates it)",
            ready_nodes(sh),
            NODES.len()
        ),
    }
}
