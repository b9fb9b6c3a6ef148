//! `cargo xtask config [--env NAME] [--json]`: the resolved environment (`config::environment`:
//! deployment_config.json after `$VAR` expansion, the sandbox's addresses, the variables the tool
//! reads) with the source of each value; secrets as set/unset only, never their values (issue 15).
//! Local and read-only: no SSH.

use crate::config::{self, effective, Env, Source, CONFIG_PATH};
use crate::core::contract::CONTRACT_VARS;
use crate::core::util::env_nonempty;
use crate::ctx::Ctx;
use crate::ops::secrets::variables;
use crate::sandbox_state::NONROOT_VAR;
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

#[derive(Args)]
pub struct ShowConfig {
    #[arg(long, default_value = "production")]
    env: String,
    /// One JSON object on stdout: `{"env": NAME, "values": [{"key", "value", "source"}]}`.
    #[arg(long)]
    json: bool,
}

/// One resolved value and where it came from: `deployment_config.json`, `env var NAME`,
/// `sandbox state` (target/sandbox/state.json), `default`, or `unset`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Row {
    pub key: String,
    pub value: String,
    pub source: String,
}

fn row(key: impl Into<String>, value: impl ToString, source: impl Into<String>) -> Row {
    Row {
        key: key.into(),
        value: value.to_string(),
        source: source.into(),
    }
}

const FILE: &str = "deployment_config.json";
const SANDBOX: &str = "sandbox state";

impl ShowConfig {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        let raw: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(sh.path(CONFIG_PATH)).context("reading the config")?,
        )?;
        let keys: Vec<String> = raw["environments"][&self.env]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let lookup = |n: &str| env_nonempty(n);
        let mut all = rows(&env, &keys, &lookup);
        all.extend(contract_rows(&file.environment, &lookup));
        all.extend(secret_rows(&env, &lookup));
        if self.json {
            let v = serde_json::json!({ "env": env.name, "values": all });
            println!("{}", sh.mask(&serde_json::to_string_pretty(&v)?));
        } else {
            print!("{}", sh.mask(&table(&all)));
        }
        Ok(())
    }
}

/// The environment's own values. `keys`: the keys its entry in the file sets (absent ones show
/// their default); `lookup` reads a variable (unset or empty: `None`).
pub fn rows(env: &Env, keys: &[String], lookup: &dyn Fn(&str) -> Option<String>) -> Vec<Row> {
    let c = &env.cfg;
    let sb = c.sandbox;
    let nonroot = sb && lookup(NONROOT_VAR).is_some();
    let file_or_default = |k: &str| {
        if keys.iter().any(|x| x == k) {
            FILE
        } else {
            "default"
        }
    };
    let sandboxed = |k: &str| if sb { SANDBOX } else { file_or_default(k) };
    let mut out = vec![
        row("sandbox", sb, file_or_default("sandbox")),
        row(
            "engine",
            format!("{:?}", c.engine).to_lowercase(),
            file_or_default("engine"),
        ),
        row("image", env.repo(), sandboxed("registry")),
        row("registry_scheme", &c.registry_scheme, FILE),
        row("base_image", &c.base_image, sandboxed("base_image")),
        row("git_remote", &env.git_remote, sandboxed("git_remote")),
        row("release_branch", &c.release_branch, FILE),
    ];
    for (s, f) in env.servers.iter().zip(&c.servers) {
        let n = &s.name;
        let var = |v: &str| v.strip_prefix('$').map(|x| format!("env var {x}"));
        let user_src = if nonroot {
            format!("{SANDBOX} ({NONROOT_VAR})")
        } else if sb {
            SANDBOX.into()
        } else {
            var(&f.user).unwrap_or(FILE.into())
        };
        let host_src = if sb && env.is_swarm() {
            SANDBOX.into()
        } else {
            var(&f.host).unwrap_or(FILE.into())
        };
        out.push(row(format!("servers.{n}.user"), &s.user, user_src));
        out.push(row(format!("servers.{n}.host"), &s.host, host_src));
        out.push(row(
            format!("servers.{n}.port"),
            s.port,
            sandboxed("servers"),
        ));
    }
    let dir_src = if nonroot {
        format!("{SANDBOX} ({NONROOT_VAR})")
    } else {
        sandboxed("remote_dir").to_string()
    };
    out.push(row("remote_dir", &env.remote_dir, dir_src.clone()));
    out.push(row("backups_dir", &env.backups_dir, dir_src));
    out.push(match lookup("DEPLOY_KNOWN_HOSTS") {
        Some(v) => row("known_hosts", v, "env var DEPLOY_KNOWN_HOSTS"),
        None => row(
            "known_hosts",
            env.known_hosts.display(),
            sandboxed("known_hosts"),
        ),
    });
    out.push(match (lookup("DEPLOY_SSH_KEY"), &env.identity) {
        (Some(_), _) => row("ssh_key", "(set)", "env var DEPLOY_SSH_KEY"),
        (None, Some(p)) => row("ssh_key", p.display(), SANDBOX),
        (None, None) => row("ssh_key", "ssh's own (agent, ~/.ssh)", "default"),
    });
    for (k, v) in [
        ("host_port", c.host_port.to_string()),
        ("bind_address", c.bind_address.clone()),
        ("interval_ms", c.interval_ms.to_string()),
        ("health_timeout_s", c.health_timeout_s.to_string()),
        ("soak_s", c.soak_s.to_string()),
        ("lock_ttl_s", c.lock_ttl_s.to_string()),
        ("keep_images", c.keep_images.to_string()),
        ("keep_snapshots", c.keep_snapshots.to_string()),
    ] {
        out.push(row(k, v, file_or_default(k)));
    }
    if env.is_swarm() {
        out.push(row(
            "placement_label",
            env.placement_label(),
            file_or_default("placement_label"),
        ));
    }
    out.push(row(
        "secrets (required)",
        env.required_secrets().join(", "),
        file_or_default("secrets"),
    ));
    out
}

