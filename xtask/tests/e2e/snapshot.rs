//! End-to-end: snapshot.

use crate::common::*;
#[allow(unused_imports)]
use crate::{deploy::*, release::*, sandbox::*};
#[allow(unused_imports)]
use std::process::Command;

pub fn backups_dir() -> std::path::PathBuf {
    sandbox_dir().join("server/backups")
}

pub fn snapshot_ids() -> Vec<(String, String)> {
    let r = xtask(
        &repo(),
        &["snapshot", "list", "--env", "sandbox", "--json"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A running observer (deployed once) to snapshot.
pub fn deployed(c: &Clone) -> String {
    let v = version();
    assert_eq!(c.xtask(&["release", &v, "--env", "sandbox"]).code, 0);
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("==> Pre-deploy snapshot"), "{}", r.stderr);
    v
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn snapshot_round_trip_verify_restore() {
    ensure_sandbox();
    let c = Clone::new("snap");
    let v = deployed(&c);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let r = c.xtask(&["snapshot", "create", "--env", "sandbox", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let made: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["version"], v.as_str());
    assert!(snapshot_ids().contains(&(id.clone(), "valid".into())));

    // Standard tools read it: sha256sum -c, and GNU tar with zstd.
    let b = backups_dir();
    let r = sh(&format!(
        "cd '{}' && sha256sum -c {id}.tar.zst.sha256",
        b.display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    let out = std::env::temp_dir().join(format!("snap-x-{}", unique()));
    std::fs::create_dir_all(&out).unwrap();
    let r = sh(&format!(
        "tar --zstd -xf '{}/{id}.tar.zst' -C '{}'",
        b.display(),
        out.display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!out.join(".env").exists(), "secrets stay out of backups");
    // Every file extracted by GNU tar is byte-identical to the manifest.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(b.join(format!("{id}.manifest.json"))).unwrap(),
    )
    .unwrap();
    let mut files = 0;
    for e in manifest["entries"].as_array().unwrap() {
        if e["type"] == "file" {
            let p = out.join(e["path"].as_str().unwrap());
            let sum = sh(&format!("sha256sum '{}' | cut -d' ' -f1", p.display()));
            assert_eq!(
                sum.stdout.trim(),
                e["sha256"].as_str().unwrap(),
                "{}",
                e["path"]
            );
            files += 1;
        }
    }
    assert!(files >= 3, "config, logs and .deploy files: {manifest}");
    assert!(out.join("config/observer/observer.jsonl").is_file());
    let _ = std::fs::remove_dir_all(&out);

    let r = c.xtask(&["snapshot", "verify", &id, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = c.xtask(&["snapshot", "restore", &id, "--env", "sandbox"]);
    assert_eq!(
        r.code,
        2,
        "restore needs --yes when not interactive: {}",
        r.all()
    );

    // An operation recorded after the snapshot was taken: the restore keeps the audit trail.
    let hist = server_dir().join(".deploy/history.jsonl");
    let marker = format!(
        r#"{{"kind":"deploy","version":"{v}","outcome":"failed","who":"e2e-after-snapshot-{}"}}"#,
        unique()
    );
    let mut text = std::fs::read_to_string(&hist).unwrap();
    text.push_str(&marker);
    text.push('\n');
    std::fs::write(&hist, text).unwrap();

    // Restore while the observer writes: the archive parses line by line afterwards.
    let r = c.xtask(&["snapshot", "restore", &id, "--env", "sandbox", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let after = std::fs::read_to_string(&hist).unwrap();
    assert!(
        after.lines().any(|l| l == marker),
        "the history recorded after the snapshot survives the restore: {after}"
    );
    let last: serde_json::Value = serde_json::from_str(after.lines().last().unwrap()).unwrap();
    assert_eq!(last["kind"], "restore", "{after}");
    assert_eq!(running_version().0, v);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let lines = archive_lines();
    assert!(!lines.is_empty());
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("corrupt line {l:?}: {e}"));
    }
    assert!(
        r.stderr.contains(".restore-undo/"),
        "the undo location is printed: {}",
        r.stderr
    );

    // One flipped byte: verify and restore refuse, nothing changes.
    let r = c.xtask(&["snapshot", "create", "--env", "sandbox", "--json"]);
    let id2 = serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let f = b.join(format!("{id2}.tar.zst"));
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&f, bytes).unwrap();
    let r = c.xtask(&["snapshot", "verify", &id2, "--env", "sandbox"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let before = running_version();
    let r = c.xtask(&["snapshot", "restore", &id2, "--env", "sandbox", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(
        running_version(),
        before,
        "a refused restore touches nothing"
    );
    std::fs::remove_file(&f).unwrap();

    // `rollback --restore`: back to the state (and version) from before the last deploy.
    let v2 = deployed(&c);
    assert_eq!(running_version().0, v2);
    let r = c.xtask(&["rollback", "--restore", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(running_version().0, v, "the snapshot's version runs again");

    // Download and prune.
    let dl = std::env::temp_dir().join(format!("snap-dl-{}", unique()));
    let r = c.xtask(&[
        "snapshot",
        "download",
        &id,
        "--env",
        "sandbox",
        "--to",
        dl.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(dl.join(format!("{id}.manifest.json")).is_file());
    let _ = std::fs::remove_dir_all(&dl);
    let r = c.xtask(&["snapshot", "prune", "--keep", "1", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // `--keep 1` keeps the newest snapshot and, when it is incremental, the
    // parents it is restored from; nothing else that is valid stays.
    let r = c.xtask(&["snapshot", "list", "--env", "sandbox", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let listed: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    let valid: Vec<&serde_json::Value> = listed.iter().filter(|s| s["state"] == "valid").collect();
    let newest = valid
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .max()
        .unwrap();
    let mut chain = vec![newest.to_string()];
    while let Some(p) = valid
        .iter()
        .find(|s| s["id"] == chain.last().unwrap().as_str())
        .and_then(|s| s["parent"].as_str())
    {
        chain.push(p.to_string());
    }
    let mut kept: Vec<String> = valid
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    kept.sort();
    chain.sort();
    assert_eq!(
        kept, chain,
        "prune --keep 1 keeps the newest and its ancestors only"
    );
    assert_no_secret(&[&token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn snapshot_restore_refuses_hostile_archives() {
    ensure_sandbox();
    let c = Clone::new("hostile-snap");
    deployed(&c);
    let before = running_version();
    let b = backups_dir();
    let marker = format!("evil-{}", unique());
    let cases = [
        ("dotdot", format!("t.addfile(info('../../../{marker}'), io.BytesIO(b'x'))")),
        ("absolute", format!("t.addfile(info('/tmp/{marker}'), io.BytesIO(b'x'))")),
        ("symlink", "i = info('config/etc'); i.type = tarfile.SYMTYPE; i.linkname = '/etc'; t.addfile(i)".to_string()),
        ("hardlink", "i = info('config/h'); i.type = tarfile.LNKTYPE; i.linkname = '../../outside'; t.addfile(i)".to_string()),
        ("device", "i = info('config/null'); i.type = tarfile.CHRTYPE; t.addfile(i)".to_string()),
    ];
    for (name, add) in cases {
        let id = format!("hostile-{name}-{}", unique());
        let py = format!(
            "import io, tarfile, hashlib, json, subprocess, os\n\
def info(n):\n    i = tarfile.TarInfo(n); i.size = 1 if not n.startswith('config/') else 0; return i\n\
with tarfile.open('{b}/{id}.tar', 'w', format=tarfile.GNU_FORMAT) as t:\n    {add}\n    t.addfile(info('config/ok'), io.BytesIO(b''))\n\
subprocess.run(['zstd', '-q', '--rm', '-f', '{b}/{id}.tar'], check=True)\n\
data = open('{b}/{id}.tar.zst', 'rb').read()\n\
m = {{'id': '{id}', 'created': 'x', 'env': 'sandbox', 'server': 's', 'version': '', 'no_logs': False,\n\
     'archive': {{'file': '{id}.tar.zst', 'size': len(data), 'sha256': hashlib.sha256(data).hexdigest()}},\n\
     'entries': [], 'partial_tails': []}}\n\
json.dump(m, open('{b}/{id}.manifest.json', 'w'))\n",
            b = b.display()
        );
        let r = run(Command::new("python3").arg("-c").arg(&py));
        assert_eq!(r.code, 0, "{name}: {}", r.all());
        let r = c.xtask(&["snapshot", "restore", &id, "--env", "sandbox", "--yes"]);
        assert_eq!(r.code, 1, "{name}: {}", r.all());
        assert!(
            r.stderr.contains("unsafe archive entry"),
            "{name}: {}",
            r.stderr
        );
        assert!(
            !server_dir().join("config/ok").exists(),
            "{name}: nothing may be extracted"
        );
        sh(&format!("rm -f '{}'/{id}.*", b.display()));
    }
    assert_eq!(running_version(), before);
    for p in [
        format!("/tmp/{marker}"),
        sandbox_dir().join("..").join(&marker).display().to_string(),
    ] {
        assert!(!std::path::Path::new(&p).exists(), "{p} was written");
    }
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn snapshot_full_disk_fails_cleanly() {
    ensure_sandbox();
    let b = backups_dir();
    let m = sh(&format!(
        "mount -t tmpfs -o size=1m observer-test-full '{}'",
        b.display()
    ));
    if m.code != 0 {
        eprintln!(
            "skipping: cannot mount a tmpfs here (not root?): {}",
            m.all()
        );
        return;
    }
    // Incompressible data larger than the filesystem.
    let data = server_dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    sh(&format!(
        "head -c 3000000 /dev/urandom > '{}/noise.bin'",
        data.display()
    ));
    let r = xtask(&repo(), &["snapshot", "create", "--env", "sandbox"], &[]);
    let listing = sh(&format!("ls -A '{}'", b.display()));
    let ids = snapshot_ids();
    sh(&format!("umount '{}'", b.display()));
    let _ = std::fs::remove_file(data.join("noise.bin"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("partial file was removed"),
        "{}",
        r.stderr
    );
    assert_eq!(
        listing.stdout.trim(),
        "",
        "nothing may be left behind: {}",
        listing.stdout
    );
    assert!(ids.is_empty(), "{ids:?}");
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn snapshot_memory_stays_bounded_for_1_gib() {
    ensure_sandbox();
    let data = server_dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let big = data.join("big.jsonl");
    let r = sh(&format!(
        "yes '{{\"ts\":\"2026-11-28T21:00:00.000Z\",\"seq\":123456,\"instance\":\"0123456789abcdef\",\"version\":\"v1.2.3\"}}' | head -c 1073741824 > '{}'",
        big.display()
    ));
    assert_eq!(r.code, 0);
    // Peak resident memory of the xtask process itself (GNU time), not a timing.
    let r = run(Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kib=%M"])
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(["snapshot", "create", "--env", "sandbox", "--json"])
        .env("XTASK_SANDBOX_DIR", sandbox_dir()));
    let _ = std::fs::remove_file(&big);
    assert_eq!(r.code, 0, "{}", r.all());
    let kib: u64 = r
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("peak RSS for a 1 GiB snapshot: {} MiB", kib / 1024);
    assert!(kib < 100 * 1024, "peak RSS {kib} KiB for 1 GiB of data");
    let id = serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = xtask(
        &repo(),
        &["snapshot", "verify", &id, "--env", "sandbox"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
}

/// The snapshot id the last history record names.
fn last_snapshot() -> String {
    let text = std::fs::read_to_string(server_dir().join(".deploy/history.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    v["snapshot"].as_str().unwrap_or_default().to_string()
}

/// Issue 12 item 5: deploys and rollbacks prune the backups folder to `keep_snapshots` (5 on the
/// sandbox) valid snapshots, never the one `rollback --restore` needs, and remove partial files
/// idle for longer than `lock_ttl_s` (600 s) while a fresh one (a create in progress) stays.
#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn snapshot_deploys_prune_to_keep_snapshots() {
    ensure_sandbox();
    let c = Clone::new("prune");
    let (a, b) = (version(), version());
    for v in [&a, &b] {
        let r = c.xtask(&["release", v, "--env", "sandbox"]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    // Four deploys (a, b, a, b): four pre-deploy snapshots, each deploy pruning.
    let mut taken = Vec::new();
    for (v, extra) in [
        (&a, None),
        (&b, None),
        (&a, Some("--allow-downgrade")),
        (&b, None),
    ] {
        let mut args = vec!["deploy", "--env", "sandbox", "--tag", v.as_str()];
        args.extend(extra);
        let r = c.xtask(&args);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(r.stderr.contains("==> Prune snapshots"), "{}", r.stderr);
        taken.push(last_snapshot());
        // Five, and the parents incremental ones among them need (issue 13 item 2).
        let valid = snapshot_ids().iter().filter(|(_, s)| s == "valid").count();
        assert!(valid <= 5 + 8, "{valid} valid snapshots after a deploy");
        crate::snapshot_delta::chains_complete();
    }
    // Three more by hand (snapshot create does not prune; full ones), and what killed creates
    // leave.
    let mut by_hand = Vec::new();
    for _ in 0..3 {
        let r = c.xtask(&["snapshot", "create", "--env", "sandbox", "--json"]);
        assert_eq!(r.code, 0, "{}", r.all());
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        by_hand.push(v["id"].as_str().unwrap().to_string());
    }
    let b_dir = backups_dir();
    let stale = "20000101T000000Z-dead01.tar.zst.partial";
    let stale_tmp = "20000101T000000Z-dead02.manifest.json.tmp";
    let fresh = "20000101T000000Z-live01.tar.zst.partial";
    for f in [stale, stale_tmp, fresh] {
        std::fs::write(b_dir.join(f), b"partial").unwrap();
    }
    let r = sh(&format!(
        "cd '{}' && touch -d '2 hours ago' {stale} {stale_tmp}",
        b_dir.display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    // A rollback (to a, through the same rollout): its own snapshot, and the one taken before a
    // was last deployed (the third deploy's) are protected; the fourth's is not among them.
    let r = c.xtask(&["rollback", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(running_version().0, a);
    let own = last_snapshot();
    let valid: Vec<String> = snapshot_ids()
        .into_iter()
        .filter(|(_, s)| s == "valid")
        .map(|(id, _)| id)
        .collect();
    // keep_snapshots (5): the two protected ones and the three newest (made by hand), and
    // every parent an incremental one among them needs.
    let mut want: Vec<String> = vec![own.clone(), taken[2].clone()];
    want.extend(by_hand.iter().cloned());
    let mut i = 0;
    while i < want.len() {
        if let Some(p) = crate::snapshot_delta::parent_of(&want[i]) {
            if !want.contains(&p) {
                want.push(p);
            }
        }
        i += 1;
    }
    let (mut got, mut want) = (valid.clone(), want);
    got.sort();
    want.sort();
    assert_eq!(got, want, "keep_snapshots valid and their parents");
    assert!(
        valid.contains(&own),
        "the rollback's own snapshot {own}: {valid:?}"
    );
    assert!(
        valid.contains(&taken[2]),
        "the snapshot `rollback --restore` needs ({}): {valid:?}",
        taken[2]
    );
    assert!(
        !valid.contains(&taken[3]),
        "the fourth deploy's snapshot is neither protected nor among the newest"
    );
    let r = c.xtask(&["rollback", "--env", "sandbox", "--restore", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.all()
            .contains(&format!("would restore snapshot {}", taken[2])),
        "{}",
        r.all()
    );
    assert!(!b_dir.join(stale).exists(), "a stale partial stays");
    assert!(
        !b_dir.join(stale_tmp).exists(),
        "a stale manifest .tmp stays"
    );
    assert!(b_dir.join(fresh).exists(), "a fresh partial was removed");
    let _ = std::fs::remove_file(b_dir.join(fresh));
    // `snapshot prune` by hand follows the same rule.
    let r = c.xtask(&["snapshot", "prune", "--env", "sandbox", "--keep", "1"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let valid: Vec<String> = snapshot_ids()
        .into_iter()
        .filter(|(_, s)| s == "valid")
        .map(|(id, _)| id)
        .collect();
    assert!(valid.contains(&taken[2]), "{valid:?}");
}
