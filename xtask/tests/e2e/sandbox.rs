//! End-to-end: sandbox.

use crate::common::*;
use crate::E2E;
#[allow(unused_imports)]
use crate::{deploy::*, release::*, snapshot::*};
#[allow(unused_imports)]
use std::process::Command;

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn sandbox_up_is_idempotent_and_down_stops_what_it_started() {
    let _ = E2E;
    ensure_sandbox();
    let again = xtask(&repo(), &["sandbox", "up"], &[]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stderr.contains("registry already running"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("sshd already running"),
        "{}",
        again.stderr
    );
    let st = xtask(&repo(), &["sandbox", "status", "--json"], &[]);
    assert_eq!(st.code, 0, "{}", st.all());
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["registry"]["running"], true);
    assert_eq!(v["sshd"]["running"], true);
    let pids = [
        state()["registry_pid"].as_u64().unwrap(),
        state()["sshd_pid"].as_u64().unwrap(),
    ];

    let down = xtask(&repo(), &["sandbox", "down"], &[]);
    assert_eq!(down.code, 0, "{}", down.all());
    for pid in pids {
        // Gone, or a zombie waiting for a reaper: either way no longer running.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let running = status
            .lines()
            .any(|l| l.starts_with("State:") && !l.contains("Z"));
        assert!(!running, "pid {pid} still runs after down");
    }
    let st = xtask(&repo(), &["sandbox", "status"], &[]);
    assert_eq!(
        st.code,
        1,
        "status must say the sandbox is down:\n{}",
        st.all()
    );
    // A stale record: `up` recovers.
    ensure_sandbox();
    assert_no_secret(&[&token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn sandbox_registry_login_push_pull() {
    ensure_sandbox();
    let reg = registry();
    let ok = run_stdin(
        Command::new("docker").args(["login", "-u", "observer-ci", "--password-stdin", &reg]),
        &token(),
    );
    assert_eq!(ok.code, 0, "{}", ok.all());
    let cfg = std::env::temp_dir().join(format!("docker-cfg-{}", unique()));
    std::fs::create_dir_all(&cfg).unwrap();
    let bad = run_stdin(
        Command::new("docker").arg("--config").arg(&cfg).args([
            "login",
            "-u",
            "observer-ci",
            "--password-stdin",
            &reg,
        ]),
        "wrong-password",
    );
    assert_ne!(bad.code, 0, "a wrong password must be refused");
    let _ = std::fs::remove_dir_all(&cfg);

    // A tiny image: one file, imported; pushed; removed locally; pulled back.
    let image = format!("{reg}/e2e/tiny:{}", unique());
    let r = sh(&format!(
        "d=$(mktemp -d) && echo hello > $d/hello && tar -C $d -c hello | docker import - {image} >/dev/null && rm -rf $d && docker push {image} >/dev/null && docker rmi {image} >/dev/null && docker pull {image} >/dev/null && docker rmi {image} >/dev/null"
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_no_secret(&[&token()]);
}

pub fn ssh_cmd(known_hosts: &std::path::Path) -> Command {
    let s = sandbox_dir();
    let mut c = Command::new("ssh");
    c.args([
        "-n",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
    ])
    .arg("-o")
    .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
    .arg("-i")
    .arg(s.join("ssh/client_ed25519"))
    .args(["-p", &state()["ssh_port"].to_string()])
    .arg(format!("{}@127.0.0.1", state()["user"].as_str().unwrap()))
    .args(["docker", "ps"]);
    c
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn sandbox_ssh_pinned_host_key() {
    ensure_sandbox();
    let s = sandbox_dir();
    let ok = run(&mut ssh_cmd(&s.join("ssh/known_hosts")));
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert!(ok.stdout.contains("CONTAINER ID"));
    // Another host key in known_hosts for the same address: refused.
    let tmp = std::env::temp_dir().join(format!("kh-{}", unique()));
    std::fs::create_dir_all(&tmp).unwrap();
    let r = sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f {d}/other && printf '[127.0.0.1]:{port} %s\\n' \"$(cut -d' ' -f1,2 {d}/other.pub)\" > {d}/known_hosts",
        d = tmp.display(),
        port = state()["ssh_port"]
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    let bad = run(&mut ssh_cmd(&tmp.join("known_hosts")));
    assert_ne!(bad.code, 0, "a changed host key must be refused");
    assert!(
        bad.stderr.contains("HOST IDENTIFICATION HAS CHANGED")
            || bad.stderr.contains("Host key verification failed"),
        "{}",
        bad.stderr
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
