//! The handoff (issue 11): the new version starts BESIDE the running one as a one-off compose
//! container named [`CANDIDATE`] (the service's own image, env, mounts and limits; no host
//! port), waits as a standby (the observer's single-writer `flock` on
//! `config/observer/.writer.lock` keeps it from appending), is gated and soaked, and only then
//! does the old instance stop; the candidate takes the archive over within one interval. Then the
//! compose-managed `qts-observer` (port 8000, `restart: unless-stopped`) is recreated with the new
//! image, waits as a standby behind the candidate, and takes over when the candidate stops.

use crate::compose::Compose;
use crate::config::Env;
use crate::core::contract::{CONTAINER, PROJECT};

/// The candidate's container name: only the tool creates (and removes) it.
pub const CANDIDATE: &str = "qts-observer-next";

/// Prints `status=<http> role=<role> instance=<id>` of `container`'s `/health`, asked from inside
/// it (`status=0` when it does not answer).
pub fn role_of(container: &str) -> String {
    // Grouped, so that a pipe after it takes the fallback's output too.
    format!("{{ docker exec {container} python3 -m observer.role 2>/dev/null || echo status=0; }}")
}

/// The compose label naming a container's project (what `COMPOSE_PROJECT_NAME` sets).
pub const PROJECT_LABEL: &str = "com.docker.compose.project";

/// A shell condition: `container` exists and carries the observer project's compose label
/// (issue 12: anything else under the name is foreign and never touched).
pub fn is_ours(container: &str) -> String {
    format!(
        "[ \"$(docker container inspect -f '{{{{index .Config.Labels \"{PROJECT_LABEL}\"}}}}' {container} 2>/dev/null)\" = {PROJECT} ]"
    )
}

/// Removes a candidate left by an earlier run that failed (never anything else): a
/// `qts-observer-next` of another compose project is left alone and fails the step (exit 1).
pub fn clean_candidate() -> String {
    format!(
        "if ! docker container inspect {CANDIDATE} >/dev/null 2>&1; then true; elif {ours}; then docker rm -f {CANDIDATE} >/dev/null 2>&1; true; else echo \"{CANDIDATE} is not the {PROJECT} project's: not removed\" >&2; exit 1; fi",
        ours = is_ours(CANDIDATE)
    )
}

/// Starts the candidate: `compose run -d` of the service, without its host port.
pub fn start_candidate(env: &Env, c: Compose) -> String {
    super::app::compose(
        env,
        c,
        &format!("run -d --name {CANDIDATE} --no-deps {CONTAINER}"),
    )
}

/// For `seconds`, once a second: the container runs, is healthy, and neither restarted nor
/// started again. Prints `ok soak ...` or `fail soak ...` (exit 0 either way).
pub fn soak(container: &str, seconds: u64) -> String {
    format!(
        r#"f='{{{{.State.Status}}}} {{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{end}}}} {{{{.RestartCount}}}} {{{{.State.StartedAt}}}}'; first=$(docker inspect -f "$f" {container} 2>/dev/null); i=0; bad=; while [ $i -lt {seconds} ]; do sleep 1; i=$((i+1)); now=$(docker inspect -f "$f" {container} 2>/dev/null); if [ "$now" != "$first" ]; then bad="after ${{i}}s: $now (was $first)"; break; fi; done; case "$first" in "running healthy "*) ;; *) bad="${{bad:-not healthy: $first}}";; esac; if [ -z "$bad" ]; then echo "ok soak healthy for {seconds}s without a restart"; else echo "fail soak $bad"; fi"#
    )
}

/// Stops `old` (when it runs), then waits up to `timeout_s` for `new` to report role active.
/// Prints `ok handoff ...` or `fail handoff ...` (exit 1 on failure).
pub fn hand_over(old: &str, new: &str, timeout_s: u64) -> String {
    format!(
        r#"docker stop -t 15 {old} >/dev/null 2>&1; i=0; r=; while [ $i -lt {ticks} ]; do r=$({role}); case "$r" in *"role=active "*) echo "ok handoff {new} is active: $r"; exit 0;; esac; sleep 0.2; i=$((i+1)); done; echo "fail handoff {new} did not become active within {timeout_s}s: $r"; exit 1"#,
        ticks = timeout_s * 5,
        role = role_of(new)
    )
}

/// Starts a stopped container again (handing back to the old version).
pub fn start(container: &str) -> String {
    format!("docker start {container} >/dev/null")
}

/// Stops and removes the candidate (only the observer project's: never a foreign one).
pub fn remove_candidate() -> String {
    format!(
        "if {}; then docker stop -t 15 {CANDIDATE} >/dev/null 2>&1; docker rm -f {CANDIDATE} >/dev/null 2>&1; fi; true",
        is_ours(CANDIDATE)
    )
}
