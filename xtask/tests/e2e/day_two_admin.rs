//! End-to-end (issue 15): `prune` and `setup` against the sandbox server.
//!
//! `prune --dry-run` lists what `prune` then removes, and removes nothing (the repository's
//! images and the backups folder compared before and after); `prune` removes the images beyond
//! `keep_images` (3) and the snapshots beyond `keep_snapshots` (5) but keeps the running version,
//! the last good one and the snapshot `rollback --restore` would pick. `setup` creates a fresh
//! deploy root and backups folder, then finds nothing to do; as the non-root deploy user under a
//! root-owned folder it names what `scripts/provision-server.sh` must do and changes nothing,
//! and after that script ran as root it is ready.

use crate::common::*;
use crate::deploy::{running_version, server_dir};
use crate::release::version;
use crate::snapshot::backups_dir;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `docker images` of the sandbox repository: `TAG ID` lines, sorted.
fn repo_images() -> BTreeSet<String> {
    let r = sh(&format!(
        "docker images --format '{{{{.Tag}}}} {{{{.ID}}}}' '{}/observer'",
        registry()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    r.stdout.lines().map(str::to_string).collect()
}

fn has_image(tag: &str) -> bool {
    repo_images()
        .iter()
        .any(|l| l.split(' ').next() == Some(tag))
}

/// The backups folder's names.
fn backup_files() -> BTreeSet<String> {
    std::fs::read_dir(backups_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The names a prune's output lists after `verb` (`would remove` or `removed`), with the kind.
fn listed(out: &str, verb: &str) -> BTreeSet<(String, String)> {
    out.lines()
        .filter_map(|l| l.strip_prefix(verb))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// A new image of the repository tagged `tag`, made from `from` (a distinct image id and a
/// creation time of its own).
fn fake_image(from: &str, tag: &str) {
    let repo = format!("{}/observer", registry());
    let r = sh(&format!(
        "set -e; c=$(docker create '{repo}:{from}'); docker commit -c 'LABEL e2e.admin={tag}' \"$c\" '{repo}:{tag}' >/dev/null; docker rm \"$c\" >/dev/null; sleep 1.1"
    ));
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn prune_dry_run_lists_then_prune_keeps_running_last_good_and_restore_target() {
    ensure_sandbox();
    let c = Clone::new("admin-prune");
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(running_version().0, v);
    // The snapshot `rollback --restore` would pick while v runs: its deploy's.
    let hist = std::fs::read_to_string(server_dir().join(".deploy/history.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(hist.lines().last().unwrap()).unwrap();
    assert_eq!(last["version"], v.as_str());
    let target = last["snapshot"].as_str().unwrap().to_string();
    assert!(!target.is_empty(), "the deploy took no snapshot: {last}");

    // Five newer images than the running one; the oldest of them recorded as last good.
    let fakes: Vec<String> = (0..5).map(|_| version()).collect();
    for f in &fakes {
        fake_image(&v, f);
    }
    let lg_file = server_dir().join(".deploy/last_good_tag");
    let lg_before = std::fs::read_to_string(&lg_file).unwrap();
    std::fs::write(&lg_file, format!("{} sha256:0\n", fakes[0])).unwrap();
    // Five snapshots by hand (newer than the target), a stale partial file and a fresh one.
    let mut by_hand = Vec::new();
    for _ in 0..5 {
        let r = c.xtask(&["snapshot", "create", "--env", "sandbox", "--json"]);
        assert_eq!(r.code, 0, "{}", r.all());
        let s: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        by_hand.push(s["id"].as_str().unwrap().to_string());
    }
    let stale = "20000101T000000Z-admin1.tar.zst.partial";
    let fresh = "20000101T000000Z-admin2.tar.zst.partial";
    for f in [stale, fresh] {
        std::fs::write(backups_dir().join(f), b"partial").unwrap();
    }
    let r = sh(&format!(
        "touch -d '2 hours ago' '{}'",
        backups_dir().join(stale).display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());

    // --dry-run: lists, removes nothing.
    let (images, files) = (repo_images(), backup_files());
    let dry = c.xtask(&["prune", "--env", "sandbox", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert_eq!(repo_images(), images, "--dry-run removed an image");
    assert_eq!(backup_files(), files, "--dry-run removed a file");
    let planned = listed(&dry.stdout, "would remove ");
    let has = |set: &BTreeSet<(String, String)>, kind: &str, name: &str| {
        set.contains(&(kind.to_string(), name.to_string()))
    };
    assert!(has(&planned, "image", &fakes[1]), "{}", dry.stdout);
    assert!(has(&planned, "snapshot", &by_hand[0]), "{}", dry.stdout);
    assert!(has(&planned, "partial", stale), "{}", dry.stdout);
    assert!(dry.stdout.contains("would free "), "{}", dry.stdout);
    for (kind, keep) in [
        ("image", &v),
        ("image", &fakes[0]),
        ("image", &fakes[2]),
        ("image", &fakes[3]),
        ("image", &fakes[4]),
        ("snapshot", &target),
        ("partial", &fresh.to_string()),
    ] {
        assert!(!has(&planned, kind, keep), "{kind} {keep}: {}", dry.stdout);
    }

    // The run removes what the dry run listed (an image a container still uses stays, said so).
    let run = c.xtask(&["prune", "--env", "sandbox"]);
    assert_eq!(run.code, 0, "{}", run.all());
    eprintln!("prune --dry-run:\n{}\nprune:\n{}", dry.stdout, run.stdout);
    let removed = listed(&run.stdout, "removed ");
    let refused: BTreeSet<(String, String)> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("kept image in use: "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|t| ("image".to_string(), t.to_string()))
        .collect();
    let done: BTreeSet<_> = removed.union(&refused).cloned().collect();
    assert_eq!(done, planned, "plan = run\n{}\n{}", dry.stdout, run.stdout);
    assert!(run.stdout.contains("freed "), "{}", run.stdout);
    assert!(!has_image(&fakes[1]));
    for keep in [&v, &fakes[0], &fakes[2], &fakes[3], &fakes[4]] {
        assert!(has_image(keep), "{keep} was removed");
    }
    for (_, tag) in removed.iter().filter(|(k, _)| k == "image") {
        assert!(
            !has_image(tag),
            "{tag} is listed as removed but is still there"
        );
    }
    let after = backup_files();
    assert!(
        after.contains(&format!("{target}.tar.zst")),
        "the restore target went"
    );
    assert!(!after.contains(&format!("{}.tar.zst", by_hand[0])));
    for s in &by_hand[1..] {
        assert!(after.contains(&format!("{s}.tar.zst")), "{s} went");
    }
    assert!(!after.contains(stale) && after.contains(fresh));
    assert!(
        !server_dir().join(".deploy/lock").exists(),
        "the lock stays"
    );
    assert_eq!(running_version().0, v, "the running version changed");
    // A second run has nothing left beyond retention.
    let again = c.xtask(&["prune", "--env", "sandbox", "--dry-run"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        listed(&again.stdout, "would remove ")
            .iter()
            .all(|(k, n)| k == "image" && refused.contains(&(k.clone(), n.clone()))),
        "{}",
        again.stdout
    );

    std::fs::write(&lg_file, lg_before).unwrap();
    let _ = std::fs::remove_file(backups_dir().join(fresh));
    let repo = format!("{}/observer", registry());
    for f in &fakes {
        let _ = sh(&format!("docker rmi '{repo}:{f}' >/dev/null 2>&1"));
    }
    assert_no_secret(&[&token()]);
}

fn mode_owner(p: &Path) -> String {
    sh(&format!("stat -c '%U %a' '{}'", p.display()))
        .stdout
        .trim()
        .to_string()
}

/// Runs `setup` against the sandbox with its folders at `root` and `backups`.
fn setup(c: &Clone, root: &Path, backups: &Path, extra: &[(&str, &str)], args: &[&str]) -> Run {
    let (r, b) = (root.display().to_string(), backups.display().to_string());
    let mut envs = vec![
        ("XTASK_SANDBOX_REMOTE_DIR", r.as_str()),
        ("XTASK_SANDBOX_BACKUPS_DIR", b.as_str()),
    ];
    envs.extend_from_slice(extra);
    let mut a = vec!["setup", "--env", "sandbox"];
    a.extend_from_slice(args);
    xtask(&c.dir, &a, &envs)
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn setup_creates_fresh_folders_then_has_nothing_to_do_and_names_what_root_must_do() {
    ensure_sandbox();
    let c = Clone::new("admin-setup");
    let base: PathBuf = sandbox_dir().join(format!("setup-e2e-{}", unique()));
    std::fs::create_dir_all(&base).unwrap();

    // As the sandbox's (root) user on fresh folders: --dry-run changes nothing, then setup
    // creates them (mode 0750), then a second run has nothing to do.
    let (root, backups) = (base.join("srv/observer"), base.join("srv/observer-backups"));
    let r = setup(&c, &root, &backups, &[], &["--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains(&format!("would create {} (mode 750)", root.display())),
        "{}",
        r.all()
    );
    assert!(!base.join("srv").exists(), "--dry-run created something");
    let r = setup(&c, &root, &backups, &[], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    for d in [&root, &root.join(".deploy"), &backups] {
        assert!(
            r.stdout
                .contains(&format!("done    create {}", d.display())),
            "{}",
            r.all()
        );
        assert_eq!(mode_owner(d), "root 750", "{}", d.display());
    }
    assert!(r.stdout.contains("ready: "), "{}", r.all());
    let r = setup(&c, &root, &backups, &[], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("nothing to do: the server is ready"),
        "{}",
        r.all()
    );
    assert!(!r.stderr.contains("==> Prepare"), "{}", r.all());

    // As the non-root deploy user under a root-owned folder: what root must do, exit 1, nothing
    // touched.
    let user = state()["deploy_user"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        user, "observer-deploy",
        "the sandbox has no non-root deploy user"
    );
    let locked = base.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    let (root, backups) = (locked.join("observer"), locked.join("backups"));
    let nonroot = [("XTASK_SANDBOX_NONROOT", "1")];
    let r = setup(&c, &root, &backups, &nonroot, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains(&format!(
            "sudo bash /tmp/provision-server.sh --deploy-root {} --backups-dir {} {user}",
            root.display(),
            backups.display()
        )),
        "{}",
        r.all()
    );
    for d in [&root, &backups] {
        assert!(
            r.stdout.contains(&format!(
                "install -d -o {user} -g {user} -m 750 {}",
                d.display()
            )),
            "{}",
            r.all()
        );
    }
    assert!(r.stdout.contains("MISSING "), "{}", r.all());
    assert!(r.stderr.contains("nothing was changed"), "{}", r.all());
    assert_eq!(
        std::fs::read_dir(&locked).unwrap().count(),
        0,
        "setup touched {}",
        locked.display()
    );

    // provision-server.sh, run as root (this machine is the sandbox server), does it; then the
    // deploy user's setup is ready with nothing to do.
    let r = sh(&format!(
        "bash '{}' --deploy-root '{}' --backups-dir '{}' {user}",
        repo().join("scripts/provision-server.sh").display(),
        root.display(),
        backups.display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = setup(&c, &root, &backups, &nonroot, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("nothing to do: the server is ready"),
        "{}",
        r.all()
    );
    assert_eq!(mode_owner(&root), format!("{user} 750"));

    let _ = std::fs::remove_dir_all(&base);
}
