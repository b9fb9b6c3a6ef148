//! `cargo xtask check-env`: the debugging command (contract sections 3, 4, 9.2). Every check is a
//! line: ok / warn / FAIL and why. Secrets are reported as set or unset, nothing more.

use crate::compose;
use crate::config::{self, effective, ConfigFile, Env};
use crate::core::contract::{
    archive_path, ALL_SECRETS, APP_SECRETS, CONTAINER, CONTRACT_VARS, FORBIDDEN_VAR,
};
use crate::core::exit::{exit_code, usage};
use crate::core::util::env_nonempty;
use crate::ctx::Ctx;
use crate::ops;
use crate::plan::Step;
use crate::server::{field, probe};
use anyhow::Result;

mod hardening;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use xshell::cmd;

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
    pub fn print(&self, sh: &Ctx) {
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
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let config_path = self
            .config
            .clone()
            .unwrap_or_else(|| sh.path(config::CONFIG_PATH));
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| usage(format!("{}: cannot read: {e}", config_path.display())))?;
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
        compose_contract(sh, &compose_path, &mut r);
        environment(sh, &file, &self.env, &mut r);
        if self.remote {
            match config::environment(sh, &file, &self.env) {
                Ok(env) => remote_checks(sh, &env, &mut r),
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

fn tools(sh: &Ctx, r: &mut Report) {
    for t in ["docker", "git", "ssh", "curl"] {
        match which::which(t).ok() {
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
    let format = "{{.ServerVersion}}";
    match sh.read(cmd!(sh, "docker info --format {format}")) {
        Ok(v) => r.ok("docker daemon", format!("answers (engine {v})")),
        Err(_) => r.fail(
            "docker daemon",
            "`docker info` failed: the daemon does not answer",
        ),
    }
}

fn contract_vars(file: &ConfigFile, r: &mut Report) {
    let env = |n: &str| std::env::var(n).ok();
    if std::env::var_os(FORBIDDEN_VAR).is_some() {
        r.fail(
            "env OBSERVER_STANDALONE",
            "forbidden name is set (contract §3.1): use QTS_OBSERVER_STANDALONE",
        );
    }
    if file.environment.contains_key(FORBIDDEN_VAR) {
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
    for name in ALL_SECRETS {
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

fn compose_contract(sh: &Ctx, path: &std::path::Path, r: &mut Report) {
    let m = match compose::read_file(sh, path) {
        Ok(m) => m,
        Err(e) => {
            r.fail("compose file", format!("{e:#}"));
            return;
        }
    };
    r.ok(
        "compose file",
        format!("{} (read by {})", path.display(), m.reader),
    );
    let svc = &m.doc["services"]["qts-observer"];
    if svc.is_null() {
        r.fail("compose service", "no services.qts-observer");
        return;
    }
    let image = svc["image"].as_str().unwrap_or("");
    if m.guard {
        r.ok(
            "compose image guard",
            "an unset IMAGE_TAG stops compose (${IMAGE_TAG:?...})",
        );
    } else {
        r.fail(
            "compose image guard",
            format!("`{image}`: an unset IMAGE_TAG does not stop compose; use ${{IMAGE_TAG:?IMAGE_TAG required}} (contract §2)"),
        );
    }
    let res = &svc["deploy"]["resources"];
    for (k, want) in [("limits", 1.0), ("reservations", 0.5)] {
        let got = compose::cpus(&res[k]["cpus"]);
        if got == Some(want) {
            r.ok(format!("compose {k}.cpus"), want.to_string());
        } else {
            r.fail(
                format!("compose {k}.cpus"),
                format!("{} (contract §2.3 wants {want})", res[k]["cpus"]),
            );
        }
    }
    for (k, want, label) in [
        ("limits", 512u64 << 20, "512M"),
        ("reservations", 256 << 20, "256M"),
    ] {
        let got = compose::bytes(&res[k]["memory"]);
        if got == Some(want) {
            r.ok(format!("compose {k}.memory"), label);
        } else {
            r.fail(
                format!("compose {k}.memory"),
                format!("{} (contract §2.3 wants {label})", res[k]["memory"]),
            );
        }
    }
    let vols = compose::volumes(svc, &m.base);
    for (src, dst) in [
        ("data", "/app/data/observer"),
        ("logs", "/app/logs"),
        ("config", "/app/config"),
    ] {
        let name = format!("compose volume ./{src}");
        let want = format!("./{src}:{dst}");
        if vols.iter().any(|(s, d)| *s == m.base.join(src) && d == dst) {
            r.ok(name, want);
        } else {
            r.fail(name, format!("missing `{want}` (contract §2.2)"));
        }
    }
    match svc["restart"].as_str() {
        Some("unless-stopped") => r.ok("compose restart", "unless-stopped"),
        other => r.fail(
            "compose restart",
            format!(
                "{} (contract wants unless-stopped)",
                other.unwrap_or("missing")
            ),
        ),
    }
    hardening::check(svc, r);
}

fn environment(sh: &Ctx, file: &ConfigFile, name: &str, r: &mut Report) {
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

/// `check-env --remote`: the server side of the checks, over one connection.
fn remote_checks(sh: &Ctx, env: &Env, r: &mut Report) {
    let (mut x, server) = match ops::connect(sh, env, false) {
        Ok(v) => v,
        Err(e) => {
            r.fail("remote ssh", format!("{e:#}"));
            return;
        }
    };
    if env.is_swarm() {
        match ops::swarm::remote_checks(env, &mut x) {
            Ok(rows) => {
                r.ok("remote ssh", format!("{}@{}", server.user, server.host));
                for (name, ok, detail) in rows {
                    if ok {
                        r.ok(name, detail);
                    } else {
                        r.fail(name, detail);
                    }
                }
            }
            Err(e) => r.fail("remote ssh", format!("{e:#}")),
        }
        return;
    }
    let step = Step::remote(
        "remote-check",
        "Remote checks",
        &server.name,
        probe::remote_checks_script(env),
    )
    .read_only();
    let out = match x.run(&step) {
        Ok(o) => o,
        Err(e) => {
            r.fail("remote ssh", format!("{e:#}"));
            return;
        }
    };
    r.ok(
        "remote ssh",
        format!(
            "{}@{}:{} (pinned host key)",
            server.user, server.host, server.port
        ),
    );
    let o = &out.stdout;
    match compose::choose(field(o, "compose")) {
        Ok(c) => r.ok("remote compose", c.describe()),
        Err(e) => r.fail("remote compose", format!("{e:#}")),
    }
    match field(o, "docker") {
        "" => r.fail(
            "remote docker",
            "the docker daemon does not answer on the server",
        ),
        v => r.ok("remote docker", format!("engine {v}")),
    }
    match (field(o, "dir"), field(o, "writable")) {
        ("", _) => r.warn(
            "remote dir",
            format!(
                "{} does not exist yet (the first deploy creates it)",
                env.remote_dir
            ),
        ),
        (d, "yes") => r.ok("remote dir", format!("{} ({d})", env.remote_dir)),
        (d, _) => r.fail(
            "remote dir",
            format!(
                "{} is not writable by {} ({d})",
                env.remote_dir, server.user
            ),
        ),
    }
    match field(o, "envmode") {
        "" => r.warn("remote .env", "absent (the first deploy writes it)"),
        "600" => r.ok("remote .env", "mode 0600"),
        m => r.fail(
            "remote .env",
            format!("mode {m}: must be 0600 (it holds secrets)"),
        ),
    }
    let disk: u64 = field(o, "disk").parse().unwrap_or(0);
    if disk < 1024 * 1024 {
        r.warn("remote disk", format!("{} MiB free", disk / 1024));
    } else {
        r.ok("remote disk", format!("{} MiB free", disk / 1024));
    }
    // issue 13: snapshots are made on the server when it has the tools; the backups folder's
    // size and the free space there (deploys prune it to keep_snapshots).
    // issue 13 item 3: a non-root deploy user reaches uid 10001's files through a container.
    if !crate::server::snapshot_remote::is_root(o) {
        r.ok(
            "remote deploy user",
            "not root: snapshots and restores touch uid 10001's files as root in a container of the observer image",
        );
    }
    match crate::server::snapshot_remote::missing_tools(o).as_slice() {
        [] => r.ok(
            "remote snapshot tools",
            "GNU tar, zstd, sha256sum: snapshots are made on the server",
        ),
        m => r.warn(
            "remote snapshot tools",
            format!(
                "{} missing: snapshots stream through this machine (slower; scripts/provision-server.sh installs them)",
                m.join(", ")
            ),
        ),
    }
    let kib = |k: &str| field(o, k).parse::<u64>().ok();
    let free = kib("backupsfree");
    let size = match kib("backups") {
        Some(k) => format!("{} MiB", k / 1024),
        None => "absent (the first snapshot creates it)".into(),
    };
    let msg = format!(
        "{}: {size}; {} MiB free there (keep_snapshots {})",
        env.backups_dir,
        free.map_or("?".into(), |f| (f / 1024).to_string()),
        env.cfg.keep_snapshots
    );
    if free.is_some_and(|f| f >= 1024 * 1024) {
        r.ok("remote backups", msg);
    } else {
        r.warn("remote backups", msg);
    }
    match field(o, "loginenv") {
        "" => r.ok("remote login env", "sets none of the deploy's variables"),
        names => r.warn(
            "remote login env",
            format!("the server's login environment sets {names}: the tool runs compose with `env -i`, so deploys ignore them, but a person's `docker compose` on the server would use them over .env"),
        ),
    }
    // issue 12: a container under the service's (or the candidate's) name from another compose
    // project is not the deployed service; its env is not read.
    for f in probe::parse_foreign(o) {
        r.fail(
            format!("remote {}", f.container),
            format!("{}; {}", f.describe(), f.recovery()),
        );
    }
    let cenv: Vec<&str> = o
        .lines()
        .filter(|l| l.starts_with("cenv ") || l.starts_with("csecret "))
        .collect();
    if cenv.is_empty() {
        r.warn("container env", format!("{CONTAINER} is not running"));
    }
    for l in cenv {
        if let Some(kv) = l.strip_prefix("cenv ") {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let want = CONTRACT_VARS
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, w)| *w)
                .unwrap_or("");
            if v == want {
                r.ok(format!("container {k}"), v);
            } else {
                r.fail(format!("container {k}"), format!("{v:?}, expected {want}"));
            }
        } else if let Some(kv) = l.strip_prefix("csecret ") {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            if APP_SECRETS.contains(&k) {
                r.ok(format!("container {k}"), v);
            }
        }
    }
}
