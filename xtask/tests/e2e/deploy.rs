//! End-to-end: deploy.

use crate::common::*;
#[allow(unused_imports)]
use crate::{release::*, sandbox::*, snapshot::*};
#[allow(unused_imports)]
use std::process::Command;

pub fn server_dir() -> std::path::PathBuf {
    sandbox_dir().join("server/observer")
}

pub fn accepted() -> usize {
    std::fs::read_to_string(sandbox_dir().join("ssh/sshd.log"))
        .unwrap_or_default()
        .matches("Accepted publickey")
        .count()
}

pub fn last_good() -> String {
    std::fs::read_to_string(server_dir().join(".deploy/last_good_tag")).unwrap_or_default()
}

/// The largest hole (seconds) between consecutive records from line `from` on.
pub fn largest_hole(from: usize) -> f64 {
    largest_hole_in(&archive_lines(), from)
}

/// The largest hole (seconds) between consecutive records of `lines` from line `from` on.
pub fn largest_hole_in(lines: &[String], from: usize) -> f64 {
    let ts: Vec<f64> = lines
        .iter()
        .skip(from)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            // `YYYY-MM-DDTHH:MM:SS.mmmZ`: the time of day is enough (a day's rollover is
            // handled below).
            let t = v["ts"].as_str()?.get(11..23)?.to_string();
            let (h, m, s) = (t.get(0..2)?, t.get(3..5)?, t.get(6..12)?);
            Some(
                h.parse::<f64>().ok()? * 3600.0
                    + m.parse::<f64>().ok()? * 60.0
                    + s.parse::<f64>().ok()?,
            )
        })
        .collect();
    ts.windows(2)
        .map(|w| (w[1] - w[0]).rem_euclid(86_400.0))
        .fold(0.0, f64::max)
}

