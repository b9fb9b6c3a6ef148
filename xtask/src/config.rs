//! `app/obs_deploy/deployment_config.json`: the contract's section 5.1 structure plus the
//! `environments` the xtask deploys to. Unknown keys and wrong types are rejected with the file and
//! the key path named (exit 2). No secret value ever lives in this file.

use crate::core::contract::{APP_SECRETS, CONTRACT_VARS, DOTENV_VARS, FORBIDDEN_VAR};
pub use crate::core::contract::{COMPOSE_PATH, CONFIG_PATH};
use crate::core::dotenv;
use crate::core::exit::{fail, usage};
use crate::core::util::env_nonempty;
use crate::ctx::Ctx;
use crate::sandbox_state;
use anyhow::Result;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod bind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub deployment: Deployment,
    pub paths: Paths,
    pub environment: BTreeMap<String, String>,
    pub environments: BTreeMap<String, EnvConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub version: String,
    pub structure: String,
    pub mode: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    pub data_dir: String,
    pub log_dir: String,
    pub config_dir: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Addresses (registry port, sshd port, user) come from `target/sandbox/state.json`.
    #[serde(default)]
    pub sandbox: bool,
    pub image_repo: String,
    pub registry: String,
    pub registry_scheme: String,
    pub base_image: String,
    pub git_remote: String,
    pub release_branch: String,
    pub servers: Vec<Server>,
    pub remote_dir: String,
    pub known_hosts: String,
    pub host_port: u16,
    /// The host address the observer's port is published on (an IPv4 or IPv6 address; written
    /// to the server's `.env` as `OBSERVER_BIND_ADDRESS`, issue 15). Default `127.0.0.1`: only
    /// the server itself reaches `/health` and `/metrics`; set the server's private address (or
    /// `0.0.0.0`) when a Prometheus on another machine scrapes it.
    #[serde(default = "default_bind_address")]
    pub bind_address: String,
    pub interval_ms: u32,
    pub health_timeout_s: u64,
    /// Seconds a new version must stay healthy, without a restart, before it takes over
    /// (default 10: more than three of the compose healthcheck's 3 s intervals).
    #[serde(default = "default_soak_s")]
    pub soak_s: u64,
    pub lock_ttl_s: u64,
    pub keep_images: u32,
    pub keep_snapshots: u32,
    pub backups_dir: String,
    /// The application secrets a deploy to this environment REQUIRES (README "Secrets"): missing
    /// ones are refused before anything remote changes. Absent: every application secret
    /// (`KIS_API_KEY`, `KIS_API_SECRET`), or none for a sandbox.
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
    /// What runs the observer: `compose` (one server, the handoff of issue 11; the default) or
    /// `swarm` (the one server is a Swarm manager; `docker stack deploy`, issue 14).
    #[serde(default)]
    pub engine: Engine,
    /// Swarm only: the node label key pinning the observer (`node.labels.<key> == true`; default
    /// `observer`).
    #[serde(default)]
    pub placement_label: Option<String>,
}

/// The orchestrator of an environment (`engine` in deployment_config.json).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Compose on one server (the handoff deploy).
    #[default]
    Compose,
    /// A Docker Swarm stack driven through its manager.
    Swarm,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: String,
    pub user: String,
    pub host: String,
    pub port: u16,
}

/// Where an effective value came from (contract section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Env,
    File,
    Default,
    Unset,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Env => "env",
            Source::File => "deployment_config.json",
            Source::Default => "default",
            Source::Unset => "unset",
        }
    }
}

/// environment variable > deployment_config.json > built-in default. An empty variable is unset.
pub fn effective(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    file: &BTreeMap<String, String>,
) -> (Option<String>, Source) {
    if let Some(v) = env(name).filter(|v| !v.is_empty()) {
        return (Some(v), Source::Env);
    }
    if let Some(v) = file.get(name).filter(|v| !v.is_empty()) {
        return (Some(v.clone()), Source::File);
    }
    match CONTRACT_VARS.iter().find(|(n, _)| *n == name) {
        Some((_, d)) => (Some(d.to_string()), Source::Default),
        None => (None, Source::Unset),
    }
}

