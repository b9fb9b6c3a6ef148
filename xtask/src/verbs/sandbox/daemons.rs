//! The sandbox's daemons: Debian's `docker-registry` (htpasswd with bcrypt, or token auth against
//! the token service of `token.rs`) and an OpenSSH `sshd` with a generated, pinned host key, all
//! on 127.0.0.1; found again by recorded PID (checked against the process's command line), never
//! by name.

use crate::core::util::{random_hex, tail};
use crate::ctx::Ctx;
use crate::sandbox_state::{Paths, State, REGISTRY_USER};
use crate::transport::spawn_daemon;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xshell::cmd;

/// A program on PATH, or in the sbin folders a non-root PATH lacks.
pub fn find_program(name: &str) -> Option<PathBuf> {
    which::which(name).ok().or_else(|| {
        ["/usr/sbin", "/sbin", "/usr/local/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    })
}

/// Whether `pid` runs and its command line names `marker` (our config file).
pub fn pid_alive(pid: u32, marker: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            c.contains(&marker.display().to_string())
        })
        .unwrap_or(false)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn port_free(port: u16) -> bool {
    port != 0 && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Waits (at most 5 s) until a port a stopped daemon held is free again.
pub(super) fn wait_port_free(port: u16) {
    let t = Instant::now();
    while !port_free(port) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The recorded port when it is still free, otherwise a new free one (said aloud).
pub(super) fn choose_port(recorded: u16, what: &str) -> Result<u16> {
    if port_free(recorded) {
        return Ok(recorded);
    }
    if recorded != 0 {
        eprintln!("{what}: port {recorded} is taken by another process; choosing a new one");
    }
    free_port()
}

pub(super) fn wait_until(
    what: &str,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log_tail = fs::read_to_string(log).unwrap_or_default();
    bail!(
        "{what} did not become ready within {timeout:?}; its log ({}):\n{}",
        log.display(),
        tail(&log_tail, 15)
    )
}

pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn ssh_banner(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    s.read(&mut buf)
        .map(|n| buf[..n].starts_with(b"SSH-2.0"))
        .unwrap_or(false)
}

/// The `auth:` block of the registry's config in basic mode (htpasswd, bcrypt).
pub fn basic_auth_config(p: &Paths) -> String {
    format!(
        "auth:\n  htpasswd:\n    realm: observer-sandbox\n    path: {}\n",
        p.registry().join("htpasswd").display()
    )
}

fn registry_config(p: &Paths, port: u16, auth: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
        p.registry().join("data").display(),
    )
}

/// The sandbox user's generated token and its htpasswd entry (once). The token is the basic
/// password in basic mode and the token service's password in token mode.
fn ensure_credentials(sh: &Ctx, p: &Paths) -> Result<()> {
    if p.token().is_file() {
        return Ok(());
    }
    let token = random_hex(24)?;
    let out = sh.capture(
        cmd!(sh, "htpasswd -niB {REGISTRY_USER}"),
        Some(format!("{token}\n").as_bytes()),
    )?;
    if !out.ok {
        bail!("htpasswd failed: {}", out.stderr.trim());
    }
    fs::write(
        p.registry().join("htpasswd"),
        out.stdout.trim_end().to_string() + "\n",
    )?;
    fs::write(p.token(), &token)?;
    fs::set_permissions(p.token(), fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Starts the registry with `auth` (an `auth:` config block) as `mode`; a running registry is
/// reused when its config is exactly that, and restarted (same port, same storage) otherwise.
pub fn start_registry(sh: &Ctx, p: &Paths, st: &mut State, mode: &str, auth: &str) -> Result<()> {
    let dir = p.registry();
    let config = dir.join("config.yml");
    if let Some(pid) = st.registry_pid {
        if pid_alive(pid, &config) && http_status(st.registry_port, "/v2/") == Some(401) {
            let running = fs::read_to_string(&config).unwrap_or_default();
            if running == registry_config(p, st.registry_port, auth) {
                eprintln!(
                    "registry already running (pid {pid}, 127.0.0.1:{}, {mode} auth)",
                    st.registry_port
                );
                return Ok(());
            }
            eprintln!(
                "registry: switching from {} to {mode} auth; restarting it (pid {pid})",
                st.auth()
            );
            stop_pid(pid, &config, "registry");
            // Its cmdline empties before its sockets close: wait for the port, keep it.
            wait_port_free(st.registry_port);
        } else {
            eprintln!(
                "registry: stale PID record (pid {pid} is not our registry); starting it again"
            );
        }
        st.registry_pid = None;
    }
    ensure_credentials(sh, p)?;
    let port = choose_port(st.registry_port, "registry")?;
    fs::write(&config, registry_config(p, port, auth))?;
    let bin = find_program("docker-registry").context("docker-registry not found")?;
    let log = dir.join("registry.log");
    let pid = spawn_daemon(&bin, &["serve".into(), config.display().to_string()], &log)?;
    st.registry_pid = Some(pid);
    st.registry_port = port;
    st.registry_auth = mode.to_string();
    st.registry_kind = "docker-registry (Debian package, distribution 2.x)".into();
    wait_until("the registry", &log, Duration::from_secs(15), || {
        http_status(port, "/v2/") == Some(401)
    })?;
    Ok(())
}

pub fn start_sshd(sh: &Ctx, p: &Paths, st: &mut State) -> Result<()> {
    let dir = p.ssh();
    let config = dir.join("sshd_config");
    // The sandbox's user, and the non-root deploy user when there is one (issue 13 item 3).
    let allow = format!("AllowUsers {} {}", st.user, st.deploy_user)
        .trim_end()
        .to_string();
    if let Some(pid) = st.sshd_pid {
        if pid_alive(pid, &config) && ssh_banner(st.ssh_port) {
            let running = fs::read_to_string(&config).unwrap_or_default();
            if running.lines().any(|l| l == allow) {
                eprintln!(
                    "sshd already running (pid {pid}, 127.0.0.1:{})",
                    st.ssh_port
                );
                return Ok(());
            }
            eprintln!("sshd: the allowed users changed ({allow}); restarting it (pid {pid})");
            stop_pid(pid, &config, "sshd");
            wait_port_free(st.ssh_port);
        } else {
            eprintln!("sshd: stale PID record (pid {pid} is not our sshd); starting it again");
        }
        st.sshd_pid = None;
    }
    for key in ["host_ed25519", "client_ed25519"] {
        if !dir.join(key).is_file() {
            let comment = format!("observer-sandbox-{key}");
            let file = dir.join(key);
            sh.read(cmd!(
                sh,
                "ssh-keygen -q -t ed25519 -N '' -C {comment} -f {file}"
            ))?;
        }
    }
    fs::copy(dir.join("client_ed25519.pub"), dir.join("authorized_keys"))?;
    let port = choose_port(st.ssh_port, "sshd")?;
    fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pidf}\nAuthorizedKeysFile {ak}\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n{allow}\nUsePAM no\nStrictModes no\nLogLevel INFO\nMaxSessions 64\nMaxStartups 64\nSetEnv PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin\n",
            hk = dir.join("host_ed25519").display(),
            pidf = dir.join("sshd.pid").display(),
            ak = dir.join("authorized_keys").display(),
        ),
    )?;
    // Pin the host key: known_hosts holds exactly this sandbox's key for [127.0.0.1]:port.
    let hostpub = fs::read_to_string(dir.join("host_ed25519.pub"))?;
    let mut parts = hostpub.split_whitespace();
    let (kt, kb) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    fs::write(p.known_hosts(), format!("[127.0.0.1]:{port} {kt} {kb}\n"))?;
    fs::create_dir_all("/run/sshd").ok(); // privilege-separation directory sshd insists on
    let bin = find_program("sshd").context("sshd not found")?;
    let log = p.sshd_log();
    let args = [
        "-D".to_string(),
        "-f".into(),
        config.display().to_string(),
        "-E".into(),
        log.display().to_string(),
    ];
    let pid = spawn_daemon(&bin, &args, &log)?;
    st.sshd_pid = Some(pid);
    st.ssh_port = port;
    wait_until("sshd", &log, Duration::from_secs(10), || ssh_banner(port))?;
    Ok(())
}

/// Stops our daemon `pid` (TERM, then KILL after 5 s).
pub fn stop_pid(pid: u32, marker: &Path, what: &str) {
    if !pid_alive(pid, marker) {
        eprintln!("{what}: not running (stale PID {pid})");
        return;
    }
    let _ = duct::cmd!("kill", pid.to_string())
        .stdin_null()
        .stderr_null()
        .unchecked()
        .run();
    let t = Instant::now();
    while pid_alive(pid, marker) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if pid_alive(pid, marker) {
        let _ = duct::cmd!("kill", "-9", pid.to_string())
            .stdin_null()
            .stderr_null()
            .unchecked()
            .run();
    }
    eprintln!("{what}: stopped (pid {pid})");
}
