//! `cargo xtask sandbox up|down|status`: a real OCI registry (htpasswd auth) and a real OpenSSH
//! server on 127.0.0.1 standing in for GHCR and the VM, a local Python base image, and a bare git
//! repository standing in for the git remote. All state lives under `target/sandbox/`.

use crate::compose;
use crate::config::Env;
use crate::shell::{is_root, random_hex, run_capture, which, Shell};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const DIR: &str = "target/sandbox";
pub const BASE_TAG: &str = "observer-base:py3-bookworm";
pub const REGISTRY_USER: &str = "observer-ci";

#[derive(Args)]
pub struct Sandbox {
    #[command(subcommand)]
    cmd: SandboxCmd,
}

#[derive(Subcommand)]
enum SandboxCmd {
    /// Start the registry and sshd, build the base image, create the git remote (idempotent).
    Up {
        /// Install missing prerequisites with apt-get (root on Debian; automatic when CI=true).
        #[arg(long)]
        install: bool,
    },
    /// Stop what `up` started (by recorded PID) and the sandbox's observer container.
    Down,
    /// Say what runs and what does not.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct State {
    pub registry_pid: Option<u32>,
    pub registry_port: u16,
    pub registry_kind: String,
    pub sshd_pid: Option<u32>,
    pub ssh_port: u16,
    pub user: String,
    pub base_image: String,
}

pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    /// `target/sandbox/`, or XTASK_SANDBOX_DIR (tests share one sandbox across scratch clones).
    pub fn new(sh: &Shell) -> Paths {
        let root = crate::shell::env_nonempty("XTASK_SANDBOX_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| sh.path(DIR));
        Paths { root }
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn registry(&self) -> PathBuf {
        self.root.join("registry")
    }
    pub fn token(&self) -> PathBuf {
        self.registry().join("token")
    }
    pub fn ssh(&self) -> PathBuf {
        self.root.join("ssh")
    }
    pub fn client_key(&self) -> PathBuf {
        self.ssh().join("client_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.ssh().join("known_hosts")
    }
    pub fn sshd_log(&self) -> PathBuf {
        self.ssh().join("sshd.log")
    }
    pub fn git_remote(&self) -> PathBuf {
        self.root.join("git/observer.git")
    }
    pub fn server(&self) -> PathBuf {
        self.root.join("server")
    }
}

pub fn load_state(sh: &Shell) -> Option<State> {
    let text = fs::read_to_string(Paths::new(sh).state()).ok()?;
    serde_json::from_str(&text).ok()
}

fn save_state(p: &Paths, st: &State) -> Result<()> {
    let tmp = p.root.join("state.json.tmp");
    fs::write(&tmp, serde_json::to_string_pretty(st)?)?;
    fs::rename(&tmp, p.state())?;
    Ok(())
}

/// Fills a sandbox environment's addresses from the running sandbox.
pub fn apply_state(sh: &Shell, env: &mut Env) -> Result<()> {
    let st = load_state(sh).ok_or_else(|| {
        crate::shell::fail("the sandbox is not set up: run `cargo xtask sandbox up` first")
    })?;
    let p = Paths::new(sh);
    env.registry = format!("127.0.0.1:{}", st.registry_port);
    for s in &mut env.servers {
        s.port = st.ssh_port;
        s.user = st.user.clone();
    }
    env.known_hosts = p.known_hosts();
    env.identity = Some(p.client_key());
    env.git_remote = p.git_remote().display().to_string();
    env.remote_dir = p.server().join("observer").display().to_string();
    env.backups_dir = p.server().join("backups").display().to_string();
    env.cfg.base_image = st.base_image.clone();
    Ok(())
}

/// The sandbox registry's generated credentials.
pub fn registry_credentials(sh: &Shell) -> Option<(String, String)> {
    let token = fs::read_to_string(Paths::new(sh).token()).ok()?;
    Some((REGISTRY_USER.to_string(), token.trim().to_string()))
}

impl Sandbox {
    pub fn run(self, sh: &Shell) -> Result<()> {
        match self.cmd {
            SandboxCmd::Up { install } => {
                let ci = std::env::var("CI").as_deref() == Ok("true");
                up(sh, install || ci).map(|_| ())
            }
            SandboxCmd::Down => down(sh),
            SandboxCmd::Status { json } => status(sh, json),
        }
    }
}

/// (what, program, Debian package).
const PREREQS: &[(&str, &str, &str)] = &[
    ("docker CLI", "docker", "docker.io"),
    ("OCI registry", "docker-registry", "docker-registry"),
    ("OpenSSH server", "sshd", "openssh-server"),
    ("OpenSSH client", "ssh", "openssh-client"),
    ("ssh-keygen", "ssh-keygen", "openssh-client"),
    ("htpasswd (bcrypt)", "htpasswd", "apache2-utils"),
    ("curl", "curl", "curl"),
    ("git", "git", "git"),
    ("zstd", "zstd", "zstd"),
];

fn find_program(name: &str) -> Option<PathBuf> {
    which(name).or_else(|| {
        ["/usr/sbin", "/sbin", "/usr/local/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    })
}

fn missing_packages(sh: &Shell, need_debootstrap: bool) -> Vec<(&'static str, &'static str)> {
    let mut missing: Vec<(&str, &str)> = PREREQS
        .iter()
        .filter(|(_, prog, _)| find_program(prog).is_none())
        .map(|(what, _, pkg)| (*what, *pkg))
        .collect();
    if compose::detect_local(sh).is_none() {
        missing.push(("docker compose v2 or docker-compose v1", "docker-compose"));
    }
    if need_debootstrap && find_program("debootstrap").is_none() {
        missing.push((
            "debootstrap (to build the Python base image)",
            "debootstrap",
        ));
    }
    missing
}

fn install(sh: &Shell, pkgs: &[&str]) -> Result<()> {
    if !is_root() || which("apt-get").is_none() {
        bail!("--install needs root on a Debian system (apt-get); install by hand: apt-get install {}", pkgs.join(" "));
    }
    eprintln!("==> apt-get install {}", pkgs.join(" "));
    let ok = sh.cmd("apt-get").args(["update", "-q"]).status()?.success()
        && sh
            .cmd("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success();
    if !ok {
        bail!("apt-get install {} failed", pkgs.join(" "));
    }
    Ok(())
}

fn pid_alive(pid: u32, marker: &Path) -> bool {
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

/// The recorded port when it is still free, otherwise a new free one (said aloud).
fn choose_port(recorded: u16, what: &str) -> Result<u16> {
    if port_free(recorded) {
        return Ok(recorded);
    }
    if recorded != 0 {
        eprintln!("{what}: port {recorded} is taken by another process; choosing a new one");
    }
    free_port()
}

fn spawn_daemon(cmd: &mut Command, log: &Path) -> Result<u32> {
    let logf = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(logf.try_clone()?))
        .stderr(Stdio::from(logf))
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok(child.id())
}

fn wait_until(
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
        crate::plan::tail(&log_tail, 15)
    )
}

fn http_status(port: u16, path: &str) -> Option<u16> {
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

fn ssh_banner(port: u16) -> bool {
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

pub fn up(sh: &Shell, allow_install: bool) -> Result<State> {
    let p = Paths::new(sh);
    let mut st = load_state(sh).unwrap_or_default();
    let need_base = !sh.ok(&["docker", "image", "inspect", BASE_TAG])
        && !sh.ok(&["docker", "image", "inspect", "python:3.11-slim"]);
    let missing = missing_packages(sh, need_base);
    if !missing.is_empty() {
        let mut pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        pkgs.dedup();
        if allow_install {
            install(sh, &pkgs)?;
        } else {
            let list: Vec<String> = missing
                .iter()
                .map(|(w, p)| format!("  - {w}: package {p}"))
                .collect();
            return Err(crate::shell::fail(format!(
                "missing prerequisites:\n{}\ninstall them with: apt-get install {}\n(or run `cargo xtask sandbox up --install` as root)",
                list.join("\n"),
                pkgs.join(" ")
            )));
        }
    }
    if !sh.ok(&["docker", "info"]) {
        bail!("the docker daemon does not answer (`docker info` failed): start it, e.g. `systemctl start docker`");
    }
    for d in [
        p.registry().join("data"),
        p.ssh(),
        p.server().join("observer"),
        p.server().join("backups"),
        p.root.join("git"),
    ] {
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    st.user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| sh.read(&["id", "-un"]).unwrap_or_else(|_| "root".into()));
    start_registry(sh, &p, &mut st)?;
    save_state(&p, &st)?;
    start_sshd(sh, &p, &mut st)?;
    save_state(&p, &st)?;
    st.base_image = ensure_base_image(sh, &p)?;
    save_state(&p, &st)?;
    if !p.git_remote().join("HEAD").is_file() {
        sh.read(&[
            "git",
            "init",
            "--bare",
            "-q",
            &p.git_remote().display().to_string(),
        ])?;
    }
    eprintln!(
        "sandbox up:\n  registry  {} at 127.0.0.1:{} (user {REGISTRY_USER}, token in {})\n  server    sshd at {}@127.0.0.1:{} (key {}, pinned host key in {})\n  deploy    remote dir {}\n  base      {}\n  git       {}",
        st.registry_kind,
        st.registry_port,
        p.token().display(),
        st.user,
        st.ssh_port,
        p.client_key().display(),
        p.known_hosts().display(),
        p.server().join("observer").display(),
        st.base_image,
        p.git_remote().display()
    );
    Ok(st)
}

fn start_registry(sh: &Shell, p: &Paths, st: &mut State) -> Result<()> {
    let dir = p.registry();
    let config = dir.join("config.yml");
    if let Some(pid) = st.registry_pid {
        if pid_alive(pid, &config) && http_status(st.registry_port, "/v2/") == Some(401) {
            eprintln!(
                "registry already running (pid {pid}, 127.0.0.1:{})",
                st.registry_port
            );
            return Ok(());
        }
        eprintln!("registry: stale PID record (pid {pid} is not our registry); starting it again");
        st.registry_pid = None;
    }
    if !p.token().is_file() {
        let token = random_hex(24)?;
        let out = run_capture(
            sh.cmd("htpasswd").args(["-niB", REGISTRY_USER]),
            Some(format!("{token}\n").as_bytes()),
        )?;
        if !out.ok {
            bail!("htpasswd failed: {}", out.stderr.trim());
        }
        fs::write(
            dir.join("htpasswd"),
            out.stdout.trim_end().to_string() + "\n",
        )?;
        fs::write(p.token(), &token)?;
        fs::set_permissions(p.token(), fs::Permissions::from_mode(0o600))?;
    }
    let port = choose_port(st.registry_port, "registry")?;
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: observer-sandbox\n    path: {}\n",
            dir.join("data").display(),
            dir.join("htpasswd").display()
        ),
    )?;
    let bin = find_program("docker-registry").context("docker-registry not found")?;
    let log = dir.join("registry.log");
    let pid = spawn_daemon(Command::new(bin).arg("serve").arg(&config), &log)?;
    st.registry_pid = Some(pid);
    st.registry_port = port;
    st.registry_kind = "docker-registry (Debian package, distribution 2.x)".into();
    wait_until("the registry", &log, Duration::from_secs(15), || {
        http_status(port, "/v2/") == Some(401)
    })?;
    Ok(())
}

fn start_sshd(sh: &Shell, p: &Paths, st: &mut State) -> Result<()> {
    let dir = p.ssh();
    let config = dir.join("sshd_config");
    if let Some(pid) = st.sshd_pid {
        if pid_alive(pid, &config) && ssh_banner(st.ssh_port) {
            eprintln!(
                "sshd already running (pid {pid}, 127.0.0.1:{})",
                st.ssh_port
            );
            return Ok(());
        }
        eprintln!("sshd: stale PID record (pid {pid} is not our sshd); starting it again");
        st.sshd_pid = None;
    }
    for key in ["host_ed25519", "client_ed25519"] {
        if !dir.join(key).is_file() {
            sh.read(&[
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                &format!("observer-sandbox-{key}"),
                "-f",
                &dir.join(key).display().to_string(),
            ])?;
        }
    }
    fs::copy(dir.join("client_ed25519.pub"), dir.join("authorized_keys"))?;
    let port = choose_port(st.ssh_port, "sshd")?;
    fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pidf}\nAuthorizedKeysFile {ak}\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAllowUsers {user}\nUsePAM no\nStrictModes no\nLogLevel INFO\nMaxSessions 64\nMaxStartups 64\nSetEnv PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin\n",
            hk = dir.join("host_ed25519").display(),
            pidf = dir.join("sshd.pid").display(),
            ak = dir.join("authorized_keys").display(),
            user = st.user,
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
    let pid = spawn_daemon(
        Command::new(bin)
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(&log),
        &log,
    )?;
    st.sshd_pid = Some(pid);
    st.ssh_port = port;
    wait_until("sshd", &log, Duration::from_secs(10), || ssh_banner(port))?;
    Ok(())
}

/// The Debian mirror and suite this machine's apt uses (no mirror is written in the repository).
pub fn apt_mirror() -> Result<(String, String)> {
    let os = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string())
        .context("no VERSION_CODENAME in /etc/os-release: not a Debian system?")?;
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        if let Some(uri) = mirror_in(&text, &codename) {
            return Ok((uri, codename));
        }
    }
    bail!("no Debian mirror for `{codename}` found in /etc/apt/sources.list(.d)")
}

/// The first URI serving `<codename>` with component `main`, from a one-line or deb822 file.
pub fn mirror_in(text: &str, codename: &str) -> Option<String> {
    for block in text.split("\n\n") {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
            let comps = field("Components:").unwrap_or_default();
            if suites.split_whitespace().any(|s| s == codename)
                && comps.split_whitespace().any(|c| c == "main")
            {
                return uris.split_whitespace().next().map(|s| s.to_string());
            }
        }
    }
    for line in text.lines() {
        let mut w = line.split_whitespace().peekable();
        if w.next() != Some("deb") {
            continue;
        }
        if w.peek().is_some_and(|x| x.starts_with('[')) {
            for x in w.by_ref() {
                if x.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(suite)) = (w.next(), w.next()) else {
            continue;
        };
        if suite == codename && w.any(|c| c == "main") {
            return Some(uri.to_string());
        }
    }
    None
}

fn ensure_base_image(sh: &Shell, p: &Paths) -> Result<String> {
    if sh.ok(&["docker", "image", "inspect", "python:3.11-slim"]) {
        return Ok("python:3.11-slim".into());
    }
    if sh.ok(&["docker", "image", "inspect", BASE_TAG]) {
        return Ok(BASE_TAG.into());
    }
    eprintln!(
        "==> base image: python:3.11-slim is not present; building {BASE_TAG} with debootstrap"
    );
    let (mirror, suite) = apt_mirror()?;
    let rootfs = p.root.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    let t = Instant::now();
    let status = sh
        .cmd("debootstrap")
        .args(["--variant=minbase", "--include=python3", &suite])
        .arg(&rootfs)
        .arg(&mirror)
        .stdout(Stdio::null())
        .status()
        .context("running debootstrap")?;
    if !status.success() {
        bail!("debootstrap failed (suite {suite}); see the output above");
    }
    for junk in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
    ] {
        let d = rootfs.join(junk);
        let _ = fs::remove_dir_all(&d);
        let _ = fs::create_dir_all(&d);
    }
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()?;
    let import = Command::new("docker")
        .args([
            "import",
            "-c",
            "CMD [\"python3\"]",
            "-c",
            "ENV LANG=C.UTF-8",
            "-",
            BASE_TAG,
        ])
        .stdin(tar.stdout.take().context("tar stdout")?)
        .stdout(Stdio::null())
        .status()?;
    let tar_ok = tar.wait()?.success();
    let _ = fs::remove_dir_all(&rootfs);
    if !(import.success() && tar_ok) {
        bail!("docker import of the debootstrap root failed");
    }
    eprintln!("    built {BASE_TAG} in {:.0}s", t.elapsed().as_secs_f64());
    Ok(BASE_TAG.into())
}

fn stop_pid(pid: u32, marker: &Path, what: &str) {
    if !pid_alive(pid, marker) {
        eprintln!("{what}: not running (stale PID {pid})");
        return;
    }
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let t = Instant::now();
    while pid_alive(pid, marker) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if pid_alive(pid, marker) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    eprintln!("{what}: stopped (pid {pid})");
}

pub fn down(sh: &Shell) -> Result<()> {
    let p = Paths::new(sh);
    let Some(mut st) = load_state(sh) else {
        eprintln!("sandbox: nothing recorded under {DIR}; nothing to stop");
        return Ok(());
    };
    // The observer the sandbox server runs (started by a sandbox deploy).
    let remote = p.server().join("observer");
    if remote.join("docker-compose.server.yml").is_file() {
        if let Some(c) = compose::detect_local(sh) {
            let mut argv = c.argv();
            argv.extend([
                "-f".into(),
                "docker-compose.server.yml".into(),
                "down".into(),
                "--timeout".into(),
                "10".into(),
            ]);
            let ok = Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(&remote)
                .stdin(Stdio::null())
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            eprintln!(
                "observer container: {}",
                if ok {
                    "stopped"
                } else {
                    "not stopped (see `docker ps`)"
                }
            );
        }
    }
    if let Some(pid) = st.registry_pid.take() {
        stop_pid(pid, &p.registry().join("config.yml"), "registry");
    }
    if let Some(pid) = st.sshd_pid.take() {
        stop_pid(pid, &p.ssh().join("sshd_config"), "sshd");
    }
    save_state(&p, &st)?;
    Ok(())
}

pub fn status(sh: &Shell, json: bool) -> Result<()> {
    let p = Paths::new(sh);
    let st = load_state(sh).unwrap_or_default();
    let reg = st
        .registry_pid
        .is_some_and(|pid| pid_alive(pid, &p.registry().join("config.yml")))
        && http_status(st.registry_port, "/v2/") == Some(401);
    let sshd = st
        .sshd_pid
        .is_some_and(|pid| pid_alive(pid, &p.ssh().join("sshd_config")))
        && ssh_banner(st.ssh_port);
    let base = !st.base_image.is_empty() && sh.ok(&["docker", "image", "inspect", &st.base_image]);
    let git = p.git_remote().join("HEAD").is_file();
    let observer = sh
        .read(&[
            "docker",
            "inspect",
            "-f",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            "qts-observer",
        ])
        .ok();
    if json {
        let v = serde_json::json!({
            "registry": {"running": reg, "address": format!("127.0.0.1:{}", st.registry_port), "pid": st.registry_pid, "kind": st.registry_kind},
            "sshd": {"running": sshd, "address": format!("127.0.0.1:{}", st.ssh_port), "pid": st.sshd_pid},
            "base_image": {"present": base, "tag": st.base_image},
            "git_remote": {"present": git, "path": p.git_remote()},
            "observer": observer,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let yn = |b: bool| if b { "running" } else { "not running" };
        println!(
            "registry    {:<12} 127.0.0.1:{} {}",
            yn(reg),
            st.registry_port,
            st.registry_kind
        );
        println!("sshd        {:<12} 127.0.0.1:{}", yn(sshd), st.ssh_port);
        println!(
            "base image  {:<12} {}",
            if base { "present" } else { "missing" },
            st.base_image
        );
        println!(
            "git remote  {:<12} {}",
            if git { "present" } else { "missing" },
            p.git_remote().display()
        );
        println!(
            "observer    {}",
            observer.unwrap_or_else(|| "no container".into())
        );
    }
    if !(reg && sshd) {
        return Err(crate::shell::exit_code(
            "the sandbox is not fully up (`cargo xtask sandbox up`)",
            1,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_and_one_line() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirror_in(deb822, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        let line = "# comment\ndeb [arch=amd64 signed-by=/x] http://m.example/debian bookworm main contrib\n";
        assert_eq!(
            mirror_in(line, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            mirror_in("deb http://other nodistro main\n", "bookworm"),
            None
        );
    }
}
