//! `cargo xtask check-env`: the debugging command (contract sections 3, 4, 9.2). Every check is a
//! line: ok / warn / FAIL and why. Secrets are reported as set or unset, nothing more.

use crate::compose;
use crate::config::{self, effective, ConfigFile, CONTRACT_VARS};
use crate::shell::{env_nonempty, exit_code, which, Shell};
use crate::yaml;
use anyhow::Result;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

/// Secret names: only ever reported as set/unset.
pub const SECRETS: &[&str] = &[
    "KIS_API_KEY",
    "KIS_API_SECRET",
    "REGISTRY_TOKEN",
    "DEPLOY_SSH_KEY",
];

#[derive(Args)]
pub struct CheckEnv {
    /// The environment from deployment_config.json to check.
    #[arg(long, default_value = "sandbox")]
    env: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also check the server over SSH: docker and compose there, the remote dir, .env mode 0600,
    /// and the env inside the running container (names and set/unset only for secrets).
    #[arg(long)]
    remote: bool,
    /// The deployment config to read (default: app/obs_deploy/deployment_config.json).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The server compose file to check (default: app/obs_deploy/docker-compose.server.yml).
    #[arg(long, value_name = "FILE")]
    compose: Option<PathBuf>,
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Serialize, Debug)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

#[derive(Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn add(&mut self, name: impl Into<String>, status: Status, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            status,
            detail: detail.into(),
        });
    }
    pub fn ok(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.add(name, Status::Ok, detail)
    }
    pub fn warn(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.add(name, Status::Warn, detail)
    }
    pub fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.add(name, Status::Fail, detail)
    }
    pub fn failed(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count()
    }
    pub fn print(&self, sh: &Shell) {
        for c in &self.checks {
            let s = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("{s}  {:<34} {}", c.name, sh.mask(&c.detail));
        }
    }
}

impl CheckEnv {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let config_path = self
            .config
            .clone()
            .unwrap_or_else(|| sh.path(config::CONFIG_PATH));
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            crate::shell::usage(format!("{}: cannot read: {e}", config_path.display()))
        })?;
        let file = config::parse(&text, &config_path.display().to_string())?;
        if !file.environments.contains_key(&self.env) {
            config::environment(sh, &file, &self.env)?; // the error names the known environments
        }
        let compose_path = self
            .compose
            .clone()
            .unwrap_or_else(|| sh.path(config::COMPOSE_PATH));
        let mut r = Report::default();
        tools(sh, &mut r);
        contract_vars(&file, &mut r);
        secrets(
            file.environments.get(&self.env).is_some_and(|e| e.sandbox),
            &mut r,
        );
        path_contract(&file, &mut r);
        config_contract(&file, &mut r);
        compose_contract(&compose_path, &mut r);
        environment(sh, &file, &self.env, &mut r);
        if self.remote {
            match config::environment(sh, &file, &self.env) {
                Ok(env) => crate::deploy::remote_checks(sh, &env, &mut r)?,
                Err(e) => r.fail("remote", format!("{e:#}")),
            }
        }
        let failed = r.failed();
        if self.json {
            let v = serde_json::json!({ "env": self.env, "ok": failed == 0, "checks": r.checks });
            println!("{}", sh.mask(&serde_json::to_string_pretty(&v)?));
        } else {
            r.print(sh);
            println!("{} checks, {failed} failed", r.checks.len());
        }
        if failed > 0 {
            return Err(exit_code(format!("{failed} check(s) failed"), 1));
        }
        Ok(())
    }
}

fn tools(sh: &Shell, r: &mut Report) {
    for t in ["docker", "git", "ssh", "curl"] {
        match which(t) {
            Some(p) => r.ok(format!("tool {t}"), p.display().to_string()),
            None => r.fail(format!("tool {t}"), format!("`{t}` not found on PATH")),
        }
    }
    match compose::detect_local(sh) {
        Some(c) => r.ok("tool compose", c.describe()),
        None => r.fail(
            "tool compose",
            "neither `docker compose` (v2) nor `docker-compose` (v1) found",
        ),
    }
    match sh.read(&["docker", "info", "--format", "{{.ServerVersion}}"]) {
        Ok(v) => r.ok("docker daemon", format!("answers (engine {v})")),
        Err(_) => r.fail(
            "docker daemon",
            "`docker info` failed: the daemon does not answer",
        ),
    }
}

