//! Shared helpers of the end-to-end tests: they drive the real xtask binary against the real
//! sandbox (registry, sshd, docker) from a scratch clone of this repository.
#![allow(dead_code)]

pub mod bearer;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Every byte any command printed in this test process, scanned for secrets.
pub static TRANSCRIPT: Mutex<String> = Mutex::new(String::new());

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn sandbox_dir() -> PathBuf {
    repo().join("target/sandbox")
}

pub fn state() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(sandbox_dir().join("state.json")).unwrap())
        .unwrap()
}

pub fn registry() -> String {
    format!("127.0.0.1:{}", state()["registry_port"])
}

pub fn token() -> String {
    std::fs::read_to_string(sandbox_dir().join("registry/token"))
        .unwrap()
        .trim()
        .to_string()
}

pub fn unique() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    d.as_secs() * 1000 + u64::from(d.subsec_millis())
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn record(out: &Output) -> Run {
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    transcribe(&r.all());
    r
}

/// Appends `text` to [`TRANSCRIPT`], without GitHub Actions' `::add-mask::VALUE` lines: the tool
/// prints them under Actions on purpose (the runner hides them and masks VALUE everywhere after).
pub fn transcribe(text: &str) {
    let mut t = TRANSCRIPT.lock().unwrap_or_else(|e| e.into_inner());
    for line in text.split_inclusive('\n') {
        if !line.starts_with("::add-mask::") {
            t.push_str(line);
        }
    }
}

/// Runs any program, recording its output.
pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    record(&out)
}

pub fn run_stdin(cmd: &mut Command, input: &str) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    record(&child.wait_with_output().unwrap())
}

pub fn sh(script: &str) -> Run {
    run(Command::new("sh").arg("-c").arg(script))
}

/// `program` (the xtask binary, or a wrapper given `args` before it) with `root` as the
/// repository and the shared sandbox, `envs` added.
pub fn xtask_cmd(program: &str, root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(program);
    c.args(args)
        .current_dir(root)
        .env("XTASK_ROOT", root)
        .env("XTASK_SANDBOX_DIR", sandbox_dir())
        .env_remove("GITHUB_ACTIONS")
        .env_remove("REGISTRY_TOKEN")
        .env_remove("REGISTRY_USER")
        .env_remove("OBSERVER_STANDALONE");
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// The xtask binary with `root` as its repository and the shared sandbox.
pub fn xtask(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Run {
    run(&mut xtask_cmd(
        env!("CARGO_BIN_EXE_xtask"),
        root,
        args,
        envs,
    ))
}

pub fn ensure_sandbox() {
    let r = xtask(&repo(), &["sandbox", "up"], &[]);
    assert_eq!(r.code, 0, "sandbox up failed:\n{}", r.all());
}

/// The swarm sandbox (`sandbox up --swarm`: three engines in network namespaces), started when
/// it is not running.
pub fn ensure_swarm() {
    let r = xtask(&repo(), &["sandbox", "up", "--swarm"], &[]);
    assert_eq!(r.code, 0, "sandbox up --swarm failed:\n{}", r.all());
}

/// The sandbox's git remote (a bare repository standing in for `origin`).
pub fn git_remote() -> PathBuf {
    sandbox_dir().join("git/observer.git")
}

/// A scratch clone of the repository's committed HEAD (the branch under test) as branch `main`,
/// published as `main` of the sandbox's git remote (a release tags only what that branch has).
pub struct Clone {
    pub dir: PathBuf,
}

impl Clone {
    pub fn new(tag: &str) -> Clone {
        let dir = std::env::temp_dir().join(format!("xtask-e2e-{tag}-{}", unique()));
        let head = sh(&format!("git -C '{}' rev-parse HEAD", repo().display()));
        assert_eq!(head.code, 0, "{}", head.all());
        let r = run(Command::new("git")
            .args(["clone", "-q", "--no-checkout"])
            .arg(repo())
            .arg(&dir));
        assert_eq!(r.code, 0, "{}", r.all());
        let r = sh(&format!(
            "cd '{}' && git checkout -q -B main {} && git config user.email e2e@test.invalid && git config user.name e2e",
            dir.display(),
            head.stdout.trim()
        ));
        assert_eq!(r.code, 0, "{}", r.all());
        let c = Clone { dir };
        c.publish();
        c
    }
    pub fn git(&self, args: &str) -> Run {
        sh(&format!("cd '{}' && git {args}", self.dir.display()))
    }
    /// Makes this clone's HEAD the sandbox git remote's `main` (forced: scratch clones diverge).
    pub fn publish(&self) {
        let r = self.git(&format!(
            "push -q --force '{}' HEAD:refs/heads/main",
            git_remote().display()
        ));
        assert_eq!(r.code, 0, "{}", r.all());
    }
    pub fn xtask(&self, args: &[&str]) -> Run {
        xtask(&self.dir, args, &[])
    }
}

impl Drop for Clone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts that no secret appears in anything printed so far.
pub fn assert_no_secret(secrets: &[&str]) {
    // The lock is released before asserting: a failure here must not poison the transcript for
    // every later test.
    let leaked = {
        let t = TRANSCRIPT.lock().unwrap_or_else(|e| e.into_inner());
        secrets.iter().any(|s| s.is_empty() || t.contains(s))
    };
    assert!(
        !leaked,
        "a secret value leaked into the output (or an empty one was given)"
    );
}

/// curl against the sandbox registry, credentials on stdin.
pub fn registry_get(path: &str, head: bool) -> Run {
    let cfg = format!("user = \"observer-ci:{}\"\n", token());
    let mut c = Command::new("curl");
    c.args(["-sS", "-K", "-", "-H", "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"]);
    if head {
        c.arg("-I");
    }
    c.arg(format!("http://{}/v2/{path}", registry()));
    run_stdin(&mut c, &cfg)
}

pub fn registry_digest(repo: &str, tag: &str) -> Option<String> {
    let r = registry_get(&format!("{repo}/manifests/{tag}"), true);
    if !r.stdout.starts_with("HTTP/1.1 200") {
        return None;
    }
    r.stdout.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("docker-content-digest")
            .then(|| v.trim().to_string())
    })
}

