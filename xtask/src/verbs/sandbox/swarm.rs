//! The swarm sandbox (`sandbox up --swarm`, issue 14): three real Docker engines, each in its own
//! network namespace on the bridge `xtsw0` (10.213.0.1/24), joined into one swarm (`xtsw-m1`
//! manager, `xtsw-w1` and `xtsw-w2` workers labelled `observer=true`); the manager's sshd on
//! 10.213.0.11:2222 (`swarm_sshd`); socat forwarders so that every node pulls the sandbox
//! registry by the `127.0.0.1:<port>` name the releases carry (`swarm_net`); the engines
//! themselves in `swarm_engine`. Root only. Everything is found again by recorded PID (checked
//! against the process's command line) and recorded in `state.json` (`SwarmState`).

use super::daemons::find_program;
use super::swarm_engine as engine;
use super::swarm_net::{self as net, node_dir, socket, BRIDGE, GATEWAY, LABEL, NODES, RUN};
use super::swarm_sshd as sshd;
use crate::core::util::is_root;
use crate::ctx::Ctx;
use crate::sandbox_state::{self, Paths, State, SwarmNode, SwarmState};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};
use xshell::cmd;

/// `sandbox up --swarm`: starts the swarm sandbox, or checks the running one (and restarts its
/// forwarders or sshd when they no longer match the ordinary sandbox: a new registry port, a
/// token service, other allowed users); recreates it from scratch when an engine is gone or the
/// nodes do not all get ready. `st` is the ordinary sandbox's state and receives the swarm's.
pub fn up(sh: &Ctx, p: &Paths, st: &mut State) -> Result<()> {
    if !is_root() {
        bail!("`sandbox up --swarm` needs root (network namespaces, a bridge, dockerd)");
    }
    for prog in [
        "dockerd", "nsenter", "unshare", "socat", "ip", "iptables", "sshd",
    ] {
        find_program(prog).with_context(|| {
            format!("{prog} not found (scripts/install-prereqs.sh installs the sandbox's packages)")
        })?;
    }
    if let Some(sw) = st.swarm.clone() {
        let m = sw.manager().name.clone();
        let down: Vec<&str> = sw
            .nodes
            .iter()
            .filter(|n| !engine::alive(p, n))
            .map(|n| n.name.as_str())
            .collect();
        if down.is_empty()
            && engine::wait_for(Duration::from_secs(30), || {
                engine::ready_count(sh, &m) == NODES.len()
            })
        {
            return repair(sh, p, st);
        }
        if down.is_empty() {
            eprintln!(
                "swarm sandbox: the nodes are not all ready ({:?}); recreating it",
                engine::node_states(sh, &m)
            );
        } else {
            eprintln!(
                "swarm sandbox: engine(s) not running: {}; recreating it",
                down.join(", ")
            );
        }
    }
    // Also the leftovers of a machine restart or a killed `up` that recorded nothing.
    teardown(sh, p, st);
    create(sh, p, st)
}

/// The running swarm kept: forwarders and sshd brought up to date, the host key pinned.
fn repair(sh: &Ctx, p: &Paths, st: &mut State) -> Result<()> {
    let mut sw = st.swarm.clone().context("no swarm recorded")?;
    if !net::forwarders_ok(&sw.forward_pids, st) {
        eprintln!("swarm sandbox: restarting the registry forwarders (ports changed or one died)");
        net::stop_forwarders(&sw.forward_pids);
        sw.forward_pids = net::start_forwarders(p, st)?;
    }
    if !sshd::current(p, sw.sshd_pid) {
        eprintln!("swarm sandbox: (re)starting the manager's sshd (not running or outdated)");
        sshd::stop(p, sw.sshd_pid);
        sw.sshd_pid = Some(sshd::start(p)?);
    }
    sshd::pin_host_key(p)?;
    server_dir(sh, p, st)?;
    st.swarm = Some(sw);
    sandbox_state::save(p, st)?;
    eprintln!(
        "swarm sandbox already running ({} nodes ready)",
        NODES.len()
    );
    Ok(())
}

/// What the ordinary `sandbox up` keeps current in a recorded swarm sandbox: the forwarders
/// carry the registry's (and token service's) current ports, the manager's host key is pinned
/// (a restarted sandbox sshd rewrites known_hosts). Nothing when no swarm is recorded.
pub fn follow(p: &Paths, st: &mut State) -> Result<()> {
    let Some(pids) = st.swarm.as_ref().map(|s| s.forward_pids.clone()) else {
        return Ok(());
    };
    if !net::forwarders_ok(&pids, st) && Path::new(&net::netns(NODES[0].0)).exists() {
        eprintln!("swarm sandbox: restarting the registry forwarders (ports changed or one died)");
        net::stop_forwarders(&pids);
        let pids = net::start_forwarders(p, st)?;
        if let Some(sw) = st.swarm.as_mut() {
            sw.forward_pids = pids;
        }
        sandbox_state::save(p, st)?;
    }
    sshd::pin_host_key(p)
}

