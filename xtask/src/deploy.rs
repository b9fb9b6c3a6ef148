//! `cargo xtask deploy`: verify the release, then over ONE SSH connection per server: lock, upload,
//! pull before stop, start, health gate, record; roll back automatically when the gate fails.
//! Also `rollback`, `status` and `lock`, which share the command builders below.

use crate::compose::{self, Compose};
use crate::config::{self, Env, Server, COMPOSE_PATH, CONFIG_PATH};
use crate::plan::{Executor, Plan, Step};
use crate::registry::{self, Client};
use crate::shell::{env_nonempty, exit_code, fail, now_rfc3339, sh_quote, Shell};
use crate::ssh::Session;
use crate::version;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub const CONTAINER: &str = "qts-observer";
pub const PROJECT: &str = "observer";
const SECRET_VARS: &[&str] = &["KIS_API_KEY", "KIS_API_SECRET"];
const CONTRACT_ENV: &[(&str, &str)] = &[
    ("QTS_OBSERVER_STANDALONE", "1"),
    ("PYTHONPATH", "/app/src:/app"),
    ("OBSERVER_DATA_DIR", "/app/data/observer"),
    ("OBSERVER_LOG_DIR", "/app/logs"),
];
/// The uid/gid of `qts` in the image: owner of the mounted directories.
const QTS_UID: u32 = 10001;

pub const EXIT_CODES: &str = "Exit codes:
  0  deployed and healthy
  1  refused or failed before the running service was touched (or --no-rollback left the failed version)
  2  bad usage or an invalid version (nothing touched)
  3  the new version failed its health gate; the last good version is back and healthy
  4  the rollback failed too, or a first deploy failed: the service is NOT healthy";

#[derive(Args)]
#[command(after_help = EXIT_CODES)]
pub struct Deploy {
    /// The environment (deployment_config.json).
    #[arg(long, default_value = "production")]
    env: String,
    /// The version to deploy (default: GITHUB_REF_NAME when GITHUB_REF is refs/tags/...).
    #[arg(long)]
    tag: Option<String>,
    /// On a failed health gate, leave the failed version running for debugging (exit 1).
    #[arg(long)]
    no_rollback: bool,
    /// Skip the pre-deploy snapshot of the server's state.
    #[arg(long)]
    no_snapshot: bool,
    /// Print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(after_help = EXIT_CODES)]
pub struct Rollback {
    #[arg(long, default_value = "production")]
    env: String,
    /// The version to go back to (default: the last good version that is not the one running).
    #[arg(long, conflicts_with = "restore")]
    to: Option<String>,
    /// Restore the snapshot taken before the running version was deployed: the data goes back
    /// too, and the version recorded in the snapshot is started.
    #[arg(long)]
    restore: bool,
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
pub struct Status {
    #[arg(long, default_value = "production")]
    env: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct Lock {
    #[command(subcommand)]
    cmd: LockCmd,
    #[arg(long, default_value = "production", global = true)]
    env: String,
}

#[derive(Subcommand)]
enum LockCmd {
    /// Who holds the deploy lock, since when, and whether it is stale.
    Status,
    /// Release the lock; a lock that is not stale needs --force.
    Release {
        #[arg(long)]
        force: bool,
    },
}

// ------------------------------------------------------------------------------ command builders

fn q(s: &str) -> String {
    sh_quote(s)
}

pub fn deploy_dir(env: &Env) -> String {
    format!("{}/.deploy", env.remote_dir)
}

/// Facts about the server, read in one round trip.
pub fn probe_script(env: &Env) -> String {
    let r = q(&env.remote_dir);
    let d = q(&deploy_dir(env));
    format!(
        "mkdir -p {r} {d} && cd {r} && echo \"compose=$({det})\" && echo \"last_good=$(cat {d}/last_good_tag 2>/dev/null)\" && echo \"running=$(docker inspect -f '{{{{.Config.Image}}}}' {CONTAINER} 2>/dev/null)\"",
        det = compose::DETECT_SCRIPT
    )
}

pub fn lock_script(env: &Env) -> String {
    let d = q(&deploy_dir(env));
    format!("mkdir -p {d} && if mkdir {d}/lock 2>/dev/null; then cat > {d}/lock/holder.json && echo acquired; else cat {d}/lock/holder.json 2>/dev/null; echo; echo held; exit 1; fi")
}

pub fn unlock_script(env: &Env, id: &str) -> String {
    let d = q(&deploy_dir(env));
    format!(
        "grep -q {} {d}/lock/holder.json 2>/dev/null && rm -rf {d}/lock; true",
        q(id)
    )
}

/// Writes stdin to `path` atomically (temp file + rename) with `mode`.
pub fn upload_script(env: &Env, name: &str, mode: &str) -> String {
    let dst = q(&format!("{}/{name}", env.remote_dir));
    let tmp = q(&format!("{}/.{name}.tmp", env.remote_dir));
    format!("umask 077 && cat > {tmp} && chmod {mode} {tmp} && mv -f {tmp} {dst}")
}

pub fn prepare_dirs_script(env: &Env) -> String {
    let r = q(&env.remote_dir);
    format!(
        "cd {r} && mkdir -p config/observer logs data && if [ \"$(stat -c %u config)\" != {QTS_UID} ]; then chown -R {QTS_UID}:{QTS_UID} config logs data 2>/dev/null || echo needs-chown; fi"
    )
}

pub fn pull_script(env: &Env, image: &str, login: bool) -> String {
    let login = if login {
        format!(
            "read -r u && docker login --username \"$u\" --password-stdin {} >/dev/null && ",
            q(&env.registry)
        )
    } else {
        String::new()
    };
    format!("{login}docker pull -q {img} >/dev/null && docker image inspect --format '{{{{json .RepoDigests}}}}' {img}", img = q(image))
}

pub fn chown_with_image_script(env: &Env, image: &str) -> String {
    format!(
        "docker run --rm --user 0 --entrypoint chown -v {r}:/r {img} -R {QTS_UID}:{QTS_UID} /r/config /r/logs /r/data",
        r = q(&env.remote_dir),
        img = q(image)
    )
}

pub fn up_script(env: &Env, c: Compose) -> String {
    format!(
        "cd {} && {} -f docker-compose.server.yml up -d --remove-orphans 2>&1",
        q(&env.remote_dir),
        c.shell()
    )
}

pub fn down_script(env: &Env, c: Compose) -> String {
    format!(
        "cd {} && {} -f docker-compose.server.yml down --timeout 10 2>&1",
        q(&env.remote_dir),
        c.shell()
    )
}

/// Waits for the container's health, then checks every §6.3 criterion, one line each:
/// `ok NAME DETAIL` or `fail NAME DETAIL`.
pub fn gate_script(env: &Env, version: &str, timeout_s: u64) -> String {
    let r = q(&env.remote_dir);
    let port = env.cfg.host_port;
    let plain: Vec<String> = CONTRACT_ENV.iter().map(|(n, _)| n.to_string()).collect();
    let secret: Vec<String> = SECRET_VARS.iter().map(|s| s.to_string()).collect();
    format!(
        r#"s=none; i=0; while [ $i -lt {timeout_s} ]; do s=$(docker inspect -f '{{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{else}}}}{{{{.State.Status}}}}{{{{end}}}}' {CONTAINER} 2>/dev/null || echo missing); [ "$s" = healthy ] && break; [ "$s" = unhealthy ] && break; sleep 1; i=$((i+1)); done
if [ "$s" = healthy ]; then echo "ok health container healthy"; else echo "fail health container $s after ${{i}}s"; fi
img=$(docker inspect -f '{{{{.Config.Image}}}}' {CONTAINER} 2>/dev/null); case "$img" in *:{ver}) echo "ok image $img";; *) echo "fail image running $img, expected {ver}";; esac
if command -v curl >/dev/null 2>&1; then code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://127.0.0.1:{port}/health); else docker exec {CONTAINER} python3 -m observer.healthcheck && code=200 || code=000; fi
if [ "$code" = 200 ]; then echo "ok http /health answered 200"; else echo "fail http /health answered $code"; fi
if [ -d {r}/config/observer ]; then echo "ok archive-dir config/observer exists"; else echo "fail archive-dir config/observer missing"; fi
if grep -q 'observer started version={ver} ' {r}/logs/observer.log 2>/dev/null; then echo "ok start-line found in logs/observer.log"; else echo "fail start-line no 'observer started version={ver}' in logs/observer.log"; fi
docker exec {CONTAINER} sh -c 'for n in {plain}; do printf "env %s=%s\n" "$n" "$(printenv "$n")"; done; for n in {secret}; do if [ -n "$(printenv "$n")" ]; then echo "secret $n=set"; else echo "secret $n=unset"; fi; done; if [ -n "$(printenv OBSERVER_STANDALONE)" ]; then echo "forbidden OBSERVER_STANDALONE=set"; fi' 2>/dev/null || echo "fail env cannot exec in the container"
"#,
        ver = version,
        plain = plain.join(" "),
        secret = secret.join(" "),
    )
}

pub fn logs_script() -> String {
    format!("docker logs --tail 50 {CONTAINER} 2>&1")
}

pub fn record_script(env: &Env, version: &str, digest: &str) -> String {
    let d = q(&deploy_dir(env));
    format!(
        "printf '%s %s\\n' {v} {dg} > {d}/last_good_tag.tmp && mv -f {d}/last_good_tag.tmp {d}/last_good_tag",
        v = q(version),
        dg = q(digest)
    )
}

pub fn history_script(env: &Env) -> String {
    format!("cat >> {}/history.jsonl", q(&deploy_dir(env)))
}

pub fn images_script(env: &Env) -> String {
    format!(
        "docker images --format '{{{{.Tag}}}} {{{{.CreatedAt}}}}' {}",
        q(&env.repo())
    )
}

// ----------------------------------------------------------------------------------- the plan

/// Builds every step of a deploy on one server: the ONE place where a step's id, title, host,
/// script and stdin are decided. The plan (for `--dry-run` and unit tests) and the run (including
/// the rollback) both take their steps from here.
pub struct Steps<'a> {
    pub env: &'a Env,
    pub server: String,
}

