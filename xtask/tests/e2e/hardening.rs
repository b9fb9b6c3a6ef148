//! e2e (issue 15): the hardened container. Two releases of one commit are deployed to the
//! sandbox, the first with compose v2, the second (a handoff) with compose v1
//! (`XTASK_COMPOSE=v1`); after each, `docker inspect` and the container's own `/proc/1/status`
//! show the hardening (read-only root, tmpfs `/tmp`, no capabilities, no new privileges, a pids
//! limit, the port on 127.0.0.1 only, compressed json-file logs), the health gate passed (exit
//! 0) and `/metrics` has the new metrics with the commit as `revision`. The clone's compose file
//! caps `logs/observer.log` at 1 KiB, so the two observers of the handoff rotate it between
//! them: no line lost, no file past the cap.

use crate::common::*;
use crate::deploy::{archive_lines, largest_hole, server_dir};
use crate::handoff::no_candidate_left;
use crate::release::version;
use serde_json::Value;

/// `OBSERVER_LOG_MAX_BYTES` in the clone's compose file.
const LOG_MAX: u64 = 1024;
/// The sandbox's host port (`host_port` of the sandbox environment).
const PORT: &str = "18000";

/// A scratch clone whose compose file caps `logs/observer.log` at [`LOG_MAX`] bytes (committed
/// and published, so that releases may tag it), and its HEAD commit.
fn clone_with_a_small_log() -> (Clone, String) {
    ensure_sandbox();
    let c = Clone::new("hardening");
    let p = c.dir.join("app/obs_deploy/docker-compose.server.yml");
    let text = std::fs::read_to_string(&p).unwrap();
    let anchor = "      OBSERVER_VERSION: \"${IMAGE_TAG}\"\n";
    assert!(text.contains(anchor), "{text}");
    let text = text.replace(
        anchor,
        &format!("{anchor}      OBSERVER_LOG_MAX_BYTES: \"{LOG_MAX}\"\n"),
    );
    std::fs::write(&p, text).unwrap();
    let r = c.git("commit -q -am 'e2e: a 1 KiB logs/observer.log'");
    assert_eq!(r.code, 0, "{}", r.all());
    c.publish();
    let head = c.git("rev-parse HEAD").stdout.trim().to_string();
    (c, head)
}

fn release(c: &Clone) -> String {
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    v
}

/// Deploys `v` with compose `compose` (`v1` or `v2`); exit 0 asserted (the health gate passed).
fn deploy(c: &Clone, v: &str, compose: &str) -> Run {
    let r = xtask(
        &c.dir,
        &["deploy", "--env", "sandbox", "--tag", v, "--no-snapshot"],
        &[("XTASK_COMPOSE", compose)],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    r
}

fn inspect() -> Value {
    let r = sh("docker inspect qts-observer");
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str::<Value>(&r.stdout).unwrap()[0].clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The value of a sample line starting with `prefix` (name and labels) in `text`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' ')?.parse().ok())
}

