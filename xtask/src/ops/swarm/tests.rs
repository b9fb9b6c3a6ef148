//! The Swarm plan: the steps' order and what `--dry-run` shows.

use super::*;
use crate::config::{self, Engine};

fn env() -> Env {
    let mut e = config::test_env("/srv/obs", "/tmp/r.git");
    e.cfg.engine = Engine::Swarm;
    e
}

fn payload() -> Payload {
    Payload {
        compose: Vec::new(),
        config: Vec::new(),
        env_text: "IMAGE_TAG=v1.2.3\n".into(),
        holder: crate::core::records::LockHolder {
            id: "0123456789abcdef".into(),
            ..Default::default()
        },
    }
}

#[test]
fn the_plan_pauses_deploys_watches_soaks_then_resumes_and_records() {
    let e = env();
    let st = SwarmSteps::new(&e, "m1");
    let p = plan(
        &st,
        "v1.2.3",
        "sha256:ab",
        "{}",
        None,
        &payload(),
        &Before {
            since: "17".into(),
            index: "40".into(),
            hold: "xtsw-w1".into(),
        },
    );
    assert_eq!(
        p.ids(),
        [
            "verify",
            "probe",
            "lock",
            "upload-stack",
            "keep-env",
            "upload-env",
            "resume",
            "pause",
            "stack-deploy",
            "watch",
            "soak",
            "resume",
            "record",
            "history",
            "unlock"
        ]
    );
    let watch = p.get("watch").unwrap().script().to_string();
    assert!(watch.contains("since=17;"), "{watch}");
    assert!(
        watch.contains("img=127.0.0.1:5000/observer@sha256:ab;"),
        "{watch}"
    );
    assert!(p
        .get("pause")
        .unwrap()
        .script()
        .contains("observer.paused-by-deploy=0123456789abcdef"));
}

#[test]
fn registry_credentials_go_to_stdin_never_into_the_script() {
    let e = env();
    let st = SwarmSteps::new(&e, "m1");
    let creds = Creds {
        user: "u".into(),
        token: "t0ps3cret".into(),
    };
    let s = st.stack_deploy(Some(&creds));
    assert!(!s.script().contains("t0ps3cret"));
    assert!(
        s.render().contains("--with-registry-auth"),
        "{}",
        s.render()
    );
}

#[test]
fn the_watch_waits_for_health_twice_the_monitor_twice_and_a_minute() {
    let e = env();
    let st = SwarmSteps::new(&e, "m1");
    assert_eq!(
        st.watch_timeout(),
        2 * e.cfg.health_timeout_s + 2 * e.cfg.soak_s.max(5) + 60
    );
}

// The decision tree, driven with the fake transport of `ops::tests` (answers by step id).

use crate::ops::tests::{failed as failed_out, ok, Fake, DIGEST};

fn probe_out(e: &Env, with_service: bool) -> String {
    let mut s = "swarm=active true\nlast_good=v1.0.0 sha256:00\nfiles=\n".to_string();
    if with_service {
        s.push_str(&format!(
            "service|v1.0.0|{}@sha256:00|40|completed|1700000000000000000|update completed\ntask|t1|xtsw-w1|Running|Running 2 minutes ago|{}@sha256:00|\n",
            e.repo(),
            e.repo()
        ));
    }
    s.push_str("node|n1|xtsw-m1|ready|active|manager||\nnode|n2|xtsw-w1|ready|active|worker|true|\nnode|n3|xtsw-w2|ready|active|worker|true|\n");
    s
}

fn swarm_server(e: &Env, with_service: bool) -> Fake {
    let f = Fake::default();
    f.answer("probe", ok(&probe_out(e, with_service)));
    f
}

fn opts() -> Options {
    Options {
        strategy: super::super::run::Strategy::Handoff,
        rollback: true,
        no_snapshot: true,
        dry_run: false,
        json: false,
        kind: "deploy",
        allow_downgrade: false,
        allow_unverified: false,
        lock_wait_s: 0,
    }
}