impl Steps<'_> {
    fn remote(&self, id: &'static str, title: impl Into<String>, script: String) -> Step {
        Step::remote(id, title, &self.server, script)
    }
    pub fn verify(&self, version: &str) -> Step {
        let env = self.env;
        let url = format!(
            "{}/v2/{}/manifests/{version}",
            env.registry_url(),
            env.repo_path()
        );
        Step::local(
            "verify",
            format!("Verify {} in the registry", env.image(version)),
            &["curl", "-I", &url],
        )
        .read_only()
    }
    pub fn probe(&self) -> Step {
        self.remote(
            "probe",
            format!("Connect to {} and probe it", self.server),
            probe_script(self.env),
        )
        .read_only()
    }
    pub fn lock(&self, holder: &serde_json::Value) -> Step {
        self.remote("lock", "Take the deploy lock", lock_script(self.env))
            .data_stdin(holder.to_string().into_bytes())
    }
    pub fn upload(&self, id: &'static str, name: &str, data: Vec<u8>) -> Step {
        self.remote(
            id,
            format!("Upload {name}"),
            upload_script(self.env, name, "644"),
        )
        .data_stdin(data)
    }
    pub fn upload_env(&self, env_text: String) -> Step {
        self.remote(
            "upload-env",
            "Upload .env (mode 0600)",
            upload_script(self.env, ".env", "600"),
        )
        .secret_stdin(env_text.into_bytes())
    }
    pub fn dirs(&self) -> Step {
        self.remote(
            "dirs",
            "Prepare config/ logs/ data/",
            prepare_dirs_script(self.env),
        )
    }
    pub fn pull(&self, version: &str, creds: Option<&registry::Creds>) -> Step {
        let image = self.env.image(version);
        let data = creds
            .map(|c| format!("{}\n{}\n", c.user, c.token))
            .unwrap_or_default();
        self.remote(
            "pull",
            format!("Pull {image} (the old version keeps running)"),
            pull_script(self.env, &image, creds.is_some()),
        )
        .secret_stdin(data.into_bytes())
    }
    pub fn chown(&self, version: &str) -> Step {
        self.remote(
            "chown",
            "Give config/ logs/ data/ to the image's user",
            chown_with_image_script(self.env, &self.env.image(version)),
        )
    }
    pub fn up(&self, version: &str, c: Compose) -> Step {
        self.remote(
            "up",
            format!("Start {version} ({})", c.describe()),
            up_script(self.env, c),
        )
    }
    pub fn gate(&self, version: &str) -> Step {
        self.remote(
            "gate",
            format!("Health gate for {version} (contract §6.3)"),
            gate_script(self.env, version, self.env.cfg.health_timeout_s),
        )
        .read_only()
    }
    pub fn logs(&self) -> Step {
        self.remote("logs", "Container logs", logs_script())
            .read_only()
    }
    pub fn stop(&self, c: Compose) -> Step {
        self.remote("stop", "Stop the service", down_script(self.env, c))
    }
    pub fn down(&self, c: Compose) -> Step {
        self.remote(
            "down",
            "Stop the failed container (no last good version)",
            down_script(self.env, c),
        )
    }
    pub fn record(&self, version: &str, digest: &str) -> Step {
        self.remote(
            "record",
            "Record last_good_tag",
            record_script(self.env, version, digest),
        )
    }
    pub fn history(&self, record: &serde_json::Value) -> Step {
        self.remote(
            "history",
            "Append to .deploy/history.jsonl",
            history_script(self.env),
        )
        .data_stdin(format!("{record}\n").into_bytes())
    }
    pub fn images(&self) -> Step {
        self.remote("prune", "List images for pruning", images_script(self.env))
            .read_only()
    }
    pub fn prune(&self, tags: &[String]) -> Step {
        let args: Vec<String> = tags.iter().map(|t| q(&self.env.image(t))).collect();
        self.remote(
            "prune-rm",
            format!("Prune {} old image(s)", tags.len()),
            format!("docker rmi {} >/dev/null 2>&1 || true", args.join(" ")),
        )
    }
    pub fn unlock(&self, lock_id: &str) -> Step {
        self.remote(
            "unlock",
            "Release the deploy lock",
            unlock_script(self.env, lock_id),
        )
    }
}

