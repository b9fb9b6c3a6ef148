//! The application secrets of a deploy: where each comes from, and that none is dropped or altered
//! silently (README "Secrets").
//!
//! For every secret the environment knows (`config::Env::known_secrets`), the value is read from
//! `<ENV>_<NAME>` (e.g. `SANDBOX_KIS_API_KEY`), else from `<NAME>`; an empty variable is unset. A
//! value is written to the server's `.env` in the one form both compose v1 and v2 read back
//! exactly (`core::dotenv`), or refused (exit 2, naming the variable, never the value). A REQUIRED
//! secret the caller lacks is refused before anything remote changes (exit 2), unless the run
//! keeps the server's current value (`--keep-server-secrets`): then `.env` carries a
//! `# xtask-keep NAME` line that the server's upload script replaces with the current `.env`'s
//! line for NAME (`server::app::upload`), so the value never leaves the server.

use crate::config::Env;
use crate::core::dotenv::{self, Entry};
use crate::core::exit::{fail, usage};
use crate::ctx::Ctx;
use crate::plan::{Executor, Step};
use crate::server::app;
use anyhow::Result;

/// Where one secret of this run comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The variable its value was read from.
    Var(String),
    /// Carried over from the server's `.env` (required there).
    Keep,
    /// Carried over from the server's `.env` when it has one (an optional secret).
    KeepIfPresent,
    /// Optional, unset: not passed.
    Unset,
}

/// One secret: its name, where it comes from, and its `.env` entry (holding the encoded value:
/// never printed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub origin: Origin,
    pub entry: Option<Entry>,
}

/// `<ENV>_<NAME>`: the environment's own variable for a secret (`sandbox` → `SANDBOX_KIS_API_KEY`).
pub fn scoped(env_name: &str, name: &str) -> String {
    let prefix: String = env_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}_{name}")
}

/// The variables a secret `name` is read from, in order: the environment's own
/// ([`scoped`]), then `name` itself (README "Secrets").
pub fn variables(env_name: &str, name: &str) -> [String; 2] {
    [scoped(env_name, name), name.to_string()]
}

/// A variable's value: `Ok(None)` when unset or empty, `Err` when it is not UTF-8.
pub type Lookup<'l> = &'l dyn Fn(&str) -> std::result::Result<Option<String>, ()>;

fn process_env(name: &str) -> std::result::Result<Option<String>, ()> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|_| ()),
    }
}

/// The secrets of a run in `env` (pure: `lookup` reads the variables). Errors are usage errors
/// (exit 2) naming variables only.
pub fn resolve(env: &Env, lookup: Lookup) -> Result<Vec<Secret>> {
    let required = env.required_secrets();
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for name in env.known_secrets() {
        let vars = variables(&env.name, &name);
        let own = &vars[0];
        let mut found = None;
        for var in &vars {
            match lookup(var) {
                Err(()) => {
                    return Err(usage(format!(
                        "{var} is not valid UTF-8: refusing to pass it on altered"
                    )))
                }
                Ok(Some(v)) => {
                    found = Some((var.to_string(), v));
                    break;
                }
                Ok(None) => {}
            }
        }
        let is_required = required.contains(&name);
        let s = match found {
            Some((var, v)) => {
                let enc = dotenv::encode(&v).map_err(|why| {
                    usage(format!(
                        "{var} cannot be written to the server's .env so that compose v1 and v2 both read it back exactly: {}. Nothing was changed; choose a value without that (README \"Secrets\")",
                        why.0
                    ))
                })?;
                Secret {
                    entry: Some(Entry::Line(name.clone(), enc)),
                    name,
                    origin: Origin::Var(var),
                }
            }
            None if env.keep_server_secrets => Secret {
                entry: Some(if is_required {
                    Entry::Keep(name.clone())
                } else {
                    Entry::KeepIfPresent(name.clone())
                }),
                origin: if is_required {
                    Origin::Keep
                } else {
                    Origin::KeepIfPresent
                },
                name,
            },
            None if is_required => {
                missing.push(format!("{name} (set {own} or {name})"));
                continue;
            }
            None => Secret {
                name,
                origin: Origin::Unset,
                entry: None,
            },
        };
        out.push(s);
    }
    if !missing.is_empty() {
        return Err(usage(format!(
            "the {} environment requires secrets this shell does not have: {}. Refusing before anything on the server changes; to keep the server's current values instead, pass --keep-server-secrets",
            env.name,
            missing.join(", ")
        )));
    }
    Ok(out)
}

/// The secrets of this run from the process environment. Every candidate variable's value is
/// registered for masking first, used or not (a production value in a sandbox shell too).
pub fn collect(sh: &Ctx, env: &Env) -> Result<Vec<Secret>> {
    for name in env.known_secrets() {
        for var in [scoped(&env.name, &name), name] {
            if let Ok(Some(v)) = process_env(&var) {
                // Line by line: a mask with a line break would print its later lines as they
                // are (`::add-mask::` takes one line); such a value is refused below anyway.
                for line in v.split(['\n', '\r']) {
                    sh.secret(line);
                }
            }
        }
    }
    resolve(env, &process_env)
}

/// The `.env` entries of this run.
pub fn entries(sh: &Ctx, env: &Env) -> Result<Vec<Entry>> {
    Ok(collect(sh, env)?
        .into_iter()
        .filter_map(|s| s.entry)
        .collect())
}

