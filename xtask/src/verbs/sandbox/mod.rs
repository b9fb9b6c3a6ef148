//! `cargo xtask sandbox up|down|status`: a real OCI registry (htpasswd basic auth, or token auth
//! with a token service, as GHCR answers) and a real OpenSSH server on 127.0.0.1 standing in for
//! GHCR and the VM, a local Python base image, and a bare git repository standing in for the git
//! remote. All state lives under `target/sandbox/` (`sandbox_state`).

mod base_image;
mod daemons;
mod deploy_user;
mod swarm;
mod swarm_engine;
mod swarm_net;
mod swarm_sshd;
mod swarm_status;
mod token;

/// `GET path` on 127.0.0.1:`port`: the HTTP status (the bench polls `/health` with it).
pub use daemons::http_status;

use crate::compose;
use crate::core::contract::{COMPOSE_FILE, CONTAINER};
use crate::core::exit::{exit_code, fail};
use crate::core::util::is_root;
use crate::ctx::Ctx;
use crate::sandbox_state::{self, Paths, State, DIR, REGISTRY_USER};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::fs;
use xshell::cmd;

/// The one list of Debian packages (used by `.ci/run` too).
pub const PREREQS_SCRIPT: &str = "scripts/install-prereqs.sh";

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
        /// How the registry authenticates: `basic` (htpasswd) or `token` (a token service on
        /// 127.0.0.1, as GHCR answers). Switching restarts the registry (same port and storage).
        #[arg(long, value_enum, default_value_t = RegistryAuth::Basic)]
        registry_auth: RegistryAuth,
        /// Also start the swarm sandbox: three Docker engines in network namespaces joined into
        /// one swarm, the manager's sshd on 10.213.0.11:2222 (root; README "The swarm sandbox").
        #[arg(long)]
        swarm: bool,
    },
    /// Stop what `up` started (by recorded PID) and the sandbox's observer container; the swarm
    /// sandbox too.
    Down {
        /// Take down only the swarm sandbox.
        #[arg(long)]
        swarm: bool,
    },
    /// Stop or start one engine of the swarm sandbox (a node lost, a node back).
    Node {
        #[arg(value_parser = ["stop", "start"])]
        action: String,
        /// xtsw-m1, xtsw-w1 or xtsw-w2.
        name: String,
    },
    /// Say what runs and what does not.
    Status {
        #[arg(long)]
        json: bool,
    },
}

/// The registry's authentication mode.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryAuth {
    /// htpasswd (bcrypt) basic auth.
    Basic,
    /// Bearer tokens from the sandbox's token service (the distribution token specification).
    Token,
}

impl RegistryAuth {
    pub fn name(self) -> &'static str {
        match self {
            RegistryAuth::Basic => "basic",
            RegistryAuth::Token => "token",
        }
    }
}

impl Sandbox {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        match self.cmd {
            SandboxCmd::Up {
                install,
                registry_auth,
                swarm,
            } => {
                let ci = std::env::var("CI").as_deref() == Ok("true");
                let mut st = up_with(sh, install || ci, registry_auth)?;
                if swarm {
                    swarm::up(sh, &Paths::new(sh), &mut st)?;
                }
                Ok(())
            }
            SandboxCmd::Down { swarm: true } => {
                let mut st = sandbox_state::load(sh).unwrap_or_default();
                swarm::teardown(sh, &Paths::new(sh), &mut st);
                eprintln!("swarm sandbox: down");
                Ok(())
            }
            SandboxCmd::Down { swarm: false } => down(sh),
            SandboxCmd::Node { action, name } => {
                let p = Paths::new(sh);
                let mut st = sandbox_state::load(sh).unwrap_or_default();
                if action == "stop" {
                    swarm::node_stop(&p, &mut st, &name)
                } else {
                    swarm::node_start(sh, &p, &mut st, &name)
                }
            }
            SandboxCmd::Status { json } => status(sh, json),
        }
    }
}

/// The Debian packages `scripts/install-prereqs.sh --check` reports missing.
fn missing_packages(sh: &Ctx) -> Result<Vec<String>> {
    let script = sh.path(PREREQS_SCRIPT);
    let out = sh.capture(cmd!(sh, "bash {script} --check"), None)?;
    let missing: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if !out.ok && missing.is_empty() {
        bail!("{PREREQS_SCRIPT} --check failed: {}", out.stderr.trim());
    }
    Ok(missing)
}

/// Runs `scripts/install-prereqs.sh` (root on Debian).
fn install(sh: &Ctx) -> Result<()> {
    if !is_root() {
        bail!("--install needs root on a Debian system; run: sudo bash {PREREQS_SCRIPT}");
    }
    let script = sh.path(PREREQS_SCRIPT);
    sh.run_visible("installing the prerequisites", cmd!(sh, "bash {script}"))
}

