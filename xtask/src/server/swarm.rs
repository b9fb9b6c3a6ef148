//! Docker Swarm (issue 14): the stack file, and the scripts run on the manager, with the parsers
//! of what they print. The observer runs as the one-replica service [`SERVICE`] of the stack
//! [`STACK`], its image pinned by digest (`repo@sha256:…`, so every node runs the same bytes),
//! placed on nodes labelled `<placement_label>=true`, updated `start-first` with
//! `failure_action: rollback` and a monitor window of `soak_s`.
//!
//! The single-writer handoff on one node: while an update runs, the tool pauses every OTHER
//! labelled node (availability `pause`, marked with the label [`PAUSED_LABEL`]), so the new task
//! can only be placed beside the old one, on the node whose named volume holds the archive; the
//! new task waits as a standby behind the archive's writer lock and takes it over when Swarm
//! stops the old task. The marked nodes are resumed afterwards (and by the next deploy when a run
//! died before resuming them).
//!
//! Every line these scripts print is `|`-separated (`service|…`, `task|…`, `node|…`), the first
//! field naming the record.

use super::{deploy_dir, q};
use crate::config::Env;
use crate::core::contract::CONTAINER;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};

/// The stack's name (`docker stack deploy … observer`).
pub const STACK: &str = "observer";
/// The service's name: `<stack>_<service>`.
pub const SERVICE: &str = "observer_qts-observer";
/// The stack file in the deploy root on the manager.
pub const STACK_FILE: &str = "observer-stack.yml";
/// The service label carrying the version (the stack's `deploy.labels`).
pub const VERSION_LABEL: &str = "observer.version";
/// The node label marking a node this tool paused for an update (value: the deploy's lock id).
pub const PAUSED_LABEL: &str = "observer.paused-by-deploy";
/// The overlay network `/health` and `/metrics` are reached on (`observer_observer`, attachable:
/// a Prometheus container on it scrapes `qts-observer:8000`, which DNS resolves to the task's
/// address: `endpoint_mode: dnsrr`). No host port is published: `start-first` would run two
/// tasks wanting one host port on one node.
pub const NETWORK: &str = "observer";

/// `repo@sha256:…`: the image reference every node pulls.
pub fn pinned(env: &Env, digest: &str) -> String {
    format!("{}@{digest}", env.repo())
}

/// Expands compose's `${NAME}`, `${NAME:-default}`, `${NAME:?message}` and `$$` in `value` from
/// `vars` (the values the compose deploy's `.env` would give), then escapes every `$` as `$$` for
/// `docker stack deploy`'s own interpolation. A variable outside `vars` is an error.
pub fn interpolate(value: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in {value:?}"))?;
            let expr = &r[..end];
            let (name, default) = match expr.find([':', '-', '?']) {
                Some(j) => {
                    let op = expr[j..].trim_start_matches(':');
                    (&expr[..j], op.strip_prefix('-').map(str::to_string))
                }
                None => (expr, None),
            };
            let v = vars
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .or(default)
                .ok_or_else(|| anyhow!("${{{name}}} in {value:?} has no value for a stack"))?;
            out.push_str(&v);
            rest = &r[end + 1..];
        } else {
            bail!("a bare $ in {value:?}: use ${{NAME}}");
        }
    }
    out.push_str(rest);
    Ok(out.replace('$', "$$"))
}