/// Everything from nothing: network, engines, swarm, forwarders, sshd. The state is saved as
/// soon as something runs, so that `down` finds it even when a later step fails.
fn create(sh: &Ctx, p: &Paths, st: &mut State) -> Result<()> {
    let t0 = Instant::now();
    fs::create_dir_all(p.swarm())?;
    net::create(sh)?;
    let mut sw = SwarmState {
        bridge: BRIDGE.into(),
        gateway: GATEWAY.into(),
        ssh_host: NODES[0].1.into(),
        ssh_port: net::SSH_PORT,
        label: LABEL.into(),
        ..SwarmState::default()
    };
    for (name, addr, role) in NODES {
        let pid = engine::start(p, name)?;
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
    st.swarm = Some(sw.clone());
    sandbox_state::save(p, st)?;
    for (name, _, _) in NODES {
        engine::wait_answers(sh, p, name)?;
    }
    engine::form_swarm(sh)?;
    sw.forward_pids = net::start_forwarders(p, st)?;
    st.swarm = Some(sw.clone());
    sandbox_state::save(p, st)?;
    sw.sshd_pid = Some(sshd::start(p)?);
    st.swarm = Some(sw);
    sandbox_state::save(p, st)?;
    server_dir(sh, p, st)?;
    eprintln!(
        "swarm sandbox up in {:.1}s: {} (manager; sshd {}@{}:{}, docker there is the manager's), {} and {} (workers, {LABEL}=true); sockets {RUN}/<node>/docker.sock",
        t0.elapsed().as_secs_f64(),
        NODES[0].0,
        st.user,
        NODES[0].1,
        net::SSH_PORT,
        NODES[1].0,
        NODES[2].0
    );
    Ok(())
}

/// `target/sandbox/swarm/server/observer`: where a deploy through the manager's sshd keeps its
/// history; owned by the sandbox's user.
fn server_dir(sh: &Ctx, p: &Paths, st: &State) -> Result<()> {
    let server = p.swarm().join("server");
    let observer = server.join("observer");
    fs::create_dir_all(&observer).with_context(|| format!("creating {}", observer.display()))?;
    let user = &st.user;
    if !user.is_empty() && user != "root" {
        net::run(sh, cmd!(sh, "chown {user} {server} {observer}"))?;
    }
    Ok(())
}

fn find_node<'s>(st: &'s mut State, name: &str) -> Result<&'s mut SwarmNode> {
    let sw = st
        .swarm
        .as_mut()
        .context("the swarm sandbox is not up (`cargo xtask sandbox up --swarm`)")?;
    let names: Vec<String> = sw.nodes.iter().map(|n| n.name.clone()).collect();
    sw.nodes
        .iter_mut()
        .find(|n| n.name == name)
        .with_context(|| format!("no node {name} (nodes: {})", names.join(", ")))
}

