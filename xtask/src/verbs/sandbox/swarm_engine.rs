//! The swarm sandbox's engines: one `dockerd` per node namespace (its own data root, exec root,
//! socket, PID file and config file), started detached, stopped by recorded PID; `swarm init`,
//! `swarm join` and the placement labels.

use super::daemons::{find_program, pid_alive, wait_until};
use super::swarm_net::{node_dir, run_dir, socket, ADDR_POOL, LABEL, NODES};
use crate::ctx::Ctx;
use crate::sandbox_state::{Paths, SwarmNode};
use crate::transport::spawn_daemon;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xshell::cmd;

/// How long an engine gets to stop its containers after SIGTERM before SIGKILL (a dockerd stops
/// each container within its stop grace period first; a shorter wait would leave them running).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// `docker -H unix://<socket of name> args…` (one-shot): its stdout, trimmed.
pub fn docker(sh: &Ctx, name: &str, args: &[&str]) -> Result<String> {
    let host = format!("unix://{}", socket(name));
    sh.read(cmd!(sh, "docker -H {host} {args...}"))
}

/// The engine's config file (also the marker that identifies its dockerd's command line).
pub fn config_file(p: &Paths, name: &str) -> PathBuf {
    node_dir(p, name).join("daemon.json")
}

/// Whether `n`'s recorded dockerd runs.
pub fn alive(p: &Paths, n: &SwarmNode) -> bool {
    n.dockerd_pid
        .is_some_and(|pid| pid_alive(pid, &config_file(p, &n.name)))
}

/// The storage driver of the main engine's `/etc/docker/daemon.json` (none: the default).
fn storage_driver() -> Option<String> {
    let text = fs::read_to_string("/etc/docker/daemon.json").ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["storage-driver"].as_str().map(str::to_string)
}

/// Starts `name`'s engine in its network namespace with its own hostname (`nsenter --net`, then
/// `unshare --uts`; both exec, so the PID returned is dockerd's). `ip netns exec` is not used: it
/// remounts /sys, and dockerd then fails with "Devices cgroup isn't mounted".
pub fn start(p: &Paths, name: &str) -> Result<u32> {
    let dir = node_dir(p, name);
    let run = run_dir(name);
    fs::create_dir_all(dir.join("data"))?;
    fs::create_dir_all(&run)?;
    // Our own config file: the default one sets `data-root`, which must not be inherited.
    let config = config_file(p, name);
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
    let nsenter = find_program("nsenter").context("nsenter not found")?;
    spawn_daemon(
        &nsenter,
        &[
            format!("--net={}", super::swarm_net::netns(name)),
            "unshare".into(),
            "--uts".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
        &dir.join("dockerd.log"),
    )
}

/// Waits (at most 60 s) until `name`'s engine answers `docker info`.
pub fn wait_answers(sh: &Ctx, p: &Paths, name: &str) -> Result<()> {
    wait_until(
        &format!("dockerd {name}"),
        &node_dir(p, name).join("dockerd.log"),
        Duration::from_secs(60),
        || docker(sh, name, &["info", "--format", "{{.ID}}"]).is_ok(),
    )
}

/// Stops `n`'s engine: SIGTERM, then SIGKILL after [`STOP_GRACE`]; waits for it to exit.
pub fn stop(p: &Paths, n: &SwarmNode) {
    let Some(pid) = n.dockerd_pid else { return };
    let marker = config_file(p, &n.name);
    for (signal, wait) in [
        (libc::SIGTERM, STOP_GRACE),
        (libc::SIGKILL, Duration::from_secs(5)),
    ] {
        if !pid_alive(pid, &marker) {
            return;
        }
        // SAFETY: kill(2) on a PID whose command line names this node's dockerd config.
        unsafe {
            libc::kill(pid as i32, signal);
        }
        let t = Instant::now();
        while pid_alive(pid, &marker) && t.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The manager's view: (hostname, status) of every node; empty when the manager does not answer.
pub fn node_states(sh: &Ctx, manager: &str) -> Vec<(String, String)> {
    docker(
        sh,
        manager,
        &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
    )
    .map(|o| {
        o.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(h, s)| (h.to_string(), s.to_string()))
            .collect()
    })
    .unwrap_or_default()
}

/// How many nodes the manager reports `Ready`.
pub fn ready_count(sh: &Ctx, manager: &str) -> usize {
    node_states(sh, manager)
        .iter()
        .filter(|(_, s)| s == "Ready")
        .count()
}

/// Waits (at most `timeout`) until `ready()`; whether it came.
pub fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if t.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `swarm init` on the manager, `swarm join` of both workers, their placement labels; waits
/// until all three nodes are ready.
pub fn form_swarm(sh: &Ctx) -> Result<()> {
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
        docker(sh, m, &["node", "update", "--label-add", &label, name])
            .with_context(|| format!("labelling {name} {label}"))?;
    }
    if !wait_for(Duration::from_secs(60), || {
        ready_count(sh, m) == NODES.len()
    }) {
        bail!(
            "the swarm's nodes did not all become ready within 60s: {:?}",
            node_states(sh, m)
        );
    }
    Ok(())
}
