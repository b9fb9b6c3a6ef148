//! Layer 1: where the sandbox keeps its state (`target/sandbox/`, or `XTASK_SANDBOX_DIR`), and the
//! state record `sandbox up` writes. The configuration reads the sandbox's addresses through this
//! module only; starting and stopping the sandbox is the `sandbox` verb's business.

use crate::core::util::env_nonempty;
use crate::ctx::Ctx;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;

pub const DIR: &str = "target/sandbox";
/// The base image built by debootstrap when `python:3.11-slim` is absent.
pub const BASE_TAG: &str = "observer-base:py3-bookworm";
/// The sandbox registry's user (htpasswd).
pub const REGISTRY_USER: &str = "observer-ci";
/// The sandbox server's non-root deploy user (in group `docker`, as production's is; issue 13
/// item 3), created by `sandbox up` as root.
pub const DEPLOY_USER: &str = "observer-deploy";
/// Set (non-empty), the sandbox environment connects as [`DEPLOY_USER`] and deploys to its own
/// deploy root and backups folder ([`Paths::nonroot`]).
pub const NONROOT_VAR: &str = "XTASK_SANDBOX_NONROOT";
/// Set (non-empty, absolute), the sandbox environment's `remote_dir` and `backups_dir` (test-only:
/// the e2e tests of `setup` point them at fresh or root-owned folders).
pub const REMOTE_DIR_VAR: &str = "XTASK_SANDBOX_REMOTE_DIR";
pub const BACKUPS_DIR_VAR: &str = "XTASK_SANDBOX_BACKUPS_DIR";

/// `target/sandbox/state.json`: what `sandbox up` started, and where.
#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct State {
    pub registry_pid: Option<u32>,
    pub registry_port: u16,
    pub registry_kind: String,
    pub sshd_pid: Option<u32>,
    pub ssh_port: u16,
    pub user: String,
    pub base_image: String,
    /// How the registry authenticates: `basic` (htpasswd) or `token` (a token service, as GHCR
    /// answers). Empty in a state written before the choice existed: basic.
    #[serde(default)]
    pub registry_auth: String,
    /// The token service (token mode only).
    #[serde(default)]
    pub token_pid: Option<u32>,
    #[serde(default)]
    pub token_port: u16,
    /// The non-root deploy user (empty: none; `up` creates it only as root).
    #[serde(default)]
    pub deploy_user: String,
    /// Whether `up` created that user (so `down` removes it).
    #[serde(default)]
    pub deploy_user_created: bool,
    /// The swarm sandbox (`sandbox up --swarm`), when it is up.
    #[serde(default)]
    pub swarm: Option<SwarmState>,
}

/// One engine of the swarm sandbox.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct SwarmNode {
    /// `xtsw-m1`, `xtsw-w1`, `xtsw-w2`: the network namespace, the hostname, the node's hostname.
    pub name: String,
    /// Its address on the sandbox bridge (`10.213.0.11`…).
    pub addr: String,
    /// `manager` or `worker`.
    pub role: String,
    /// Its engine's unix socket (absolute path).
    pub socket: String,
    pub dockerd_pid: Option<u32>,
    /// Its engine's `--data-root` (named volumes under `<data_root>/volumes/`).
    pub data_root: String,
    /// The node labels `up` set (`observer=true` on the workers).
    pub labels: Vec<String>,
}

/// The swarm sandbox: three engines in network namespaces on one bridge.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct SwarmState {
    /// The bridge in the root namespace (`xtsw0`).
    pub bridge: String,
    /// The bridge's address (`10.213.0.1`).
    pub gateway: String,
    pub nodes: Vec<SwarmNode>,
    /// The manager's sshd address and port.
    pub ssh_host: String,
    pub ssh_port: u16,
    pub sshd_pid: Option<u32>,
    /// The socat forwarders (registry, token service).
    pub forward_pids: Vec<u32>,
    /// The placement label key (value `true`).
    pub label: String,
}

impl SwarmState {
    /// The manager node: the first with role `manager` (the first node when none says so).
    pub fn manager(&self) -> &SwarmNode {
        self.nodes
            .iter()
            .find(|n| n.role == "manager")
            .unwrap_or(&self.nodes[0])
    }
}

impl State {
    /// `basic` or `token`.
    pub fn auth(&self) -> &str {
        if self.registry_auth.is_empty() {
            "basic"
        } else {
            &self.registry_auth
        }
    }
}

/// The sandbox's files.
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    /// `target/sandbox/`, or `XTASK_SANDBOX_DIR` (tests share one sandbox across scratch clones).
    pub fn new(sh: &Ctx) -> Paths {
        let root = env_nonempty("XTASK_SANDBOX_DIR")
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
    /// The token service's key, certificate, script copy and log (token mode).
    pub fn token_service(&self) -> PathBuf {
        self.root.join("token-service")
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
    /// The swarm sandbox's files (engines' data roots, logs, the manager's deploy root).
    pub fn swarm(&self) -> PathBuf {
        self.root.join("swarm")
    }
    pub fn server(&self) -> PathBuf {
        self.root.join("server")
    }
    /// The non-root deploy user's server side: `observer/` (its deploy root, owned by it, with
    /// `config/ logs/ data/` owned by uid 10001), `backups/` (owned by it) and `home/`.
    pub fn nonroot(&self) -> PathBuf {
        self.root.join("server-nonroot")
    }
}

/// The recorded state, when the sandbox was set up.
pub fn load(sh: &Ctx) -> Option<State> {
    let text = fs::read_to_string(Paths::new(sh).state()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the state (temp file + rename).
pub fn save(p: &Paths, st: &State) -> Result<()> {
    let tmp = p.root.join("state.json.tmp");
    fs::write(&tmp, serde_json::to_string_pretty(st)?)?;
    fs::rename(&tmp, p.state())?;
    Ok(())
}

/// The sandbox registry's generated credentials: (user, token).
pub fn registry_credentials(sh: &Ctx) -> Option<(String, String)> {
    let token = fs::read_to_string(Paths::new(sh).token()).ok()?;
    Some((REGISTRY_USER.to_string(), token.trim().to_string()))
}