/// One line saying where each secret comes from (names only).
pub fn describe(all: &[Secret]) -> String {
    let parts: Vec<String> = all
        .iter()
        .map(|s| match &s.origin {
            Origin::Var(v) if *v == s.name => format!("{} from the environment", s.name),
            Origin::Var(v) => format!("{} from {v}", s.name),
            Origin::Keep => format!("{} kept from the server's .env", s.name),
            Origin::KeepIfPresent => {
                format!("{} kept from the server's .env if it has one", s.name)
            }
            Origin::Unset => format!("{} not set (optional here: not passed)", s.name),
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}

/// Resolves the run's secrets before anything connects (refusing with exit 2) and says where each
/// comes from. Deploy and rollback call it first.
pub fn preflight(sh: &Ctx, env: &Env) -> Result<()> {
    let all = collect(sh, env)?;
    sh.say(&format!("secrets: {}", describe(&all)));
    Ok(())
}

/// The required secrets kept from the server must be in its `.env` (read-only; names only).
pub fn check_kept(x: &mut Executor, env: &Env, server: &str) -> Result<()> {
    let kept: Vec<String> = entries(x.sh, env)?
        .into_iter()
        .filter_map(|e| match e {
            Entry::Keep(n) => Some(n),
            _ => None,
        })
        .collect();
    if kept.is_empty() {
        return Ok(());
    }
    let out = x.run(
        &Step::remote(
            "secrets-kept",
            "Check the server's .env has the kept secrets",
            server,
            app::env_has(env, &kept),
        )
        .read_only(),
    )?;
    let missing: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("missing "))
        .collect();
    if !missing.is_empty() {
        return Err(fail(format!(
            "--keep-server-secrets: the server's .env has no {}: pass the value (nothing was changed)",
            missing.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn env(required: &[&str], keep: bool) -> Env {
        let mut e = config::test_env("/r", "/g");
        e.cfg.secrets = Some(required.iter().map(|s| s.to_string()).collect());
        e.keep_server_secrets = keep;
        e
    }

    fn vars(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> std::result::Result<Option<String>, ()> {
        move |n| {
            Ok(pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string()))
        }
    }

    #[test]
    fn scoped_names() {
        assert_eq!(scoped("sandbox", "KIS_API_KEY"), "SANDBOX_KIS_API_KEY");
        assert_eq!(scoped("prod-eu", "X"), "PROD_EU_X");
    }

    #[test]
    fn the_environment_s_own_variable_wins() {
        let e = env(&["KIS_API_KEY"], false);
        let all = resolve(
            &e,
            &vars(&[
                ("KIS_API_KEY", "prod-value"),
                ("SANDBOX_KIS_API_KEY", "sb-value"),
            ]),
        )
        .unwrap();
        assert_eq!(all[0].origin, Origin::Var("SANDBOX_KIS_API_KEY".into()));
        assert_eq!(
            all[0].entry,
            Some(Entry::Line("KIS_API_KEY".into(), "'sb-value'".into()))
        );
        assert_eq!(all[1].name, "KIS_API_SECRET");
        assert_eq!(all[1].origin, Origin::Unset);
        assert!(describe(&all).contains("KIS_API_KEY from SANDBOX_KIS_API_KEY"));
    }

    #[test]
    fn a_missing_required_secret_is_refused_naming_it() {
        let e = env(&["KIS_API_KEY", "KIS_API_SECRET"], false);
        let err = resolve(&e, &vars(&[("KIS_API_KEY", "v4lue")])).unwrap_err();
        assert_eq!(crate::core::exit::code_of(&err), 2);
        let msg = err.to_string();
        assert!(
            msg.contains("KIS_API_SECRET (set SANDBOX_KIS_API_SECRET or KIS_API_SECRET)"),
            "{msg}"
        );
        assert!(!msg.contains("v4lue"));
        assert!(msg.contains("--keep-server-secrets"));
    }

    #[test]
    fn kept_secrets_become_directives() {
        let e = env(&["KIS_API_KEY"], true);
        let all = resolve(&e, &vars(&[])).unwrap();
        assert_eq!(all[0].entry, Some(Entry::Keep("KIS_API_KEY".into())));
        assert_eq!(
            all[1].entry,
            Some(Entry::KeepIfPresent("KIS_API_SECRET".into()))
        );
        // A value the caller has still wins over the server's.
        let all = resolve(&e, &vars(&[("KIS_API_KEY", "new")])).unwrap();
        assert_eq!(all[0].origin, Origin::Var("KIS_API_KEY".into()));
    }

    #[test]
    fn unrepresentable_and_non_utf8_values_are_refused_by_name() {
        let e = env(&[], false);
        let err = resolve(&e, &vars(&[("KIS_API_SECRET", "sec\nret-part")])).unwrap_err();
        assert_eq!(crate::core::exit::code_of(&err), 2);
        let msg = err.to_string();
        assert!(msg.starts_with("KIS_API_SECRET cannot be written"), "{msg}");
        assert!(!msg.contains("ret-part"));
        let bad = |n: &str| {
            if n == "KIS_API_KEY" {
                Err(())
            } else {
                Ok(None)
            }
        };
        let msg = resolve(&e, &bad).unwrap_err().to_string();
        assert!(msg.contains("KIS_API_KEY is not valid UTF-8"), "{msg}");
    }
}
