//! `prune`'s selection and its run with the fake transport (no docker, no ssh).

use super::*;
use crate::ctx::Ctx;
use crate::ops::tests::foreign_and_prune::manifest_line;
use crate::ops::tests::{env, failed, ok, Fake};

fn snap(i: u32) -> String {
    format!("20260101T00000{i}Z-aa")
}

/// Images v1.0.0 (oldest) … v1.5.0 (newest), v1.0.0 running, v1.1.0 last good, a `<none>` and
/// a non-version tag; snapshots 1…6, the deploy of v1.0.0 recorded snapshot 1 and the deploy
/// of v1.1.0 snapshot 2; a stale and a fresh partial file.
fn scan(e: &Env) -> String {
    let mut imgs: Vec<serde_json::Value> = [
        "v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0", "v1.4.0", "v1.5.0",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| {
        serde_json::json!({"Repository": e.repo(), "Tag": t, "UniqueSize": format!("{}MB", i + 1),
                "CreatedAt": format!("2026-12-0{} 10:00:00 +0000 UTC", i + 1)})
    })
    .collect();
    imgs.push(serde_json::json!({"Repository": e.repo(), "Tag": "<none>", "UniqueSize": "0B", "CreatedAt": "2026-11-30 10:00:00 +0000 UTC"}));
    imgs.push(serde_json::json!({"Repository": e.repo(), "Tag": "latest", "UniqueSize": "5B", "CreatedAt": "2026-11-29 10:00:00 +0000 UTC"}));
    imgs.push(serde_json::json!({"Repository": "elsewhere/observer", "Tag": "v0.0.1", "UniqueSize": "5B", "CreatedAt": "2020-11-29 10:00:00 +0000 UTC"}));
    let mut s = format!("DF {}\n", serde_json::Value::Array(imgs));
    for i in 1..=6 {
        s.push_str(&manifest_line(e, &snap(i), 1000));
    }
    s.push_str(
        "P 9999 20260101T000007Z-aa.tar.zst.partial\nP 10 20260101T000008Z-aa.tar.zst.partial\n",
    );
    for (v, i) in [("v1.0.0", 1), ("v1.1.0", 2)] {
        s.push_str(&format!(
            "H {{\"kind\":\"deploy\",\"version\":\"{v}\",\"outcome\":\"success\",\"snapshot\":\"{}\"}}\n",
            snap(i)
        ));
    }
    for i in 1..=6 {
        s.push_str(&format!(
            "S 1000 {id}.tar.zst\nS 100 {id}.tar.zst.sha256\nS 10 {id}.manifest.json\n",
            id = snap(i)
        ));
    }
    s.push_str(
        "S 777 20260101T000007Z-aa.tar.zst.partial\nS 5 20260101T000008Z-aa.tar.zst.partial\n",
    );
    s
}

fn names(items: &[Item]) -> Vec<&str> {
    items.iter().map(|i| i.name.as_str()).collect()
}

#[test]
fn prune_keeps_the_running_the_last_good_and_the_restore_targets() {
    let mut e = env();
    e.cfg.keep_images = 3;
    e.cfg.keep_snapshots = 3;
    e.cfg.lock_ttl_s = 600;
    let c = choose(&e, &scan(&e), "v1.0.0", "v1.1.0");
    // The newest three tags stay, and the running and last good whatever their age.
    assert_eq!(names(&c.images), ["v1.2.0"]);
    assert_eq!(c.images[0].size, 3_000_000);
    assert_eq!(
        c.kept_images,
        ["v1.0.0", "v1.1.0", "v1.3.0", "v1.4.0", "v1.5.0"]
    );
    // Snapshots: 1 and 2 are what `rollback --restore` picks for v1.0.0 and v1.1.0; they count
    // toward keep_snapshots, so the newest (6) is the third.
    assert_eq!(c.snapshots.keep, [snap(1), snap(2), snap(6)]);
    assert_eq!(
        names(&c.files),
        [
            snap(3).as_str(),
            &snap(4),
            &snap(5),
            "20260101T000007Z-aa.tar.zst.partial"
        ]
    );
    // A snapshot's size is its three files; the total adds everything.
    assert_eq!(c.files[0].size, 1110);
    assert_eq!(c.files[3].size, 777);
    assert_eq!(c.total(), 3_000_000 + 3 * 1110 + 777);
    // Nothing running and nothing recorded: only retention decides.
    let c = choose(&e, &scan(&e), "", "");
    assert_eq!(names(&c.images), ["v1.0.0", "v1.1.0", "v1.2.0"]);
    assert_eq!(c.snapshots.keep, [snap(4), snap(5), snap(6)]);
}