fn contract_vars(file: &ConfigFile, r: &mut Report) {
    let env = |n: &str| std::env::var(n).ok();
    if std::env::var_os("OBSERVER_STANDALONE").is_some() {
        r.fail(
            "env OBSERVER_STANDALONE",
            "forbidden name is set (contract §3.1): use QTS_OBSERVER_STANDALONE",
        );
    }
    if file.environment.contains_key("OBSERVER_STANDALONE") {
        r.fail(
            "config OBSERVER_STANDALONE",
            "deployment_config.json uses the forbidden name: use QTS_OBSERVER_STANDALONE",
        );
    }
    for (name, _) in CONTRACT_VARS {
        let (value, source) = effective(name, &env, &file.environment);
        let value = value.unwrap_or_default();
        let detail = format!("{value} (from {})", source.as_str());
        if *name == "QTS_OBSERVER_STANDALONE" && value != "1" {
            r.warn(
                format!("env {name}"),
                format!("{detail}: the contract deploys in standalone mode (1)"),
            );
        } else {
            r.ok(format!("env {name}"), detail);
        }
    }
}

fn secrets(sandbox: bool, r: &mut Report) {
    for name in SECRETS {
        if env_nonempty(name).is_some() {
            r.ok(format!("secret {name}"), "set");
        } else if sandbox {
            r.ok(
                format!("secret {name}"),
                "unset (optional in the sandbox, which has its own key and token)",
            );
        } else {
            r.warn(format!("secret {name}"), "unset");
        }
    }
}

/// Contract §4.3: the archive is `<config dir>/observer/observer.jsonl`, never under data/observer.
pub fn archive_path(config_dir: &str) -> String {
    format!(
        "{}/observer/observer.jsonl",
        config_dir.trim_end_matches('/')
    )
}

fn path_contract(file: &ConfigFile, r: &mut Report) {
    let (config_dir, source) = match env_nonempty("OBSERVER_CONFIG_DIR") {
        Some(v) => (v, "env"),
        None => (file.paths.config_dir.clone(), "deployment_config.json"),
    };
    let archive = archive_path(&config_dir);
    if archive.contains("data/observer") {
        r.fail(
            "path archive",
            format!("{archive} (config dir from {source}) points the archive at data/observer (contract §4.3): it belongs in config/observer/observer.jsonl"),
        );
    } else if !archive.ends_with("config/observer/observer.jsonl") {
        r.warn(
            "path archive",
            format!("{archive}: the contract's archive is config/observer/observer.jsonl"),
        );
    } else {
        r.ok(
            "path archive",
            format!("{archive} (config dir from {source})"),
        );
    }
    let (data_dir, _) = effective(
        "OBSERVER_DATA_DIR",
        &|n: &str| std::env::var(n).ok(),
        &file.environment,
    );
    if data_dir.as_deref() == Some(config_dir.as_str()) {
        r.fail(
            "path data dir",
            "OBSERVER_DATA_DIR equals the config dir: the archive would mix with data",
        );
    }
}

/// Contract §5.1: the deployment block and the paths of deployment_config.json.
fn config_contract(file: &ConfigFile, r: &mut Report) {
    let d = &file.deployment;
    let p = &file.paths;
    let want = [
        ("deployment.mode", d.mode.as_str(), "standalone"),
        ("deployment.structure", d.structure.as_str(), "/app"),
        ("paths.data_dir", p.data_dir.as_str(), "/app/data/observer"),
        ("paths.log_dir", p.log_dir.as_str(), "/app/logs"),
        ("paths.config_dir", p.config_dir.as_str(), "/app/config"),
    ];
    for (key, got, want) in want {
        if got == want {
            r.ok(format!("config {key}"), got);
        } else {
            r.fail(
                format!("config {key}"),
                format!("{got:?} (contract §5.1 wants {want:?})"),
            );
        }
    }
    if d.version.is_empty() {
        r.warn("config deployment.version", "empty");
    }
}