/// The observer's own archive checker (`python3 -m observer.check`, issue 18) over the sandbox
/// server's archive: every line parses, no torn tail, per instance no `seq` gap or repeat.
pub fn assert_archive_valid() {
    let archive = sandbox_dir().join("server/observer/config/observer/observer.jsonl");
    let r = run(Command::new("python3")
        .args(["-m", "observer.check", "--json"])
        .arg(&archive)
        .env("PYTHONPATH", repo().join("app/src")));
    assert_eq!(r.code, 0, "archive check failed:\n{}", r.all());
}

/// `cmd` started in the background, stderr to `log`, stdout discarded.
pub fn spawn_logged(mut cmd: Command, log: &Path) -> std::process::Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn")
}

/// The xtask binary started in the background from `root` (as [`xtask`]), stderr to `log`.
pub fn spawn_xtask(
    root: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    log: &Path,
) -> std::process::Child {
    spawn_logged(
        xtask_cmd(env!("CARGO_BIN_EXE_xtask"), root, args, envs),
        log,
    )
}

/// Waits (at most `secs`) until `log` contains `text`; panics with the log otherwise.
pub fn wait_for_log(log: &Path, text: &str, secs: u64) {
    let t = std::time::Instant::now();
    loop {
        let now = std::fs::read_to_string(log).unwrap_or_default();
        if now.contains(text) {
            return;
        }
        assert!(
            t.elapsed().as_secs() < secs,
            "`{text}` did not appear within {secs}s:\n{now}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits for a background xtask and records its log in the transcript: (exit code, log).
pub fn finish_xtask(mut child: std::process::Child, log: &Path) -> (i32, String) {
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    transcribe(&text);
    let _ = std::fs::remove_file(log);
    (status.code().unwrap_or(-1), text)
}