/// What a deploy uploads and feeds on stdin, read before anything runs.
pub struct Payload {
    pub compose: Vec<u8>,
    pub config: Vec<u8>,
    pub env_text: String,
    pub holder: serde_json::Value,
    pub lock_id: String,
}

impl Payload {
    pub fn read(sh: &Shell, env: &Env, version: &str) -> Result<Payload> {
        let lock_id = crate::shell::random_hex(8)?;
        Ok(Payload {
            compose: std::fs::read(sh.path(COMPOSE_PATH)).context("reading the compose file")?,
            config: std::fs::read(sh.path(CONFIG_PATH))
                .context("reading deployment_config.json")?,
            env_text: env_file(env, version)?,
            holder: serde_json::json!({
                "id": lock_id, "who": who(), "host": hostname(), "pid": std::process::id(), "version": version,
                "started": now_rfc3339(), "started_epoch": epoch(),
            }),
            lock_id,
        })
    }
}

/// The happy path of a deploy on one server, in order.
pub fn plan(
    st: &Steps,
    version: &str,
    c: Compose,
    creds: Option<&registry::Creds>,
    pay: &Payload,
) -> Plan {
    let mut p = Plan::default();
    for step in [
        st.verify(version),
        st.probe(),
        st.lock(&pay.holder),
        st.upload(
            "upload-compose",
            "docker-compose.server.yml",
            pay.compose.clone(),
        ),
        st.upload(
            "upload-config",
            "deployment_config.json",
            pay.config.clone(),
        ),
        st.upload_env(pay.env_text.clone()),
        st.dirs(),
        st.pull(version, creds),
        st.up(version, c),
        st.gate(version),
        st.record(version, "<digest>"),
        st.history(&serde_json::json!({"version": version})),
        st.images(),
        st.unlock(&pay.lock_id),
    ] {
        p.push(step);
    }
    p
}

// ------------------------------------------------------------------------------------ running

#[derive(Serialize, Clone)]
struct StepTime {
    step: String,
    seconds: f64,
}

#[derive(Serialize)]
struct Outcome {
    env: String,
    server: String,
    version: String,
    digest: String,
    outcome: String,
    exit_code: u8,
    rolled_back_to: Option<String>,
    steps: Vec<StepTime>,
    elapsed_s: f64,
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A holder record whose process ran on this machine and is gone: its deploy died (killed, or
/// the machine rebooted) and can never release the lock itself.
fn holder_dead_here(h: &serde_json::Value) -> bool {
    h["host"].as_str() == Some(hostname().as_str())
        && h["pid"]
            .as_u64()
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

fn who() -> String {
    let user = env_nonempty("GITHUB_ACTOR")
        .or_else(|| env_nonempty("USER"))
        .unwrap_or_else(|| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let via = if env_nonempty("GITHUB_ACTIONS").is_some() {
        " (GitHub Actions)"
    } else {
        ""
    };
    format!("{user}@{host}{via}")
}

fn epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn env_file(env: &Env, version: &str) -> Result<String> {
    let mut s = format!(
        "COMPOSE_PROJECT_NAME={PROJECT}\nIMAGE_REPO={}\nIMAGE_TAG={version}\nOBSERVER_HOST_PORT={}\nOBSERVER_INTERVAL_MS={}\n",
        env.repo(),
        env.cfg.host_port,
        env.cfg.interval_ms
    );
    for name in SECRET_VARS {
        if let Some(v) = env_nonempty(name) {
            if v.contains('\n') || v.contains('\r') {
                bail!("{name} contains a newline, which a .env file cannot hold");
            }
            s.push_str(&format!("{name}={v}\n"));
        }
    }
    Ok(s)
}

/// The digest recorded in the annotated git tag, if the tag is here and records one.
fn tag_digest(sh: &Shell, version: &str) -> Option<String> {
    let body = sh
        .read(&["git", "tag", "-l", "--format=%(contents)", version])
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("digest: ").map(|d| d.trim().to_string()))
}

pub fn field<'o>(out: &'o str, key: &str) -> &'o str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
        .trim()
}

fn digest_in(repo_digests_json: &str, repo: &str) -> Option<String> {
    let list: Vec<String> = serde_json::from_str(repo_digests_json.trim()).ok()?;
    list.iter()
        .find_map(|d| d.strip_prefix(&format!("{repo}@")).map(|s| s.to_string()))
}

/// The images to remove: keep the newest `keep` tags plus the running and last good ones.
pub fn prune_candidates(listing: &str, keep: usize, protect: &[&str]) -> Vec<String> {
    let mut tags: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(t, _)| *t != "<none>" && version::is_valid(t))
        .collect();
    tags.sort_by(|a, b| b.1.cmp(a.1));
    tags.iter()
        .skip(keep)
        .map(|(t, _)| t.to_string())
        .filter(|t| !protect.contains(&t.as_str()))
        .collect()
}

