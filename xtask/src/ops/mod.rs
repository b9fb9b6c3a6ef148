//! Layer 5: operations shared by the verbs: the connection, the steps of a deploy (built in one
//! place), the health gate, reading the server's records, snapshots, and the rollout with its
//! rollback decision tree.

pub mod gaps;
pub mod provenance;
pub mod prune;
pub mod prune_all;
pub mod recovery;
pub mod rollout;
pub mod run;
pub mod secrets;
pub mod snapshot;
pub mod snapshot_delta;
pub mod snapshot_stream;
pub mod steps;
pub mod stream;
pub mod swarm;

use crate::config::{Env, Server};
use crate::core::exit::fail;
use crate::core::records::HistoryRecord;
use crate::core::util::{env_nonempty, hostname};
use crate::ctx::Ctx;
use crate::plan::{Executor, Real, Step};
use crate::server::probe::{Foreign, Probe};
use crate::server::{self, gate::Gate};
use crate::transport::Session;
use anyhow::{bail, Result};
use steps::Steps;

/// `user@host`, with ` (GitHub Actions)` under Actions.
pub fn who() -> String {
    let user = env_nonempty("GITHUB_ACTOR")
        .or_else(crate::core::util::user_name)
        .unwrap_or_else(|| "unknown".into());
    let via = if env_nonempty("GITHUB_ACTIONS").is_some() {
        " (GitHub Actions)"
    } else {
        ""
    };
    format!("{user}@{}{via}", hostname())
}

/// The git revision of the checkout the tool runs from (the repository root whose compose file and
/// config it deploys): `git rev-parse --short HEAD`, `-dirty` appended when tracked files have
/// changes; empty when it is not a git checkout. Read once per process.
pub fn tool_revision(sh: &Ctx) -> String {
    static REV: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REV.get_or_init(|| {
        let Ok(rev) = sh.read(xshell::cmd!(sh, "git rev-parse --short HEAD")) else {
            return String::new();
        };
        let dirty = sh
            .read(xshell::cmd!(
                sh,
                "git status --porcelain --untracked-files=no"
            ))
            .map(|s| !s.is_empty())
            .unwrap_or(false);
        format!("{rev}{}", if dirty { "-dirty" } else { "" })
    })
    .clone()
}

/// Fills a history record's provenance (issue 15): the controller's host, the workflow run under
/// GitHub Actions, the tool's version and revision.
pub fn stamp(sh: &Ctx, mut rec: HistoryRecord) -> HistoryRecord {
    rec.host = hostname();
    rec.workflow_run = crate::core::liveness::workflow_run();
    rec.tool_version = env!("CARGO_PKG_VERSION").to_string();
    rec.tool_revision = tool_revision(sh);
    rec
}

/// The server's `.env` for `version`, with this run's secrets (`secrets`: registered for masking,
/// written so compose v1 and v2 read them back exactly, or carried over from the server's `.env`;
/// a missing required or unrepresentable one is refused, exit 2).
pub fn env_text(sh: &Ctx, env: &Env, version: &str) -> Result<String> {
    Ok(server::app::env_file(
        env,
        version,
        &secrets::entries(sh, env)?,
    ))
}

/// The executor with this environment's one server session (opened lazily by the first remote
/// step). More than one server per environment is refused.
pub fn connect<'a>(sh: &'a Ctx, env: &Env, dry_run: bool) -> Result<(Executor<'a>, Server)> {
    if env.servers.len() != 1 {
        bail!(
            "this tool drives one server per environment; {} has {}",
            env.name,
            env.servers.len()
        );
    }
    // From the first connection on, SIGINT/SIGTERM stop the run between steps (issue 12).
    if let Err(e) = crate::core::signals::install() {
        eprintln!("warning: SIGINT/SIGTERM cannot be deferred to a safe point: {e}");
    }
    let server = env.servers[0].clone();
    let t = Real::with(Session::new(env, &server)?);
    Ok((Executor::new(sh, dry_run, Box::new(t)), server))
}

/// Starts `version` with compose and runs the health gate (deploy, rollback, snapshot restore).
pub fn start_and_gate(
    x: &mut Executor,
    st: &Steps,
    version: &str,
    c: crate::compose::Compose,
) -> Result<Gate> {
    x.run_step(&st.up(version, c))?;
    gate(x, st, version)
}

/// Runs the service's health gate for `version` and prints what it found (masked).
pub fn gate(x: &mut Executor, st: &Steps, version: &str) -> Result<Gate> {
    gate_step(x, &st.gate(version))
}

/// Runs a gate step (the service's or the candidate's) and prints what it found (masked).
pub fn gate_step(x: &mut Executor, step: &Step) -> Result<Gate> {
    let out = x.step_of(step, |x| x.exec(step))?;
    let gate = server::gate::parse(&out.stdout);
    for l in &gate.lines {
        x.sh.say(&format!("    {}", x.sh.mask(l)));
    }
    Ok(gate)
}

/// The last `n` history records (unparsable lines skipped).
pub fn read_history(
    x: &mut Executor,
    server: &str,
    env: &Env,
    n: usize,
) -> Result<Vec<HistoryRecord>> {
    let out = x.run(
        &Step::remote(
            "history-read",
            "Read history",
            server,
            server::history::read(env, n),
        )
        .read_only(),
    )?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Runs the probe step and refuses (exit 1, inside the step, before any lock, upload or
/// snapshot) when a container named `qts-observer` or `qts-observer-next` belongs to another
/// compose project (issue 12 item 6): deploy, rollback and snapshot restore all start here.
pub fn probe(x: &mut Executor, st: &Steps) -> Result<Probe> {
    let step = st.probe();
    x.step_of(&step, |x| {
        let p = server::probe::parse(&x.run(&step)?.stdout);
        refuse_foreign(&p.foreign, &st.server)?;
        Ok(p)
    })
}

/// The refusal for foreign containers (none: `Ok`): each named with its project and how a person
/// clears the name. The tool never stops, removes or renames them.
pub fn refuse_foreign(foreign: &[Foreign], server: &str) -> Result<()> {
    if foreign.is_empty() {
        return Ok(());
    }
    let each: Vec<String> = foreign
        .iter()
        .map(|f| format!("{}; {}", f.describe(), f.recovery()))
        .collect();
    Err(fail(format!(
        "{server}: {}
refusing: nothing was locked, uploaded, snapshotted or stopped, and the tool never touches that container; clear the name, then run this again",
        each.join("\n")
    )))
}

/// The running version and the whole history, over `x`'s one session (a foreign container under
/// the service's name is refused, as in [`probe`]).
pub fn running_and_history(
    x: &mut Executor,
    env: &Env,
    server: &str,
) -> Result<(String, Vec<HistoryRecord>)> {
    let st = Steps::new(env, server);
    let probe = probe(x, &st)?;
    Ok((
        server::tag_of(&probe.running),
        read_history(x, server, env, 100_000)?,
    ))
}

#[cfg(test)]
mod tests;