/// The stack file (JSON, which is YAML) derived from the server compose file's service
/// (`compose`: its parsed JSON): the image pinned by digest, `env_file: .env` (the deploy's
/// secrets, read by the CLI on the manager), the service's environment, healthcheck, limits,
/// logging, stop grace period, read-only root and dropped capabilities (its pids limit and tmpfs
/// translated, `security_opt` left out: Swarm has none); the `./data`, `./logs`, `./config` bind mounts become the
/// stack's named volumes (`observer_data`… on the node that runs the task); no host port; the
/// overlay network [`NETWORK`]; one replica on a labelled node; `start-first` updates that roll
/// back on failure after a monitor window of `soak_s` seconds.
pub fn stack_file(env: &Env, compose: &Value, version: &str, digest: &str) -> Result<String> {
    let svc = compose
        .pointer(&format!("/services/{CONTAINER}"))
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("the compose file has no service {CONTAINER}"))?;
    let vars = [
        ("IMAGE_TAG", version.to_string()),
        ("IMAGE_REPO", env.repo()),
        ("OBSERVER_INTERVAL_MS", env.cfg.interval_ms.to_string()),
        ("OBSERVER_HOST_PORT", env.cfg.host_port.to_string()),
        ("OBSERVER_BIND_ADDRESS", env.cfg.bind_for_compose()),
    ];
    let mut environment = Map::new();
    if let Some(m) = svc.get("environment").and_then(Value::as_object) {
        for (k, v) in m {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            environment.insert(k.clone(), Value::String(interpolate(&text, &vars)?));
        }
    }
    let mut volumes = Vec::new();
    let mut named = Map::new();
    for v in svc
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = v
            .as_str()
            .ok_or_else(|| anyhow!("a volume of {CONTAINER} is not in short syntax"))?;
        let (src, dst) = s
            .split_once(':')
            .ok_or_else(|| anyhow!("volume {s:?} has no target"))?;
        let name = src.trim_start_matches("./").trim_end_matches('/');
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("volume {s:?}: only ./NAME bind mounts become named volumes");
        }
        volumes.push(Value::String(format!("{name}:{dst}")));
        named.insert(name.to_string(), json!({}));
    }
    let monitor = format!("{}s", env.cfg.soak_s.max(5));
    let mut deploy = json!({
        "replicas": 1,
        // DNS answers the task's own address: no IPVS virtual IP (a singleton needs no load
        // balancer, and kernels without ip_vs, as on this machine, cannot serve one).
        "endpoint_mode": "dnsrr",
        "labels": { VERSION_LABEL: version },
        "placement": {
            "constraints": [format!("node.labels.{} == true", env.placement_label())]
        },
        "restart_policy": { "condition": "any", "delay": "2s" },
        "update_config": {
            "parallelism": 1, "delay": "0s", "order": "start-first",
            "failure_action": "rollback", "monitor": monitor, "max_failure_ratio": 0
        },
        "rollback_config": {
            "parallelism": 1, "delay": "0s", "order": "start-first",
            "failure_action": "pause", "monitor": monitor, "max_failure_ratio": 0
        }
    });
    if let Some(r) = svc.get("deploy").and_then(|d| d.get("resources")) {
        deploy["resources"] = r.clone();
    }
    // The hardening (issue 15) as Swarm takes it: `pids_limit` is `deploy.resources.limits.pids`
    // in a stack (file format 3.9); the service-level `tmpfs` (which a stack ignores) becomes a
    // tmpfs mount; `security_opt` has no Swarm counterpart (a stack ignores it:
    // no-new-privileges is not applied there).
    if let Some(p) = svc.get("pids_limit").filter(|p| !p.is_null()) {
        let n = p
            .as_u64()
            .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| anyhow!("pids_limit {p} is not a number"))?;
        deploy["resources"]["limits"]["pids"] = json!(n);
    }
    for t in svc
        .get("tmpfs")
        .map(|v| match v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        })
        .into_iter()
        .flatten()
    {
        volumes.push(tmpfs_mount(&t)?);
    }
    let mut service = json!({
        "image": pinned(env, digest),
        "env_file": [".env"],
        "environment": environment,
        "volumes": volumes,
        "networks": [NETWORK],
        "deploy": deploy,
    });
    for key in [
        "healthcheck",
        "logging",
        "stop_grace_period",
        "read_only",
        "cap_drop",
    ] {
        if let Some(v) = svc.get(key) {
            service[key] = v.clone();
        }
    }
    let stack = json!({
        "version": "3.9",
        "services": { CONTAINER: service },
        "volumes": named,
        "networks": { NETWORK: { "driver": "overlay", "attachable": true } },
    });
    Ok(serde_json::to_string_pretty(&stack)? + "\n")
}