pub struct Gate {
    pub failed: Vec<String>,
    pub lines: Vec<String>,
}

fn parse_gate(out: &str) -> Gate {
    let mut failed = Vec::new();
    let mut lines = Vec::new();
    for l in out.lines() {
        lines.push(l.to_string());
        if let Some(rest) = l.strip_prefix("fail ") {
            failed.push(rest.to_string());
        } else if let Some(kv) = l.strip_prefix("env ") {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match CONTRACT_ENV.iter().find(|(n, _)| *n == k) {
                Some((_, want)) if *want != v => {
                    failed.push(format!("env {k}={v}, expected {want}"))
                }
                _ => {}
            }
        } else if let Some(rest) = l.strip_prefix("forbidden ") {
            failed.push(format!("forbidden variable {rest} is set in the container"));
        }
    }
    if !lines.iter().any(|l| l.starts_with("env ")) && !failed.iter().any(|f| f.starts_with("env"))
    {
        failed.push("env: the container's environment could not be read".into());
    }
    Gate { failed, lines }
}

/// One server's deploy: everything after the controller-side verification.
struct Run<'a> {
    sh: &'a Shell,
    env: &'a Env,
    st: Steps<'a>,
    x: Executor<'a>,
    pay: Payload,
    locked: bool,
    creds: Option<registry::Creds>,
}

impl Run<'_> {
    fn run(&mut self, step: Step) -> Result<crate::shell::Output> {
        self.x.run_step(&step)
    }

    fn lock(&mut self) -> Result<()> {
        let step = self.st.lock(&self.pay.holder);
        let ttl = self.env.cfg.lock_ttl_s;
        let st = &self.st;
        self.x.step(&step.title.clone(), |x| {
            for attempt in 0..2 {
                let out = x.exec(&step)?;
                if out.ok {
                    return Ok(());
                }
                let text = out.stdout.lines().next().unwrap_or("").to_string();
                let h: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                if attempt == 0 && holder_dead_here(&h) {
                    eprintln!(
                        "    the lock's holder (pid {} on this machine, deploying {}) is gone: breaking its lock",
                        h["pid"],
                        h["version"].as_str().unwrap_or("?")
                    );
                    x.run(&st.unlock(h["id"].as_str().unwrap_or("")))?;
                    continue;
                }
                let age = epoch().saturating_sub(h["started_epoch"].as_u64().unwrap_or(0));
                let stale = if age > ttl { format!(" — STALE (older than the {ttl}s TTL): break it with `cargo xtask lock release --force`") } else { String::new() };
                return Err(fail(format!(
                    "the deploy lock is held by {} (pid {}, deploying {}, since {}){stale}",
                    h["who"].as_str().unwrap_or("unknown"),
                    h["pid"],
                    h["version"].as_str().unwrap_or("?"),
                    h["started"].as_str().unwrap_or("?")
                )));
            }
            Err(fail("the deploy lock could not be taken"))
        })?;
        self.locked = true;
        Ok(())
    }

    fn unlock(&mut self) {
        if self.locked {
            let _ = self.run(self.st.unlock(&self.pay.lock_id));
            self.locked = false;
        }
    }

    fn history(&mut self, record: serde_json::Value) -> Result<()> {
        self.run(self.st.history(&record)).map(|_| ())
    }

    fn upload(&mut self) -> Result<()> {
        self.run(self.st.upload(
            "upload-compose",
            "docker-compose.server.yml",
            self.pay.compose.clone(),
        ))?;
        self.run(self.st.upload(
            "upload-config",
            "deployment_config.json",
            self.pay.config.clone(),
        ))?;
        self.run(self.st.upload_env(self.pay.env_text.clone()))
            .map(|_| ())
    }

    fn pull(&mut self, version: &str, expect: &str) -> Result<()> {
        let out = self.run(self.st.pull(version, self.creds.as_ref()))?;
        let got = digest_in(&out.stdout, &self.env.repo()).unwrap_or_default();
        if got != expect {
            return Err(fail(format!("the server pulled {} with digest {got}, but the registry serves {expect}: refusing to start it", self.env.image(version))));
        }
        eprintln!("    pulled {got}");
        Ok(())
    }

    fn start_and_gate(&mut self, version: &str, c: Compose) -> Result<Gate> {
        start_and_gate(&mut self.x, &self.st, self.sh, version, c)
    }

    fn container_logs(&mut self) -> String {
        let step = self.st.logs();
        self.x.exec(&step).map(|o| o.stdout).unwrap_or_default()
    }
}

/// Starts `version` with compose and runs the health gate (deploy, rollback, snapshot restore).
pub fn start_and_gate(
    x: &mut Executor,
    st: &Steps,
    sh: &Shell,
    version: &str,
    c: Compose,
) -> Result<Gate> {
    x.run_step(&st.up(version, c))?;
    let step = st.gate(version);
    let out = x.step(&step.title, |x| x.exec(&step))?;
    let gate = parse_gate(&out.stdout);
    for l in &gate.lines {
        eprintln!("    {}", sh.mask(l));
    }
    Ok(gate)
}

