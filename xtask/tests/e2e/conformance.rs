//! End-to-end: the contract's own commands, verbatim (issue 16). The seed document
//! (`../shared/seed/*.txt` beside the repository) is the single source of truth and operators type
//! its commands, so this test reads the command blocks of §4.3 and §9.1–9.3 from it and runs each
//! one exactly as written, where the contract means it to run:
//!
//! - against the service deployed through the tool (`docker exec`/`docker logs qts-observer`),
//!   once after a deploy under compose v1 and once under v2 (`XTASK_COMPOSE`);
//! - `ls -la ./config/observer/` in the server's deploy root;
//! - `docker logs -f` with a time limit (`timeout 5 …`), `docker exec -it … /bin/bash` on a
//!   pseudo-terminal (`script`) with its input on stdin;
//! - §9.1 (a person's local run) in `app/` of a scratch clone, LAST: `docker build`, then
//!   `docker-compose up -d` with `app/docker-compose.yml`, whose container has the deployed one's
//!   name. The deployed container is renamed aside meanwhile (it keeps running and appending: the
//!   deployed service is not stopped), and renamed back after `docker-compose down`.
//!
//! A command in those blocks that this test has no runner for fails the test, naming it; so does
//! a runner whose command the contract no longer has. The same test checks the §6.3 success
//! criteria and the §3.1 rule (`OBSERVER_STANDALONE` refused) on the deployed service, under both
//! composes, with the expected values read from the contract's §5.1 `environment` block.

use crate::common::*;
use crate::deploy::{archive_lines, server_dir};
use crate::release::version;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CONTAINER: &str = "qts-observer";

/// Every command of the contract's §4.3 and §9.1–9.3 blocks, in the contract's order, and where
/// this test runs it. The test fails when the seed's blocks hold anything else.
const COMMANDS: &[(&str, &str, Runner)] = &[
    (
        "4.3",
        "docker exec qts-observer ls -la /app/config/",
        Runner::Deployed,
    ),
    ("4.3", "ls -la ./config/observer/", Runner::DeployRoot),
    ("9.1", "docker build -t observer:latest .", Runner::LocalApp),
    ("9.1", "docker-compose up -d", Runner::LocalApp),
    ("9.1", "docker ps", Runner::LocalApp),
    ("9.1", "docker logs qts-observer", Runner::LocalApp),
    (
        "9.2",
        "docker exec qts-observer env | grep OBSERVER",
        Runner::Deployed,
    ),
    (
        "9.2",
        "docker exec qts-observer python -c \"from paths import observer_asset_dir; print(observer_asset_dir())\"",
        Runner::Deployed,
    ),
    ("9.3", "docker logs -f qts-observer", Runner::Follow),
    (
        "9.3",
        "docker exec -it qts-observer /bin/bash",
        Runner::Interactive,
    ),
    (
        "9.3",
        "docker exec qts-observer find /app -name \"*.jsonl\"",
        Runner::Deployed,
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    /// `bash -c CMD` against the deployed container.
    Deployed,
    /// `bash -c CMD` in the server's deploy root.
    DeployRoot,
    /// `timeout 5 bash -c CMD`: it must still be following when the time is up.
    Follow,
    /// `script -qec CMD /dev/null` (a pseudo-terminal), shell input on stdin.
    Interactive,
    /// `bash -c CMD` in `app/` of the scratch clone (a person's local run, §9.1).
    LocalApp,
}

/// What the contract says besides its commands.
struct Contract {
    /// (section, command) in the contract's order.
    commands: Vec<(String, String)>,
    /// §4.3: the archive path marked correct (정상) and the one marked an error (오류).
    archive_ok: String,
    archive_wrong: String,
    /// §5.1 `environment`: the contract variables and their values.
    environment: BTreeMap<String, String>,
}

/// `../shared/seed/*.txt` beside the repository: the file holding the contract's §9.
fn seed() -> (PathBuf, String) {
    let dir = repo().parent().unwrap().join("shared/seed");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the contract's seed {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
        .into_iter()
        .find_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            text.contains("### 9.1").then_some((p, text))
        })
        .unwrap_or_else(|| panic!("no contract with a §9.1 under {}", dir.display()))
}

