//! e2e (issue 15): `logs`, `exec` and `gaps` against the sandbox, after real deploys. One test:
//! two releases, a first deploy, the service stopped for 2 s by hand (a "no deploy" hole), a
//! recreate deploy (a hole matched to its history record).

use crate::common::*;
use crate::deploy::{accepted, archive_lines, server_dir};
use crate::release::version;
use std::process::Stdio;
use std::time::{Duration, Instant};

const ENV: &[&str] = &["--env", "sandbox"];

fn with_env<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend_from_slice(ENV);
    v
}

/// Processes whose command line contains `text` (ours excluded).
fn procs(text: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    sh("ps -eo pid=,args=")
        .stdout
        .lines()
        .filter(|l| {
            l.contains(text) && !l.contains("ps -eo") && l.split_whitespace().next() != Some(&me)
        })
        .map(|l| l.to_string())
        .collect()
}

/// Waits (at most `secs`) for `cond`; panics with `what` otherwise.
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed().as_secs() < secs, "{what} (waited {secs}s)");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the archive has grown by `n` records.
fn wait_records(n: usize) {
    let from = archive_lines().len();
    wait_until(60, "the observer did not write again", || {
        archive_lines().len() >= from + n
    });
}

fn holes_since(report: &serde_json::Value, t0_ms: i64) -> Vec<serde_json::Value> {
    report["holes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["end_ms"].as_i64().unwrap() >= t0_ms)
        .cloned()
        .collect()
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn logs_exec_gaps_after_deploys() {
    ensure_sandbox();
    let t0_ms = unique() as i64;
    let c = Clone::new("logs");
    let (v1, v2) = (version(), version());
    for v in [&v1, &v2] {
        let r = c.xtask(&with_env(&["release", v]));
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let r = c.xtask(&with_env(&["deploy", "--tag", &v1, "--no-snapshot"]));
    assert_eq!(r.code, 0, "{}", r.all());

    // logs -n 5: lines of both sources, over one connection.
    let before = accepted();
    let r = c.xtask(&with_env(&["logs", "-n", "5"]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(accepted() - before, 1, "logs must open one SSH connection");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("[container] ")),
        "{}",
        r.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("[observer.log] ")),
        "{}",
        r.stdout
    );
    assert!(lines.len() <= 10, "-n 5 per source: {}", r.stdout);

    // --grep filters on the server; a hostile RE is data.
    let r = c.xtask(&with_env(&["logs", "--grep", "observer (active|started)"]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stdout.trim().is_empty(), "{}", r.all());
    assert!(
        r.stdout
            .lines()
            .all(|l| l.contains("observer active") || l.contains("observer started")),
        "{}",
        r.stdout
    );
    let marker = std::env::temp_dir().join(format!("xtask-pwned-{}", unique()));
    let m = marker.display().to_string();
    for re in [
        format!("$(touch {m})"),
        format!("x'; touch {m}; echo '"),
        format!("`touch {m}`"),
    ] {
        let r = c.xtask(&with_env(&["logs", "--grep", &re]));
        assert!(r.code == 0, "{re}: {}", r.all());
        assert!(
            !marker.exists(),
            "the RE {re:?} ran a command on the server"
        );
    }

    // logs -f streams until SIGINT, then exits 130 and leaves no process behind.
    let out = std::env::temp_dir().join(format!("xtask-logs-f-{}.out", unique()));
    let mut child = xtask_cmd(
        env!("CARGO_BIN_EXE_xtask"),
        &c.dir,
        &with_env(&["logs", "-f", "-n", "2"]),
        &[],
    )
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(&out).unwrap())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until(30, "logs -f printed no line of each source", || {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        t.contains("[container] ") && t.contains("[observer.log] ")
    });
    assert!(
        !procs("kill -TERM 0").is_empty(),
        "the follow script is not running"
    );
    let r = sh(&format!("kill -INT {}", child.id()));
    assert_eq!(r.code, 0);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    transcribe(&err);
    assert_eq!(status.code(), Some(130), "{err}");
    wait_until(30, "the follow script's processes outlived it", || {
        procs("kill -TERM 0").is_empty() && procs("docker logs -f --tail 2").is_empty()
    });
    let _ = std::fs::remove_file(&out);

    // exec: output and exit status are the command's.
    let r = c.xtask(&[
        "exec",
        "--env",
        "sandbox",
        "--",
        "python3",
        "-c",
        "print(42)",
    ]);
    assert_eq!((r.code, r.stdout.trim()), (0, "42"), "{}", r.all());
    let r = c.xtask(&[
        "exec",
        "--env",
        "sandbox",
        "--",
        "python3",
        "-c",
        "import sys; print('a b'); sys.exit(3)",
    ]);
    assert_eq!((r.code, r.stdout.trim()), (3, "a b"), "{}", r.all());
    let r = run_stdin(
        &mut xtask_cmd(
            env!("CARGO_BIN_EXE_xtask"),
            &c.dir,
            &["exec", "-i", "--env", "sandbox", "--", "python3", "-"],
            &[],
        ),
        "print(6 * 7)\n",
    );
    assert_eq!((r.code, r.stdout.trim()), (0, "42"), "{}", r.all());
    // -i on a terminal (util-linux `script` provides one): docker exec -it over ssh -t.
    let inner = format!(
        "{} exec -i --env sandbox -- python3 -c 'import sys; print(sys.stdin.isatty(), sys.stdout.isatty()); sys.exit(4)'",
        env!("CARGO_BIN_EXE_xtask")
    );
    let r =
        run(xtask_cmd("script", &c.dir, &["-qec", &inner, "/dev/null"], &[]).stdin(Stdio::null()));
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stdout.contains("True True"), "{}", r.all());

    // A hole with no deploy: the service stopped by hand for 2 s.
    wait_records(10);
    std::thread::sleep(Duration::from_secs(3)); // clear of the deploy's record (tolerance 2 s)
    let down_ms = unique() as i64;
    let r = sh(
        "docker stop qts-observer >/dev/null && sleep 2 && docker start qts-observer >/dev/null",
    );
    assert_eq!(r.code, 0, "{}", r.all());
    wait_records(10);
    std::thread::sleep(Duration::from_secs(3));
    // A hole a deploy causes: recreate stops the old version before starting the new one.
    let deploy_ms = unique() as i64;
    let r = c.xtask(&with_env(&[
        "deploy",
        "--tag",
        &v2,
        "--strategy",
        "recreate",
        "--no-snapshot",
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    wait_records(5);

    let r = c.xtask(&with_env(&["gaps", "--since", "1h", "--json"]));
    assert_eq!(r.code, 0, "{}", r.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["interval_ms"], 200, "{report}");
    let holes = holes_since(&report, t0_ms);
    let down: Vec<_> = holes
        .iter()
        .filter(|h| {
            h["start_ms"].as_i64().unwrap() >= down_ms - 1_000
                && h["end_ms"].as_i64().unwrap() < deploy_ms
        })
        .collect();
    assert_eq!(down.len(), 1, "{report:#}");
    assert_eq!(
        down[0]["cause"], "no deploy: the service was down",
        "{report:#}"
    );
    assert!(down[0]["seconds"].as_f64().unwrap() >= 2.0, "{report:#}");
    assert!(down[0]["missed"].as_u64().unwrap() >= 9, "{report:#}");
    let by_deploy: Vec<_> = holes
        .iter()
        .filter(|h| h["start_ms"].as_i64().unwrap() >= deploy_ms)
        .collect();
    assert_eq!(by_deploy.len(), 1, "{report:#}");
    let causes = by_deploy[0]["causes"].as_array().unwrap();
    assert!(
        causes
            .iter()
            .any(|c| c["kind"] == "deploy" && c["version"] == v2.as_str()),
        "{report:#}"
    );
    let text = c.xtask(&with_env(&["gaps", "--since", "1h"]));
    assert_eq!(text.code, 0, "{}", text.all());
    assert!(
        text.stdout.contains("no deploy: the service was down")
            && text.stdout.contains(&format!("deploy {v2} (success")),
        "{}",
        text.stdout
    );

    // -q: silent; exit 1 when a hole exceeds --max-hole, 0 otherwise.
    let r = c.xtask(&with_env(&[
        "gaps",
        "--since",
        "1h",
        "-q",
        "--max-hole",
        "1s",
    ]));
    assert_eq!((r.code, r.stdout.as_str()), (1, ""), "{}", r.all());
    let r = c.xtask(&with_env(&[
        "gaps",
        "--since",
        "1h",
        "-q",
        "--max-hole",
        // A hole may reach back before the window (an old sandbox's archive): no bound it fits.
        "100years",
    ]));
    assert_eq!((r.code, r.all().trim()), (0, ""), "{}", r.all());
    assert!(server_dir().join(".deploy/history.jsonl").is_file());

    // No observer running: the report runs in a throw-away container of its image and shows the
    // hole that lasts until now.
    let r = sh("docker stop qts-observer >/dev/null");
    assert_eq!(r.code, 0, "{}", r.all());
    // An open hole is one older than 3 intervals + 1 s (1.6 s here).
    std::thread::sleep(Duration::from_secs(2));
    let r = c.xtask(&with_env(&["gaps", "--since", "1h", "--json"]));
    let started = sh("docker start qts-observer >/dev/null");
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(started.code, 0, "{}", started.all());
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["interval_source"], "config", "{report:#}");
    let last = report["holes"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["ongoing"], true, "{report:#}");
    assert_eq!(
        last["cause"], "no deploy: the service was down",
        "{report:#}"
    );
    wait_records(5);
}