/// A compose `tmpfs` entry (`/tmp:size=16m,mode=1777`) as a stack's long-syntax tmpfs mount
/// (`size` in bytes; `mode` is not in the stack format, Swarm's tmpfs default is 1777).
fn tmpfs_mount(entry: &Value) -> Result<Value> {
    let s = entry
        .as_str()
        .ok_or_else(|| anyhow!("tmpfs entry {entry} is not a string"))?;
    let (target, opts) = s.split_once(':').unwrap_or((s, ""));
    if !target.starts_with('/') {
        bail!("tmpfs {s:?}: the target must be an absolute path");
    }
    let mut mount = json!({ "type": "tmpfs", "target": target });
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        if let Some(v) = o.strip_prefix("size=") {
            let n = crate::compose::bytes(&Value::String(v.to_string()))
                .ok_or_else(|| anyhow!("tmpfs {s:?}: size {v:?} is not a size"))?;
            mount["tmpfs"] = json!({ "size": n });
        }
    }
    Ok(mount)
}

/// `docker service inspect`'s template for the [`Service`] line.
const SERVICE_FMT: &str = "service|{{index .Spec.Labels \"observer.version\"}}|{{.Spec.TaskTemplate.ContainerSpec.Image}}|{{.Version.Index}}|{{if .UpdateStatus}}{{.UpdateStatus.State}}|{{if .UpdateStatus.StartedAt}}{{.UpdateStatus.StartedAt.UnixNano}}{{else}}0{{end}}|{{.UpdateStatus.Message}}{{else}}none|0|{{end}}";

/// The service line (nothing when there is no service).
fn service_line() -> String {
    format!("docker service inspect --format '{SERVICE_FMT}' {SERVICE} 2>/dev/null")
}

/// The task lines: `task|id|node|desired|current state|image|error`, newest first (`n` of them).
fn task_lines(n: usize) -> String {
    format!("docker service ps --no-trunc --format 'task|{{{{.ID}}}}|{{{{.Node}}}}|{{{{.DesiredState}}}}|{{{{.CurrentState}}}}|{{{{.Image}}}}|{{{{.Error}}}}' {SERVICE} 2>/dev/null | head -n {n}")
}

/// The node lines: `node|id|hostname|state|availability|role|<label value>|<paused mark>` (the
/// label key is validated by the configuration: `[A-Za-z0-9._-]`).
fn node_lines(env: &Env) -> String {
    format!(
        "docker node ls -q 2>/dev/null | xargs -r docker node inspect --format 'node|{{{{.ID}}}}|{{{{.Description.Hostname}}}}|{{{{.Status.State}}}}|{{{{.Spec.Availability}}}}|{{{{.Spec.Role}}}}|{{{{index .Spec.Labels \"{label}\"}}}}|{{{{index .Spec.Labels \"{PAUSED_LABEL}\"}}}}' 2>/dev/null",
        label = env.placement_label()
    )
}

/// Creates the deploy root and `.deploy/`, then prints `swarm=<state> <is manager>`,
/// `last_good=`, `files=` (sha256 of `.env` and the stack file), the service line, the task lines
/// and the node lines.
pub fn probe(env: &Env) -> String {
    let r = q(&env.remote_dir);
    let d = q(&deploy_dir(env));
    format!(
        "mkdir -p {r} {d} && cd {r} && echo \"swarm=$(docker info --format '{{{{.Swarm.LocalNodeState}}}} {{{{.Swarm.ControlAvailable}}}}' 2>/dev/null)\" && echo \"last_good=$(cat {d}/last_good_tag 2>/dev/null)\" && echo \"files=$(sha256sum .env {STACK_FILE} 2>/dev/null | awk '{{print $1}}' | tr '\\n' ' ')\" && {{ {svc}; {tasks}; {nodes}; true; }}",
        svc = service_line(),
        tasks = task_lines(10),
        nodes = node_lines(env),
    )
}

/// `status` and `check-env --remote`: the probe's lines plus `lock=`.
pub fn status(env: &Env) -> String {
    format!(
        "{}; echo \"lock=$(cat {}/lock/holder.json 2>/dev/null)\"",
        probe(env),
        q(&deploy_dir(env))
    )
}

