//! End-to-end: monitoring (issue 15, contract §10.2). The real Prometheus server (Debian's
//! package, unpacked into `target/tools/prometheus` by `cargo xtask ci` before the e2e tests)
//! scrapes the sandbox observer with the production alert rules
//! (`app/obs_deploy/monitoring/rules.yml`, only their `for:` durations shortened) and sees
//! ObserverArchiveStalled fire while the container is paused.

use crate::common::*;
use crate::release::version;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The sandbox observer's host port (the sandbox environment's `host_port`).
const OBSERVER: &str = "127.0.0.1:18000";

/// `target/tools/prometheus/usr/bin/prometheus`: unpacked by `cargo xtask ci`; when a test run
/// without ci finds it missing, fetched the same way (`apt-get download prometheus`,
/// `dpkg-deb -x`).
fn prometheus_bin() -> PathBuf {
    let root = repo().join("target/tools/prometheus");
    let bin = root.join("usr/bin/prometheus");
    if bin.is_file() {
        return bin;
    }
    eprintln!(
        "monitoring: {} missing: fetching Debian's prometheus package",
        bin.display()
    );
    let dl = repo().join(format!("target/tools/prometheus.e2e-{}", unique()));
    std::fs::create_dir_all(&dl).unwrap();
    let r = sh(&format!(
        "cd '{d}' && apt-get download prometheus && dpkg-deb -x prometheus_*.deb x && rm -rf '{root}' && mv x '{root}'",
        d = dl.display(),
        root = root.display()
    ));
    let _ = std::fs::remove_dir_all(&dl);
    assert_eq!(r.code, 0, "fetching prometheus failed:\n{}", r.all());
    bin
}

/// The production rules with every `for:` set to 1 s (the expressions untouched).
fn rules_for_test() -> String {
    let text = std::fs::read_to_string(repo().join("app/obs_deploy/monitoring/rules.yml")).unwrap();
    let mut out = String::new();
    let mut changed = 0;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("for: ") {
            out.push_str(&line[..line.len() - t.len()]);
            out.push_str("for: 1s\n");
            changed += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(changed > 0, "rules.yml has no `for:` to shorten");
    out
}

/// A free TCP port on 127.0.0.1 (bound, then released for Prometheus to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Prometheus running; killed (and its temp folder removed) when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Prometheus {
    fn start() -> Prometheus {
        let dir = std::env::temp_dir().join(format!("xtask-e2e-prometheus-{}", unique()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("rules.yml"), rules_for_test()).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - rules.yml\n\
                 scrape_configs:\n  - job_name: observer\n    static_configs:\n      - targets: [\"{OBSERVER}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let mut c = Command::new(prometheus_bin());
        c.arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let child = spawn_logged(c, &dir.join("prometheus.log"));
        Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` of the HTTP API as JSON (`None` while it does not answer).
    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let r = run(Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("{}{path}", self.url)));
        if r.code != 0 {
            return None;
        }
        serde_json::from_str(&r.stdout).ok()
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.api(&format!("/api/v1/query?query={q}"))
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The alerts now (`/api/v1/alerts`): (name, state) of each.
    fn alerts(&self) -> Vec<(String, String)> {
        self.api("/api/v1/alerts")
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn state_of(&self, alert: &str) -> Option<String> {
        self.alerts()
            .into_iter()
            .find(|(n, _)| n == alert)
            .map(|(_, s)| s)
    }

    /// Waits (at most `secs`) until `cond` holds; panics naming `what`, with the alerts and the
    /// server's log, otherwise. Returns the seconds waited.
    fn wait(&self, what: &str, secs: u64, cond: impl Fn(&Prometheus) -> bool) -> f64 {
        let t = Instant::now();
        while !cond(self) {
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "{what}: not within {secs}s; alerts {:?}\nprometheus log:\n{}",
                self.alerts(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        t.elapsed().as_secs_f64()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        transcribe(&self.log());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `docker pause qts-observer`, undone when dropped (a failing test still unpauses).
struct Paused;

impl Paused {
    fn pause() -> Paused {
        let r = sh("docker pause qts-observer");
        assert_eq!(r.code, 0, "{}", r.all());
        Paused
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let r = sh("docker unpause qts-observer");
        if r.code != 0 {
            eprintln!(
                "monitoring: docker unpause qts-observer failed:\n{}",
                r.all()
            );
        }
    }
}

/// When the rule `alert` was last evaluated (`/api/v1/rules`), if it was and is healthy.
fn last_evaluation(p: &Prometheus, alert: &str) -> Option<String> {
    let v = p.api("/api/v1/rules")?;
    v["data"]["groups"]
        .as_array()?
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .find(|r| r["name"] == alert && r["health"] == "ok")
        .and_then(|r| r["lastEvaluation"].as_str())
        .filter(|s| !s.starts_with("0001"))
        .map(str::to_string)
}

fn firing(p: &Prometheus, alert: &str) -> bool {
    p.state_of(alert).as_deref() == Some("firing")
}

/// The observer deployed to the sandbox, then the real Prometheus with the production rules:
/// the target up and ObserverArchiveStalled quiet (with its data present); `docker pause
/// qts-observer`; the alert fires (the scrape fails and the series go stale: the rule measures
/// from the last write it saw); unpaused, the alert resolves.
#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn monitoring_prometheus_sees_the_archive_stall_while_paused() {
    ensure_sandbox();
    prometheus_bin(); // fetched before the deploy: fail fast
    let c = Clone::new("monitoring");
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v, "--no-snapshot"]);
    assert_eq!(r.code, 0, "{}", r.all());

    let p = Prometheus::start();
    let t = p.wait("the observer target up", 60, |p| {
        p.query(r#"up{job="observer"} == 1"#).len() == 1
    });
    eprintln!("monitoring: target up after {t:.1}s");
    // The stall expression has its inputs (the age at the last scrape), and the rule has been
    // evaluated since: quiet for a reason, not vacuously.
    p.wait("the age of the last write scraped", 30, |p| {
        !p.query(
            r#"timestamp(up{job="observer"}) - on (job, instance) max_over_time(observer_last_write_timestamp_seconds{job="observer"}[1h])"#,
        )
        .is_empty()
    });
    let seen = last_evaluation(&p, "ObserverArchiveStalled");
    p.wait(
        "an evaluation of ObserverArchiveStalled after that",
        30,
        |p| {
            let now = last_evaluation(p, "ObserverArchiveStalled");
            now.is_some() && now != seen
        },
    );
    assert_eq!(
        p.state_of("ObserverArchiveStalled"),
        None,
        "stalled before the pause: {:?}",
        p.alerts()
    );

    let paused = Paused::pause();
    let t = p.wait("ObserverArchiveStalled firing while paused", 90, |p| {
        firing(p, "ObserverArchiveStalled")
    });
    eprintln!(
        "monitoring: ObserverArchiveStalled firing {t:.1}s after the pause; alerts {:?}",
        p.alerts()
    );
    drop(paused);
    let t = p.wait(
        "ObserverArchiveStalled resolved after the unpause",
        90,
        |p| !firing(p, "ObserverArchiveStalled"),
    );
    eprintln!("monitoring: resolved {t:.1}s after the unpause");
    let r = sh("docker inspect -f '{{.State.Status}}' qts-observer");
    assert_eq!(r.stdout.trim(), "running", "{}", r.all());
    drop(p);
}