pub fn parse(text: &str, origin: &str) -> Result<ConfigFile> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let cfg: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        usage(format!("{origin}: key `{key}`: {}", e.inner()))
    })?;
    for (name, env) in &cfg.environments {
        env.validate()
            .map_err(|m| usage(format!("{origin}: key `environments.{name}.{m}")))?;
    }
    Ok(cfg)
}

pub fn load(sh: &Ctx) -> Result<ConfigFile> {
    let path = sh.path(CONFIG_PATH);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| usage(format!("{}: cannot read: {e}", path.display())))?;
    parse(&text, CONFIG_PATH)
}

fn default_soak_s() -> u64 {
    10
}

fn default_bind_address() -> String {
    "127.0.0.1".into()
}

fn check(ok: bool, key: &str, rule: &str) -> std::result::Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{key}`: {rule}"))
    }
}

fn charset(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

impl EnvConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        check(charset(&self.registry, b".-:"), "registry", "host[:port]")?;
        let path = self.image_repo.strip_prefix(&format!("{}/", self.registry));
        check(
            path.is_some_and(|p| charset(p, b"._/-") && p == p.to_lowercase()),
            "image_repo",
            "<registry>/<path>, the path of lowercase letters, digits, '.', '_', '-', '/'",
        )?;
        check(
            self.registry_scheme == "https" || self.registry_scheme == "http",
            "registry_scheme",
            "\"https\" or \"http\"",
        )?;
        check(
            charset(&self.base_image, b"._/:@-"),
            "base_image",
            "an image reference",
        )?;
        check(
            charset(&self.git_remote, b"._-"),
            "git_remote",
            "a git remote name",
        )?;
        check(
            charset(&self.release_branch, b"._/-"),
            "release_branch",
            "a branch name",
        )?;
        check(!self.servers.is_empty(), "servers", "at least one server")?;
        check(
            self.engine == Engine::Compose || self.servers.len() == 1,
            "servers",
            "exactly one server with \"engine\": \"swarm\" (the manager)",
        )?;
        if let Some(l) = &self.placement_label {
            check(
                self.engine == Engine::Swarm,
                "placement_label",
                "only with \"engine\": \"swarm\"",
            )?;
            check(
                charset(l, b"._-") && !l.starts_with('-'),
                "placement_label",
                "a node label key of [A-Za-z0-9._-]",
            )?;
        }
        for (i, s) in self.servers.iter().enumerate() {
            check(
                charset(&s.name, b"._-"),
                &format!("servers[{i}].name"),
                "[A-Za-z0-9._-]+",
            )?;
            let var_or = |v: &str, extra: &[u8]| {
                v.strip_prefix('$')
                    .map(|n| charset(n, b"_"))
                    .unwrap_or_else(|| charset(v, extra) && !v.starts_with('-'))
            };
            check(
                var_or(&s.user, b"._-"),
                &format!("servers[{i}].user"),
                "a user name or $VAR",
            )?;
            check(
                var_or(&s.host, b".-:"),
                &format!("servers[{i}].host"),
                "a host name or $VAR",
            )?;
        }
        check(
            charset(&self.remote_dir, b"._/-") && !self.remote_dir.contains(".."),
            "remote_dir",
            "a path of [A-Za-z0-9._/-] without '..'",
        )?;
        check(
            charset(&self.backups_dir, b"._/-") && !self.backups_dir.contains(".."),
            "backups_dir",
            "a path of [A-Za-z0-9._/-] without '..'",
        )?;
        check(
            self.bind_address.parse::<std::net::IpAddr>().is_ok(),
            "bind_address",
            "an IP address such as 127.0.0.1, 10.0.0.4, 0.0.0.0 or ::1",
        )?;
        check(self.interval_ms >= 10, "interval_ms", "at least 10")?;
        check(self.health_timeout_s >= 1, "health_timeout_s", "at least 1")?;
        check(self.soak_s <= 3600, "soak_s", "at most 3600")?;
        check(self.keep_images >= 1, "keep_images", "at least 1")?;
        check(self.keep_snapshots >= 1, "keep_snapshots", "at least 1")?;
        for (i, n) in self.secrets.iter().flatten().enumerate() {
            let key = format!("secrets[{i}]");
            check(
                dotenv::is_name(n),
                &key,
                "a variable name [A-Za-z_][A-Za-z0-9_]*",
            )?;
            check(
                !DOTENV_VARS.contains(&n.as_str())
                    && !CONTRACT_VARS.iter().any(|(c, _)| c == n)
                    && n != FORBIDDEN_VAR,
                &key,
                "not a name the tool or the contract sets itself",
            )?;
            check(
                self.secrets.iter().flatten().filter(|m| *m == n).count() == 1,
                &key,
                "listed once",
            )?;
        }
        Ok(())
    }
}

/// One environment with every value resolved: `$VAR`s expanded, sandbox addresses filled in,
/// repository-relative paths made absolute.
#[derive(Debug, Clone)]
pub struct Env {
    pub name: String,
    pub cfg: EnvConfig,
    pub registry: String,
    pub servers: Vec<Server>,
    pub remote_dir: String,
    pub backups_dir: String,
    pub known_hosts: PathBuf,
    /// A git remote: a configured remote name, or (sandbox) a path to a bare repository.
    pub git_remote: String,
    pub identity: Option<PathBuf>,
    /// This run carries the server's current value of a secret the caller lacks
    /// (`--keep-server-secrets`) instead of refusing.
    pub keep_server_secrets: bool,
}

impl Env {
    /// Whether a Swarm runs the observer here (`engine: swarm`).
    pub fn is_swarm(&self) -> bool {
        self.cfg.engine == Engine::Swarm
    }
    /// The Swarm placement label key (`placement_label`, default `observer`).
    pub fn placement_label(&self) -> &str {
        self.cfg.placement_label.as_deref().unwrap_or("observer")
    }
    /// `<registry>/<path>:<tag>`.
    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repo())
    }
    /// The full repository, registry host included (with the sandbox's real port).
    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repo_path())
    }
    /// The repository path inside the registry (`tawbury/observer`).
    pub fn repo_path(&self) -> &str {
        &self.cfg.image_repo[self.cfg.registry.len() + 1..]
    }
    pub fn registry_url(&self) -> String {
        format!("{}://{}", self.cfg.registry_scheme, self.registry)
    }
    /// The secrets a deploy here requires (`secrets`, or its default).
    pub fn required_secrets(&self) -> Vec<String> {
        match &self.cfg.secrets {
            Some(list) => list.clone(),
            None if self.cfg.sandbox => Vec::new(),
            None => APP_SECRETS.iter().map(|s| s.to_string()).collect(),
        }
    }
    /// Every secret a deploy here passes on when the caller has it: the application's and the
    /// required ones, in order.
    pub fn known_secrets(&self) -> Vec<String> {
        let mut all: Vec<String> = APP_SECRETS.iter().map(|s| s.to_string()).collect();
        for n in self.required_secrets() {
            if !all.contains(&n) {
                all.push(n);
            }
        }
        all
    }
}

pub fn environment(sh: &Ctx, file: &ConfigFile, name: &str) -> Result<Env> {
    let cfg = file.environments.get(name).ok_or_else(|| {
        let known: Vec<&str> = file.environments.keys().map(|s| s.as_str()).collect();
        usage(format!(
            "unknown environment `{name}` (known: {}; see {CONFIG_PATH})",
            known.join(", ")
        ))
    })?;
    resolve(sh, name, cfg.clone())
}

fn expand(sh: &Ctx, value: &str, key: &str) -> Result<String> {
    match value.strip_prefix('$') {
        None => Ok(value.to_string()),
        Some(var) => {
            let v = if var == "USER" {
                env_nonempty("USER").or_else(|| current_user(sh))
            } else {
                env_nonempty(var)
            };
            let v = v.ok_or_else(|| {
                usage(format!("{key} comes from ${var}, which is unset or empty"))
            })?;
            if !charset(&v, b"._-:") || v.starts_with('-') {
                return Err(usage(format!(
                    "${var} (for {key}) has characters a host or user name cannot have"
                )));
            }
            Ok(v)
        }
    }
}

fn current_user(sh: &Ctx) -> Option<String> {
    sh.read(xshell::cmd!(sh, "id -un"))
        .ok()
        .filter(|s| !s.is_empty())
}

fn absolute(sh: &Ctx, p: &str) -> String {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = env_nonempty("HOME") {
            return Path::new(&home).join(rest).display().to_string();
        }
    }
    if Path::new(p).is_absolute() {
        p.to_string()
    } else {
        sh.path(p).display().to_string()
    }
}

fn resolve(sh: &Ctx, name: &str, cfg: EnvConfig) -> Result<Env> {
    let mut servers = Vec::new();
    for s in &cfg.servers {
        servers.push(Server {
            name: s.name.clone(),
            user: expand(sh, &s.user, &format!("server {} user", s.name))?,
            host: expand(sh, &s.host, &format!("server {} host", s.name))?,
            port: s.port,
        });
    }
    let mut env = Env {
        name: name.to_string(),
        registry: cfg.registry.clone(),
        remote_dir: absolute(sh, &cfg.remote_dir),
        backups_dir: absolute(sh, &cfg.backups_dir),
        known_hosts: PathBuf::from(absolute(sh, &cfg.known_hosts)),
        git_remote: cfg.git_remote.clone(),
        identity: None,
        keep_server_secrets: false,
        servers,
        cfg,
    };
    if env.cfg.sandbox {
        apply_sandbox(sh, &mut env)?;
    }
    Ok(env)
}

/// Fills a sandbox environment's addresses from the running sandbox's state.
fn apply_sandbox(sh: &Ctx, env: &mut Env) -> Result<()> {
    let st = sandbox_state::load(sh)
        .ok_or_else(|| fail("the sandbox is not set up: run `cargo xtask sandbox up` first"))?;
    let p = sandbox_state::Paths::new(sh);
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
    if env.is_swarm() {
        // The swarm sandbox's manager (`sandbox up --swarm`): its sshd, its deploy root.
        let sw = st.swarm.as_ref().ok_or_else(|| {
            fail(format!(
                "{}: the swarm sandbox is not up: run `cargo xtask sandbox up --swarm` first",
                env.name
            ))
        })?;
        for s in &mut env.servers {
            s.host = sw.ssh_host.clone();
            s.port = sw.ssh_port;
        }
        env.remote_dir = p.swarm().join("server/observer").display().to_string();
        env.backups_dir = p.swarm().join("server/backups").display().to_string();
        return Ok(());
    }
    if env_nonempty(sandbox_state::NONROOT_VAR).is_some() {
        // The sandbox's non-root deploy user (issue 13 item 3), with its own deploy root.
        if st.deploy_user.is_empty() {
            return Err(fail(format!(
                "{}: the sandbox has no non-root deploy user (`cargo xtask sandbox up`, as root, creates {})",
                sandbox_state::NONROOT_VAR,
                sandbox_state::DEPLOY_USER
            )));
        }
        for s in &mut env.servers {
            s.user = st.deploy_user.clone();
        }
        env.remote_dir = p.nonroot().join("observer").display().to_string();
        env.backups_dir = p.nonroot().join("backups").display().to_string();
    }
    // Test-only: the e2e tests point the sandbox environment at other folders (issue 15:
    // `setup` on fresh or root-owned ones). Absolute paths; every script quotes them.
    for (var, dir) in [
        (sandbox_state::REMOTE_DIR_VAR, &mut env.remote_dir),
        (sandbox_state::BACKUPS_DIR_VAR, &mut env.backups_dir),
    ] {
        if let Some(d) = env_nonempty(var) {
            if !Path::new(&d).is_absolute() {
                return Err(fail(format!("{var} must be an absolute path, not {d}")));
            }
            *dir = d;
        }
    }
    Ok(())
}

/// A resolved sandbox environment with fixed addresses, for unit tests of plans.
#[cfg(test)]
pub fn test_env(remote_dir: &str, git_remote: &str) -> Env {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(CONFIG_PATH),
    )
    .unwrap();
    let cfg = parse(&text, "x").unwrap().environments["sandbox"].clone();
    Env {
        name: "sandbox".into(),
        registry: "127.0.0.1:5000".into(),
        servers: cfg.servers.clone(),
        remote_dir: remote_dir.into(),
        backups_dir: "/srv/backups".into(),
        known_hosts: "/kh".into(),
        git_remote: git_remote.into(),
        identity: None,
        keep_server_secrets: false,
        cfg,
    }
}

#[cfg(test)]
mod tests;