/// The service as the manager reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    /// The `observer.version` label of its spec.
    pub version: String,
    /// Its spec's image (`repo@sha256:…`; the CLI may append nothing else).
    pub image: String,
    /// The spec's version index: unchanged after a `docker stack deploy`, nothing was updated.
    pub spec_index: String,
    /// `UpdateStatus.State` (`updating`, `completed`, `rollback_completed`, `paused`, …) or `none`.
    pub update: String,
    /// `UpdateStatus.StartedAt` in Unix nanoseconds ("0" when none): tells one update from the next.
    pub update_started: String,
    pub message: String,
}

/// One task of the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub node: String,
    /// `Running`, `Shutdown`, …
    pub desired: String,
    /// `Running 5 seconds ago`, `Failed 3 seconds ago`, …
    pub state: String,
    pub image: String,
    pub error: String,
}

impl Task {
    /// Desired and current state running.
    pub fn running(&self) -> bool {
        self.desired == "Running" && self.state.starts_with("Running")
    }
}

/// One node of the swarm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    /// `ready`, `down`, …
    pub state: String,
    /// `active`, `pause`, `drain`.
    pub availability: String,
    /// `manager` or `worker`.
    pub role: String,
    /// The placement label's value (`true` on the observer's nodes).
    pub label: String,
    /// The lock id of the deploy that paused it ("" when none did).
    pub paused_by: String,
}

/// What [`probe`] / [`status`] printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// `active true` on a manager.
    pub swarm: String,
    pub last_good: Option<crate::core::records::LastGood>,
    pub files: Vec<String>,
    pub service: Option<Service>,
    pub tasks: Vec<Task>,
    pub nodes: Vec<Node>,
    /// The lock holder's record (status only).
    pub lock: String,
}

impl Probe {
    /// Whether the connected engine is an active swarm manager.
    pub fn is_manager(&self) -> bool {
        self.swarm == "active true"
    }
    /// The running task (desired and current state running), when there is one.
    pub fn running_task(&self) -> Option<&Task> {
        self.tasks.iter().find(|t| t.running())
    }
    /// Labelled nodes that are ready and active.
    pub fn eligible(&self) -> Vec<&Node> {
        self.nodes
            .iter()
            .filter(|n| {
                n.label == "true"
                    && n.state == "ready"
                    // A node an earlier, dead deploy paused is resumed under the lock.
                    && (n.availability == "active" || !n.paused_by.is_empty())
            })
            .collect()
    }
}

fn fields(l: &str, n: usize) -> Vec<String> {
    let mut f: Vec<String> = l.splitn(n, '|').map(str::to_string).collect();
    f.resize(n, String::new());
    f
}

/// Parses [`probe`]'s or [`status`]'s output.
pub fn parse(out: &str) -> Probe {
    let mut p = Probe {
        swarm: super::field(out, "swarm").to_string(),
        last_good: crate::core::records::LastGood::parse(super::field(out, "last_good")),
        files: super::field(out, "files")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        lock: super::field(out, "lock").to_string(),
        ..Probe::default()
    };
    for l in out.lines() {
        if l.starts_with("service|") {
            let f = fields(l, 7);
            p.service = Some(Service {
                version: f[1].clone(),
                image: f[2].clone(),
                spec_index: f[3].clone(),
                update: f[4].clone(),
                update_started: f[5].clone(),
                message: f[6].clone(),
            });
        } else if l.starts_with("task|") {
            let f = fields(l, 7);
            p.tasks.push(Task {
                id: f[1].clone(),
                node: f[2].clone(),
                desired: f[3].clone(),
                state: f[4].clone(),
                image: f[5].clone(),
                error: f[6].clone(),
            });
        } else if l.starts_with("node|") {
            let f = fields(l, 8);
            p.nodes.push(Node {
                id: f[1].clone(),
                hostname: f[2].clone(),
                state: f[3].clone(),
                availability: f[4].clone(),
                role: f[5].clone(),
                label: f[6].clone(),
                paused_by: f[7].clone(),
            });
        }
    }
    p
}