/// The lines of the fenced blocks of each `### N.N` section.
fn blocks(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut section, mut fence) = (String::new(), false);
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            out.entry(section.clone())
                .or_default()
                .push(line.trim().to_string());
        } else if line.starts_with('#') {
            section = line
                .split_whitespace()
                .nth(1)
                .filter(|w| w.chars().all(|c| c.is_ascii_digit() || c == '.'))
                .unwrap_or("")
                .to_string();
        }
    }
    out
}

fn contract() -> Contract {
    let (path, text) = seed();
    contract_from(&path.display().to_string(), &text)
}

fn contract_from(path: &str, text: &str) -> Contract {
    let b = blocks(text);
    let mut commands = Vec::new();
    for s in ["4.3", "9.1", "9.2", "9.3"] {
        let lines = b
            .get(s)
            .unwrap_or_else(|| panic!("{path}: no command block in §{s}"));
        for l in lines {
            if !l.is_empty() && !l.starts_with('#') {
                commands.push((s.to_string(), l.clone()));
            }
        }
    }
    let marked = |mark: &str| {
        b["4.3"]
            .iter()
            .filter(|l| l.starts_with('#') && l.contains(mark))
            .find_map(|l| l.split_whitespace().find(|w| w.ends_with(".jsonl")))
            .unwrap_or_else(|| panic!("§4.3 names no archive path marked {mark}"))
            .to_string()
    };
    let json = b
        .get("5.1")
        .unwrap_or_else(|| panic!("{path}: no §5.1 block"))
        .join("\n");
    let cfg: serde_json::Value = serde_json::from_str(&json).expect("§5.1 is JSON");
    let environment = cfg["environment"]
        .as_object()
        .expect("§5.1 has an environment block")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    Contract {
        commands,
        archive_ok: marked("(정상)"),
        archive_wrong: marked("(오류)"),
        environment,
    }
}

fn runner(section: &str, command: &str) -> Option<Runner> {
    COMMANDS
        .iter()
        .find(|(s, c, _)| *s == section && *c == command)
        .map(|(_, _, r)| *r)
}

/// Every command found has a runner, and every runner's command is still in the contract: the
/// problems, each naming its command.
fn unrunnable(c: &Contract) -> Vec<String> {
    let unknown = c
        .commands
        .iter()
        .filter(|(s, cmd)| runner(s, cmd).is_none())
        .map(|(s, cmd)| format!("no runner (cannot run it verbatim): §{s}: {cmd}"));
    let gone = COMMANDS
        .iter()
        .filter(|(s, cmd, _)| !c.commands.iter().any(|(s2, c2)| s2 == s && c2 == cmd))
        .map(|(s, cmd, _)| format!("not in the contract any more: §{s}: {cmd}"));
    unknown.chain(gone).collect()
}

fn assert_all_runnable(c: &Contract) {
    let problems = unrunnable(c);
    assert!(
        problems.is_empty(),
        "the contract's commands and this test's runners differ:\n  {}",
        problems.join("\n  ")
    );
}

fn bash_in(dir: &Path, command: &str) -> Run {
    run(Command::new("bash").arg("-c").arg(command).current_dir(dir))
}

/// Runs one contract command verbatim the way its runner says.
fn run_command(command: &str, how: Runner, app: &Path) -> Run {
    let cwd = std::env::temp_dir();
    match how {
        Runner::Deployed => bash_in(&cwd, command),
        Runner::DeployRoot => bash_in(&server_dir(), command),
        Runner::LocalApp => bash_in(app, command),
        Runner::Follow => run(Command::new("timeout")
            .args(["5", "bash", "-c", command])
            .current_dir(&cwd)),
        Runner::Interactive => run_stdin(
            Command::new("timeout")
                .args(["60", "script", "-qec", command, "/dev/null"])
                .current_dir(&cwd),
            "test -t 0 && echo \"tty-$((40+2))\"; echo \"user-$(id -un)\"; echo \"pwd-$PWD\"\nexit\n",
        ),
    }
}

fn start_line(v: &str) -> String {
    format!("observer started version={v} ")
}

