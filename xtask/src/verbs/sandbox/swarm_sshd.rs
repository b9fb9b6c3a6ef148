//! The swarm manager's sshd: the ordinary sandbox sshd's configuration (same host key, same
//! authorized client key, same allowed users) on 10.213.0.11:2222, run in the manager's network
//! namespace, with the manager's hostname, and in a private mount namespace whose
//! `/run/docker.sock` (`/var/run` is a link to `/run`) is the manager engine's socket, so that
//! `docker` in a session there drives the swarm. The rest of the file system is the host's.

use super::daemons::{find_program, pid_alive, stop_pid, wait_until};
use super::swarm_net::{netns, run_dir, socket, NODES, SSH_PORT};
use crate::sandbox_state::Paths;
use crate::transport::spawn_daemon;
use anyhow::{Context, Result};
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

fn config_file(p: &Paths) -> PathBuf {
    p.swarm().join("sshd_config")
}

/// The configuration the manager's sshd must run with: the sandbox sshd's, with its port,
/// address and PID file replaced.
fn config_text(p: &Paths) -> Result<String> {
    let base = fs::read_to_string(p.ssh().join("sshd_config"))
        .context("the sandbox's sshd_config (run `cargo xtask sandbox up`)")?;
    let mut out = String::new();
    for l in base.lines() {
        match l.split_whitespace().next().unwrap_or("") {
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
    Ok(out)
}

/// Whether the recorded sshd runs with the configuration it must have now (the sandbox's allowed
/// users may have changed since).
pub fn current(p: &Paths, pid: Option<u32>) -> bool {
    let written = fs::read_to_string(config_file(p)).unwrap_or_default();
    pid.is_some_and(|pid| pid_alive(pid, &config_file(p)))
        && config_text(p).is_ok_and(|want| want == written)
}

/// Stops the recorded sshd (when it still is ours).
pub fn stop(p: &Paths, pid: Option<u32>) {
    if let Some(pid) = pid {
        stop_pid(pid, &config_file(p), "the swarm manager's sshd");
    }
}

/// Adds the manager's `[10.213.0.11]:2222` line (the sandbox's host key) to the sandbox's
/// `known_hosts` when it is missing: the ordinary sshd rewrites that file whenever it starts.
pub fn pin_host_key(p: &Paths) -> Result<()> {
    let kh = fs::read_to_string(p.known_hosts()).context("the sandbox's known_hosts")?;
    let host = format!("[{}]:{SSH_PORT}", NODES[0].1);
    let pub_key = fs::read_to_string(p.ssh().join("host_ed25519.pub"))
        .context("the sandbox's host key (run `cargo xtask sandbox up`)")?;
    let mut parts = pub_key.split_whitespace();
    let line = format!(
        "{host} {} {}",
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("")
    );
    if kh.lines().any(|l| l == line) {
        return Ok(());
    }
    // Any other line for the manager's address is an older key: replaced.
    let mut out: String = kh
        .lines()
        .filter(|l| !l.starts_with(&format!("{host} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&line);
    out.push('\n');
    fs::write(p.known_hosts(), out)?;
    Ok(())
}

/// Starts the manager's sshd (its configuration written first, its host key pinned) and waits
/// until it accepts connections: its PID (nsenter, unshare and sh exec, so it is sshd's).
pub fn start(p: &Paths) -> Result<u32> {
    let config = config_file(p);
    fs::create_dir_all(run_dir("sshd"))?;
    fs::write(&config, config_text(p)?)?;
    pin_host_key(p)?;
    let sshd = find_program("sshd").context("sshd not found")?;
    // Its log (`-E`, as the sandbox's sshd): the e2e tests count the accepted connections.
    let log = p.swarm().join("sshd.log");
    let script = format!(
        "hostname {name} && mount --bind {sock} /run/docker.sock && exec {sshd} -D -f {cfg} -E {log}",
        name = NODES[0].0,
        sock = socket(NODES[0].0),
        sshd = sshd.display(),
        cfg = config.display(),
        log = log.display()
    );
    let nsenter = find_program("nsenter").context("nsenter not found")?;
    let pid = spawn_daemon(
        &nsenter,
        &[
            format!("--net={}", netns(NODES[0].0)),
            "unshare".into(),
            "--mount".into(),
            "--uts".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
        &log,
    )?;
    let addr: SocketAddr = format!("{}:{SSH_PORT}", NODES[0].1).parse()?;
    wait_until(
        "the swarm manager's sshd",
        &log,
        Duration::from_secs(10),
        || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
    )?;
    Ok(pid)
}