/// The running `qts-observer` is `version`, built from `revision`, healthy and hardened.
fn assert_hardened(version: &str, revision: &str) {
    let i = inspect();
    let hc = &i["HostConfig"];
    let all = serde_json::to_string_pretty(hc).unwrap();
    assert!(
        i["Config"]["Image"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{version}")),
        "{}",
        i["Config"]["Image"]
    );
    assert_eq!(i["State"]["Health"]["Status"], "healthy");
    assert_eq!(hc["ReadonlyRootfs"], true, "{all}");
    assert_eq!(strings(&hc["CapDrop"]), ["ALL"], "{all}");
    assert!(
        strings(&hc["SecurityOpt"])
            .iter()
            .any(|s| s.starts_with("no-new-privileges")),
        "{all}"
    );
    assert_eq!(hc["PidsLimit"], 128, "{all}");
    assert!(
        hc["Tmpfs"]["/tmp"]
            .as_str()
            .is_some_and(|o| o.contains("size=16m")),
        "{all}"
    );
    let bindings = &hc["PortBindings"]["8000/tcp"];
    assert_eq!(bindings.as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(bindings[0]["HostIp"], "127.0.0.1", "{all}");
    assert_eq!(bindings[0]["HostPort"], PORT, "{all}");
    let log = &hc["LogConfig"];
    assert_eq!(log["Type"], "json-file", "{all}");
    assert_eq!(log["Config"]["compress"], "true", "{all}");
    assert_eq!(log["Config"]["max-size"], "10m", "{all}");
    assert_eq!(log["Config"]["max-file"], "3", "{all}");
    // What the kernel applies to the observer (PID 1) and what the root filesystem allows.
    let r = sh("docker exec qts-observer sh -c 'grep -E \"^(CapEff|NoNewPrivs):\" /proc/1/status; touch /app/src/x 2>/dev/null && echo root-writable; touch /tmp/x && echo tmp-writable; rm -f /tmp/x'");
    assert!(
        r.stdout.contains("CapEff:\t0000000000000000"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("NoNewPrivs:\t1"), "{}", r.all());
    assert!(!r.stdout.contains("root-writable"), "{}", r.all());
    assert!(r.stdout.contains("tmp-writable"), "{}", r.all());
    assert_eq!(
        sh("docker diff qts-observer").stdout.trim(),
        "",
        "nothing written outside the mounts and /tmp"
    );
    // /health and /metrics on the host port (127.0.0.1 only).
    let h = sh(&format!(
        "curl -s -w ' %{{http_code}}' http://127.0.0.1:{PORT}/health"
    ));
    assert!(h.stdout.ends_with(" 200"), "{}", h.all());
    assert!(h.stdout.contains(version), "{}", h.all());
    let m = sh(&format!("curl -sf http://127.0.0.1:{PORT}/metrics"));
    assert_eq!(m.code, 0, "{}", m.all());
    let text = &m.stdout;
    assert_eq!(
        sample(
            text,
            &format!("observer_build_info{{version=\"{version}\",revision=\"{revision}\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!revision.is_empty() && revision != "unknown");
    assert_eq!(
        sample(text, "observer_interval_seconds"),
        Some(0.2),
        "{text}"
    );
    assert_eq!(
        sample(text, "observer_write_errors_total"),
        Some(0.0),
        "{text}"
    );
    let started = sample(text, "process_start_time_seconds").expect(text);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let since = i["State"]["StartedAt"].as_str().unwrap().to_string();
    assert!(
        started > 1.7e9 && started <= now,
        "process_start_time_seconds {started} (container started {since})"
    );
    // The image's label and the running revision agree.
    let label = sh("docker inspect -f '{{index .Config.Labels \"org.opencontainers.image.revision\"}}' qts-observer");
    assert_eq!(label.stdout.trim(), revision);
}

/// The handoff's candidate is `compose run` of the service: started that way by both composes
/// (with `sleep` for a command, removed at once), it carries the same hardening and no host port.
fn assert_compose_run_hardened() {
    let dir = server_dir();
    for compose in ["docker compose", "docker-compose --compatibility"] {
        let name = "qts-observer-hardening-probe";
        let r = sh(&format!(
            "cd '{}' && env -i PATH=\"$PATH\" HOME=\"$HOME\" {compose} -f docker-compose.server.yml run -d --no-deps --name {name} qts-observer sleep 60",
            dir.display()
        ));
        let i = sh(&format!("docker inspect {name}"));
        sh(&format!("docker rm -f {name} >/dev/null 2>&1"));
        assert_eq!(r.code, 0, "{compose} run: {}", r.all());
        let v: Value = serde_json::from_str::<Value>(&i.stdout).unwrap()[0].clone();
        let hc = &v["HostConfig"];
        let all = format!("{compose}: {}", serde_json::to_string_pretty(hc).unwrap());
        assert_eq!(hc["ReadonlyRootfs"], true, "{all}");
        assert_eq!(strings(&hc["CapDrop"]), ["ALL"], "{all}");
        assert!(
            strings(&hc["SecurityOpt"])
                .iter()
                .any(|s| s.starts_with("no-new-privileges")),
            "{all}"
        );
        assert_eq!(hc["PidsLimit"], 128, "{all}");
        assert!(hc["Tmpfs"]["/tmp"].is_string(), "{all}");
        assert_eq!(hc["LogConfig"]["Config"]["compress"], "true", "{all}");
        assert!(
            hc["PortBindings"].as_object().is_none_or(|p| p
                .values()
                .all(|b| b.is_null() || b == &Value::Array(vec![]))),
            "{all}"
        );
    }
}

/// `logs/observer.log` and its rotated files, oldest first, as (name, text).
fn log_files() -> Vec<(String, String)> {
    let dir = server_dir().join("logs");
    let mut out = Vec::new();
    for n in (1..10).rev() {
        let name = format!("observer.log.{n}");
        if let Ok(t) = std::fs::read_to_string(dir.join(&name)) {
            out.push((name, t));
        }
    }
    out.push((
        "observer.log".into(),
        std::fs::read_to_string(dir.join("observer.log")).unwrap(),
    ));
    out
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn hardened_under_compose_v2_then_v1_with_the_log_rotated_across_the_handoff() {
    let (c, head) = clone_with_a_small_log();
    let a = release(&c);
    let b = release(&c);
    let r = deploy(&c, &a, "v2");
    assert!(r.all().contains("docker compose (v2)"), "{}", r.all());
    assert_hardened(&a, &head);

    // Compose v1 starts the candidate (`docker-compose run`) and recreates the service: both
    // hardened the same way; the two observers of the handoff share the 1 KiB log.
    let from = archive_lines().len();
    let r = deploy(&c, &b, "v1");
    assert!(r.all().contains("docker-compose (v1"), "{}", r.all());
    assert_hardened(&b, &head);
    no_candidate_left();
    assert_compose_run_hardened();
    let hole = largest_hole(from);
    assert!(
        hole < 1.0,
        "a {hole:.2}s hole in the archive across the handoff"
    );
    assert_archive_valid();

    let files = log_files();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        (2..=3).contains(&files.len()),
        "rotated (observer.log.1), 3 files at most: {names:?}"
    );
    for (name, text) in &files {
        assert!(
            text.len() as u64 <= LOG_MAX,
            "{name} has {} bytes",
            text.len()
        );
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name}: a torn line"
        );
    }
    // b's three instances (the candidate, and the service recreated behind it) each logged
    // their start, in order, across the rotated files.
    let all: String = files.iter().map(|(_, t)| t.as_str()).collect();
    let started: Vec<&str> = all
        .lines()
        .filter(|l| l.contains(&format!("observer started version={b} ")))
        .collect();
    assert_eq!(started.len(), 2, "the candidate and the service:\n{all}");
    let actives = all
        .lines()
        .filter(|l| l.contains(" observer active ") && l.contains(&format!("version={b} ")))
        .count();
    assert_eq!(
        actives, 2,
        "the candidate, then the service took over:\n{all}"
    );
}
