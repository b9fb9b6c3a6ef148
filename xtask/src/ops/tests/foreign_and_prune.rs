//! Issue 12 items 5 and 6 through the fake transport: a foreign container is refused in the probe
//! (exit 1, nothing after it runs); the snapshot prune after a healthy deploy deletes only what
//! it may, and its failure is a warning (exit 0).

use super::*;

/// The probe lines for a foreign `container` (project `app`, working dir `/home/p/app`).
fn foreign_owner(container: &str) -> String {
    format!("owner.{container}=app|/home/p/app\n")
}

fn probe_with(e: &Env, extra: &str) -> Output {
    ok(&format!(
        "compose=v2 v1\nlast_good=v1.0.0 sha256:00\nrunning={}\nstate=running\nwriter={{\"instance\":\"ab\"}}\nowner.qts-observer=observer|/srv/observer\n{extra}",
        e.image("v1.0.0")
    ))
}

#[test]
fn a_foreign_service_or_candidate_is_refused_in_the_probe_exit_1() {
    let e = env();
    for (container, strategy) in [
        ("qts-observer", rollout::Strategy::Recreate),
        ("qts-observer", rollout::Strategy::Handoff),
        ("qts-observer-next", rollout::Strategy::Handoff),
    ] {
        // The foreign line replaces ours for the service, and joins it for the candidate.
        let probe = if container == "qts-observer" {
            ok(&format!(
                "compose=v2\nlast_good=v1.0.0 sha256:00\nrunning=observer:latest\nstate=running\n{}",
                foreign_owner(container)
            ))
        } else {
            probe_with(&e, &foreign_owner(container))
        };
        for dry_run in [false, true] {
            let f = Fake::default();
            f.answer("probe", probe.clone());
            let mut o = opts(true);
            o.strategy = strategy;
            o.dry_run = dry_run;
            let sh = Ctx::new().unwrap();
            let mut x = Executor::new(&sh, o.dry_run, Box::new(f.clone()));
            let r = rollout::rollout(&sh, &e, "v1.1.0", DIGEST, &o, &mut x, None);
            let err = r.expect_err("a foreign container must be refused");
            assert_eq!(crate::core::exit::code_of(&err), 1);
            let msg = format!("{err:#}");
            assert!(
                msg.contains(&format!(
                    "{container} belongs to compose project `app` (working dir /home/p/app), not `observer`"
                )),
                "{msg}"
            );
            assert!(
                msg.contains(&format!("docker rename {container} {container}-local")),
                "{msg}"
            );
            assert_eq!(f.ran(), ["probe"], "nothing after the probe runs");
        }
    }
}

#[test]
fn a_container_of_no_compose_project_is_foreign_too() {
    let e = env();
    let f = Fake::default();
    f.answer("probe", probe_with(&e, "owner.qts-observer-next=|\n"));
    let (code, done, log) = run(&e, &f, &handoff());
    assert_eq!(code, 1);
    assert_eq!(done, ["probe"]);
    assert_eq!(log, ["probe"]);
}

#[test]
fn our_own_leftover_candidate_is_not_foreign() {
    let e = env();
    let f = Fake::default();
    f.answer(
        "probe",
        probe_with(&e, "owner.qts-observer-next=observer|/srv/observer\n"),
    )
    .answer("pull", ok(&format!("[\"{}@{DIGEST}\"]", e.repo())))
    .answer("candidate-gate", candidate_gate("v1.1.0"))
    .answer("soak", ok("ok soak healthy for 10s without a restart"))
    .answer("handoff", active("qts-observer-next"))
    .answer("gate", healthy_gate("v1.1.0"))
    .answer("release-candidate", active("qts-observer"));
    let (code, _, log) = run(&e, &f, &handoff());
    assert_eq!(code, 0);
    assert!(log.contains(&"clean-candidate"));
}

#[test]
fn a_failing_snapshot_prune_after_a_healthy_deploy_is_a_warning_exit_0() {
    let e = env();
    let f = server(&e);
    f.answer("gate", healthy_gate("v1.1.0"))
        .answer("prune-snapshots", failed("ls: cannot open directory"));
    let (code, done, log) = run(&e, &f, &opts(true));
    assert_eq!(code, 0, "the deploy succeeded");
    assert!(done.contains(&"prune-snapshots"));
    assert_eq!(log.last(), Some(&"unlock"), "the lock is still released");
    // The deletion step after a scan can fail as well: still exit 0.
    let f = server(&e);
    f.answer("gate", healthy_gate("v1.1.0"))
        .answer(
            "prune-snapshots",
            ok("M 20260101T000001Z-aa 1 {}\nP 9999 20260101T000000Z-zz.tar.zst.partial\n"),
        )
        .answer("prune-snapshots-rm", failed("rm: read-only file system"));
    let (code, _, log) = run(&e, &f, &opts(true));
    assert_eq!(code, 0);
    assert!(log.contains(&"prune-snapshots-rm"));
}

