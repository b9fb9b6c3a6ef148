//! End-to-end: foreign containers (issue 12 item 6). A real `qts-observer` (then
//! `qts-observer-next`) of another compose project runs on the sandbox's engine, as a person's
//! local `docker-compose up` would: deploy, rollback and snapshot restore refuse in the probe
//! (exit 1: no lock, no upload, no snapshot), status and check-env --remote name it, and it runs
//! on untouched.

use crate::common::*;
use crate::deploy::{running_version, server_dir};
use crate::release::version;
use crate::snapshot::{deployed, snapshot_ids};
use std::process::Command;

const CONTAINER: &str = "qts-observer";
const CANDIDATE: &str = "qts-observer-next";

/// Puts things back, even when the test fails: removes the containers this test started (by
/// id), then gives the deployed container its name back.
struct Guard {
    started: Vec<String>,
    parked: Option<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for id in &self.started {
            let _ = run(Command::new("docker").args(["rm", "-f", id]));
        }
        self.started.clear();
        if let Some(name) = self.parked.take() {
            let r = run(Command::new("docker").args(["rename", &name, CONTAINER]));
            if r.code != 0 {
                eprintln!("cannot rename {name} back to {CONTAINER}: {}", r.all());
            }
        }
    }
}

/// Starts a foreign container named `name` (compose project `app`), returning its id.
fn start_foreign(name: &str) -> String {
    let r = run(Command::new("docker").args([
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "com.docker.compose.project=app",
        "--label",
        "com.docker.compose.project.working_dir=/home/p/app",
        "python:3.11-slim",
        "sleep",
        "600",
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    r.stdout.trim().to_string()
}

/// (id, status, started at) of the container named `name`.
fn identity(name: &str) -> String {
    sh(&format!(
        "docker container inspect -f '{{{{.Id}}}} {{{{.State.Status}}}} {{{{.State.StartedAt}}}}' {name}"
    ))
    .stdout
    .trim()
    .to_string()
}

fn refused_naming(r: &Run, name: &str) {
    let all = r.all();
    assert_eq!(r.code, 1, "{all}");
    assert!(
        all.contains(&format!(
            "{name} belongs to compose project `app` (working dir /home/p/app), not `observer`: not the deployed service"
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!("docker rename {name} {name}-local")),
        "{all}"
    );
    for later in [
        "==> Take the deploy lock",
        "==> Upload",
        "==> Pre-deploy snapshot",
    ] {
        assert!(!all.contains(later), "{later} ran: {all}");
    }
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn foreign_containers_are_refused_named_and_never_touched() {
    ensure_sandbox();
    let c = Clone::new("foreign");
    let good = deployed(&c);
    let next = version();
    let r = c.xtask(&["release", &next, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let snapshots = snapshot_ids();
    let lock = server_dir().join(".deploy/lock");

    // A person's local run takes the service's name (the deployed one renamed aside runs on).
    let parked = format!("{CONTAINER}-deployed-{}", unique());
    let r = run(Command::new("docker").args(["rename", CONTAINER, &parked]));
    assert_eq!(r.code, 0, "{}", r.all());
    let mut g = Guard {
        started: Vec::new(),
        parked: Some(parked.clone()),
    };
    g.started.push(start_foreign(CONTAINER));
    let before = identity(CONTAINER);
    assert!(before.contains(" running "), "{before}");

    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &next]);
    refused_naming(&r, CONTAINER);
    let r = c.xtask(&["rollback", "--env", "sandbox", "--to", &good]);
    refused_naming(&r, CONTAINER);
    let id = &snapshots
        .iter()
        .rev()
        .find(|(_, state)| state == "valid")
        .expect("the deploy took a snapshot")
        .0;
    let r = c.xtask(&["snapshot", "restore", id, "--env", "sandbox", "--yes"]);
    refused_naming(&r, CONTAINER);
    assert_eq!(
        snapshot_ids(),
        snapshots,
        "no snapshot was taken or removed"
    );
    assert!(!lock.exists(), "no lock is left");

    let r = c.xtask(&["status", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("FOREIGN    qts-observer belongs to compose project `app` (working dir /home/p/app), not `observer`"),
        "{}",
        r.stdout
    );
    let r = c.xtask(&["status", "--env", "sandbox", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["foreign"][0]["project"], "app", "{}", r.stdout);
    assert_eq!(
        s["version"], "",
        "the foreign container is not reported as the service"
    );
    let r = c.xtask(&["check-env", "--env", "sandbox", "--remote"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("qts-observer belongs to compose project `app` (working dir /home/p/app), not `observer`"),
        "{}",
        r.all()
    );
    assert_eq!(
        identity(CONTAINER),
        before,
        "the foreign container runs on untouched"
    );

    // Back to the deployed service; now a foreign handoff candidate.
    drop(g);
    let mut g = Guard {
        started: vec![start_foreign(CANDIDATE)],
        parked: None,
    };
    let before = identity(CANDIDATE);
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &next]);
    refused_naming(&r, CANDIDATE);
    let r = c.xtask(&["status", "--env", "sandbox"]);
    assert!(
        r.stdout
            .contains("FOREIGN    qts-observer-next belongs to compose project `app`"),
        "{}",
        r.stdout
    );
    assert_eq!(
        identity(CANDIDATE),
        before,
        "the foreign candidate runs on untouched"
    );
    assert_eq!(running_version().0, good);
    assert!(!lock.exists());
    assert_eq!(snapshot_ids(), snapshots);

    // Once the name is clear, the same deploy goes through.
    g.started.iter().for_each(|id| {
        let _ = run(Command::new("docker").args(["rm", "-f", id]));
    });
    g.started.clear();
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &next]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(running_version().0, next);
}