/// Starts (or reuses) everything with a basic-auth registry; installs missing packages when
/// allowed.
pub fn up(sh: &Ctx, allow_install: bool) -> Result<State> {
    up_with(sh, allow_install, RegistryAuth::Basic)
}

/// Starts (or reuses) everything, the registry in `auth` mode; installs missing packages when
/// allowed.
pub fn up_with(sh: &Ctx, allow_install: bool, auth: RegistryAuth) -> Result<State> {
    let p = Paths::new(sh);
    let mut st = sandbox_state::load(sh).unwrap_or_default();
    let missing = missing_packages(sh)?;
    if !missing.is_empty() {
        if allow_install {
            install(sh)?;
        } else {
            return Err(fail(format!(
                "missing prerequisites (Debian packages): {}\ninstall them with: bash {PREREQS_SCRIPT}\n(or run `cargo xtask sandbox up --install` as root)",
                missing.join(" ")
            )));
        }
    }
    if !sh.ok(cmd!(sh, "docker info")) {
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
        .unwrap_or_else(|| {
            sh.read(cmd!(sh, "id -un"))
                .unwrap_or_else(|_| "root".into())
        });
    match auth {
        RegistryAuth::Token => {
            token::start(sh, &p, &mut st)?;
            sandbox_state::save(&p, &st)?;
            let block = token::auth_config(&p, &st);
            daemons::start_registry(sh, &p, &mut st, auth.name(), &block)?;
        }
        RegistryAuth::Basic => {
            let block = daemons::basic_auth_config(&p);
            daemons::start_registry(sh, &p, &mut st, auth.name(), &block)?;
            token::stop(&p, &mut st);
        }
    }
    sandbox_state::save(&p, &st)?;
    deploy_user::ensure(sh, &p, &mut st)?;
    sandbox_state::save(&p, &st)?;
    daemons::start_sshd(sh, &p, &mut st)?;
    sandbox_state::save(&p, &st)?;
    st.base_image = base_image::ensure(sh, &p)?;
    sandbox_state::save(&p, &st)?;
    if !p.git_remote().join("HEAD").is_file() {
        let git = p.git_remote();
        sh.read(cmd!(sh, "git init --bare -q {git}"))?;
    }
    // A running swarm sandbox follows the registry (its port, its token service) and the
    // restarted sshd's known_hosts.
    swarm::follow(&p, &mut st)?;
    let auth_line = match auth {
        RegistryAuth::Basic => "basic auth (htpasswd)".to_string(),
        RegistryAuth::Token => format!("token auth, token service {}", token::realm(&st)),
    };
    eprintln!(
        "sandbox up:\n  registry  {} at 127.0.0.1:{}, {auth_line} (user {REGISTRY_USER}, token in {})\n  server    sshd at {}@127.0.0.1:{} (key {}, pinned host key in {})\n  deploy    remote dir {}{}\n  base      {}{}\n  git       {}",
        st.registry_kind,
        st.registry_port,
        p.token().display(),
        st.user,
        st.ssh_port,
        p.client_key().display(),
        p.known_hosts().display(),
        p.server().join("observer").display(),
        if st.deploy_user.is_empty() {
            String::new()
        } else {
            format!(
                "; non-root deploy user {} (in group docker; {}=1) with remote dir {}",
                st.deploy_user,
                sandbox_state::NONROOT_VAR,
                p.nonroot().join("observer").display()
            )
        },
        st.base_image,
        base_note(&base_image::kind(sh, &st.base_image)),
        p.git_remote().display()
    );
    Ok(st)
}

/// Stops only what `up` started (by recorded PID) and the sandbox's observer container. Images
/// (the base image and its `python:3.11-slim` tag, releases) stay.
pub fn down(sh: &Ctx) -> Result<()> {
    let p = Paths::new(sh);
    let Some(mut st) = sandbox_state::load(sh) else {
        eprintln!("sandbox: nothing recorded under {DIR}; nothing to stop");
        return Ok(());
    };
    // The observer the sandbox server runs (started by a sandbox deploy), and a handoff's
    // candidate a killed deploy may have left.
    // Only the observer project's candidate: a foreign one (issue 12) is never touched.
    let candidate = crate::server::handoff::CANDIDATE;
    let label = format!(
        "{{{{index .Config.Labels \"{}\"}}}}",
        crate::server::handoff::PROJECT_LABEL
    );
    let owner = sh.capture(
        cmd!(sh, "docker container inspect -f {label} {candidate}"),
        None,
    );
    if owner.is_ok_and(|o| o.ok && o.stdout.trim() == crate::core::contract::PROJECT) {
        let _ = sh.capture(cmd!(sh, "docker rm -f {candidate}"), None);
    }
    compose_down(sh, &p.server().join("observer"));
    if st.swarm.is_some() {
        swarm::teardown(sh, &p, &mut st);
        eprintln!("swarm sandbox: down");
    }
    if let Some(pid) = st.registry_pid.take() {
        daemons::stop_pid(pid, &p.registry().join("config.yml"), "registry");
    }
    token::stop(&p, &mut st);
    if let Some(pid) = st.sshd_pid.take() {
        daemons::stop_pid(pid, &p.ssh().join("sshd_config"), "sshd");
    }
    deploy_user::remove(sh, &p, &mut st);
    sandbox_state::save(&p, &st)?;
    Ok(())
}

/// `compose down` of the observer deployed in `remote` (a sandbox deploy root), when deployed.
fn compose_down(sh: &Ctx, remote: &std::path::Path) {
    if !remote.join(COMPOSE_FILE).is_file() {
        return;
    }
    if let Some(c) = compose::detect_local(sh) {
        let argv = c.argv();
        let (program, args) = (&argv[0], &argv[1..]);
        let _dir = sh.push_dir(remote);
        let ok = sh.ok(cmd!(
            sh,
            "{program} {args...} -f {COMPOSE_FILE} down --timeout 10"
        ));
        eprintln!(
            "observer container ({}): {}",
            remote.display(),
            if ok {
                "stopped"
            } else {
                "not stopped (see `docker ps`)"
            }
        );
    }
}

/// What `status` says about the base image after its tag.
fn base_note(kind: &base_image::Kind) -> String {
    use base_image::{Kind, OFFICIAL};
    match kind {
        Kind::Missing => " (`cargo xtask sandbox up` builds it)".into(),
        Kind::Real => String::new(),
        Kind::StandIn { official: true } => {
            format!(" (stand-in for {OFFICIAL}, also tagged {OFFICIAL}: the real image is absent)")
        }
        Kind::StandIn { official: false } => format!(" (stand-in for {OFFICIAL})"),
        Kind::Outdated => {
            format!(" (OUTDATED stand-in for {OFFICIAL}: `cargo xtask sandbox up` rebuilds it)")
        }
    }
}

/// What runs; exit 1 when the registry or sshd is down.
pub fn status(sh: &Ctx, json: bool) -> Result<()> {
    let p = Paths::new(sh);
    let st = sandbox_state::load(sh).unwrap_or_default();
    let token_mode = st.auth() == "token";
    let token_up = token::running(&p, &st);
    let reg = st
        .registry_pid
        .is_some_and(|pid| daemons::pid_alive(pid, &p.registry().join("config.yml")))
        && daemons::http_status(st.registry_port, "/v2/") == Some(401)
        && (token_up || !token_mode);
    let sshd = st
        .sshd_pid
        .is_some_and(|pid| daemons::pid_alive(pid, &p.ssh().join("sshd_config")))
        && daemons::ssh_banner(st.ssh_port);
    let base_kind = base_image::kind(sh, &st.base_image);
    let base = base_kind != base_image::Kind::Missing;
    let git = p.git_remote().join("HEAD").is_file();
    let format = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}";
    let observer = sh
        .read(cmd!(sh, "docker inspect -f {format} {CONTAINER}"))
        .ok();
    if json {
        let v = serde_json::json!({
            "registry": {"running": reg, "address": format!("127.0.0.1:{}", st.registry_port), "pid": st.registry_pid, "kind": st.registry_kind, "auth": st.auth()},
            "token_service": {"running": token_up, "realm": token_mode.then(|| token::realm(&st)), "pid": st.token_pid},
            "sshd": {"running": sshd, "address": format!("127.0.0.1:{}", st.ssh_port), "pid": st.sshd_pid},
            "base_image": {
                "present": base,
                "tag": st.base_image,
                "stand_in": matches!(base_kind, base_image::Kind::StandIn { .. } | base_image::Kind::Outdated),
                "outdated": base_kind == base_image::Kind::Outdated,
                "also_tagged": match base_kind {
                    base_image::Kind::StandIn { official: true } => Some(base_image::OFFICIAL),
                    _ => None,
                },
            },
            "git_remote": {"present": git, "path": p.git_remote()},
            "observer": observer,
            "swarm": swarm_status::status_json(sh, &p, &st),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let yn = |b: bool| if b { "running" } else { "not running" };
        println!(
            "registry    {:<12} 127.0.0.1:{} {}, {} auth",
            yn(reg),
            st.registry_port,
            st.registry_kind,
            st.auth()
        );
        if token_mode {
            println!("token svc   {:<12} {}", yn(token_up), token::realm(&st));
        }
        println!("sshd        {:<12} 127.0.0.1:{}", yn(sshd), st.ssh_port);
        println!(
            "base image  {:<12} {}{}",
            if base { "present" } else { "missing" },
            st.base_image,
            base_note(&base_kind)
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
        println!("swarm       {}", swarm_status::describe(sh, &p, &st));
    }
    if !(reg && sshd) {
        return Err(exit_code(
            "the sandbox is not fully up (`cargo xtask sandbox up`)",
            1,
        ));
    }
    Ok(())
}