pub fn archive_lines() -> Vec<String> {
    let text = std::fs::read_to_string(server_dir().join("config/observer/observer.jsonl"))
        .unwrap_or_default();
    text.lines().map(|s| s.to_string()).collect()
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn deploy_v1_v2_broken_rolls_back() {
    ensure_sandbox();
    let secret = format!("kis-key-{}", unique());
    let c = Clone::new("deploy");
    let v1 = version();
    let v2 = version();
    for v in [&v1, &v2] {
        let r = c.xtask(&["release", v, "--env", "sandbox"]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let deploy = |v: &str| {
        xtask(
            &c.dir,
            &["deploy", "--env", "sandbox", "--tag", v, "--json"],
            &[("KIS_API_KEY", &secret)],
        )
    };

    let before = accepted();
    let r = deploy(&v1);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        accepted() - before,
        1,
        "a deploy must open exactly one SSH connection"
    );
    let st = c.xtask(&["status", "--env", "sandbox", "--json"]);
    assert_eq!(st.code, 0, "{}", st.all());
    let s: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(s["version"], v1.as_str());
    assert!(s["state"].as_str().unwrap().contains("healthy"));

    let from = archive_lines().len();
    let r = deploy(&v2);
    assert_eq!(r.code, 0, "{}", r.all());
    // A handoff: the archive has no hole longer than a few intervals (200 ms each) across it.
    let hole = largest_hole(from);
    assert!(
        hole < 1.0,
        "a {hole:.2}s hole in the archive across the handoff"
    );
    assert!(
        sh("docker ps -a --format '{{.Names}}'")
            .stdout
            .lines()
            .all(|n| n != "qts-observer-next"),
        "the candidate container must be gone"
    );
    assert!(
        last_good().starts_with(&format!("{v2} sha256:")),
        "{}",
        last_good()
    );
    let env_mode = sh(&format!(
        "stat -c %a '{}'",
        server_dir().join(".env").display()
    ));
    assert_eq!(env_mode.stdout.trim(), "600");
    // Contract §8.2 and §2.3 on the running container.
    let who = sh("docker exec qts-observer id -un");
    assert_eq!(who.stdout.trim(), "qts");
    let limits = sh("docker inspect -f '{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.MemoryReservation}} {{.HostConfig.RestartPolicy.Name}}' qts-observer");
    assert_eq!(
        limits.stdout.trim(),
        "1000000000 536870912 268435456 unless-stopped"
    );
    let lines_before = archive_lines().len();
    assert!(lines_before > 0);

    // A broken release: /health never answers 200.
    c.git("checkout -q main");
    std::fs::write(
        c.dir.join("app/src/observer/service.py"),
        std::fs::read_to_string(c.dir.join("app/src/observer/service.py"))
            .unwrap()
            .replace("return 200, body", "return 503, body"),
    )
    .unwrap();
    c.git("commit -q -am broken");
    c.publish();
    let bad = version();
    let r = c.xtask(&["release", &bad, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let started = sh("docker inspect -f '{{.State.StartedAt}}' qts-observer").stdout;
    let r = deploy(&bad);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr.contains("FAILED before the handoff"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("last 50 lines of the candidate's log"));
    assert_eq!(
        sh("docker inspect -f '{{.State.StartedAt}}' qts-observer").stdout,
        started,
        "the running version must never stop for a failed candidate"
    );
    let st = c.xtask(&["status", "--env", "sandbox", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(
        s["version"],
        v2.as_str(),
        "the last good version must be running again"
    );
    assert!(s["state"].as_str().unwrap().contains("healthy"));
    assert!(last_good().starts_with(&v2));
    let hist = std::fs::read_to_string(server_dir().join(".deploy/history.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = hist
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let n = recs.len();
    assert_eq!(recs[n - 1]["version"], bad.as_str());
    assert_eq!(recs[n - 1]["outcome"], "failed");
    assert!(recs
        .iter()
        .any(|r| r["version"] == v1.as_str() && r["outcome"] == "success"));
    // The archive lost nothing: it only grew, and every line parses.
    let after = archive_lines();
    assert!(after.len() >= lines_before);
    for l in &after {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("corrupt archive line {l:?}: {e}"));
    }
    assert_archive_valid();
    // The secret reached the container but no output.
    let logs = sh("docker logs qts-observer 2>&1");
    assert!(!logs.stdout.contains(&secret));
    let remote = c.xtask(&["check-env", "--env", "sandbox", "--remote"]);
    assert_eq!(remote.code, 0, "{}", remote.all());
    assert!(
        remote.stdout.contains("container KIS_API_KEY"),
        "{}",
        remote.stdout
    );
    assert_no_secret(&[&secret, &token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn deploy_refusals_touch_nothing() {
    ensure_sandbox();
    let c = Clone::new("refuse");
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let good = last_good();
    let conns = accepted();
    // Hostile tags: exit 2, no connection made.
    for t in [
        "$(id)",
        "v1.2.3;reboot",
        "v1.2.3`id`",
        "latest",
        "v1.2.3 x",
        "",
    ] {
        let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", t]);
        assert_eq!(r.code, 2, "{t:?}: {}", r.all());
    }
    assert_eq!(accepted(), conns);
    // A version not in the registry.
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", "v0.0.1-missing"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("not in the registry"), "{}", r.stderr);
    // A wrong SSH key.
    let tmp = std::env::temp_dir().join(format!("keys-{}", unique()));
    std::fs::create_dir_all(&tmp).unwrap();
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f '{}/k'",
        tmp.display()
    ));
    let key = std::fs::read_to_string(tmp.join("k")).unwrap();
    let r = xtask(
        &c.dir,
        &["deploy", "--env", "sandbox", "--tag", &v],
        &[("DEPLOY_SSH_KEY", &key)],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("authentication failed"), "{}", r.stderr);
    // A changed host key.
    let pubkey = std::fs::read_to_string(tmp.join("k.pub")).unwrap();
    let kh = format!(
        "[127.0.0.1]:{} {}",
        state()["ssh_port"],
        pubkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let r = xtask(
        &c.dir,
        &["deploy", "--env", "sandbox", "--tag", &v],
        &[("DEPLOY_KNOWN_HOSTS", &kh)],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("host key"), "{}", r.stderr);
    assert_eq!(last_good(), good, "nothing may change on the server");
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(!key.is_empty());
    assert_no_secret(&[&token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn deploy_lock_held_then_stale_then_forced() {
    ensure_sandbox();
    let c = Clone::new("lock");
    let v = version();
    assert_eq!(c.xtask(&["release", &v, "--env", "sandbox"]).code, 0);
    let lock = server_dir().join(".deploy/lock");
    std::fs::create_dir_all(&lock).unwrap();
    let holder = serde_json::json!({"id": "other", "who": "alice@laptop", "pid": 4242, "version": "v9.9.9", "started": "2026-01-01T00:00:00Z", "started_epoch": 1});
    std::fs::write(lock.join("holder.json"), holder.to_string()).unwrap();
    let st = c.xtask(&["lock", "status", "--env", "sandbox"]);
    assert!(
        st.stdout.contains("alice@laptop") && st.stdout.contains("STALE"),
        "{}",
        st.all()
    );
    // A stale lock is released as it is; a live one needs --force.
    let r = c.xtask(&["lock", "release", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "a stale lock needs no --force: {}", r.all());
    assert!(r.stdout.contains("released (stale)"), "{}", r.all());
    assert!(!lock.exists());
    std::fs::create_dir_all(&lock).unwrap();
    let live = serde_json::json!({"id": "live", "who": "bob@laptop", "host": "laptop", "pid": 4242, "version": "v9.9.9", "started": "now", "started_epoch": unique() / 1000});
    std::fs::write(lock.join("holder.json"), live.to_string()).unwrap();
    let r = c.xtask(&["lock", "release", "--env", "sandbox"]);
    assert_eq!(r.code, 1, "without --force a live lock stays: {}", r.all());
    assert!(r.stderr.contains("--force"), "{}", r.all());
    assert!(lock.exists());
    // A live holder that nothing here can judge (another machine) refuses a deploy.
    let good = last_good();
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("held by bob@laptop"), "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(last_good(), good);
    assert!(lock.exists(), "someone else's lock must not be removed");
    let r = c.xtask(&["lock", "release", "--env", "sandbox", "--force"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("released (forced)"), "{}", r.all());
    assert!(!lock.exists());
    // A lock older than the TTL is stale: the next deploy breaks it.
    std::fs::create_dir_all(&lock).unwrap();
    std::fs::write(lock.join("holder.json"), holder.to_string()).unwrap();
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("TTL") && r.stderr.contains("breaking its lock"),
        "{}",
        r.stderr
    );
    assert!(!lock.exists(), "the lock is released after a deploy");
}

pub fn running_version() -> (String, String) {
    let r = sh("docker inspect -f '{{.Config.Image}} {{.State.StartedAt}}' qts-observer");
    let mut w = r.stdout.split_whitespace();
    let image = w
        .next()
        .unwrap_or("")
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_string();
    (image, w.next().unwrap_or("").to_string())
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn deploy_killed_midway_converges_and_rollback_goes_back() {
    ensure_sandbox();
    let c = Clone::new("killed");
    let v1 = version();
    let v2 = version();
    for v in [&v1, &v2] {
        assert_eq!(c.xtask(&["release", v, "--env", "sandbox"]).code, 0);
    }
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v1]);
    assert_eq!(r.code, 0, "{}", r.all());

    // Kill the xtask during v2's health gate.
    let log = std::env::temp_dir().join(format!("killed-{}.log", unique()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["deploy", "--env", "sandbox", "--tag", &v2])
        .current_dir(&c.dir)
        .env("XTASK_ROOT", &c.dir)
        .env("XTASK_SANDBOX_DIR", sandbox_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("==> Health gate")
    {
        assert!(
            t.elapsed().as_secs() < 120,
            "the deploy never reached the health gate"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    transcribe(&std::fs::read_to_string(&log).unwrap_or_default());
    let _ = std::fs::remove_file(&log);
    assert!(
        server_dir().join(".deploy/lock").exists(),
        "the killed deploy leaves its lock"
    );
    let st = c.xtask(&["lock", "status", "--env", "sandbox"]);
    assert!(
        st.stdout.contains("STALE"),
        "a dead holder is reported stale: {}",
        st.all()
    );

    // Deploying again converges: the dead holder's lock is broken, v2 ends healthy and recorded.
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v2]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("is gone; breaking its lock"),
        "{}",
        r.stderr
    );
    assert!(
        last_good().starts_with(&format!("{v2} sha256:")),
        "{}",
        last_good()
    );
    assert_eq!(running_version().0, v2);

    // `rollback` goes back to the previous good version, over one connection.
    let before = accepted();
    let r = c.xtask(&["rollback", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        accepted() - before,
        1,
        "a rollback opens one SSH connection"
    );
    assert_eq!(running_version().0, v1);
    assert!(last_good().starts_with(&format!("{v1} sha256:")));

    // The registry stopped: refused before the server is touched.
    let running = running_version();
    let pid = state()["registry_pid"].as_u64().unwrap();
    sh(&format!("kill {pid}"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v2]);
    ensure_sandbox();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("cannot reach the registry"),
        "{}",
        r.stderr
    );
    assert_eq!(
        running_version(),
        running,
        "the running version must be untouched"
    );
    assert_no_secret(&[&token()]);
    assert_archive_valid();
}