fn compose_contract(path: &std::path::Path, r: &mut Report) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            r.fail("compose file", format!("{}: {e}", path.display()));
            return;
        }
    };
    let doc = match yaml::parse(&text) {
        Ok(d) => d,
        Err(e) => {
            r.fail("compose file", format!("{}: {e}", path.display()));
            return;
        }
    };
    let svc = "services.qts-observer";
    match doc.str(&format!("{svc}.image")) {
        Some(img) if img.contains("${IMAGE_TAG:?") => r.ok("compose image guard", img.to_string()),
        Some(img) => r.fail(
            "compose image guard",
            format!("`{img}` lacks ${{IMAGE_TAG:?IMAGE_TAG required}} (contract §2)"),
        ),
        None => r.fail("compose image guard", "no services.qts-observer.image"),
    }
    let want = [
        ("limits.cpus", "1.0"),
        ("limits.memory", "512M"),
        ("reservations.cpus", "0.5"),
        ("reservations.memory", "256M"),
    ];
    for (k, v) in want {
        let got = doc.str(&format!("{svc}.deploy.resources.{k}"));
        let same = got.is_some_and(|g| {
            g == v || g.parse::<f64>().ok() == v.parse::<f64>().ok() && g.parse::<f64>().is_ok()
        });
        if same {
            r.ok(format!("compose {k}"), v);
        } else {
            r.fail(
                format!("compose {k}"),
                format!("{} (contract §2.3 wants {v})", got.unwrap_or("missing")),
            );
        }
    }
    let vols = doc.seq_strs(&format!("{svc}.volumes"));
    for want in [
        "./data:/app/data/observer",
        "./logs:/app/logs",
        "./config:/app/config",
    ] {
        if vols
            .iter()
            .any(|v| v == want || v.starts_with(&format!("{want}:")))
        {
            r.ok(
                format!("compose volume {}", want.split(':').next().unwrap_or(want)),
                want,
            );
        } else {
            r.fail(
                format!("compose volume {}", want.split(':').next().unwrap_or(want)),
                format!("missing `{want}` (contract §2.2)"),
            );
        }
    }
    match doc.str(&format!("{svc}.restart")) {
        Some("unless-stopped") => r.ok("compose restart", "unless-stopped"),
        other => r.fail(
            "compose restart",
            format!(
                "{} (contract wants unless-stopped)",
                other.unwrap_or("missing")
            ),
        ),
    }
}

fn environment(sh: &Shell, file: &ConfigFile, name: &str, r: &mut Report) {
    let env = match config::environment(sh, file, name) {
        Ok(e) => e,
        Err(e) => {
            r.fail(format!("config env {name}"), format!("{e:#}"));
            return;
        }
    };
    r.ok(
        format!("config env {name}"),
        format!("image {} on {} server(s)", env.repo(), env.servers.len()),
    );
    if env.known_hosts.is_file() || env_nonempty("DEPLOY_KNOWN_HOSTS").is_some() {
        r.ok("ssh known_hosts", "pinned host key available");
    } else {
        r.fail(
            "ssh known_hosts",
            format!(
                "{} missing and DEPLOY_KNOWN_HOSTS unset",
                env.known_hosts.display()
            ),
        );
    }
    let creds = crate::registry::credentials(sh, &env).is_some();
    if creds {
        r.ok("registry credentials", "available");
    } else {
        r.warn(
            "registry credentials",
            "REGISTRY_USER/REGISTRY_TOKEN unset (an existing docker login may still work)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_under_config() {
        assert_eq!(
            archive_path("/app/config"),
            "/app/config/observer/observer.jsonl"
        );
        assert_eq!(
            archive_path("/app/config/"),
            "/app/config/observer/observer.jsonl"
        );
    }
}