/// Pauses every labelled, active node other than the one running the service's task, marking
/// each with [`PAUSED_LABEL`]`=<lock_id>`; prints `paused <hostname>` per node, or `paused none`
/// (no task runs: nothing to keep beside).
pub fn pause_others(env: &Env, lock_id: &str) -> String {
    format!(
        "run=$(docker service ps --filter desired-state=running --format '{{{{.Node}}}}' {SERVICE} 2>/dev/null | head -n 1); if [ -z \"$run\" ]; then echo 'paused none'; exit 0; fi; {nodes} | while IFS='|' read -r _ id host _ avail _ label _; do if [ \"$label\" = true ] && [ \"$host\" != \"$run\" ] && [ \"$avail\" = active ]; then docker node update --availability pause --label-add {mark} \"$id\" >/dev/null || exit 1; echo \"paused $host\"; fi; done",
        nodes = node_lines(env),
        mark = q(&format!("{PAUSED_LABEL}={lock_id}")),
    )
}

/// Resumes every node marked with [`PAUSED_LABEL`] (this run's, or a run's that died before
/// resuming; the caller holds the deploy lock): availability `active`, mark removed. Prints
/// `resumed <hostname>` per node.
pub fn resume_paused(env: &Env) -> String {
    format!(
        "{nodes} | while IFS='|' read -r _ id host _ _ _ _ mark; do if [ -n \"$mark\" ]; then docker node update --availability active --label-rm {PAUSED_LABEL} \"$id\" >/dev/null || exit 1; echo \"resumed $host\"; fi; done",
        nodes = node_lines(env),
    )
}

/// `docker stack deploy` of the uploaded stack file, with `--with-registry-auth` (the nodes pull
/// with the credentials of a throwaway login: user and token on stdin, the `DOCKER_CONFIG` removed
/// afterwards) and `--resolve-image never` (the image is pinned by digest). Only the tool's inputs
/// reach the CLI (`env -i`): the login environment cannot change the stack.
pub fn deploy(env: &Env, login: bool) -> String {
    let r = q(&env.remote_dir);
    let run = format!("env -i PATH=\"$PATH\" HOME=\"$HOME\" ${{DOCKER_HOST:+DOCKER_HOST=\"$DOCKER_HOST\"}} ${{DOCKER_CONFIG:+DOCKER_CONFIG=\"$DOCKER_CONFIG\"}} docker stack deploy --with-registry-auth --resolve-image never -c {STACK_FILE} {STACK}");
    if !login {
        return format!("cd {r} && {run}");
    }
    format!(
        "cd {r} && d=$(mktemp -d) && export DOCKER_CONFIG=\"$d\" && read -r u && docker login --username \"$u\" --password-stdin {} >/dev/null && {run}; rc=$?; rm -rf \"$d\"; unset DOCKER_CONFIG; exit \"$rc\"",
        q(&env.registry)
    )
}

/// Watches the service after a `docker stack deploy` (or `docker service rollback`) for up to
/// `timeout_s` seconds, once a second, and prints `watch=<outcome>` then the service and task
/// lines. Outcomes: `completed`, `rollback_completed`, `paused`, `rollback_paused` (an update
/// that started after `since`, the `UpdateStatus.StartedAt` before the deploy), `created` (no
/// service before: a task of `image` runs), `unchanged` (the spec's version index is still
/// `index`, the probe's, or for 3 s no new update has started while a task of `image` runs: the
/// stack deploy changed nothing that needs new tasks, so no update will come), `timeout`.
/// When `hold` (the node the update was kept
/// on, beside the archive; "" for none) goes down meanwhile, the paused nodes are resumed at once
/// (`resumed <host>` lines): the archive's node is lost, and the task must be placed elsewhere
/// rather than wait for the watch to time out.
pub fn watch(
    env: &Env,
    image: &str,
    since: &str,
    index: &str,
    hold: &str,
    timeout_s: u64,
) -> String {
    format!(
        "since={since}; img={img}; hold={hold}; idx={index}; r=timeout; i=0; n=0; if [ -n \"$idx\" ] && [ \"$(docker service inspect --format '{{{{.Version.Index}}}}' {SERVICE} 2>/dev/null)\" = \"$idx\" ]; then r=unchanged; i={timeout_s}; fi; while [ $i -lt {timeout_s} ]; do s=$({svc}); st=$(printf '%s' \"$s\" | cut -d'|' -f5); at=$(printf '%s' \"$s\" | cut -d'|' -f6); if [ -n \"$st\" ] && [ \"$st\" != none ] && [ \"$at\" != \"$since\" ]; then n=0; case \"$st\" in completed|rollback_completed|paused|rollback_paused) r=$st; break ;; esac; elif docker service ps --no-trunc --filter desired-state=running --format '{{{{.CurrentState}}}}|{{{{.Image}}}}' {SERVICE} 2>/dev/null | grep -q \"^Running.*|$img\\$\"; then if [ -z \"$since\" ]; then r=created; break; fi; n=$((n+1)); if [ $n -ge 3 ]; then r=unchanged; break; fi; else n=0; fi; if [ -n \"$hold\" ] && [ \"$(docker node inspect --format '{{{{.Status.State}}}}' \"$hold\" 2>/dev/null)\" = down ]; then echo \"node $hold is down: resuming the paused nodes\"; {resume}; hold=; fi; sleep 1; i=$((i+1)); done; echo \"watch=$r\"; {svc}; {tasks}; true",
        since = q(since),
        img = q(image),
        hold = q(hold),
        index = q(index),
        svc = service_line(),
        tasks = task_lines(6),
        resume = resume_paused(env),
    )
}