/// A swarm rollout of v1.1.0 against `fake`: (exit code, executor's ids, transport's log).
fn drive(e: &Env, fake: &Fake) -> (u8, Vec<&'static str>, Vec<&'static str>) {
    let sh = Ctx::new().unwrap();
    let mut x = Executor::new(&sh, false, Box::new(fake.clone()));
    let r = rollout(&sh, e, "v1.1.0", DIGEST, &opts(), &mut x, None);
    let code = match r {
        Ok((_, code, _)) => code,
        Err(err) => crate::core::exit::code_of(&err),
    };
    (code, x.done.clone(), fake.ran())
}

#[test]
fn a_converged_update_runs_exactly_the_dry_run_plan_and_exits_0() {
    let e = env();
    let f = swarm_server(&e, true);
    f.answer("watch", ok("watch=completed\n"))
        .answer("soak", ok("ok soak task t2 running for 10s\n"));
    let (code, done, _) = drive(&e, &f);
    assert_eq!(code, 0);
    let sh = Ctx::new().unwrap();
    let pay = Payload::read(&sh, &e, "v1.1.0", "deploy").unwrap();
    let st = SwarmSteps::new(&e, &e.servers[0].name);
    let p = plan(
        &st,
        "v1.1.0",
        DIGEST,
        "{}",
        None,
        &pay,
        &Before {
            since: "1700000000000000000".into(),
            index: "40".into(),
            hold: "xtsw-w1".into(),
        },
    );
    assert_eq!(done, p.ids()[1..].to_vec());
}

#[test]
fn swarm_rolling_back_is_exit_3_recorded_as_failed_with_nodes_resumed() {
    let e = env();
    let f = swarm_server(&e, true);
    f.answer(
        "watch",
        ok("watch=rollback_completed\nservice|v1.0.0|r@sha256:00|44|rollback_completed|1|rollback completed\n"),
    );
    let (code, _, log) = drive(&e, &f);
    assert_eq!(code, 3);
    assert!(
        !log.contains(&"soak") && !log.contains(&"record"),
        "{log:?}"
    );
    let tail: Vec<_> = log.iter().rev().take(3).rev().copied().collect();
    assert_eq!(tail, ["history", "resume", "unlock"], "{log:?}");
}

#[test]
fn an_update_that_does_not_converge_is_exit_4() {
    for outcome in ["paused", "rollback_paused", "timeout"] {
        let e = env();
        let f = swarm_server(&e, true);
        f.answer("watch", ok(&format!("watch={outcome}\n")));
        let (code, _, log) = drive(&e, &f);
        assert_eq!(code, 4, "{outcome}");
        assert!(log.ends_with(&["resume", "unlock"]), "{log:?}");
    }
}

#[test]
fn a_failed_soak_asks_swarm_to_roll_back_and_reports_what_it_did() {
    let e = env();
    let f = swarm_server(&e, true);
    f.answer("watch", ok("watch=completed\n"))
        .answer("soak", ok("fail soak after 4s the running tasks changed\n"))
        .answer("watch", ok("watch=rollback_completed\n"));
    let (code, _, log) = drive(&e, &f);
    assert_eq!(code, 3);
    assert!(log.contains(&"service-rollback"), "{log:?}");
    let f = swarm_server(&e, true);
    f.answer("watch", ok("watch=completed\n"))
        .answer("soak", ok("fail soak no task of the new image runs\n"))
        .answer("watch", ok("watch=rollback_paused\n"));
    assert_eq!(drive(&e, &f).0, 4);
}

#[test]
fn a_first_deploy_that_does_not_stay_up_is_exit_4() {
    let e = env();
    let f = swarm_server(&e, false);
    f.answer("watch", ok("watch=created\n"))
        .answer("soak", ok("fail soak no task of the new image runs\n"));
    let (code, _, log) = drive(&e, &f);
    assert_eq!(code, 4);
    assert!(!log.contains(&"service-rollback"));
}