/// What the contract says each command on the deployed service shows (`v`: the deployed version).
fn check_deployed(c: &Contract, command: &str, r: &Run, v: &str) {
    let all = r.all();
    let ctx = || format!("`{command}` (exit {}):\n{all}", r.code);
    match command {
        "docker exec qts-observer ls -la /app/config/" => {
            assert_eq!(r.code, 0, "{}", ctx());
            assert!(
                r.stdout.lines().any(|l| l.ends_with(" observer")),
                "no observer/ in /app/config: {}",
                ctx()
            );
        }
        "ls -la ./config/observer/" => {
            assert_eq!(r.code, 0, "{}", ctx());
            let name = Path::new(&c.archive_ok).file_name().unwrap().to_str().unwrap();
            assert!(
                r.stdout.lines().any(|l| l.ends_with(&format!(" {name}"))),
                "no {name} in the deploy root's config/observer: {}",
                ctx()
            );
        }
        "docker exec qts-observer env | grep OBSERVER" => {
            assert_eq!(r.code, 0, "{}", ctx());
            for (k, val) in c.environment.iter().filter(|(k, _)| k.contains("OBSERVER")) {
                assert!(
                    r.stdout.lines().any(|l| l == format!("{k}={val}")),
                    "{k}={val} (contract §5.1) not injected: {}",
                    ctx()
                );
            }
            assert!(
                !r.stdout.lines().any(|l| l.starts_with("OBSERVER_STANDALONE=")),
                "the forbidden OBSERVER_STANDALONE is set (§3.1): {}",
                ctx()
            );
        }
        "docker exec qts-observer python -c \"from paths import observer_asset_dir; print(observer_asset_dir())\"" =>
        {
            assert_eq!(r.code, 0, "{}", ctx());
            let dir = Path::new(&c.archive_ok).parent().unwrap();
            assert_eq!(
                r.stdout.trim(),
                Path::new("/app").join(dir).to_str().unwrap(),
                "{}",
                ctx()
            );
        }
        "docker logs -f qts-observer" => {
            assert_eq!(r.code, 124, "still following after 5 s: {}", ctx());
            assert!(all.contains(&start_line(v)), "no start line: {}", ctx());
        }
        "docker exec -it qts-observer /bin/bash" => {
            assert_eq!(r.code, 0, "{}", ctx());
            for want in ["tty-42", "user-qts", "pwd-/app"] {
                assert!(all.contains(want), "no {want:?} from the shell: {}", ctx());
            }
        }
        "docker exec qts-observer find /app -name \"*.jsonl\"" => {
            assert_eq!(r.code, 0, "{}", ctx());
            let found: Vec<&str> = r.stdout.lines().map(str::trim).collect();
            let ok = format!("/app/{}", c.archive_ok);
            assert!(found.contains(&ok.as_str()), "no {ok}: {}", ctx());
            assert!(
                !found.iter().any(|f| f.starts_with("/app/data/")),
                "an archive under /app/data (contract §4.3: {} is an error): {}",
                c.archive_wrong,
                ctx()
            );
        }
        other => panic!("no check for the contract command `{other}`"),
    }
}

fn inspect(format: &str) -> String {
    let r = run(Command::new("docker").args(["inspect", "-f", format, CONTAINER]));
    assert_eq!(r.code, 0, "{}", r.all());
    r.stdout.trim().to_string()
}