/// `sandbox node stop NAME`: SIGTERM to its engine (which stops its containers), waits for it to
/// exit (SIGKILL after 30 s).
pub fn node_stop(p: &Paths, st: &mut State, name: &str) -> Result<()> {
    let n = find_node(st, name)?;
    let t = Instant::now();
    engine::stop(p, n);
    n.dockerd_pid = None;
    sandbox_state::save(p, st)?;
    eprintln!(
        "{name}: engine stopped in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `sandbox node start NAME`: the engine again, in the same namespace with the same data root;
/// it rejoins the swarm by itself. Waits until it answers and the manager reports it ready.
pub fn node_start(sh: &Ctx, p: &Paths, st: &mut State, name: &str) -> Result<()> {
    let n = find_node(st, name)?;
    if engine::alive(p, n) {
        eprintln!("{name}: engine already running");
        return Ok(());
    }
    if !Path::new(&net::netns(name)).exists() {
        bail!("{name}'s network namespace is gone: `cargo xtask sandbox up --swarm` recreates the swarm");
    }
    let t = Instant::now();
    n.dockerd_pid = Some(engine::start(p, name)?);
    sandbox_state::save(p, st)?;
    engine::wait_answers(sh, p, name)?;
    let m = st.swarm.as_ref().map(|s| s.manager().name.clone());
    let m = m.unwrap_or_default();
    let ready = || {
        engine::node_states(sh, &m)
            .iter()
            .any(|(h, s)| h == name && s == "Ready")
    };
    if !engine::wait_for(Duration::from_secs(60), ready) {
        bail!(
            "{name}: engine started, but the manager does not report it ready within 60s: {:?}",
            engine::node_states(sh, &m)
        );
    }
    eprintln!(
        "{name}: engine started, node ready in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Removes everything `up --swarm` created: the recorded processes (the engines stopped
/// together), then any leftover of ours (see `sweep`), the namespaces, the bridge, the iptables
/// rule, mounts under its folders, `/run/xtsw` and `target/sandbox/swarm`. Best effort,
/// idempotent; also cleans what a machine restart or a killed `up` left.
pub fn teardown(sh: &Ctx, p: &Paths, st: &mut State) {
    if let Some(sw) = st.swarm.take() {
        sshd::stop(p, sw.sshd_pid);
        net::stop_forwarders(&sw.forward_pids);
        std::thread::scope(|s| {
            for n in &sw.nodes {
                s.spawn(move || engine::stop(p, n));
            }
        });
    }
    sweep(p);
    net::remove(sh);
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let root = p.swarm().display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&root) || m.starts_with(RUN))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = net::run(sh, cmd!(sh, "umount -l {m}"));
    }
    let _ = fs::remove_dir_all(p.swarm());
    let _ = fs::remove_dir_all(RUN);
    if p.state().is_file() {
        let _ = sandbox_state::save(p, st);
    }
}

/// Processes of ours that no record names (an engine's containerd and shims, fuse-overlayfs
/// mounts of a killed engine, anything a killed `up` started): found by what only they carry in
/// their command line (the engines' exec roots, the manager's sshd config, socat to or on the
/// bridge address); SIGTERM, then SIGKILL after 5 s.
fn sweep(p: &Paths) {
    let mut markers: Vec<String> = NODES
        .iter()
        .map(|(n, _, _)| format!("{RUN}/{n}/exec"))
        .collect();
    markers.push(p.swarm().join("sshd_config").display().to_string());
    markers.push(format!("lowerdir={}", p.swarm().display()));
    let ours = |pid: u32| -> bool {
        let Ok(c) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let c = String::from_utf8_lossy(&c);
        let socat = c.split('\0').next().is_some_and(|a| a.ends_with("socat"))
            && (c.contains(&format!("bind={GATEWAY},")) || c.contains(&format!("TCP:{GATEWAY}:")));
        socat || markers.iter().any(|m| c.contains(m.as_str()))
    };
    let me = std::process::id();
    let find = || -> Vec<u32> {
        fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|pid| *pid != me && ours(*pid))
                    .collect()
            })
            .unwrap_or_default()
    };
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let pids = find();
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            // SAFETY: kill(2) on a PID whose command line names this sandbox's own paths.
            unsafe {
                libc::kill(*pid as i32, signal);
            }
        }
        engine::wait_for(Duration::from_secs(5), || find().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manager_is_the_node_with_role_manager() {
        let mut sw = SwarmState::default();
        for (name, addr, role) in [NODES[1], NODES[0], NODES[2]] {
            sw.nodes.push(SwarmNode {
                name: name.into(),
                addr: addr.into(),
                role: role.into(),
                ..SwarmNode::default()
            });
        }
        assert_eq!(sw.manager().name, "xtsw-m1");
        assert_eq!(sw.manager().addr, "10.213.0.11");
    }

    #[test]
    fn forwarders_must_cover_every_port_in_every_namespace() {
        let st = State {
            registry_port: 5000,
            ..State::default()
        };
        assert_eq!(
            net::forwarded_ports(&st).into_iter().collect::<Vec<_>>(),
            vec![5000]
        );
        // No recorded forwarder: not ok, whatever the ports.
        assert!(!net::forwarders_ok(&[], &st));
        // A token port left from an earlier token mode is not forwarded in basic mode.
        let st = State {
            token_port: 5001,
            registry_auth: "basic".into(),
            ..st
        };
        assert_eq!(net::forwarded_ports(&st).len(), 1);
        let st = State {
            registry_auth: "token".into(),
            ..st
        };
        assert_eq!(
            net::forwarded_ports(&st).into_iter().collect::<Vec<_>>(),
            vec![5000, 5001]
        );
    }

    #[test]
    fn engine_sockets_fit_a_unix_socket_path() {
        for (name, _, _) in NODES {
            assert!(socket(name).len() < 108, "{}", socket(name));
        }
    }
}
