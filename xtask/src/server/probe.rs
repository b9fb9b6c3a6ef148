//! The server's facts, read in one round trip: compose, last good version, what runs; the status
//! report; and check-env's remote checks.

use super::handoff::{is_ours, CANDIDATE, PROJECT_LABEL};
use super::{deploy_dir, field, q};
use crate::config::Env;
use crate::core::contract::{APP_SECRETS, COMPOSE_FILE, CONTAINER, CONTRACT_VARS, PROJECT};
use crate::core::records::LastGood;

/// The compose label naming the folder the project was started from.
pub const WORKING_DIR_LABEL: &str = "com.docker.compose.project.working_dir";

/// Prints `owner.NAME=PROJECT|WORKING_DIR` for the service container and the handoff candidate
/// (their compose labels; an empty value when no such container exists). Issue 12: a container
/// with one of these names that is not the observer project's is foreign.
pub fn owners() -> String {
    [CONTAINER, CANDIDATE]
        .iter()
        .map(|c| {
            format!(
                "echo \"owner.{c}=$(docker container inspect -f '{{{{index .Config.Labels \"{PROJECT_LABEL}\"}}}}|{{{{index .Config.Labels \"{WORKING_DIR_LABEL}\"}}}}' {c} 2>/dev/null)\""
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

/// A container named `qts-observer` or `qts-observer-next` that does not carry the observer
/// project's compose label (issue 12 item 6): a person's local `docker-compose up`, or anything
/// else run under that name. The tool never stops, removes or renames it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Foreign {
    pub container: String,
    /// Its `com.docker.compose.project` label ("" when it has none: not started by compose).
    pub project: String,
    /// Its `com.docker.compose.project.working_dir` label ("" when absent).
    pub working_dir: String,
}

impl Foreign {
    /// One sentence naming the container and its project.
    pub fn describe(&self) -> String {
        let whose = if self.project.is_empty() {
            "belongs to no compose project (no com.docker.compose.project label)".to_string()
        } else {
            format!("belongs to compose project `{}`", self.project)
        };
        let wd = if self.working_dir.is_empty() {
            String::new()
        } else {
            format!(" (working dir {})", self.working_dir)
        };
        format!(
            "{} {whose}{wd}, not `{PROJECT}`: not the deployed service",
            self.container
        )
    }

    /// How a person clears the name (the tool itself never does).
    pub fn recovery(&self) -> String {
        let stop = match (self.project.is_empty(), self.working_dir.is_empty()) {
            (false, false) => format!(
                ", or stop that project (`docker compose -p {} down` in {})",
                self.project, self.working_dir
            ),
            (false, true) => format!(
                ", or stop that project (`docker compose -p {} down`)",
                self.project
            ),
            _ => String::new(),
        };
        format!(
            "rename it aside (`docker rename {c} {c}-local`){stop}",
            c = self.container
        )
    }
}

/// The foreign containers in [`owners`]' output (lines `owner.NAME=PROJECT|WORKING_DIR`).
pub fn parse_foreign(out: &str) -> Vec<Foreign> {
    [CONTAINER, CANDIDATE]
        .iter()
        .filter_map(|c| {
            let v = field(out, &format!("owner.{c}"));
            if v.is_empty() {
                return None; // no such container
            }
            let (project, wd) = v.split_once('|').unwrap_or((v, ""));
            (project != PROJECT).then(|| Foreign {
                container: c.to_string(),
                project: project.to_string(),
                working_dir: wd.to_string(),
            })
        })
        .collect()
}

/// Prints the composes the machine it runs on has, preferred first (`v2 v1`, `v2`, `v1`, or
/// nothing); `compose::choose` picks one.
pub const DETECT_COMPOSE: &str = "c=; if docker compose version >/dev/null 2>&1; then c=v2; fi; \
if command -v docker-compose >/dev/null 2>&1; then c=\"$c v1\"; fi; echo \"$c\"";

/// Creates the deploy root and `.deploy/`, then prints `compose=`, `last_good=`, `running=`,
/// `state=`, `writer=`, `files=` and the [`owners`] lines.
pub fn script(env: &Env) -> String {
    let r = q(&env.remote_dir);
    let d = q(&deploy_dir(env));
    format!(
        "mkdir -p {r} {d} && cd {r} && echo \"compose=$({DETECT_COMPOSE})\" && echo \"last_good=$(cat {d}/last_good_tag 2>/dev/null)\" && echo \"running=$(docker inspect -f '{{{{.Config.Image}}}}' {CONTAINER} 2>/dev/null)\" && echo \"state=$(docker inspect -f '{{{{.State.Status}}}}' {CONTAINER} 2>/dev/null)\" && echo \"writer=$(head -c 300 config/observer/.writer.lock 2>/dev/null | tr -d '\\n')\" && echo \"files=$(sha256sum .env {COMPOSE_FILE} deployment_config.json 2>/dev/null | awk '{{print $1}}' | tr '\\n' ' ')\" && {}",
        owners()
    )
}

/// What [`script`] printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probe {
    /// `v1`, `v2` or `none`.
    pub compose: String,
    pub last_good: Option<LastGood>,
    /// The service container's image reference ("" when there is none).
    pub running: String,
    /// Its state (`running`, `exited`, ...; "" when there is none).
    pub state: String,
    /// What the archive's writer lock file records ("" when no observer ever took it: a
    /// version from before the handoff).
    pub writer: String,
    /// sha256 of the server's `.env`, compose file and `deployment_config.json`, in that order
    /// (fewer when one is missing).
    pub files: Vec<String>,
    /// `qts-observer` / `qts-observer-next` when they are not the observer project's (issue 12).
    pub foreign: Vec<Foreign>,
}

pub fn parse(out: &str) -> Probe {
    Probe {
        compose: field(out, "compose").to_string(),
        last_good: LastGood::parse(field(out, "last_good")),
        running: field(out, "running").to_string(),
        state: field(out, "state").to_string(),
        writer: field(out, "writer").to_string(),
        files: field(out, "files")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        foreign: parse_foreign(out),
    }
}

/// `status`: the running container's image, state, start time, digests, last good, lock.
pub fn status_script(env: &Env) -> String {
    let d = q(&deploy_dir(env));
    format!(
        "echo \"image=$(docker inspect -f '{{{{.Config.Image}}}}' {CONTAINER} 2>/dev/null)\"; echo \"state=$(docker inspect -f '{{{{.State.Status}}}} {{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{end}}}}' {CONTAINER} 2>/dev/null)\"; echo \"started=$(docker inspect -f '{{{{.State.StartedAt}}}}' {CONTAINER} 2>/dev/null)\"; echo \"digests=$(docker image inspect -f '{{{{json .RepoDigests}}}}' \"$(docker inspect -f '{{{{.Image}}}}' {CONTAINER} 2>/dev/null)\" 2>/dev/null)\"; echo \"last_good=$(cat {d}/last_good_tag 2>/dev/null)\"; echo \"lock=$(cat {d}/lock/holder.json 2>/dev/null)\"; {}",
        owners()
    )
}

/// `check-env --remote`: docker and compose there, the deploy root, `.env`'s mode, free disk,
/// and the contract env inside the running container (secrets by presence only).
pub fn remote_checks_script(env: &Env) -> String {
    let rd = q(&env.remote_dir);
    let plain = CONTRACT_VARS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(" ");
    let secrets = APP_SECRETS.join(" ");
    format!(
        "echo \"compose=$({DETECT_COMPOSE})\"; echo \"docker=$(docker version --format '{{{{.Server.Version}}}}' 2>/dev/null)\"; echo \"dir=$(stat -c '%U %a' {rd} 2>/dev/null)\"; echo \"writable=$(test -w {rd} && echo yes)\"; echo \"envmode=$(stat -c %a {rd}/.env 2>/dev/null)\"; echo \"disk=$(df -Pk {rd} 2>/dev/null | awk 'NR==2{{print $4}}')\"; b={bd}; echo \"backups=$(du -sk -- \"$b\" 2>/dev/null | cut -f1)\"; while [ ! -e \"$b\" ] && [ \"$b\" != / ]; do b=$(dirname -- \"$b\"); done; echo \"backupsfree=$(df -Pk -- \"$b\" 2>/dev/null | awk 'NR==2{{print $4}}')\"; {tools}; echo \"loginenv=$(env | sed -n 's/^\\(IMAGE_[A-Z_]*\\|COMPOSE_[A-Z_]*\\|OBSERVER_[A-Z_]*\\|KIS_[A-Z_]*\\)=.*/\\1/p' | tr '\\n' ' ')\"; {}; if {}; then docker exec {CONTAINER} sh -c 'for n in {plain}; do printf \"cenv %s=%s\\n\" \"$n\" \"$(printenv \"$n\")\"; done; for n in {secrets}; do if [ -n \"$(printenv \"$n\")\" ]; then echo \"csecret $n=set\"; else echo \"csecret $n=unset\"; fi; done' 2>/dev/null; fi; true",
        owners(),
        is_ours(CONTAINER),
        bd = q(&env.backups_dir),
        tools = super::snapshot_remote::tools(),
    )
}
