//! e2e (issue 15): the audit trail (`history`), the resolved configuration (`config`), the
//! maintenance window (`lock acquire -m`) and `deploy --lock-wait`, `-q`/`-v`, and the
//! deploy-outcome textfile on the server after a deploy and after a rollback.

use crate::common::*;
use crate::deploy::server_dir;
use crate::release::version;

fn textfile() -> String {
    std::fs::read_to_string(server_dir().join(".deploy/metrics/observer_deploy.prom"))
        .unwrap_or_default()
}

/// The value of the textfile's sample line starting with `series` (labels included).
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')
            .map(str::to_string)
    })
}

fn history_json(c: &Clone) -> Vec<serde_json::Value> {
    let r = c.xtask(&["history", "--env", "sandbox", "--json", "-n", "5"]);
    assert_eq!(r.code, 0, "{}", r.all());
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn rollbacks_in_history() -> usize {
    std::fs::read_to_string(server_dir().join(".deploy/history.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("{\"kind\":\"rollback\""))
        .count()
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn history_maintenance_lock_wait_and_the_textfile() {
    ensure_sandbox();
    let c = Clone::new("history");
    let (v1, v2) = (version(), version());
    for v in [&v1, &v2] {
        let r = c.xtask(&["release", v, "--env", "sandbox"]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let revision = c.git("rev-parse --short HEAD").stdout.trim().to_string();

    // -q: only the result (no step headers, no progress).
    let r = c.xtask(&["-q", "deploy", "--env", "sandbox", "--tag", &v1]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stderr.contains("==>"), "-q printed steps:\n{}", r.stderr);
    assert!(
        r.stderr.trim().ends_with("healthy") || r.stderr.contains(&format!("deploy {v1} to")),
        "{}",
        r.stderr
    );
    let t = textfile();
    assert_eq!(
        sample(
            &t,
            &format!("observer_deploy_last_success{{kind=\"deploy\",version=\"{v1}\"}}")
        ),
        Some("1".into()),
        "{t}"
    );
    assert_eq!(
        sample(&t, "observer_deploy_last_rolled_back"),
        Some("0".into())
    );

    // A maintenance window refuses a deploy, naming its message and holder.
    let msg = format!("disk swap {}", unique());
    let r = c.xtask(&["lock", "acquire", "-m", &msg, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v2]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(&msg) && r.stderr.contains("maintenance"),
        "{}",
        r.all()
    );
    let st = c.xtask(&["lock", "status", "--env", "sandbox"]);
    assert!(st.stdout.contains(&msg), "{}", st.all());
    let r = c.xtask(&["lock", "release", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(c
        .xtask(&["lock", "status", "--env", "sandbox"])
        .stdout
        .contains("free"));

    // --lock-wait: a window closed by another process meanwhile; -v prints the scripts.
    let r = c.xtask(&["lock", "acquire", "-m", &msg, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let xt = env!("CARGO_BIN_EXE_xtask");
    let log = std::env::temp_dir().join(format!("xtask-e2e-release-{}.log", unique()));
    let releaser = spawn_logged(
        {
            let mut cmd = xtask_cmd("sh", &c.dir, &[], &[]);
            cmd.arg("-c")
                .arg(format!("sleep 4; '{xt}' lock release --env sandbox"));
            cmd
        },
        &log,
    );
    let r = c.xtask(&[
        "-v",
        "deploy",
        "--env",
        "sandbox",
        "--tag",
        &v2,
        "--lock-wait",
        "120",
    ]);
    let (code, rel) = finish_xtask(releaser, &log);
    assert_eq!(code, 0, "{rel}");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("waiting up to 120s"), "{}", r.stderr);
    assert!(
        r.stderr.contains("    $ [sandbox-vm] ") && r.stderr.contains("history.jsonl"),
        "-v shows no script:\n{}",
        r.stderr
    );

    // The audit trail, newest first, with who, from where, the tool and the outcome.
    let h = history_json(&c);
    assert_eq!(h[0]["kind"], "deploy");
    assert_eq!(h[0]["version"], v2.as_str());
    assert_eq!(h[1]["version"], v1.as_str());
    for rec in &h[..2] {
        assert_eq!(rec["outcome"], "success", "{rec}");
        assert!(!rec["who"].as_str().unwrap().is_empty(), "{rec}");
        assert!(!rec["host"].as_str().unwrap().is_empty(), "{rec}");
        assert_eq!(rec["tool_version"], env!("CARGO_PKG_VERSION"), "{rec}");
        assert!(
            rec["tool_revision"]
                .as_str()
                .unwrap()
                .starts_with(&revision),
            "{rec} vs {revision}"
        );
        assert!(rec["duration_s"].as_f64().unwrap() > 0.0, "{rec}");
    }
    let r = c.xtask(&["history", "--env", "sandbox", "-n", "2"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(
        lines[0].starts_with("WHEN") && lines[0].contains("WHO"),
        "{}",
        r.stdout
    );
    assert!(
        lines[1].contains(&v2) && lines[1].contains(&revision),
        "{}",
        r.stdout
    );
    assert!(
        lines[2].contains(&v1) && lines[2].contains("success"),
        "{}",
        r.stdout
    );

    // A rollback: in the history, and the textfile's last outcome.
    let r = c.xtask(&["rollback", "--env", "sandbox", "--to", &v1]);
    assert_eq!(r.code, 0, "{}", r.all());
    let h = history_json(&c);
    assert_eq!(
        (h[0]["kind"].as_str(), h[0]["version"].as_str()),
        (Some("rollback"), Some(v1.as_str()))
    );
    let t = textfile();
    assert_eq!(
        sample(
            &t,
            &format!("observer_deploy_last_success{{kind=\"rollback\",version=\"{v1}\"}}")
        ),
        Some("1".into()),
        "{t}"
    );
    assert_eq!(
        sample(&t, "observer_deploy_last_rolled_back"),
        Some("0".into()),
        "{t}"
    );
    assert_eq!(
        sample(&t, "observer_deploy_rollbacks_total"),
        Some(rollbacks_in_history().to_string()),
        "{t}"
    );
    let ts: u64 = sample(
        &t,
        "observer_deploy_last_timestamp_seconds{kind=\"rollback\"}",
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!(ts > 1_700_000_000, "{t}");
    assert!(sample(
        &t,
        "observer_deploy_last_duration_seconds{kind=\"rollback\"}"
    )
    .is_some());
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn config_shows_sources_and_masks_secrets() {
    ensure_sandbox();
    let secret = format!("kis-secret-{}", unique());
    let envs = [
        ("SANDBOX_KIS_API_KEY", secret.as_str()),
        ("PYTHONPATH", "/e2e/py"),
    ];
    let r = xtask(&repo(), &["config", "--env", "sandbox"], &envs);
    assert_eq!(r.code, 0, "{}", r.all());
    let line = |k: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("no {k}:\n{}", r.stdout))
            .to_string()
    };
    assert!(line("secret KIS_API_KEY").contains("set (optional)"));
    assert!(line("secret KIS_API_KEY").contains("env var SANDBOX_KIS_API_KEY"));
    assert!(line("secret KIS_API_SECRET").contains("unset"));
    assert!(line("environment.PYTHONPATH").contains("env var PYTHONPATH"));
    assert!(line("host_port").contains("deployment_config.json"));
    assert!(line("remote_dir").contains("sandbox state"));
    let r = xtask(&repo(), &["config", "--env", "sandbox", "--json"], &envs);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let values = v["values"].as_array().unwrap();
    let get = |k: &str| values.iter().find(|x| x["key"] == k).unwrap().clone();
    assert_eq!(
        get("secret KIS_API_KEY")["source"],
        "env var SANDBOX_KIS_API_KEY"
    );
    assert_eq!(get("environment.PYTHONPATH")["value"], "/e2e/py");
    assert_eq!(get("soak_s")["source"], "default");
    assert_no_secret(&[&secret]);
}