fn print_fenced(sh: &Shell, title: &str, text: &str) {
    // Remote output cannot inject workflow commands: fence it with ::stop-commands::.
    let fence = crate::shell::random_hex(8).unwrap_or_else(|_| "obsfence".into());
    if sh.gha {
        println!("::stop-commands::{fence}");
    }
    eprintln!("{title}\n{}", crate::plan::tail(&sh.mask(text), 50));
    if sh.gha {
        println!("::{fence}::");
    }
}

fn step_summary(sh: &Shell, o: &Outcome) {
    let Some(path) = env_nonempty("GITHUB_STEP_SUMMARY") else {
        return;
    };
    let mut md = format!(
        "## observer deploy: {} → {} on {}\n\n| | |\n|---|---|\n| outcome | **{}** (exit {}) |\n| digest | `{}` |\n| elapsed | {:.1}s |\n\n| step | seconds |\n|---|---|\n",
        o.version, o.env, o.server, o.outcome, o.exit_code, o.digest, o.elapsed_s
    );
    for s in &o.steps {
        md.push_str(&format!(
            "| {} | {:.1} |\n",
            s.step.replace('|', "/"),
            s.seconds
        ));
    }
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        let _ = f.write_all(sh.mask(&md).as_bytes());
    }
}

impl Deploy {
    pub fn run(self, sh: &Shell) -> Result<()> {
        for n in SECRET_VARS {
            if let Some(v) = env_nonempty(n) {
                sh.secret(&v);
            }
        }
        let version =
            match self.tag.clone() {
                Some(t) => t,
                None => match (env_nonempty("GITHUB_REF"), env_nonempty("GITHUB_REF_NAME")) {
                    (Some(r), Some(n)) if r.starts_with("refs/tags/") => n,
                    _ => return Err(crate::shell::usage(
                        "no version: pass --tag vX.Y.Z (or run on a tag push in GitHub Actions)",
                    )),
                },
            };
        version::validate(&version)?;
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        let o = Options {
            rollback: !self.no_rollback,
            no_snapshot: self.no_snapshot,
            dry_run: self.dry_run,
            json: self.json,
            kind: "deploy",
        };
        deploy(sh, &env, &version, &o)
    }
}

pub struct Options {
    pub rollback: bool,
    pub no_snapshot: bool,
    pub dry_run: bool,
    pub json: bool,
    pub kind: &'static str,
}

pub fn deploy(sh: &Shell, env: &Env, version: &str, o: &Options) -> Result<()> {
    let (x, _) = connect(sh, env, o.dry_run)?;
    deploy_with(sh, env, version, o, x)
}

/// A deploy over `x`, whose SSH session may already be open (rollback reads the history first):
/// still one connection.
fn deploy_with<'a>(
    sh: &'a Shell,
    env: &'a Env,
    version: &str,
    o: &Options,
    mut x: Executor<'a>,
) -> Result<()> {
    let t0 = Instant::now();
    let creds = registry::credentials(sh, env);
    let image = env.image(version);
    let server = env.servers[0].clone();
    let st = Steps {
        env,
        server: server.name.clone(),
    };

    // 1. Verify before touching the server.
    let digest = x.step(&st.verify(version).title, |_| {
        let d = Client::new(sh, env)
            .digest(env.repo_path(), version)?
            .ok_or_else(|| fail(format!("{image} is not in the registry: release it first (`cargo xtask release {version} --env {}`)", env.name)))?;
        if let Some(recorded) = tag_digest(sh, version) {
            if recorded != d {
                return Err(fail(format!("the registry serves {d} for {version}, but git tag {version} records {recorded}: the image tag was re-pushed; refusing")));
            }
            eprintln!("    digest {d} matches git tag {version}");
        } else {
            eprintln!("    digest {d}");
        }
        Ok(d)
    })?;

    // 2. The one connection to the server, opened by its first step.
    let probe = x.run_step(&st.probe())?;
    let c = Compose::parse(field(&probe.stdout, "compose")).ok_or_else(|| {
        fail(format!(
            "neither `docker compose` nor `docker-compose` found on {}",
            server.name
        ))
    })?;
    let last_good = field(&probe.stdout, "last_good")
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let running = field(&probe.stdout, "running").to_string();
    eprintln!(
        "    compose: {}; running: {}; last good: {}",
        c.describe(),
        if running.is_empty() {
            "nothing"
        } else {
            &running
        },
        if last_good.is_empty() {
            "none"
        } else {
            &last_good
        }
    );
    let pay = Payload::read(sh, env, version)?;
    if o.dry_run {
        eprintln!("==> Plan (dry run: nothing below is run)");
        plan(&st, version, c, creds.as_ref(), &pay).print(sh);
        return Ok(());
    }

    let mut run = Run {
        sh,
        env,
        st,
        x,
        pay,
        locked: false,
        creds,
    };
    let result = deploy_locked(&mut run, version, &digest, &last_good, &running, c, o);
    run.unlock();
    let steps: Vec<StepTime> = run
        .x
        .timings
        .iter()
        .map(|(s, t)| StepTime {
            step: s.clone(),
            seconds: round(*t),
        })
        .collect();
    let (outcome, code, rolled_back_to, err) = match result {
        Ok((out, code, to)) => (out, code, to, None),
        Err(e) => (
            "failed".to_string(),
            crate::shell::code_of(&e),
            None,
            Some(e),
        ),
    };
    let out = Outcome {
        env: env.name.clone(),
        server: server.name.clone(),
        version: version.to_string(),
        digest,
        outcome,
        exit_code: code,
        rolled_back_to,
        steps,
        elapsed_s: round(t0.elapsed().as_secs_f64()),
    };
    step_summary(sh, &out);
    if o.json {
        println!("{}", sh.mask(&serde_json::to_string_pretty(&out)?));
    }
    if let Some(e) = err {
        return Err(e);
    }
    match code {
        0 => {
            eprintln!(
                "\n{} {version} to {}: healthy ({:.1}s)",
                o.kind, server.name, out.elapsed_s
            );
            Ok(())
        }
        3 => Err(exit_code(
            format!(
                "{version} failed its health gate; rolled back to {} which is healthy again",
                out.rolled_back_to.clone().unwrap_or_default()
            ),
            3,
        )),
        c => Err(exit_code(format!("{version} failed ({})", out.outcome), c)),
    }
}

