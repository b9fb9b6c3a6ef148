//! Issue 13 item 2: the incremental snapshot's scripts run here, on this machine's GNU tar,
//! zstd and find (through `sh -c`, as the server's shell would): a full snapshot, changes of
//! every kind, a delta on top of it, and the chain restored into an empty folder equals the
//! live tree.

use super::snapshot_routes::{have, sh};
use crate::server::q;
use crate::server::snapshot::{Access, Append, ArchiveInfo, Delta, Manifest};
use crate::server::snapshot_delta as sd;
use crate::server::snapshot_remote as sr;

fn manifest(id: &str, rb: &sr::ReadBack, delta: Delta) -> Manifest {
    Manifest {
        id: id.into(),
        created: String::new(),
        env: "sandbox".into(),
        server: "s".into(),
        version: String::new(),
        no_logs: false,
        archive: ArchiveInfo {
            file: format!("{id}.tar.zst"),
            size: rb.size,
            sha256: rb.sha256.clone(),
        },
        entries: rb.entries.clone(),
        partial_tails: rb.partial_tails.clone(),
        delta,
        state: None,
    }
}

#[test]
fn a_delta_on_a_full_snapshot_restores_the_live_tree() {
    if !have("zstd") || !sh("tar --version | grep -q 'GNU tar'").0 {
        eprintln!("skipping: no zstd or GNU tar here");
        return;
    }
    let base = std::env::temp_dir().join(format!(
        "snap-delta-{}-{}",
        std::process::id(),
        crate::core::util::random_hex(3).unwrap()
    ));
    let root = base.join("root it's");
    let backups = base.join("backups");
    std::fs::create_dir_all(&root).unwrap();
    let mut env = crate::config::test_env(root.to_str().unwrap(), "/tmp/r.git");
    env.backups_dir = backups.display().to_string();
    let r = q(root.to_str().unwrap());
    let setup = format!(
        "set -e; cd {r}; mkdir -p config/observer data logs .deploy; i=0; while [ $i -lt 300 ]; do printf '{{\"seq\":%d,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}}\\n' $i; i=$((i+1)); done > config/observer/observer.jsonl; printf '{{\"seq\":3' >> config/observer/observer.jsonl; head -c 100000 /dev/urandom > data/big; head -c 8192 /dev/zero | tr '\\0' A > data/rw; echo old > logs/old.log; echo v1 > .deploy/last_good_tag"
    );
    assert!(sh(&setup).0);
    let run = |script: String| {
        let (ok, out, err) = sh(&script);
        assert!(ok, "{err}\n{script}");
        out
    };
    // The full snapshot: its state from the scan and its own reply.
    let scanned = sd::parse_scan(&run(sd::scan(&env, false, true))).unwrap();
    let full_reply = run(sr::create(
        &env,
        false,
        "F.tar.zst.partial",
        &Access::Direct,
    ));
    std::fs::rename(backups.join("F.tar.zst.partial"), backups.join("F.tar.zst")).unwrap();
    let rb0 = sr::parse_read_back(&full_reply).unwrap();
    let state0 = sd::state_after(&[], &scanned, &rb0.entries, &rb0.windows, &[]);
    let mut full = manifest("F", &rb0, Delta::default());
    full.state = Some(state0.clone());
    assert_eq!(full.partial_tails.len(), 1, "{:?}", full.partial_tails);

    // Changes of every kind: the archive completes its torn line and grows (ending torn again),
    // a file rewritten in place at its size, one deleted, one new, a new folder.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let change = format!(
        "set -e; cd {r}; printf '00}}\\n{{\"seq\":301}}\\n{{\"seq\":30' >> config/observer/observer.jsonl; head -c 8192 /dev/zero | tr '\\0' B | dd of=data/rw conv=notrunc status=none; rm logs/old.log; mkdir data/new; echo n > data/new/file"
    );
    assert!(sh(&change).0);
    let scanned = sd::parse_scan(&run(sd::scan(&env, false, true))).unwrap();
    let plan = sd::plan(&state0, &scanned);
    assert_eq!(plan.unchanged, vec!["data/big", ".deploy/last_good_tag"]);
    assert_eq!(plan.removed, vec!["logs/old.log"]);
    let out = run(sd::create(
        &env,
        &plan,
        "D.tar.zst.partial",
        &Access::Direct,
    ));
    std::fs::rename(backups.join("D.tar.zst.partial"), backups.join("D.tar.zst")).unwrap();
    // The archive: only its appended bytes; the rewritten file: whole (its window changed).
    assert_eq!(sd::appended(&out), vec!["config/observer/observer.jsonl"]);
    assert!(out.contains("whole data/rw"), "{out}");
    let appends: Vec<Append> = plan
        .candidates
        .iter()
        .filter(|c| c.path == "config/observer/observer.jsonl")
        .map(|c| Append {
            path: c.path.clone(),
            offset: c.offset,
        })
        .collect();
    let rb1 = sr::parse_read_back(&run(sr::read_back(&env, "D.tar.zst"))).unwrap();
    // The create's own reply (its read-back, in the same round trip) is the same.
    assert_eq!(sr::parse_read_back(&out).ok(), Some(rb1.clone()), "{out}");
    let paths: Vec<&str> = rb1.entries.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&".xtask-append/config/observer/observer.jsonl"));
    assert!(paths.contains(&"data/rw") && paths.contains(&"data/new/file"));
    assert!(!paths.contains(&"data/big"), "{paths:?}");
    let state1 = sd::state_after(&state0, &scanned, &rb1.entries, &rb1.windows, &appends);
    let tails1 = sd::tails_after(
        &full.partial_tails,
        &state1,
        &rb1.entries,
        &rb1.partial_tails,
        &appends,
    );
    let live_size = std::fs::metadata(root.join("config/observer/observer.jsonl"))
        .unwrap()
        .len();
    let archive_state = state1
        .iter()
        .find(|s| s.path == "config/observer/observer.jsonl")
        .unwrap();
    assert_eq!(archive_state.size, live_size);
    let mut delta = manifest(
        "D",
        &rb1,
        Delta {
            parent: Some("F".into()),
            depth: 1,
            appends,
            removed: plan.removed.clone(),
        },
    );
    delta.partial_tails = tails1.clone();

    // The chain restored into an empty folder: the full snapshot, then the delta.
    let out_dir = base.join("restored");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut env2 = env.clone();
    env2.remote_dir = out_dir.display().to_string();
    run(sr::extract(
        &env,
        "F.tar.zst",
        &full.archive.sha256,
        &env2.remote_dir,
        &Access::Direct,
    ));
    run(sd::apply(&env2, &delta, &Access::Direct));
    let (same, diff, _) = sh(&format!(
        "diff -r {} {}",
        q(root.to_str().unwrap()),
        q(out_dir.to_str().unwrap())
    ));
    assert!(same, "{diff}");
    assert!(!out_dir.join(".xtask-append").exists());
    // The partial tail: the restore cuts the archive after its last whole line.
    let text = std::fs::read(root.join("config/observer/observer.jsonl")).unwrap();
    let last_nl = text.iter().rposition(|&b| b == b'\n').unwrap() as u64 + 1;
    assert_eq!(
        tails1
            .iter()
            .map(|t| (t.path.as_str(), t.keep_bytes))
            .collect::<Vec<_>>(),
        vec![("config/observer/observer.jsonl", last_nl)]
    );
    // Applied twice, the delta refuses (the archive's size is no longer its offset).
    let (ok, _, err) = sh(&sd::apply(&env2, &delta, &Access::Direct));
    assert!(!ok && err.contains("appends at"), "{err}");
    assert!(!out_dir.join(".xtask-append").exists());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_killed_creates_working_folders_are_found_by_age_and_removed() {
    let base = std::env::temp_dir().join(format!(
        "snap-work-{}-{}",
        std::process::id(),
        crate::core::util::random_hex(3).unwrap()
    ));
    let backups = base.join("backups");
    let mut env = crate::config::test_env(base.join("root").to_str().unwrap(), "/tmp/r.git");
    env.backups_dir = backups.display().to_string();
    let b = q(backups.to_str().unwrap());
    let setup = format!(
        "set -e; mkdir -p {b}/.delta.old01/.xtask-append {b}/.create.new01 {b}/.create.empty1; echo x > {b}/.delta.old01/.xtask-append/f; touch -d '2 hours ago' {b}/.delta.old01/.xtask-append/f {b}/.delta.old01/.xtask-append {b}/.delta.old01 {b}/.create.empty1; echo y > {b}/.create.new01/idx"
    );
    assert!(sh(&setup).0);
    let (ok, out, err) = sh(&crate::server::snapshot::prune_scan(&env));
    assert!(ok, "{err}");
    let mut p = crate::server::snapshot::parse_partials(&out);
    p.sort_by(|a, b| a.name.cmp(&b.name));
    let ages: Vec<(&str, bool)> = p
        .iter()
        .map(|p| (p.name.as_str(), p.age_s > 3600))
        .collect();
    assert_eq!(
        ages,
        vec![
            (".create.empty1", true),
            (".create.new01", false),
            (".delta.old01", true)
        ]
    );
    let (ok, _, err) = sh(&crate::server::snapshot::remove_files(
        &env,
        &[".delta.old01".to_string()],
    ));
    assert!(ok, "{err}");
    assert!(!backups.join(".delta.old01").exists() && backups.join(".create.new01").exists());
    let _ = std::fs::remove_dir_all(&base);
}