#[test]
fn refusals_before_anything_changes() {
    let e = env();
    // Not a manager.
    let f = Fake::default();
    f.answer("probe", ok("swarm=active false\n"));
    let (code, _, log) = drive(&e, &f);
    assert_eq!((code, log), (1, vec!["probe"]));
    // No node carries the placement label.
    let f = Fake::default();
    f.answer(
        "probe",
        ok("swarm=active true\nnode|n1|m1|ready|active|manager||\nnode|n2|w1|down|active|worker|true|\n"),
    );
    let (code, _, log) = drive(&e, &f);
    assert_eq!((code, log), (1, vec!["probe"]));
    // `docker stack deploy` itself fails: .env put back, exit 1, resumed and unlocked.
    let f = swarm_server(&e, true);
    f.answer(
        "stack-deploy",
        failed_out("service observer_qts-observer: invalid"),
    );
    let (code, _, log) = drive(&e, &f);
    assert_eq!(code, 1);
    assert!(
        log.contains(&"restore-env") && log.ends_with(&["resume", "unlock"]),
        "{log:?}"
    );
}

/// The probe of a manager whose service already runs v1.1.0 (DIGEST) with exactly the stack
/// file and `.env` this run would upload; `last_good` as given; xtsw-w2 left paused.
fn same_server(e: &Env, last_good: &str) -> Fake {
    let sh = Ctx::new().unwrap();
    let pay = Payload::read(&sh, e, "v1.1.0", "deploy").unwrap();
    let model = compose::parse_yaml(&String::from_utf8_lossy(&pay.compose)).unwrap();
    let stack = swarm::stack_file(e, &model, "v1.1.0", DIGEST).unwrap();
    let files = stack_hashes(&pay.env_text, &stack).join(" ");
    let image = swarm::pinned(e, DIGEST);
    let f = Fake::default();
    f.answer(
        "probe",
        ok(&format!(
            "swarm=active true\nlast_good={last_good}\nfiles={files}\nservice|v1.1.0|{image}|41|completed|1|\ntask|t1|xtsw-w1|Running|Running 1 minute ago|{image}|\nnode|n1|xtsw-m1|ready|active|manager||\nnode|n2|xtsw-w1|ready|active|worker|true|\nnode|n3|xtsw-w2|ready|pause|worker|true|dead0123\n"
        )),
    );
    f
}

#[test]
fn the_same_version_again_resumes_what_a_dead_deploy_paused_and_repairs_the_records() {
    let e = env();
    // Killed after Swarm converged: the records still name v1.0.0, xtsw-w2 is paused.
    let f = same_server(&e, "v1.0.0 sha256:00");
    let (code, _, log) = drive(&e, &f);
    assert_eq!(code, 0);
    assert_eq!(
        log,
        ["probe", "lock", "resume", "record", "history", "unlock"],
        "nothing redeployed"
    );
    // Records in order: lock and resume only.
    let f = same_server(&e, &format!("v1.1.0 {DIGEST}"));
    let (code, _, log) = drive(&e, &f);
    assert_eq!((code, log), (0, vec!["probe", "lock", "resume", "unlock"]));
}

#[test]
fn a_swarm_rollback_names_the_version_running_again() {
    let e = env();
    let f = swarm_server(&e, true);
    f.answer("watch", ok("watch=rollback_completed\n"));
    let sh = Ctx::new().unwrap();
    let mut x = Executor::new(&sh, false, Box::new(f.clone()));
    let (_, code, to) = rollout(&sh, &e, "v1.1.0", DIGEST, &opts(), &mut x, None).unwrap();
    assert_eq!((code, to.as_deref()), (3, Some("v1.0.0")));
}

#[test]
fn a_node_a_dead_deploy_paused_still_counts_as_a_place_for_the_observer() {
    let p = swarm::parse(
        "swarm=active true\nnode|n2|xtsw-w1|down|active|worker|true|\nnode|n3|xtsw-w2|ready|pause|worker|true|dead0123\nnode|n4|xtsw-w3|ready|pause|worker|true|\n",
    );
    let names: Vec<_> = p.eligible().iter().map(|n| n.hostname.clone()).collect();
    assert_eq!(
        names,
        ["xtsw-w2"],
        "paused by an operator: not ours to resume"
    );
}

#[test]
fn a_stack_deploy_that_changes_nothing_is_judged_by_the_soak_not_timed_out() {
    let e = env();
    let f = swarm_server(&e, true);
    f.answer("watch", ok("watch=unchanged\n"))
        .answer("soak", ok("ok soak task t1 running for 10s\n"));
    let (code, _, log) = drive(&e, &f);
    assert_eq!(code, 0);
    assert!(log.contains(&"soak") && log.contains(&"record"), "{log:?}");
}