fn wait_healthy(name: &str) {
    let t = Instant::now();
    loop {
        let r = run(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            name,
        ]));
        if r.stdout.trim() == "running healthy" {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "{name} not healthy: {}",
            r.all()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// §6.3's success criteria and the §3.1 rule, on the deployed service (version `v`).
fn check_success_criteria(c: &Contract, v: &str, compose_major: &str) {
    // The container is running and healthy, started by the compose asked for.
    wait_healthy(CONTAINER);
    let made_by = inspect("{{index .Config.Labels \"com.docker.compose.version\"}}");
    assert!(
        made_by.starts_with(compose_major),
        "the container was made by compose {made_by}, not {compose_major}.x"
    );
    // config/observer/ exists (on the host, in the deploy root), and the archive is there only.
    let root = server_dir();
    let ok = root.join(&c.archive_ok);
    assert!(ok.parent().unwrap().is_dir(), "{}", ok.display());
    assert!(!archive_lines().is_empty(), "{} is empty", ok.display());
    assert!(!root.join(&c.archive_wrong).exists());
    let wrong_in_container = run(Command::new("docker").args([
        "exec",
        CONTAINER,
        "test",
        "-e",
        &format!("/app/{}", c.archive_wrong),
    ]));
    assert_ne!(
        wrong_in_container.code, 0,
        "/app/{} exists",
        c.archive_wrong
    );
    // The start line, in the container's log and in logs/observer.log.
    let logs = run(Command::new("docker").args(["logs", CONTAINER]));
    assert!(logs.all().contains(&start_line(v)), "{}", logs.all());
    let file = std::fs::read_to_string(root.join("logs/observer.log")).unwrap_or_default();
    assert!(
        file.contains(&start_line(v)),
        "no start line in logs/observer.log"
    );
    // The contract's environment (§5.1) injected, secrets present (by presence only).
    for (k, val) in &c.environment {
        let r = run(Command::new("docker").args(["exec", CONTAINER, "printenv", k]));
        assert_eq!(r.stdout.trim(), val, "{k} in the container");
    }
    for k in ["KIS_API_KEY", "KIS_API_SECRET"] {
        let r = run(Command::new("docker").args([
            "exec",
            CONTAINER,
            "sh",
            "-c",
            &format!("[ -n \"${k}\" ]"),
        ]));
        assert_eq!(r.code, 0, "{k} not injected");
    }
    // §3.1: OBSERVER_STANDALONE is refused, naming the standard QTS_OBSERVER_STANDALONE; in a
    // new container of the deployed image and in the deployed container itself.
    let image = inspect("{{.Config.Image}}");
    let refused = [
        run(Command::new("docker").args(["run", "--rm", "-e", "OBSERVER_STANDALONE=1", &image])),
        run(Command::new("docker").args([
            "exec",
            "-e",
            "OBSERVER_STANDALONE=1",
            CONTAINER,
            "python",
            "-m",
            "observer",
        ])),
    ];
    for r in refused {
        assert_ne!(r.code, 0, "OBSERVER_STANDALONE accepted: {}", r.all());
        assert!(r.all().contains("QTS_OBSERVER_STANDALONE"), "{}", r.all());
    }
}

/// The local run's cleanup: `docker-compose down` in `app/`, then the deployed container gets
/// its name back (it ran on, renamed, the whole time).
struct LocalRun {
    app: PathBuf,
    parked: Option<String>,
}

impl Drop for LocalRun {
    fn drop(&mut self) {
        let down = bash_in(&self.app, "docker-compose down --timeout 10");
        if down.code != 0 {
            eprintln!("docker-compose down failed: {}", down.all());
        }
        if let Some(name) = &self.parked {
            let r = run(Command::new("docker").args(["rename", name, CONTAINER]));
            if r.code != 0 {
                eprintln!("cannot rename {name} back to {CONTAINER}: {}", r.all());
            }
        }
    }
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn conformance_contract_commands_verbatim() {
    let t = Instant::now();
    ensure_sandbox();
    let contract = contract();
    assert_all_runnable(&contract);

    // The base image stands in for python:3.11-slim faithfully (the real one, or the stand-in
    // tagged with its name): Python 3.11, `python` and `python3`, bash.
    let r = run(Command::new("docker").args([
        "run",
        "--rm",
        "python:3.11-slim",
        "bash",
        "-c",
        "python -c 'import sys; print(sys.version_info[:2])' && python3 --version",
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.starts_with("(3, 11)"), "{}", r.all());
    let st = xtask(&repo(), &["sandbox", "status", "--json"], &[]);
    let s: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    if s["base_image"]["stand_in"] == true {
        assert_eq!(
            s["base_image"]["also_tagged"], "python:3.11-slim",
            "{}",
            st.stdout
        );
        let text = xtask(&repo(), &["sandbox", "status"], &[]);
        assert!(
            text.stdout.contains("also tagged python:3.11-slim"),
            "{}",
            text.stdout
        );
    }

    let c = Clone::new("conformance");
    let app = c.dir.join("app");
    let key = format!("kis-key-{}", unique());
    let secret = format!("kis-secret-{}", unique());
    for compose in ["v1", "v2"] {
        let v = version();
        let r = c.xtask(&["release", &v, "--env", "sandbox"]);
        assert_eq!(r.code, 0, "{}", r.all());
        let r = xtask(
            &c.dir,
            &["deploy", "--env", "sandbox", "--tag", &v],
            &[
                ("XTASK_COMPOSE", compose),
                ("KIS_API_KEY", &key),
                ("KIS_API_SECRET", &secret),
            ],
        );
        assert_eq!(r.code, 0, "deploy under compose {compose}: {}", r.all());
        check_success_criteria(&contract, &v, &compose[1..]);
        for (section, command) in &contract.commands {
            let how = runner(section, command).unwrap();
            if how == Runner::LocalApp {
                continue;
            }
            let r = run_command(command, how, &app);
            check_deployed(&contract, command, &r, &v);
            eprintln!("ok (compose {compose}) §{section}: {command}");
        }
    }
    let deployed_before = archive_lines().len();

    // §9.1, a person's local run in app/, last. The deployed container is renamed aside so that
    // app/docker-compose.yml can create its own `qts-observer`; it keeps running.
    let parked = format!("{CONTAINER}-deployed-{}", unique());
    let r = run(Command::new("docker").args(["rename", CONTAINER, &parked]));
    assert_eq!(r.code, 0, "{}", r.all());
    let local = LocalRun {
        app: app.clone(),
        parked: Some(parked.clone()),
    };
    // The bind-mounted folders must be writable by the image's user qts (uid 10001), as the
    // deploy makes them on the server (README, "Operating by hand").
    let r = bash_in(
        &app,
        "mkdir -p data logs config/observer && chown -R 10001:10001 data logs config",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    for (section, command) in contract.commands.iter().filter(|(s, _)| s == "9.1") {
        let r = run_command(command, runner(section, command).unwrap(), &app);
        let all = r.all();
        assert_eq!(r.code, 0, "§{section} `{command}` in app/:\n{all}");
        match command.as_str() {
            "docker build -t observer:latest ." => {
                assert!(!all.contains("Pulling from"), "the build pulled: {all}");
            }
            "docker-compose up -d" => {
                // The observer appends to app/config/observer/observer.jsonl and answers /health.
                let archive = app.join(&contract.archive_ok);
                let t = Instant::now();
                while std::fs::read_to_string(&archive)
                    .unwrap_or_default()
                    .lines()
                    .count()
                    < 2
                {
                    assert!(
                        t.elapsed() < Duration::from_secs(60),
                        "the local run writes no {}",
                        archive.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                assert!(!app.join(&contract.archive_wrong).exists());
                let h = sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/health");
                assert_eq!(h.stdout.trim(), "200", "{}", h.all());
            }
            "docker ps" => {
                assert!(
                    r.stdout.lines().any(|l| l.contains("observer:latest")
                        && l.ends_with(CONTAINER)
                        && l.contains(" Up ")),
                    "{all}"
                );
            }
            "docker logs qts-observer" => {
                assert!(all.contains("observer started version="), "{all}");
            }
            other => panic!("no check for the contract command `{other}`"),
        }
        eprintln!("ok (local run, app/) §{section}: {command}");
    }
    drop(local);
    // The deployed service is back under its name, healthy, and appended all along.
    wait_healthy(CONTAINER);
    assert!(
        inspect("{{.Config.Labels}}").contains("com.docker.compose.project:observer"),
        "the deployed container is back"
    );
    assert!(archive_lines().len() > deployed_before);
    assert_archive_valid();
    assert_no_secret(&[&key, &secret, &token()]);
    eprintln!("conformance: {:.0}s", t.elapsed().as_secs_f64());
}

/// The extraction itself (no sandbox needed): the seed's commands are exactly the runners', and a
/// command added to a block, or one that changed, is reported by name.
#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn conformance_extraction_names_unknown_commands() {
    let (path, text) = seed();
    let c = contract_from(&path.display().to_string(), &text);
    assert_eq!(c.commands.len(), COMMANDS.len());
    assert_eq!(c.archive_ok, "config/observer/observer.jsonl");
    assert_eq!(c.archive_wrong, "data/observer/observer.jsonl");
    assert_eq!(c.environment["QTS_OBSERVER_STANDALONE"], "1");
    let changed = text
        .replacen(
            "docker logs -f qts-observer",
            "docker logs -f qts-observer\ndocker stats qts-observer",
            1,
        )
        .replacen("docker ps\n", "docker ps -a\n", 1);
    let problems = unrunnable(&contract_from("changed", &changed));
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("§9.1: docker ps -a"), "{problems:#?}");
    assert!(
        problems[1].contains("§9.3: docker stats qts-observer"),
        "{problems:#?}"
    );
    assert!(problems[2].contains("not in the contract any more: §9.1: docker ps"));
}
