//! Layer 2. Compose v2 (`docker compose`) or v1 (`docker-compose`), detected at run time on the machine in
//! question. v1 needs `--compatibility` to apply `deploy.resources`.

use crate::ctx::Ctx;
use xshell::cmd;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compose {
    V2,
    V1,
}

impl Compose {
    pub fn parse(word: &str) -> Option<Compose> {
        match word.trim() {
            "v2" => Some(Compose::V2),
            "v1" => Some(Compose::V1),
            _ => None,
        }
    }
    pub fn argv(self) -> Vec<String> {
        match self {
            Compose::V2 => vec!["docker".into(), "compose".into()],
            Compose::V1 => vec!["docker-compose".into(), "--compatibility".into()],
        }
    }
    /// The command prefix for a remote shell script.
    pub fn shell(self) -> &'static str {
        match self {
            Compose::V2 => "docker compose",
            Compose::V1 => "docker-compose --compatibility",
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            Compose::V2 => "docker compose (v2)",
            Compose::V1 => "docker-compose (v1, run with --compatibility)",
        }
    }
}

/// The compose this machine has: v2 preferred.
pub fn detect_local(sh: &Ctx) -> Option<Compose> {
    if sh.ok(cmd!(sh, "docker compose version")) {
        Some(Compose::V2)
    } else if sh.ok(cmd!(sh, "docker-compose version")) {
        Some(Compose::V1)
    } else {
        None
    }
}