/// Returns (outcome, exit code, rolled back to).
fn deploy_locked(
    run: &mut Run,
    version: &str,
    digest: &str,
    last_good: &str,
    running: &str,
    c: Compose,
    o: &Options,
) -> Result<(String, u8, Option<String>)> {
    let t0 = Instant::now();
    let kind = o.kind;
    run.lock()?;
    run.upload()?;
    let dirs = run.run(run.st.dirs())?;
    run.pull(version, digest)?;
    if dirs.stdout.contains("needs-chown") {
        run.run(run.st.chown(version))?;
    }
    // While the old version still runs: the state a `rollback --restore` goes back to.
    let snapshot = if o.no_snapshot {
        eprintln!("==> Pre-deploy snapshot: skipped (--no-snapshot)");
        None
    } else {
        let old = tag_of(running);
        let (env, server) = (run.env, run.st.server.clone());
        let m = run.x.step("Pre-deploy snapshot", |x| {
            crate::snapshot::create(x, env, &server, &old, false)
        })?;
        eprintln!("    snapshot {} ({} bytes)", m.id, m.archive.size);
        Some(m.id)
    };
    // Anything above failed → the running service was never touched (exit 1).
    let gate = run.start_and_gate(version, c)?;
    let base = serde_json::json!({
        "version": version, "digest": digest, "who": who(), "when": now_rfc3339(), "kind": kind,
        "previous": running, "snapshot": snapshot,
    });
    if gate.failed.is_empty() {
        run.run(run.st.record(version, digest))?;
        let mut rec = base.clone();
        rec["outcome"] = "success".into();
        rec["duration_s"] = round(t0.elapsed().as_secs_f64()).into();
        rec["steps"] = serde_json::to_value(
            run.x
                .timings
                .iter()
                .map(|(s, t)| StepTime {
                    step: s.clone(),
                    seconds: round(*t),
                })
                .collect::<Vec<_>>(),
        )?;
        run.history(rec)?;
        prune(run, version, last_good)?;
        return Ok(("success".into(), 0, None));
    }
    // The gate failed.
    let logs = run.container_logs();
    eprintln!("\nhealth gate FAILED for {version}:");
    for f in &gate.failed {
        eprintln!("  - {}", run.sh.mask(f));
    }
    print_fenced(run.sh, "last 50 lines of the container log:", &logs);
    let mut rec = base.clone();
    rec["outcome"] = "failed".into();
    rec["failed"] = serde_json::to_value(&gate.failed)?;
    rec["duration_s"] = round(t0.elapsed().as_secs_f64()).into();
    run.history(rec)?;
    if !o.rollback {
        eprintln!("--no-rollback: {version} is left running for debugging\nrecover: cargo xtask rollback --env {}", run.env.name);
        return Ok(("failed (left running: --no-rollback)".into(), 1, None));
    }
    if last_good.is_empty() || last_good == version {
        let _ = run.run(run.st.down(c));
        eprintln!("no last good version to roll back to: the failed container is stopped; the service is DOWN");
        return Ok(("failed, nothing to roll back to".into(), 4, None));
    }
    eprintln!("\n==> rolling back to {last_good}");
    let rb = (|| -> Result<Gate> {
        run.run(run.st.upload_env(env_file(run.env, last_good)?))?;
        run.start_and_gate(last_good, c)
    })();
    let mut rec = base;
    rec["version"] = last_good.into();
    rec["kind"] = "rollback".into();
    rec["rollback_of"] = version.into();
    rec["digest"] = serde_json::Value::Null;
    match rb {
        Ok(g) if g.failed.is_empty() => {
            rec["outcome"] = "success".into();
            run.history(rec)?;
            Ok(("rolled back".into(), 3, Some(last_good.to_string())))
        }
        other => {
            rec["outcome"] = "failed".into();
            let _ = run.history(rec);
            let why = match other {
                Ok(g) => g.failed.join("; "),
                Err(e) => format!("{e:#}"),
            };
            eprintln!(
                "\n!!!!! ROLLBACK FAILED: neither {version} nor {last_good} is healthy on {}: {why}\nrecover by hand:\n  cargo xtask status --env {env}\n  cargo xtask lock status --env {env}\n  cargo xtask rollback --env {env} --to <a version that worked>\n  ssh to the server: cd {dir} && docker logs {CONTAINER}",
                run.st.server,
                env = run.env.name,
                dir = run.env.remote_dir
            );
            Ok(("rollback failed".into(), 4, None))
        }
    }
}

fn prune(run: &mut Run, version: &str, last_good: &str) -> Result<()> {
    let keep = run.env.cfg.keep_images as usize;
    let listing = run.run(run.st.images())?;
    let doomed = prune_candidates(&listing.stdout, keep, &[version, last_good]);
    if !doomed.is_empty() {
        run.run(run.st.prune(&doomed))?;
    }
    Ok(())
}

// ------------------------------------------------------------------------- rollback, status, lock

/// The executor with this environment's one server session (opened lazily by the first step).
pub fn connect<'a>(sh: &'a Shell, env: &Env, dry_run: bool) -> Result<(Executor<'a>, Server)> {
    if env.servers.len() != 1 {
        bail!(
            "this tool drives one server per environment; {} has {}",
            env.name,
            env.servers.len()
        );
    }
    let server = env.servers[0].clone();
    let mut x = Executor::new(sh, dry_run);
    x.add_server(Session::new(env, &server)?);
    Ok((x, server))
}

fn read_history(
    x: &mut Executor,
    server: &str,
    env: &Env,
    n: usize,
) -> Result<Vec<serde_json::Value>> {
    let out = x.run(
        &Step::remote(
            "history",
            "Read history",
            server,
            format!(
                "tail -n {n} {}/history.jsonl 2>/dev/null; true",
                q(&deploy_dir(env))
            ),
        )
        .read_only(),
    )?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The version tag of an image reference (`repo:tag`), or "" when it is not a version.
pub fn tag_of(image: &str) -> String {
    image
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| version::is_valid(t))
        .unwrap_or("")
        .to_string()
}