#[test]
fn never_removes_protected_ones_whatever_the_retention() {
    let mut e = env();
    for keep in 0..8 {
        e.cfg.keep_images = keep;
        e.cfg.keep_snapshots = keep;
        for (running, last_good) in [("v1.0.0", "v1.1.0"), ("v1.5.0", "v1.0.0"), ("", "v1.2.0")] {
            let c = choose(&e, &scan(&e), running, last_good);
            let gone = names(&c.images);
            assert!(!gone.contains(&running) && !gone.contains(&last_good));
            assert!(!gone.contains(&"<none>") && !gone.contains(&"latest"));
            for p in &c.snapshots.protected {
                assert!(!c.snapshots.delete.contains(p), "{keep} {p}");
            }
            // The fresh partial file (a create in progress) always stays.
            assert!(!names(&c.files).contains(&"20260101T000008Z-aa.tar.zst.partial"));
        }
    }
}

fn server(e: &Env) -> Fake {
    let f = Fake::default();
    f.answer(
        "probe",
        ok(&format!(
            "compose=v2\nlast_good=v1.1.0 sha256:00\nrunning={}\nstate=running\n",
            e.image("v1.0.0")
        )),
    )
    .answer("prune-scan", ok(&scan(e)));
    f
}

fn small(mut e: Env) -> Env {
    e.cfg.keep_images = 3;
    e.cfg.keep_snapshots = 3;
    e.cfg.lock_ttl_s = 600;
    e
}

#[test]
fn a_run_locks_scans_removes_and_unlocks_over_one_connection() {
    let e = small(env());
    let f = server(&e);
    f.answer(
        "prune-rmi",
        ok("kept v1.2.0 Error response: conflict: image is being used by stopped container\n"),
    );
    let sh = Ctx::new().unwrap();
    let mut x = Executor::new(&sh, false, Box::new(f.clone()));
    let o = run(&mut x, &e, "sandbox-vm").unwrap();
    assert_eq!(
        f.ran(),
        [
            "lock",
            "probe",
            "prune-scan",
            "prune-rmi",
            "prune-snapshots-rm",
            "unlock"
        ]
    );
    assert_eq!(x.connections(), 1);
    // docker refused the image in use: reported, not counted as removed.
    assert_eq!(o.refused.len(), 1);
    assert!(
        o.refused[0].starts_with("v1.2.0 (Error response"),
        "{:?}",
        o.refused
    );
    assert_eq!(names(&o.removed).len(), 4);
    assert!(!names(&o.removed).contains(&"v1.2.0"));
}

#[test]
fn dry_run_scans_the_same_and_removes_nothing() {
    let e = small(env());
    let f = server(&e);
    let sh = Ctx::new().unwrap();
    let mut x = Executor::new(&sh, true, Box::new(f.clone()));
    let o = run(&mut x, &e, "sandbox-vm").unwrap();
    // Only the read-only steps reach the server: no lock, no removal.
    assert_eq!(f.ran(), ["probe", "prune-scan"]);
    let planned = choose(&e, &scan(&e), "v1.0.0", "v1.1.0");
    assert_eq!(o.choice, planned);
    assert_eq!(o.removed, planned.items().cloned().collect::<Vec<_>>());
}

#[test]
fn a_held_lock_prunes_nothing_and_a_failed_removal_still_unlocks() {
    let e = small(env());
    let f = server(&e);
    f.answer("lock", failed("{\"who\":\"ci\",\"pid\":7}\nheld"));
    let sh = Ctx::new().unwrap();
    let mut x = Executor::new(&sh, false, Box::new(f.clone()));
    let err = run(&mut x, &e, "sandbox-vm").unwrap_err();
    assert!(format!("{err:#}").contains("lock is held"), "{err:#}");
    assert_eq!(f.ran(), ["lock"]);

    let f = server(&e);
    f.answer("prune-snapshots-rm", failed("rm: read-only file system"));
    let mut x = Executor::new(&sh, false, Box::new(f.clone()));
    assert!(run(&mut x, &e, "sandbox-vm").is_err());
    assert_eq!(f.ran().last(), Some(&"unlock"));
    // A failing scan: nothing removed, unlocked.
    let f = server(&e);
    f.answers.borrow_mut().remove("prune-scan");
    f.answer("prune-scan", failed("Cannot connect to the Docker daemon"));
    let mut x = Executor::new(&sh, false, Box::new(f.clone()));
    assert!(run(&mut x, &e, "sandbox-vm").is_err());
    assert_eq!(f.ran(), ["lock", "probe", "prune-scan", "unlock"]);
}