/// For `seconds`, once a second: exactly the same one task runs `image` (no restart, no
/// reschedule). Prints `ok soak …` or `fail soak …` (exit 0 either way).
pub fn soak(image: &str, seconds: u64) -> String {
    format!(
        "img={img}; t() {{ docker service ps --no-trunc --filter desired-state=running --format '{{{{.ID}}}}|{{{{.CurrentState}}}}|{{{{.Image}}}}' {SERVICE} 2>/dev/null | grep \"|Running[^|]*|$img\\$\" | cut -d'|' -f1 | tr '\\n' ' ' | sed 's/ $//'; }}; first=$(t); i=0; bad=; [ -n \"$first\" ] || bad='no task of the new image runs'; while [ -z \"$bad\" ] && [ $i -lt {seconds} ]; do sleep 1; i=$((i+1)); now=$(t); if [ \"$now\" != \"$first\" ]; then bad=\"after ${{i}}s the running tasks changed: '$now' (was '$first')\"; fi; done; if [ -z \"$bad\" ]; then echo \"ok soak task $first running for {seconds}s\"; else echo \"fail soak $bad\"; fi",
        img = q(image),
    )
}

/// Swarm's own rollback to the service's previous spec, detached (then [`watch`]).
pub fn rollback() -> String {
    format!("docker service rollback -d {SERVICE} >/dev/null")
}

/// The service's last 50 log lines and its recent tasks with their errors.
pub fn logs() -> String {
    format!(
        "docker service logs --tail 50 --no-task-ids {SERVICE} 2>&1 | tail -n 50; {}; true",
        task_lines(6)
    )
}

