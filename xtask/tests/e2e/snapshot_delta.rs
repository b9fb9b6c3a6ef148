//! End-to-end: incremental snapshots (issue 13 item 2). A deploy's pre-deploy snapshot stores
//! what changed since the previous one (the archive's appended bytes, changed files whole), a
//! chain verifies and restores whole, a corrupt parent fails its children, prune keeps chains.

use crate::common::*;
use crate::deploy::*;
use crate::release::version;
use crate::snapshot::*;
use std::path::Path;

fn manifest(id: &str) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(backups_dir().join(format!("{id}.manifest.json"))).unwrap(),
    )
    .unwrap()
}

fn entry_paths(m: &serde_json::Value) -> Vec<String> {
    m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

fn created(r: &Run) -> String {
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn sha(p: &Path) -> String {
    let r = sh(&format!("sha256sum '{}'", p.display()));
    assert_eq!(r.code, 0, "{}", r.all());
    r.stdout.split(' ').next().unwrap().to_string()
}

/// The snapshot the latest successful deploy recorded (what `rollback --restore` restores and
/// prune protects); later records (a restore's, a rollback's) are passed over.
pub fn last_deploy_snapshot() -> String {
    let text = std::fs::read_to_string(server_dir().join(".deploy/history.jsonl")).unwrap();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == "deploy" && v["outcome"] == "success")
        .and_then(|v| v["snapshot"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The parent an incremental snapshot records (`None`: full, or no manifest).
pub fn parent_of(id: &str) -> Option<String> {
    let text = std::fs::read_to_string(backups_dir().join(format!("{id}.manifest.json"))).ok()?;
    let m: serde_json::Value = serde_json::from_str(&text).ok()?;
    m["parent"].as_str().map(str::to_string)
}

/// Every valid snapshot's parent is valid too (prune never breaks a chain).
pub fn chains_complete() {
    let valid: Vec<String> = snapshot_ids()
        .into_iter()
        .filter(|(_, s)| s == "valid")
        .map(|(id, _)| id)
        .collect();
    for id in &valid {
        if let Some(p) = manifest(id)["parent"].as_str() {
            assert!(valid.iter().any(|v| v == p), "{id}'s parent {p} is gone");
        }
    }
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn snapshot_deltas_store_what_changed_and_restore_whole() {
    ensure_sandbox();
    let c = Clone::new("delta");
    let (a, b) = (version(), version());
    for v in [&a, &b] {
        let r = c.xtask(&["release", v, "--env", "sandbox"]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &a]);
    assert_eq!(r.code, 0, "{}", r.all());
    let root = server_dir();
    // 8 MiB that never changes, a file rewritten in place at the same size, a log to delete.
    let r = sh(&format!(
        "cd '{}' && rm -f data/new.bin && head -c 8388608 /dev/urandom > data/big.bin && head -c 8192 /dev/zero | tr '\\0' A > data/rewritten.bin && echo old > logs/old.log",
        root.display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    let big = sha(&root.join("data/big.bin"));
    let full = created(&c.xtask(&["snapshot", "create", "--env", "sandbox", "--json"]));
    let mf = manifest(&full);
    assert!(mf["parent"].is_null() && mf["state"].is_array(), "{mf}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = sh(&format!(
        "cd '{}' && head -c 8192 /dev/zero | tr '\\0' B | dd of=data/rewritten.bin conv=notrunc status=none && rm logs/old.log && echo new > data/new.bin",
        root.display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = c.xtask(&[
        "snapshot",
        "create",
        "--incremental",
        "--env",
        "sandbox",
        "--json",
    ]);
    let d1 = created(&r);
    let m1 = manifest(&d1);
    assert_eq!(m1["parent"], full.as_str(), "{m1}");
    assert_eq!(m1["depth"], 1);
    let paths = entry_paths(&m1);
    assert!(
        paths.contains(&".xtask-append/config/observer/observer.jsonl".to_string()),
        "the archive's appended bytes: {paths:?}"
    );
    assert!(!paths.iter().any(|p| p == "data/big.bin"), "{paths:?}");
    assert!(paths.iter().any(|p| p == "data/rewritten.bin"), "{paths:?}");
    assert!(paths.iter().any(|p| p == "data/new.bin"), "{paths:?}");
    assert!(
        m1["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "logs/old.log"),
        "{m1}"
    );
    let (full_size, d1_size) = (
        mf["archive"]["size"].as_u64().unwrap(),
        m1["archive"]["size"].as_u64().unwrap(),
    );
    assert!(
        full_size > 8_000_000 && d1_size < 256 * 1024,
        "{full_size} / {d1_size}"
    );

    // The deploy's pre-deploy snapshot is a delta on that one.
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &b]);
    assert_eq!(r.code, 0, "{}", r.all());
    let d2 = last_deploy_snapshot();
    assert_eq!(manifest(&d2)["parent"], d1.as_str(), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("incremental on {d1}")),
        "{}",
        r.stderr
    );
    let live = sandbox_dir().join("delta-live.jsonl");
    std::fs::copy(root.join("config/observer/observer.jsonl"), &live).unwrap();

    let r = c.xtask(&["snapshot", "verify", &d2, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("{full} <- {d1} <- {d2}")),
        "{}",
        r.stdout
    );

    // A changed byte in the chain's full snapshot: its children fail, naming it; nothing moves.
    let f = backups_dir().join(format!("{full}.tar.zst"));
    let good = std::fs::read(&f).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&f, &bad).unwrap();
    let r = c.xtask(&["snapshot", "verify", &d2, "--env", "sandbox"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(&format!("a parent of {d2}")),
        "{}",
        r.stderr
    );
    let before = running_version();
    let r = c.xtask(&["snapshot", "restore", &d2, "--env", "sandbox", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(
        running_version(),
        before,
        "a refused restore stopped something"
    );
    std::fs::write(&f, &good).unwrap();

    // The chain restores whole: the full snapshot, then each delta.
    let r = c.xtask(&["snapshot", "restore", &d2, "--env", "sandbox", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        running_version().0,
        a,
        "the version recorded before b's deploy"
    );
    assert_eq!(sha(&root.join("data/big.bin")), big);
    let rewritten = std::fs::read(root.join("data/rewritten.bin")).unwrap();
    assert!(rewritten.len() == 8192 && rewritten.iter().all(|&c| c == b'B'));
    assert!(!root.join("logs/old.log").exists());
    assert!(root.join("data/new.bin").exists());
    assert!(!root.join(".xtask-append").exists());
    // The archive as the pre-deploy snapshot caught it (cut at its last whole line), then
    // what the restored service appended.
    let m2 = manifest(&d2);
    let path = "config/observer/observer.jsonl";
    let size = m2["state"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == path)
        .unwrap()["size"]
        .as_u64()
        .unwrap();
    let keep = m2["partial_tails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == path)
        .map_or(size, |t| t["keep_bytes"].as_u64().unwrap()) as usize;
    let restored = std::fs::read(root.join(path)).unwrap();
    let then = std::fs::read(&live).unwrap();
    assert!(keep > 0 && restored.len() >= keep && then.len() >= keep);
    assert_eq!(
        &restored[..keep],
        &then[..keep],
        "the restored archive's prefix"
    );
    for l in archive_lines() {
        serde_json::from_str::<serde_json::Value>(&l)
            .unwrap_or_else(|e| panic!("corrupt line {l:?}: {e}"));
    }
    let _ = std::fs::remove_file(&live);

    // Prune never deletes a parent a kept snapshot needs.
    let r = c.xtask(&["snapshot", "prune", "--keep", "1", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    chains_complete();
    let _ = sh(&format!(
        "cd '{}' && rm -f data/big.bin data/rewritten.bin data/new.bin",
        root.display()
    ));
}
