//! End-to-end: benchmarks.

use crate::common::*;
#[allow(unused_imports)]
use crate::{deploy::*, release::*, sandbox::*, snapshot::*};
#[allow(unused_imports)]
use std::process::Command;

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn bench_smoke_all_produces_every_figure() {
    ensure_sandbox();
    // Benchmarks are commands: this only checks that every one still runs and reports.
    let r = xtask(&repo(), &["bench", "all", "--smoke", "--json"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gap", "overhead", "rollback", "snapshot", "build"]);
    for b in v.as_array().unwrap() {
        let rows = b["rows"].as_array().unwrap();
        assert!(!rows.is_empty());
        for row in rows {
            assert!(row["xtask"]["median"].is_number(), "{row}");
        }
        assert!(repo()
            .join(format!("target/bench/{}.json", b["name"].as_str().unwrap()))
            .is_file());
    }
    let conns = &v[1]["rows"][1]["xtask"]["median"];
    assert_eq!(conns.as_f64(), Some(1.0), "one SSH connection per deploy");
    assert_no_secret(&[&token()]);
}