/// The prefix of a `watch=` outcome line.
pub fn watch_outcome(out: &str) -> &str {
    super::field(out, "watch")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn model() -> Value {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(crate::core::contract::COMPOSE_PATH),
        )
        .unwrap();
        crate::compose::parse_yaml(&text).unwrap()
    }

    #[test]
    fn the_stack_pins_the_digest_places_by_label_and_updates_start_first() {
        let e = config::test_env("/srv/obs", "/r.git");
        let text = stack_file(&e, &model(), "v1.2.3", "sha256:ab").unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let s = &v["services"][CONTAINER];
        assert_eq!(s["image"], "127.0.0.1:5000/observer@sha256:ab");
        assert_eq!(s["env_file"], json!([".env"]));
        assert!(s.get("ports").is_none(), "no host port: {text}");
        assert!(s.get("container_name").is_none());
        assert_eq!(
            s["volumes"],
            json!([
                "data:/app/data/observer",
                "logs:/app/logs",
                "config:/app/config",
                {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 16 << 20}}
            ])
        );
        assert_eq!(s["logging"]["options"]["compress"], "true");
        assert_eq!(s["environment"]["OBSERVER_VERSION"], "v1.2.3");
        assert_eq!(s["environment"]["OBSERVER_INTERVAL_MS"], "200");
        let d = &s["deploy"];
        assert_eq!(d["replicas"], 1);
        assert_eq!(d["endpoint_mode"], "dnsrr");
        assert_eq!(d["labels"][VERSION_LABEL], "v1.2.3");
        assert_eq!(
            d["placement"]["constraints"],
            json!(["node.labels.observer == true"])
        );
        assert_eq!(d["update_config"]["order"], "start-first");
        assert_eq!(d["update_config"]["failure_action"], "rollback");
        assert_eq!(d["update_config"]["monitor"], "10s");
        assert_eq!(d["rollback_config"]["order"], "start-first");
        assert_eq!(d["resources"]["limits"]["memory"], "512M");
        assert_eq!(s["healthcheck"]["interval"], "3s");
        assert_eq!(v["networks"][NETWORK]["driver"], "overlay");
        assert_eq!(v["networks"][NETWORK]["attachable"], true);
        assert_eq!(v["version"], "3.9");
        // The hardening, as far as Swarm takes it (issue 15).
        assert_eq!(s["read_only"], true);
        assert_eq!(s["cap_drop"], json!(["ALL"]));
        assert_eq!(d["resources"]["limits"]["pids"], 128);
        assert!(
            s.get("security_opt").is_none(),
            "a stack ignores it: {text}"
        );
        assert!(s.get("tmpfs").is_none(), "a stack ignores it: {text}");
    }

    #[test]
    fn interpolation_follows_compose_and_escapes_dollars_for_the_stack() {
        let vars = [("IMAGE_TAG", "v1.0.0".to_string())];
        assert_eq!(interpolate("${IMAGE_TAG}", &vars).unwrap(), "v1.0.0");
        assert_eq!(interpolate("${X:-1000}", &vars).unwrap(), "1000");
        assert_eq!(interpolate("a$$b", &vars).unwrap(), "a$$b");
        assert_eq!(
            interpolate("${IMAGE_TAG:?required}", &vars).unwrap(),
            "v1.0.0"
        );
        assert!(interpolate("${NOPE}", &vars).is_err());
        assert!(interpolate("$NOPE", &vars).is_err());
        assert!(interpolate("${OPEN", &vars).is_err());
    }

    #[test]
    fn a_compose_file_without_the_service_or_with_odd_volumes_is_refused() {
        let e = config::test_env("/srv/obs", "/r.git");
        assert!(stack_file(&e, &json!({"services": {}}), "v1.0.0", "sha256:a").is_err());
        let odd = json!({"services": {CONTAINER: {"volumes": ["/etc:/etc"]}}});
        assert!(stack_file(&e, &odd, "v1.0.0", "sha256:a").is_err());
    }

    #[test]
    fn parses_service_tasks_and_nodes() {
        let out = "swarm=active true\nlast_good=v1.0.0 sha256:aa\nfiles=x y \nservice|v1.0.0|r@sha256:aa|42|rollback_completed|1764800000000000000|rollback completed: update paused\ntask|t1|xtsw-w1|Running|Running 5 seconds ago|r@sha256:aa|\ntask|t0|xtsw-w1|Shutdown|Failed 20 seconds ago|r@sha256:bb|task: non-zero exit (1)\nnode|n1|xtsw-m1|ready|active|manager||\nnode|n2|xtsw-w1|ready|active|worker|true|\nnode|n3|xtsw-w2|down|pause|worker|true|0123\nlock=\n";
        let p = parse(out);
        assert!(p.is_manager());
        assert_eq!(p.last_good.as_ref().unwrap().version, "v1.0.0");
        let s = p.service.clone().unwrap();
        assert_eq!(s.update, "rollback_completed");
        assert_eq!(s.spec_index, "42");
        assert_eq!(s.update_started, "1764800000000000000");
        assert_eq!(p.running_task().unwrap().id, "t1");
        assert_eq!(p.tasks[1].error, "task: non-zero exit (1)");
        assert_eq!(p.eligible().len(), 1);
        assert_eq!(p.nodes[2].paused_by, "0123");
        assert_eq!(watch_outcome("watch=completed\nservice|…"), "completed");
    }
}