/// Answers by step id like [`Fake`], and records each step's script too.
#[derive(Default, Clone)]
struct Scripts {
    fake: Fake,
    scripts: Rc<RefCell<Vec<(&'static str, String)>>>,
}

impl Transport for Scripts {
    fn exec(&mut self, sh: &Ctx, step: &Step) -> Result<Output> {
        self.scripts
            .borrow_mut()
            .push((step.id, step.script().to_string()));
        self.fake.exec(sh, step)
    }
    fn stream(&mut self, server: &str, script: &str, stdin: bool) -> Result<duct::Expression> {
        self.fake.stream(server, script, stdin)
    }
    fn connections(&self) -> u32 {
        1
    }
}

/// A prune scan's `M` line: a valid snapshot `id` of `size` bytes (also `prune`'s tests).
pub fn manifest_line(e: &Env, id: &str, size: u64) -> String {
    let m = crate::server::snapshot::Manifest {
        id: id.into(),
        created: "t".into(),
        env: e.name.clone(),
        server: "s".into(),
        version: "v1.0.0".into(),
        no_logs: false,
        archive: crate::server::snapshot::ArchiveInfo {
            file: format!("{id}.tar.zst"),
            size,
            sha256: "00".into(),
        },
        entries: vec![],
        partial_tails: vec![],
        delta: Default::default(),
        state: None,
    };
    format!("M {id} {size} {}\n", serde_json::to_string(&m).unwrap())
}

#[test]
fn the_deploy_prunes_to_keep_snapshots_and_spares_the_rollback_snapshot() {
    let mut e = env();
    e.cfg.keep_snapshots = 3;
    e.cfg.lock_ttl_s = 600;
    let mut scan: String = (1..=6)
        .map(|i| manifest_line(&e, &format!("20260101T00000{i}Z-aa"), 10))
        .collect();
    scan.push_str("I 20260101T000007Z-aa 5\n");
    scan.push_str("P 9999 20260101T000007Z-aa.tar.zst.partial\n");
    scan.push_str("P 10 20260101T000008Z-aa.tar.zst.partial\n");
    scan.push_str("P 700 20260101T000009Z-aa.manifest.json.tmp\n");
    // The latest successful deploy of v1.1.0 (the version this run deploys) recorded snapshot 2:
    // `rollback --restore` would restore it.
    for (kind, v, snap) in [
        ("deploy", "v1.1.0", "20260101T000001Z-aa"),
        ("deploy", "v1.1.0", "20260101T000002Z-aa"),
        ("rollback", "v1.1.0", "20260101T000003Z-aa"),
        ("deploy", "v1.0.0", "20260101T000004Z-aa"),
    ] {
        scan.push_str(&format!(
            "H {{\"kind\":\"{kind}\",\"version\":\"{v}\",\"outcome\":\"success\",\"snapshot\":\"{snap}\"}}\n"
        ));
    }
    let t = Scripts::default();
    t.fake
        .answer(
            "probe",
            ok(&format!(
                "compose=v2 v1\nlast_good=v1.0.0 sha256:00\nrunning={}\nstate=running\nwriter={{\"instance\":\"ab\"}}\n",
                e.image("v1.0.0")
            )),
        )
        .answer("pull", ok(&format!("[\"{}@{DIGEST}\"]", e.repo())))
        .answer("gate", healthy_gate("v1.1.0"))
        .answer("prune-snapshots", ok(&scan));
    let sh = Ctx::new().unwrap();
    let o = opts(true);
    let mut x = Executor::new(&sh, false, Box::new(t.clone()));
    let r = rollout::rollout(&sh, &e, "v1.1.0", DIGEST, &o, &mut x, None).unwrap();
    assert_eq!(r.1, 0);
    let scripts = t.scripts.borrow();
    let rm = &scripts
        .iter()
        .find(|(id, _)| *id == "prune-snapshots-rm")
        .expect("a deletion step")
        .1;
    // Kept: the protected snapshot 2 and the newest two (5, 6); deleted: 1, 3, 4.
    for gone in ["1", "3", "4"] {
        for f in ["tar.zst", "tar.zst.sha256", "manifest.json"] {
            assert!(
                rm.split(' ')
                    .any(|w| w == format!("20260101T00000{gone}Z-aa.{f}")),
                "{gone}.{f}: {rm}"
            );
        }
    }
    for kept in ["2", "5", "6"] {
        assert!(!rm.contains(&format!("20260101T00000{kept}Z-aa.")), "{rm}");
    }
    // Stale partial files go; a fresh one (a `snapshot create` in progress) stays.
    assert!(rm.contains(" 20260101T000007Z-aa.tar.zst.partial"), "{rm}");
    assert!(
        rm.contains(" 20260101T000009Z-aa.manifest.json.tmp"),
        "{rm}"
    );
    assert!(!rm.contains("000008Z"), "{rm}");
    // The prune runs after the records, under the lock.
    let ids: Vec<&str> = scripts.iter().map(|(id, _)| *id).collect();
    let pos = |id| ids.iter().position(|x| *x == id).unwrap();
    assert!(pos("history") < pos("prune-snapshots"));
    assert!(pos("prune-snapshots-rm") < pos("unlock"));
}

#[test]
fn a_no_snapshot_deploy_still_prunes_and_dry_run_shows_it() {
    let e = env();
    let plan = dry_run_plan(
        &e,
        crate::compose::Compose::V2,
        false,
        rollout::Strategy::Handoff,
    );
    let ids = plan.ids();
    assert!(!ids.contains(&"snapshot"));
    let pos = |id| ids.iter().position(|x| *x == id).unwrap();
    assert!(pos("history") < pos("prune-snapshots") && pos("prune-snapshots") < pos("unlock"));
}