/// The running version and the whole history, over `x`'s one session.
fn running_and_history(
    x: &mut Executor,
    env: &Env,
    server: &str,
) -> Result<(String, Vec<serde_json::Value>)> {
    let st = Steps {
        env,
        server: server.to_string(),
    };
    let probe = x.run(&st.probe())?;
    let running = tag_of(field(&probe.stdout, "running"));
    Ok((running, read_history(x, server, env, 100_000)?))
}

impl Rollback {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        if let Some(v) = &self.to {
            version::validate(v)?;
        }
        // The history is read over the same connection the deploy then uses.
        let (mut x, server) = connect(sh, &env, self.dry_run)?;
        if self.restore {
            let (running, hist) = running_and_history(&mut x, &env, &server.name)?;
            let id = hist
                .iter()
                .rev()
                .find(|r| {
                    r["kind"] == "deploy"
                        && r["outcome"] == "success"
                        && r["version"] == running.as_str()
                })
                .and_then(|r| r["snapshot"].as_str())
                .map(|s| s.to_string())
                .ok_or_else(|| {
                    fail(format!(
                        "no pre-deploy snapshot recorded for the running version {running}"
                    ))
                })?;
            crate::snapshot::validate_id(&id)?;
            if self.dry_run {
                eprintln!("would restore snapshot {id} (taken before {running} was deployed)");
                return Ok(());
            }
            crate::snapshot::restore(sh, &mut x, &env, &server.name, &id)?;
            return Ok(());
        }
        let target = match self.to {
            Some(v) => v,
            None => {
                let (running, hist) = running_and_history(&mut x, &env, &server.name)?;
                hist.iter()
                    .rev()
                    .filter(|r| r["outcome"] == "success")
                    .filter_map(|r| r["version"].as_str())
                    .find(|v| *v != running)
                    .map(|s| s.to_string())
                    .ok_or_else(|| fail(format!("no earlier good version in the history (running: {running}); pass --to VERSION")))?
            }
        };
        eprintln!("rollback to {target}");
        let o = Options {
            rollback: false,
            no_snapshot: false,
            dry_run: self.dry_run,
            json: false,
            kind: "rollback",
        };
        deploy_with(sh, &env, &target, &o, x)
    }
}

impl Status {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        let (mut x, server) = connect(sh, &env, false)?;
        let d = q(&deploy_dir(&env));
        let script = format!(
            "echo \"image=$(docker inspect -f '{{{{.Config.Image}}}}' {CONTAINER} 2>/dev/null)\"; echo \"state=$(docker inspect -f '{{{{.State.Status}}}} {{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{end}}}}' {CONTAINER} 2>/dev/null)\"; echo \"started=$(docker inspect -f '{{{{.State.StartedAt}}}}' {CONTAINER} 2>/dev/null)\"; echo \"digests=$(docker image inspect -f '{{{{json .RepoDigests}}}}' \"$(docker inspect -f '{{{{.Image}}}}' {CONTAINER} 2>/dev/null)\" 2>/dev/null)\"; echo \"last_good=$(cat {d}/last_good_tag 2>/dev/null)\"; echo \"lock=$(cat {d}/lock/holder.json 2>/dev/null)\""
        );
        let out = x.run(&Step::remote("status", "Status", &server.name, script).read_only())?;
        let hist = read_history(&mut x, &server.name, &env, 5)?;
        let image = field(&out.stdout, "image");
        let version = tag_of(image);
        let digest = digest_in(field(&out.stdout, "digests"), &env.repo()).unwrap_or_default();
        let state = field(&out.stdout, "state");
        let lock = field(&out.stdout, "lock");
        let last_good = field(&out.stdout, "last_good");
        let v = serde_json::json!({
            "env": env.name, "server": server.name, "version": version, "digest": digest,
            "state": state, "started": field(&out.stdout, "started"),
            "last_good_tag": last_good.split_whitespace().next(), "last_good_digest": last_good.split_whitespace().nth(1),
            "lock": serde_json::from_str::<serde_json::Value>(lock).ok(), "history": hist,
        });
        if self.json {
            println!("{}", sh.mask(&serde_json::to_string_pretty(&v)?));
        } else {
            println!(
                "server     {} ({}@{}:{})",
                server.name, server.user, server.host, server.port
            );
            println!(
                "running    {} {}",
                if version.is_empty() {
                    "nothing"
                } else {
                    &version
                },
                digest
            );
            println!(
                "container  {} (started {})",
                if state.is_empty() { "absent" } else { state },
                field(&out.stdout, "started")
            );
            println!(
                "last good  {}",
                if last_good.is_empty() {
                    "none"
                } else {
                    last_good
                }
            );
            println!("lock       {}", if lock.is_empty() { "free" } else { lock });
            println!("history (last 5):");
            for h in &hist {
                println!(
                    "  {} {} {} {} by {}",
                    h["when"].as_str().unwrap_or(""),
                    h["kind"].as_str().unwrap_or(""),
                    h["version"].as_str().unwrap_or(""),
                    h["outcome"].as_str().unwrap_or(""),
                    h["who"].as_str().unwrap_or("")
                );
            }
        }
        Ok(())
    }
}

impl Lock {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        let (mut x, server) = connect(sh, &env, false)?;
        let d = q(&deploy_dir(&env));
        let out = x.run(
            &Step::remote(
                "lock-read",
                "Read the lock",
                &server.name,
                format!("cat {d}/lock/holder.json 2>/dev/null; true"),
            )
            .read_only(),
        )?;
        let text = out.stdout.trim();
        if text.is_empty() {
            println!("lock: free");
            return Ok(());
        }
        let h: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let age = epoch().saturating_sub(h["started_epoch"].as_u64().unwrap_or(0));
        let stale = age > env.cfg.lock_ttl_s || holder_dead_here(&h);
        println!(
            "lock: held by {} (pid {}, deploying {}, since {}, {age}s ago){}",
            h["who"].as_str().unwrap_or("?"),
            h["pid"],
            h["version"].as_str().unwrap_or("?"),
            h["started"].as_str().unwrap_or("?"),
            if stale { " — STALE" } else { "" }
        );
        match self.cmd {
            LockCmd::Status => Ok(()),
            LockCmd::Release { force } => {
                if !force {
                    return Err(fail(
                        "the lock is held; a deploy may be running: pass --force to break it",
                    ));
                }
                x.run(&Step::remote(
                    "lock-break",
                    "Break the lock",
                    &server.name,
                    format!("rm -rf {d}/lock"),
                ))?;
                println!("lock: released (forced)");
                Ok(())
            }
        }
    }
}

