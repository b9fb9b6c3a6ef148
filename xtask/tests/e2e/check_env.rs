//! End-to-end: check-env.

use crate::common::*;
#[allow(unused_imports)]
use crate::{deploy::*, release::*, sandbox::*, snapshot::*};
#[allow(unused_imports)]
use std::process::Command;

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn check_env_clean_and_violations() {
    ensure_sandbox();
    let root = repo();
    let secret = format!("kis-secret-{}", unique());
    let clean = xtask(
        &root,
        &["check-env", "--env", "sandbox"],
        &[("KIS_API_KEY", &secret)],
    );
    assert_eq!(clean.code, 0, "{}", clean.all());
    assert!(clean.stdout.contains("secret KIS_API_KEY"));
    let json = xtask(
        &root,
        &["check-env", "--env", "sandbox", "--json"],
        &[("KIS_API_SECRET", &secret)],
    );
    assert_eq!(json.code, 0, "{}", json.all());
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);

    let forbidden = xtask(
        &root,
        &["check-env", "--env", "sandbox"],
        &[("OBSERVER_STANDALONE", "1")],
    );
    assert_eq!(forbidden.code, 1);
    assert!(forbidden.stdout.contains("FAIL  env OBSERVER_STANDALONE"));
    assert!(forbidden.stdout.contains("QTS_OBSERVER_STANDALONE"));

    let data = xtask(
        &root,
        &["check-env", "--env", "sandbox"],
        &[("OBSERVER_CONFIG_DIR", "/app/data/observer")],
    );
    assert_eq!(data.code, 1);
    assert!(
        data.stdout.contains("FAIL  path archive"),
        "{}",
        data.stdout
    );

    let tmp = std::env::temp_dir().join(format!("compose-{}", unique()));
    std::fs::create_dir_all(&tmp).unwrap();
    let compose =
        std::fs::read_to_string(root.join("app/obs_deploy/docker-compose.server.yml")).unwrap();
    let cases = [
        (
            "${IMAGE_TAG:?IMAGE_TAG required}",
            "${IMAGE_TAG:-latest}",
            "compose image guard",
        ),
        ("memory: 512M", "memory: 1G", "compose limits.memory"),
        ("cpus: \"0.5\"", "cpus: \"2\"", "compose reservations.cpus"),
        (
            "      - ./config:/app/config\n",
            "",
            "compose volume ./config",
        ),
    ];
    for (from, to, check) in cases {
        let f = tmp.join("compose.yml");
        assert!(compose.contains(from), "{from}");
        std::fs::write(&f, compose.replacen(from, to, 1)).unwrap();
        let r = xtask(
            &root,
            &[
                "check-env",
                "--env",
                "sandbox",
                "--compose",
                f.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(r.code, 1, "{check}: {}", r.all());
        assert!(
            r.stdout.contains(&format!("FAIL  {check}")),
            "{check}: {}",
            r.stdout
        );
    }
    let cfg = std::fs::read_to_string(root.join("app/obs_deploy/deployment_config.json")).unwrap();
    let f = tmp.join("config.json");
    std::fs::write(
        &f,
        cfg.replacen("\"keep_images\": 3,", "\"keep_imagez\": 3,", 1),
    )
    .unwrap();
    let r = xtask(
        &root,
        &[
            "check-env",
            "--env",
            "sandbox",
            "--config",
            f.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("keep_imagez"), "{}", r.stderr);
    let r = xtask(&root, &["check-env", "--env", "nope"], &[]);
    assert_eq!(r.code, 2, "{}", r.all());
    let _ = std::fs::remove_dir_all(&tmp);
    assert_no_secret(&[&secret, &token()]);
}
