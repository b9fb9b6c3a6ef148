//! End-to-end: truthful endings (issue 12) with real faults — a real SIGTERM and SIGINT sent to a
//! running deploy, a real second deploy racing for the lock, a live holder in another PID
//! namespace, the lock of a finished workflow run, and a record the server cannot write
//! (`chattr +i`, which stops root too).

use crate::common::*;
use crate::deploy::{last_good, running_version, server_dir};
use crate::handoff::{history_last, no_candidate_left};
use crate::release::version;
use std::path::{Path, PathBuf};
use std::process::Command;

fn release(c: &Clone) -> String {
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    v
}

fn deploy(c: &Clone, v: &str) -> Run {
    c.xtask(&["deploy", "--env", "sandbox", "--tag", v, "--no-snapshot"])
}

fn lock_dir() -> PathBuf {
    server_dir().join(".deploy/lock")
}

/// A private TMPDIR for one run: the tool's SSH directory (control socket, key copy) lives there.
fn private_tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!("xtask-e2e-tmp-{}", unique()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Nothing of the run is left: its TMPDIR is empty and no ssh (master) uses it any more.
fn nothing_left_in(tmp: &Path) {
    let left: Vec<_> = std::fs::read_dir(tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    let ssh = sh(&format!(
        "pgrep -a -x ssh | grep -F '{}' || true",
        tmp.display()
    ));
    assert!(
        ssh.stdout.trim().is_empty(),
        "an ssh process still uses it: {}",
        ssh.stdout
    );
    let _ = std::fs::remove_dir_all(tmp);
}

/// Deploys `v` in the background with a private TMPDIR, sends `sigs` (`kill` names, one second
/// apart) when its log shows `when`, and asserts that nothing of the run is left in its TMPDIR:
/// (exit code, log).
fn interrupted_deploy(c: &Clone, v: &str, when: &str, sigs: &[&str]) -> (i32, String) {
    let tmp = private_tmp();
    let log = tmp.with_extension("log");
    let tmp_s = tmp.display().to_string();
    let child = spawn_xtask(
        &c.dir,
        &["deploy", "--env", "sandbox", "--tag", v, "--no-snapshot"],
        &[("TMPDIR", &tmp_s)],
        &log,
    );
    wait_for_log(&log, when, 180);
    for (i, sig) in sigs.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        let r = sh(&format!("kill -{sig} {}", child.id()));
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let out = finish_xtask(child, &log);
    nothing_left_in(&tmp);
    out
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn endings_signals_undo_before_the_handoff_and_finish_after_it() {
    ensure_sandbox();
    let c = Clone::new("signals");
    let v1 = release(&c);
    assert_eq!(deploy(&c, &v1).code, 0);
    let v2 = release(&c);
    let (_, started) = running_version();

    // SIGTERM (a cancelled workflow) during the candidate's soak: undone, v1 never stopped.
    let (code, text) = interrupted_deploy(&c, &v2, "==> Soak", &["TERM"]);
    assert_eq!(code, 143, "{text}");
    assert!(
        text.contains("interrupted by SIGTERM before") && text.contains("never stopped"),
        "{text}"
    );
    assert!(!lock_dir().exists(), "the lock is released");
    no_candidate_left();
    assert_eq!(running_version(), (v1.clone(), started), "v1 never stopped");
    assert!(last_good().starts_with(&format!("{v1} ")));
    let env = std::fs::read_to_string(server_dir().join(".env")).unwrap();
    assert!(
        env.contains(&format!("IMAGE_TAG={v1}\n")),
        ".env is put back"
    );
    let h = history_last();
    assert_eq!(h["outcome"], "failed");
    assert!(h["failed"][0]
        .as_str()
        .unwrap()
        .contains("interrupted by SIGTERM"));

    // What a cancelled GitHub run really sends: SIGINT, then SIGTERM before the 10 s soak ends.
    // The second signal cuts the soak short; the run is undone all the same (the first decides
    // the code).
    let (code, text) = interrupted_deploy(&c, &v2, "==> Soak", &["INT", "TERM"]);
    assert_eq!(code, 130, "{text}");
    assert!(text.contains("cut short"), "{text}");
    assert!(!lock_dir().exists(), "the lock is released");
    no_candidate_left();
    assert_eq!(running_version().0, v1, "v1 never stopped");
    let env = std::fs::read_to_string(server_dir().join(".env")).unwrap();
    assert!(
        env.contains(&format!("IMAGE_TAG={v1}\n")),
        ".env is put back"
    );

    // SIGINT (Ctrl-C) right after the old version stopped: the deploy is finished.
    let (code, text) = interrupted_deploy(&c, &v2, "==> Hand off: stop qts-observer;", &["INT"]);
    assert_eq!(code, 130, "{text}");
    assert!(text.contains("the deploy was finished"), "{text}");
    assert!(!lock_dir().exists());
    no_candidate_left();
    assert_eq!(running_version().0, v2);
    assert!(last_good().starts_with(&format!("{v2} ")));
    assert_archive_valid();
}

/// Makes `path` immutable (`chattr +i`) until dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn new(path: PathBuf) -> Immutable {
        let r = run(Command::new("chattr").arg("+i").arg(&path));
        assert_eq!(r.code, 0, "chattr: {}", r.all());
        Immutable(path)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn endings_a_record_the_server_cannot_write_is_exit_5_then_repaired() {
    ensure_sandbox();
    let c = Clone::new("records");
    let v1 = release(&c);
    assert_eq!(deploy(&c, &v1).code, 0);
    let v2 = release(&c);
    let guard = Immutable::new(server_dir().join(".deploy/last_good_tag"));
    let r = deploy(&c, &v2);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "{v2} is deployed and healthy, but recording it failed"
        )) && r
            .stderr
            .contains(&format!("cargo xtask deploy --env sandbox --tag {v2}")),
        "{}",
        r.stderr
    );
    assert_eq!(running_version().0, v2, "the healthy new version runs");
    assert!(
        last_good().starts_with(&format!("{v1} ")),
        "{}",
        last_good()
    );
    assert!(!lock_dir().exists(), "the lock is released");
    drop(guard);
    let _ = std::fs::remove_file(server_dir().join(".deploy/last_good_tag.tmp"));
    // The same deploy again verifies the running version and repairs the records.
    let r = deploy(&c, &v2);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("writing"), "{}", r.stderr);
    assert!(
        last_good().starts_with(&format!("{v2} sha256:")),
        "{}",
        last_good()
    );
    assert_eq!(history_last()["kind"], "repair");
    assert_eq!(history_last()["version"], v2.as_str());
    assert!(!lock_dir().exists());
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn endings_the_lock_between_live_and_dead_holders() {
    ensure_sandbox();
    let c = Clone::new("holders");
    let (v1, v2) = (release(&c), release(&c));
    assert_eq!(deploy(&c, &v1).code, 0);

    // Two deploys at the same moment, two real processes: exactly one takes the lock.
    let (la, lb) = (
        std::env::temp_dir().join(format!("race-a-{}.log", unique())),
        std::env::temp_dir().join(format!("race-b-{}.log", unique() + 1)),
    );
    let args = ["deploy", "--env", "sandbox", "--tag", &v2, "--no-snapshot"];
    let a = spawn_xtask(&c.dir, &args, &[], &la);
    let b = spawn_xtask(&c.dir, &args, &[], &lb);
    let (ca, ta) = finish_xtask(a, &la);
    let (cb, tb) = finish_xtask(b, &lb);
    let mut codes = [ca, cb];
    codes.sort();
    assert_eq!(codes, [0, 1], "A:\n{ta}\nB:\n{tb}");
    let loser = if ca == 1 { &ta } else { &tb };
    assert!(
        loser.contains("the deploy lock is held by") && loser.contains("alive: pid"),
        "{loser}"
    );
    assert!(!lock_dir().exists());
    assert_eq!(running_version().0, v2);

    // A live deploy in another PID namespace on this machine (a container, same host name):
    // its pid means nothing here, so its lock is never broken.
    let v3 = release(&c);
    let log = std::env::temp_dir().join(format!("pidns-{}.log", unique()));
    let mut unshare = xtask_cmd(
        "unshare",
        &c.dir,
        &[
            "--pid",
            "--fork",
            "--mount-proc",
            env!("CARGO_BIN_EXE_xtask"),
        ],
        &[],
    );
    unshare.args(["deploy", "--env", "sandbox", "--tag", &v3, "--no-snapshot"]);
    let child = spawn_logged(unshare, &log);
    wait_for_log(&log, "==> Soak", 180);
    let holder: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lock_dir().join("holder.json")).unwrap())
            .unwrap();
    let r = deploy(&c, &v3);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("another machine or PID namespace"),
        "{}",
        r.stderr
    );
    let (code, text) = finish_xtask(child, &log);
    assert_eq!(code, 0, "the deploy in the other namespace went on: {text}");
    assert_ne!(
        holder["pid_ns"].as_str().unwrap(),
        std::fs::read_link("/proc/self/ns/pid")
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(running_version().0, v3);

    // The lock of a finished run of this workflow (a cancelled run on another runner).
    std::fs::create_dir_all(lock_dir()).unwrap();
    let wf = "o/r/.github/workflows/deploy.yml";
    let stale = serde_json::json!({"id": "run-100", "who": "ci (GitHub Actions)", "host": "runner-1",
        "pid": 4242, "version": v2, "started": "now", "started_epoch": unique() / 1000,
        "machine_id": "another-runner", "boot_id": "another-boot", "pid_ns": "pid:[1]",
        "workflow_run": {"repository": "o/r", "workflow": wf, "run_id": "100", "run_attempt": "1"}});
    std::fs::write(lock_dir().join("holder.json"), stale.to_string()).unwrap();
    let gha = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_REPOSITORY", "o/r"),
        (
            "GITHUB_WORKFLOW_REF",
            "o/r/.github/workflows/deploy.yml@refs/tags/v9",
        ),
        ("GITHUB_RUN_ID", "101"),
        ("GITHUB_RUN_ATTEMPT", "1"),
    ];
    let st = xtask(&c.dir, &["lock", "status", "--env", "sandbox"], &gha);
    assert!(
        st.stdout.contains("STALE") && st.stdout.contains("run 100"),
        "{}",
        st.all()
    );
    let r = xtask(
        &c.dir,
        &[
            "deploy",
            "--env",
            "sandbox",
            "--tag",
            &v2,
            "--allow-downgrade",
            "--no-snapshot",
        ],
        &gha,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("has finished"), "{}", r.all());
    // Under Actions the registry token is announced as a mask (the transcript keeps no
    // `::add-mask::` line: the runner hides them).
    assert!(
        r.stdout
            .lines()
            .any(|l| l == format!("::add-mask::{}", token())),
        "the token is masked first"
    );
    assert!(!lock_dir().exists());
}
