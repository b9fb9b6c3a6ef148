//! Truthful endings (issue 12), with the fake transport of `tests.rs`: a signal before the
//! handoff undoes the run, after it finishes the deploy (exit 130/143 either way); a record that
//! cannot be written after a healthy gate is exit 5, and the next run repairs it.

use super::*;
use crate::core::signals;
use signal_hook::consts::{SIGINT, SIGTERM};

fn handoff_server() -> (crate::config::Env, Fake) {
    let e = env();
    let f = server(&e);
    f.answer("candidate-gate", candidate_gate("v1.1.0"))
        .answer("soak", ok("ok soak healthy for 10s without a restart"))
        .answer("handoff", active("qts-observer-next"))
        .answer("gate", healthy_gate("v1.1.0"))
        .answer("release-candidate", active("qts-observer"));
    (e, f)
}

#[test]
fn a_signal_before_the_handoff_undoes_the_run_and_never_stops_the_old_version() {
    for (at, sig, code) in [
        ("soak", SIGTERM, 143),
        ("candidate", SIGINT, 130),
        ("pull", SIGTERM, 143),
        ("lock", SIGINT, 130),
    ] {
        signals::reset();
        let (e, f) = handoff_server();
        *f.signal_at.borrow_mut() = Some((at, sig));
        let (got, _, log) = run(&e, &f, &handoff());
        signals::reset();
        assert_eq!(got, code, "{at}: {log:?}");
        for never in ["handoff", "up", "gate", "record", "start-old", "stop"] {
            assert!(!log.contains(&never), "{at}: {never} ran: {log:?}");
        }
        let after: Vec<_> = log.iter().skip_while(|s| **s != at).copied().collect();
        let started_candidate = log.contains(&"candidate");
        assert_eq!(
            after.contains(&"remove-candidate"),
            started_candidate,
            "{at}: {log:?}"
        );
        assert_eq!(
            after.contains(&"restore-env"),
            log.contains(&"upload-env"),
            "{at}: {log:?}"
        );
        assert_eq!(log.last(), Some(&"unlock"), "{at}: the lock is released");
    }
}

#[test]
fn a_signal_after_the_handoff_finishes_the_deploy() {
    for at in ["handoff", "up", "gate", "record"] {
        signals::reset();
        let (e, f) = handoff_server();
        *f.signal_at.borrow_mut() = Some((at, SIGTERM));
        let (code, done, log) = run(&e, &f, &handoff());
        signals::reset();
        assert_eq!(code, 143, "{at}: {log:?}");
        let plan = dry_run_plan(
            &e,
            crate::compose::Compose::V2,
            false,
            crate::ops::rollout::Strategy::Handoff,
        );
        assert_eq!(done, plan.ids()[1..].to_vec(), "{at}: the whole plan ran");
        assert!(!log.contains(&"restore-env") && !log.contains(&"start-old"));
    }
}

#[test]
fn an_interruptible_executor_stops_before_the_next_step() {
    signals::reset();
    let sh = crate::ctx::Ctx::new().unwrap();
    let f = Fake::default();
    let mut x = crate::plan::Executor::new(&sh, false, Box::new(f.clone()));
    let step = crate::plan::Step::remote("a", "A", "s", "true".into());
    x.run_step(&step).unwrap();
    signals::simulate(SIGTERM);
    let e = x.run_step(&step).unwrap_err();
    signals::reset();
    assert_eq!(crate::core::exit::code_of(&e), 143);
    assert!(format!("{e:#}").contains("SIGTERM"));
    assert_eq!(f.ran(), ["a"]);
}

#[test]
fn a_record_that_fails_after_a_healthy_gate_is_exit_5_and_the_run_ends_cleanly() {
    for id in ["record", "history"] {
        let (e, f) = handoff_server();
        f.answer(id, failed("No space left on device"));
        let (code, _, log) = run(&e, &f, &handoff());
        assert_eq!(code, 5, "{id}: {log:?}");
        assert!(log.contains(&"prune"), "{id}: {log:?}");
        assert_eq!(log.last(), Some(&"unlock"));
        for never in ["restore-env", "start-old", "stop"] {
            assert!(!log.contains(&never), "{id}: {never} ran");
        }
    }
}

#[test]
fn redeploying_a_running_version_the_records_miss_repairs_them() {
    let e = env();
    let sh = crate::ctx::Ctx::new().unwrap();
    let files = crate::ops::rollout::Payload::read(&sh, &e, "v1.1.0", "deploy")
        .unwrap()
        .hashes()
        .join(" ");
    // v1.1.0 runs with exactly these files (its deploy's recording failed): the records still
    // say v1.0.0.
    let probe = |last_good: &str| {
        ok(&format!(
            "compose=v2\nlast_good={last_good}\nrunning={}\nstate=running\nwriter={{\"instance\":\"ab\"}}\nfiles={files}\n",
            e.image("v1.1.0")
        ))
    };
    let f = Fake::default();
    f.answer("probe", probe("v1.0.0 sha256:00"))
        .answer("gate", healthy_gate("v1.1.0"));
    let (code, _, log) = run(&e, &f, &handoff());
    assert_eq!(code, 0, "{log:?}");
    assert_eq!(
        log,
        ["probe", "gate", "lock", "record", "history", "unlock"]
    );
    // Its records say so already: only verified.
    let f = Fake::default();
    f.answer("probe", probe(&format!("v1.1.0 {DIGEST}")))
        .answer("gate", healthy_gate("v1.1.0"));
    let (code, _, log) = run(&e, &f, &handoff());
    assert_eq!((code, log), (0, vec!["probe", "gate"]));
    // The repair itself cannot write: exit 5 again, lock released.
    let f = Fake::default();
    f.answer("probe", probe("v1.0.0 sha256:00"))
        .answer("gate", healthy_gate("v1.1.0"))
        .answer("record", failed("Read-only file system"));
    let (code, _, log) = run(&e, &f, &handoff());
    assert_eq!(code, 5, "{log:?}");
    assert_eq!(log.last(), Some(&"unlock"));
}