/// The contract's variables (§3.2: environment variable > deployment_config.json > default).
pub fn contract_rows(
    file: &std::collections::BTreeMap<String, String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<Row> {
    CONTRACT_VARS
        .iter()
        .map(|(name, _)| {
            let (v, src) = effective(name, lookup, file);
            let source = match src {
                Source::Env => format!("env var {name}"),
                s => s.as_str().to_string(),
            };
            row(format!("environment.{name}"), v.unwrap_or_default(), source)
        })
        .collect()
}

/// Every secret a run here passes on, and the registry credentials: set (from which variable) or
/// unset; never a value.
pub fn secret_rows(env: &Env, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<Row> {
    let required = env.required_secrets();
    let mut out: Vec<Row> = env
        .known_secrets()
        .into_iter()
        .map(|name| {
            let vars = variables(&env.name, &name);
            let own = vars[0].clone();
            let need = if required.contains(&name) {
                "required"
            } else {
                "optional"
            };
            let found = vars.into_iter().find(|v| lookup(v).is_some());
            match found {
                Some(var) => row(
                    format!("secret {name}"),
                    format!("set ({need})"),
                    format!("env var {var}"),
                ),
                None => row(
                    format!("secret {name}"),
                    format!("unset ({need})"),
                    format!("set {own} or {name}"),
                ),
            }
        })
        .collect();
    // As `registry::credentials` picks them: both variables, else (sandbox) the generated ones.
    out.push(
        match (
            lookup("REGISTRY_USER").is_some(),
            lookup("REGISTRY_TOKEN").is_some(),
        ) {
            (true, true) => row(
                "registry credentials",
                "set",
                "env var REGISTRY_USER, REGISTRY_TOKEN",
            ),
            _ if env.cfg.sandbox => row("registry credentials", "set (generated)", SANDBOX),
            (u, t) => row(
                "registry credentials",
                "unset (anonymous pulls)",
                format!(
                    "set REGISTRY_USER and REGISTRY_TOKEN (now: {}, {})",
                    if u { "set" } else { "unset" },
                    if t { "set" } else { "unset" }
                ),
            ),
        },
    );
    out
}

/// The text table: key, value, source.
pub fn table(rows: &[Row]) -> String {
    let kw = rows.iter().map(|r| r.key.len()).max().unwrap_or(0);
    let vw = rows.iter().map(|r| r.value.len()).max().unwrap_or(0);
    let mut out = format!("{:<kw$}  {:<vw$}  SOURCE\n", "KEY", "VALUE");
    for r in rows {
        out.push_str(&format!("{:<kw$}  {:<vw$}  {}\n", r.key, r.value, r.source));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_named_and_secrets_are_set_or_unset_only() {
        let mut env = config::test_env("/srv/obs", "/g");
        env.cfg.sandbox = false;
        env.cfg.servers[0].user = "$DEPLOY_USER".into();
        let vars = |n: &str| match n {
            "SANDBOX_KIS_API_KEY" => Some("hunter2-secret".to_string()),
            "PYTHONPATH" => Some("/x".to_string()),
            _ => None,
        };
        let keys: Vec<String> = vec!["host_port".into()];
        let all: Vec<Row> = rows(&env, &keys, &vars)
            .into_iter()
            .chain(contract_rows(&Default::default(), &vars))
            .chain(secret_rows(&env, &vars))
            .collect();
        let get = |k: &str| all.iter().find(|r| r.key == k).unwrap().clone();
        assert_eq!(get("host_port").source, FILE);
        assert_eq!(get("soak_s").source, "default");
        assert_eq!(get("servers.sandbox-vm.user").source, "env var DEPLOY_USER");
        assert_eq!(get("environment.PYTHONPATH").source, "env var PYTHONPATH");
        assert_eq!(get("environment.OBSERVER_LOG_DIR").source, "default");
        let key = get("secret KIS_API_KEY");
        assert_eq!(
            (key.value.as_str(), key.source.as_str()),
            ("set (optional)", "env var SANDBOX_KIS_API_KEY")
        );
        assert!(get("secret KIS_API_SECRET").value.starts_with("unset"));
        assert!(!table(&all).contains("hunter2"));
    }
}