/// `check-env --remote`: the server side of the checks.
pub fn remote_checks(sh: &Shell, env: &Env, r: &mut crate::check_env::Report) -> Result<()> {
    let (mut x, server) = match connect(sh, env, false) {
        Ok(v) => v,
        Err(e) => {
            r.fail("remote ssh", format!("{e:#}"));
            return Ok(());
        }
    };
    let rd = q(&env.remote_dir);
    let script = format!(
        "echo \"compose=$({det})\"; echo \"docker=$(docker version --format '{{{{.Server.Version}}}}' 2>/dev/null)\"; echo \"dir=$(stat -c '%U %a' {rd} 2>/dev/null)\"; echo \"writable=$(test -w {rd} && echo yes)\"; echo \"envmode=$(stat -c %a {rd}/.env 2>/dev/null)\"; echo \"disk=$(df -Pk {rd} 2>/dev/null | awk 'NR==2{{print $4}}')\"; docker exec {CONTAINER} sh -c 'for n in {plain}; do printf \"cenv %s=%s\\n\" \"$n\" \"$(printenv \"$n\")\"; done; for n in KIS_API_KEY KIS_API_SECRET; do if [ -n \"$(printenv \"$n\")\" ]; then echo \"csecret $n=set\"; else echo \"csecret $n=unset\"; fi; done' 2>/dev/null; true",
        det = compose::DETECT_SCRIPT,
        plain = CONTRACT_ENV.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ")
    );
    let out = match x
        .run(&Step::remote("remote-check", "Remote checks", &server.name, script).read_only())
    {
        Ok(o) => o,
        Err(e) => {
            r.fail("remote ssh", format!("{e:#}"));
            return Ok(());
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
    match Compose::parse(field(o, "compose")) {
        Some(c) => r.ok("remote compose", c.describe()),
        None => r.fail(
            "remote compose",
            "neither docker compose nor docker-compose on the server",
        ),
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
            let want = CONTRACT_ENV
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
            r.ok(format!("container {k}"), v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        config::test_env("/srv/observer dir", "/tmp/r.git")
    }

    #[test]
    fn deploy_plan_order_pulls_before_start() {
        let e = env();
        let st = Steps {
            env: &e,
            server: e.servers[0].name.clone(),
        };
        let creds = registry::Creds {
            user: "ci".into(),
            token: "tok-never-shown".into(),
        };
        let pay = Payload {
            compose: b"services: {}\n".to_vec(),
            config: b"{}".to_vec(),
            env_text: "IMAGE_TAG=v1.2.3\nKIS_API_KEY=kis-never-shown\n".into(),
            holder: serde_json::json!({"id": "abc"}),
            lock_id: "abc".into(),
        };
        let p = plan(&st, "v1.2.3", Compose::V1, Some(&creds), &pay);
        let shown: String = p.steps.iter().map(|s| s.render()).collect();
        assert!(!shown.contains("never-shown"), "{shown}");
        assert_eq!(
            p.ids(),
            [
                "verify",
                "probe",
                "lock",
                "upload-compose",
                "upload-config",
                "upload-env",
                "dirs",
                "pull",
                "up",
                "gate",
                "record",
                "history",
                "prune",
                "unlock"
            ]
        );
        let ids = p.ids();
        let pos = |id| ids.iter().position(|x| *x == id).unwrap();
        assert!(pos("lock") < pos("upload-env") && pos("pull") < pos("up"));
        assert!(p.get("up").unwrap().argv()[0].contains("docker-compose --compatibility"));
        assert!(matches!(
            p.get("upload-env").unwrap().input,
            crate::plan::Input::Secret(_)
        ));
        assert!(p.get("pull").unwrap().argv()[0].contains("--password-stdin"));
        assert!(p.steps[1..]
            .iter()
            .all(|s| s.host == crate::plan::Host::Server("sandbox-vm".into())));
        // The remote dir has a space: every use is quoted.
        assert!(p.get("up").unwrap().argv()[0].starts_with("cd '/srv/observer dir' && "));
    }

    #[test]
    fn gate_parsing() {
        let out = "ok health container healthy\nok http /health answered 200\nenv QTS_OBSERVER_STANDALONE=1\nenv PYTHONPATH=/app/src:/app\nenv OBSERVER_DATA_DIR=/app/data/observer\nenv OBSERVER_LOG_DIR=/wrong\nsecret KIS_API_KEY=set\n";
        let g = parse_gate(out);
        assert_eq!(
            g.failed,
            vec!["env OBSERVER_LOG_DIR=/wrong, expected /app/logs".to_string()]
        );
        let g = parse_gate("fail health container unhealthy after 9s\n");
        assert!(g.failed[0].contains("unhealthy"));
        assert!(g
            .failed
            .iter()
            .any(|f| f.contains("environment could not be read")));
    }

    #[test]
    fn pruning_keeps_newest_running_and_last_good() {
        let listing = "v1.0.0 2026-01-01 00:00:00\nv1.1.0 2026-02-01 00:00:00\nv1.2.0 2026-03-01 00:00:00\nv1.3.0 2026-04-01 00:00:00\n<none> 2026-05-01\nlatest 2026-05-01\n";
        assert_eq!(
            prune_candidates(listing, 2, &["v1.3.0", "v1.0.0"]),
            vec!["v1.1.0".to_string()]
        );
        assert!(prune_candidates(listing, 10, &[]).is_empty());
    }

    #[test]
    fn env_file_carries_tag_and_secrets_only_from_env() {
        let e = env();
        let text = env_file(&e, "v1.2.3").unwrap();
        assert!(text.contains("IMAGE_TAG=v1.2.3\n"));
        assert!(text.contains("IMAGE_REPO=127.0.0.1:5000/observer\n"));
        assert!(text.contains("COMPOSE_PROJECT_NAME=observer\n"));
    }
}
