//! The rollout's decision tree, driven to every exit code with a fake transport that answers by
//! step id (no docker, no ssh): Kamal's "fake the server, keep the logic" depth of test.

use super::rollout::{self, Options};
use crate::config::{self, Env};
use crate::ctx::{Ctx, Output};
use crate::plan::{Executor, Step, Transport};
use crate::registry::Creds;
use anyhow::{bail, Result};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

pub(super) const DIGEST: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// A step the fake ran: (id, script, stdin).
pub(super) type Ran = (&'static str, String, Vec<u8>);

/// Answers by step id (queued answers first, then the default: success, no output); records the
/// id of every step it is asked to run.
#[derive(Default, Clone)]
pub(super) struct Fake {
    pub(super) answers: Rc<RefCell<BTreeMap<&'static str, VecDeque<Output>>>>,
    log: Rc<RefCell<Vec<&'static str>>>,
    /// A signal "received" while the step with this id runs (`core::signals::simulate`).
    pub(super) signal_at: Rc<RefCell<Option<(&'static str, i32)>>>,
    /// (id, script, stdin) of every step run, in order.
    pub(super) scripts: Rc<RefCell<Vec<Ran>>>,
}

pub(super) fn ok(stdout: &str) -> Output {
    Output {
        ok: true,
        code: Some(0),
        stdout: stdout.into(),
        stderr: String::new(),
    }
}

pub(super) fn failed(stdout: &str) -> Output {
    Output {
        ok: false,
        code: Some(1),
        stdout: stdout.into(),
        stderr: "boom".into(),
    }
}

impl Fake {
    pub(super) fn answer(&self, id: &'static str, out: Output) -> &Self {
        self.answers
            .borrow_mut()
            .entry(id)
            .or_default()
            .push_back(out);
        self
    }
    pub(super) fn ran(&self) -> Vec<&'static str> {
        self.log.borrow().clone()
    }
}

impl Transport for Fake {
    fn exec(&mut self, _sh: &Ctx, step: &Step) -> Result<Output> {
        self.log.borrow_mut().push(step.id);
        let stdin = match &step.input {
            crate::plan::Input::None => Vec::new(),
            crate::plan::Input::Secret(d) | crate::plan::Input::Data(d) => d.clone(),
        };
        self.scripts
            .borrow_mut()
            .push((step.id, step.script().to_string(), stdin));
        if let Some((id, sig)) = *self.signal_at.borrow() {
            if id == step.id {
                crate::core::signals::simulate(sig);
            }
        }
        let next = self
            .answers
            .borrow_mut()
            .get_mut(step.id)
            .and_then(|q| q.pop_front());
        Ok(next.unwrap_or_else(|| ok("")))
    }
    fn stream(&mut self, _server: &str, _script: &str, _stdin: bool) -> Result<duct::Expression> {
        bail!("the fake transport does not stream")
    }
    fn connections(&self) -> u32 {
        1
    }
}

pub(super) fn env() -> Env {
    config::test_env("/srv/observer", "/tmp/r.git")
}

pub(super) fn healthy_gate(version: &str) -> Output {
    ok(&format!(
        "ok health container healthy\nok image r/o:{version}\nok http /health answered 200\nok archive-dir config/observer exists\nok start-line found\nenv QTS_OBSERVER_STANDALONE=1\nenv PYTHONPATH=/app/src:/app\nenv OBSERVER_DATA_DIR=/app/data/observer\nenv OBSERVER_LOG_DIR=/app/logs\nsecret KIS_API_KEY=unset\nsecret KIS_API_SECRET=unset\n"
    ))
}

pub(super) fn unhealthy_gate() -> Output {
    ok("fail health container unhealthy after 12s\nenv QTS_OBSERVER_STANDALONE=1\n")
}

/// A fake server running v1.0.0 (last good v1.0.0), whose pull serves `DIGEST`.
pub(super) fn server(e: &Env) -> Fake {
    let f = Fake::default();
    f.answer(
        "probe",
        ok(&format!(
            "compose=v2 v1\nlast_good=v1.0.0 sha256:00\nrunning={}\nstate=running\nwriter={{\"instance\":\"ab\"}}\n",
            e.image("v1.0.0")
        )),
    )
    .answer("pull", ok(&format!("[\"{}@{DIGEST}\"]", e.repo())));
    f
}

pub(super) fn opts(rollback: bool) -> Options {
    Options {
        strategy: rollout::Strategy::Recreate,
        rollback,
        no_snapshot: true,
        dry_run: false,
        json: false,
        kind: "deploy",
        allow_downgrade: false,
        allow_unverified: false,
        lock_wait_s: 0,
    }
}

/// What `--dry-run` prints for a rollout of v1.1.0 with these inputs.
pub(super) fn dry_run_plan(
    e: &Env,
    c: crate::compose::Compose,
    snapshot: bool,
    strategy: rollout::Strategy,
) -> crate::plan::Plan {
    let sh = Ctx::new().unwrap();
    let st = super::steps::Steps::new(e, &e.servers[0].name);
    let pay = rollout::Payload::read(&sh, e, "v1.1.0", "deploy").unwrap();
    rollout::plan(&st, "v1.1.0", DIGEST, c, None, &pay, snapshot, strategy)
}

/// Runs a rollout of v1.1.0 against `fake`: (exit code, executor's step ids, transport's log).
pub(super) fn run(e: &Env, fake: &Fake, o: &Options) -> (u8, Vec<&'static str>, Vec<&'static str>) {
    let sh = Ctx::new().unwrap();
    let mut x = Executor::new(&sh, o.dry_run, Box::new(fake.clone()));
    let creds = Creds {
        user: "ci".into(),
        token: "tok".into(),
    };
    let r = rollout::rollout(&sh, e, "v1.1.0", DIGEST, o, &mut x, Some(&creds));
    let code = match r {
        Ok((_, code, _)) => code,
        Err(err) => crate::core::exit::code_of(&err),
    };
    (code, x.done.clone(), fake.ran())
}

#[test]
fn a_healthy_rollout_runs_exactly_the_dry_run_plan() {
    let e = env();
    let f = server(&e);
    f.answer("gate", healthy_gate("v1.1.0"));
    let (code, done, log) = run(&e, &f, &opts(true));
    assert_eq!(code, 0);
    // What --dry-run prints for the same inputs:
    let plan = dry_run_plan(
        &e,
        crate::compose::Compose::V2,
        false,
        rollout::Strategy::Recreate,
    );
    // verify runs before the rollout (through the registry client), the rest in plan order.
    assert_eq!(done, plan.ids()[1..].to_vec());
    assert!(log.contains(&"prune") && log.last() == Some(&"unlock"));
}

#[test]
fn dry_run_plan_includes_ownership_repair_and_snapshot() {
    let e = env();
    let p = dry_run_plan(
        &e,
        crate::compose::Compose::V1,
        true,
        rollout::Strategy::Recreate,
    );
    let ids = p.ids();
    let pos = |id| ids.iter().position(|x| *x == id).unwrap();
    assert!(pos("lock") < pos("upload-env"));
    assert!(pos("pull") < pos("chown") && pos("chown") < pos("snapshot"));
    assert!(pos("snapshot") < pos("up") && pos("up") < pos("gate"));
    assert!(p
        .get("up")
        .unwrap()
        .script()
        .contains("docker-compose --compatibility"));
    assert!(matches!(
        p.get("upload-env").unwrap().input,
        crate::plan::Input::Secret(_)
    ));
}

#[test]
fn a_dry_run_changes_nothing() {
    let e = env();
    let f = server(&e);
    let mut o = opts(true);
    o.dry_run = true;
    let (code, _, log) = run(&e, &f, &o);
    assert_eq!(code, 0);
    assert_eq!(
        log,
        ["probe"],
        "only the read-only probe reaches the server"
    );
}

#[test]
fn failed_gate_rolls_back_to_the_last_good_version_exit_3() {
    let e = env();
    let f = server(&e);
    f.answer("gate", unhealthy_gate())
        .answer("gate", healthy_gate("v1.0.0"));
    let (code, _, log) = run(&e, &f, &opts(true));
    assert_eq!(code, 3);
    let after_gate: Vec<_> = log.iter().skip_while(|s| **s != "gate").copied().collect();
    assert_eq!(
        after_gate,
        [
            "gate",
            "logs",
            "history",
            "upload-env",
            "up",
            "gate",
            "history",
            "unlock"
        ]
    );
}

#[test]
fn failed_rollback_is_exit_4() {
    let e = env();
    let f = server(&e);
    f.answer("gate", unhealthy_gate())
        .answer("gate", unhealthy_gate());
    assert_eq!(run(&e, &f, &opts(true)).0, 4);
    // The rollback's start fails outright: still 4.
    let f = server(&e);
    f.answer("gate", unhealthy_gate())
        .answer("up", ok(""))
        .answer("up", failed("compose error"));
    assert_eq!(run(&e, &f, &opts(true)).0, 4);
}

#[test]
fn no_last_good_version_stops_the_failed_one_exit_4() {
    let e = env();
    let f = Fake::default();
    f.answer("probe", ok("compose=v1\nlast_good=\nrunning=\n"))
        .answer("pull", ok(&format!("[\"{}@{DIGEST}\"]", e.repo())))
        .answer("gate", unhealthy_gate());
    let (code, _, log) = run(&e, &f, &opts(true));
    assert_eq!(code, 4);
    assert!(log.contains(&"down"));
}

#[test]
fn no_rollback_leaves_the_failed_version_exit_1() {
    let e = env();
    let f = server(&e);
    f.answer("gate", unhealthy_gate());
    let (code, _, log) = run(&e, &f, &opts(false));
    assert_eq!(code, 1);
    assert!(!log.contains(&"down") && log.iter().filter(|s| **s == "up").count() == 1);
}

#[test]
fn failures_before_the_start_touch_nothing_that_runs_exit_1() {
    let e = env();
    // The lock is held by a live deploy elsewhere.
    let f = server(&e);
    f.answer(
        "lock",
        failed("{\"id\":\"x\",\"who\":\"ci@elsewhere\",\"host\":\"elsewhere\",\"pid\":1,\"version\":\"v9.9.9\",\"started_epoch\":4102444800}\nheld"),
    );
    let (code, _, log) = run(&e, &f, &opts(true));
    assert_eq!(code, 1);
    assert!(!log.contains(&"up") && !log.contains(&"unlock"));
    // The server pulled another digest than the registry serves.
    let f = Fake::default();
    f.answer(
        "probe",
        ok("compose=v2\nlast_good=v1.0.0 sha256:00\nrunning=\n"),
    )
    .answer("pull", ok(&format!("[\"{}@sha256:2222\"]", e.repo())));
    let (code, _, log) = run(&e, &f, &opts(true));
    assert_eq!(code, 1);
    assert!(!log.contains(&"up") && log.last() == Some(&"unlock"));
    // The pre-deploy snapshot fails (the fake cannot stream).
    let f = server(&e);
    let mut o = opts(true);
    o.no_snapshot = false;
    let (code, _, log) = run(&e, &f, &o);
    assert_eq!(code, 1);
    assert!(!log.contains(&"up") && log.last() == Some(&"unlock"));
    // No compose on the server.
    let f = Fake::default();
    f.answer("probe", ok("compose=none\n"));
    assert_eq!(run(&e, &f, &opts(true)).0, 1);
}

#[test]
fn a_dead_local_holder_is_broken_and_the_deploy_goes_on() {
    let e = env();
    let f = server(&e);
    // A holder of this machine and boot, in this PID namespace, whose process is gone.
    let me = crate::core::liveness::Identity::this_process();
    let dead = format!(
        "{{\"id\":\"old\",\"host\":\"{}\",\"pid\":4294967,\"version\":\"v0.9.0\",\"boot_id\":\"{}\",\"machine_id\":\"{}\",\"pid_ns\":\"{}\",\"started_epoch\":{}}}\nheld",
        crate::core::util::hostname(),
        me.boot_id,
        me.machine_id,
        me.pid_ns,
        crate::core::util::epoch()
    );
    f.answer("lock", failed(&dead))
        .answer("gate", healthy_gate("v1.1.0"));
    let (code, _, log) = run(&e, &f, &opts(true));
    assert_eq!(code, 0);
    assert_eq!(&log[1..4], ["lock", "unlock", "lock"]);
    // The same host name and pid, but a record that cannot tell (an older tool's): refused.
    let f = server(&e);
    let unknown = format!(
        "{{\"id\":\"old\",\"host\":\"{}\",\"pid\":4294967,\"version\":\"v0.9.0\",\"started_epoch\":{}}}\nheld",
        crate::core::util::hostname(),
        crate::core::util::epoch()
    );
    f.answer("lock", failed(&unknown));
    let (code, _, log) = run(&e, &f, &opts(true));
    assert_eq!(code, 1);
    assert_eq!(log.last(), Some(&"lock"), "{log:?}");
}

#[test]
fn one_connection_and_masked_secrets_in_the_plan() {
    let e = env();
    let sh = Ctx::new().unwrap();
    let x = Executor::new(&sh, false, Box::new(Fake::default()));
    assert_eq!(x.connections(), 1);
    let st = super::steps::Steps::new(&e, &e.servers[0].name);
    let creds = Creds {
        user: "ci".into(),
        token: "tok-never-shown".into(),
    };
    let step = st.pull("v1.1.0", Some(&creds));
    assert!(!step.render().contains("never-shown"));
    assert!(step.script().contains("--password-stdin"));
}

// ------------------------------------------------------------------------------------ handoff

pub(super) fn handoff() -> Options {
    Options {
        strategy: rollout::Strategy::Handoff,
        ..opts(true)
    }
}

pub(super) fn candidate_gate(version: &str) -> Output {
    healthy_gate(version)
}

pub(super) fn active(container: &str) -> Output {
    ok(&format!(
        "ok handoff {container} is active: status=200 role=active instance=cd"
    ))
}

#[test]
fn a_handoff_runs_exactly_its_plan_and_never_stops_before_the_soak() {
    let e = env();
    let f = server(&e);
    f.answer("candidate-gate", candidate_gate("v1.1.0"))
        .answer("soak", ok("ok soak healthy for 10s without a restart"))
        .answer("handoff", active("qts-observer-next"))
        .answer("gate", healthy_gate("v1.1.0"))
        .answer("release-candidate", active("qts-observer"));
    let (code, done, log) = run(&e, &f, &handoff());
    assert_eq!(code, 0);
    let plan = dry_run_plan(
        &e,
        crate::compose::Compose::V2,
        false,
        rollout::Strategy::Handoff,
    );
    assert_eq!(done, plan.ids()[1..].to_vec());
    let pos = |id| log.iter().position(|x| *x == id).unwrap();
    assert!(pos("candidate") < pos("candidate-gate"));
    assert!(pos("soak") < pos("handoff") && pos("handoff") < pos("up"));
    assert!(pos("gate") < pos("release-candidate"));
    assert!(!log.contains(&"stop") && !log.contains(&"down"));
}

#[test]
fn a_candidate_that_fails_its_gate_or_soak_changes_nothing_that_runs_exit_3() {
    let e = env();
    for (id, answer) in [
        ("candidate-gate", unhealthy_gate()),
        (
            "soak",
            ok("fail soak after 7s: exited  1 ... (was running healthy 0 ...)"),
        ),
        ("candidate", failed("no such image")),
    ] {
        let f = server(&e);
        f.answer("candidate-gate", candidate_gate("v1.1.0"))
            .answer("soak", ok("ok soak healthy"));
        f.answers.borrow_mut().remove(id);
        f.answer(id, answer);
        let (code, _, log) = run(&e, &f, &handoff());
        assert_eq!(code, 3, "{id}: {log:?}");
        for never in ["handoff", "up", "gate", "record", "start-old"] {
            assert!(!log.contains(&never), "{id}: {never} ran: {log:?}");
        }
        let after: Vec<_> = log.iter().skip_while(|s| **s != id).copied().collect();
        assert!(
            after.contains(&"remove-candidate") && after.contains(&"restore-env"),
            "{id}: {log:?}"
        );
        assert_eq!(log.last(), Some(&"unlock"));
    }
}

#[test]
fn a_first_deploy_whose_candidate_fails_is_exit_4() {
    let e = env();
    let f = Fake::default();
    f.answer(
        "probe",
        ok("compose=v2\nlast_good=\nrunning=\nstate=\nwriter=\n"),
    )
    .answer("pull", ok(&format!("[\"{}@{DIGEST}\"]", e.repo())))
    .answer("candidate-gate", unhealthy_gate());
    assert_eq!(run(&e, &f, &handoff()).0, 4);
}

#[test]
fn a_failed_handoff_hands_back_to_the_old_container_exit_3() {
    let e = env();
    let f = server(&e);
    f.answer("candidate-gate", candidate_gate("v1.1.0"))
        .answer("soak", ok("ok soak healthy"))
        .answer(
            "handoff",
            failed("fail handoff qts-observer-next did not become active"),
        )
        .answer("gate", healthy_gate("v1.0.0"));
    let (code, _, log) = run(&e, &f, &handoff());
    assert_eq!(code, 3);
    let after: Vec<_> = log
        .iter()
        .skip_while(|s| **s != "handoff")
        .copied()
        .collect();
    assert_eq!(
        after,
        [
            "handoff",
            "remove-candidate",
            "restore-env",
            "start-old",
            "gate",
            "history",
            "unlock"
        ]
    );
    // The old version started again but is not healthy: exit 4, not 3.
    let f = server(&e);
    f.answer("candidate-gate", candidate_gate("v1.1.0"))
        .answer("soak", ok("ok soak healthy"))
        .answer("handoff", failed("fail handoff"))
        .answer("gate", unhealthy_gate());
    assert_eq!(run(&e, &f, &handoff()).0, 4);
}

#[test]
fn a_service_that_fails_after_the_handoff_hands_back_to_the_previous_version() {
    let e = env();
    let f = server(&e);
    f.answer("candidate-gate", candidate_gate("v1.1.0"))
        .answer("soak", ok("ok soak healthy"))
        .answer("handoff", active("qts-observer-next"))
        .answer("gate", unhealthy_gate())
        .answer("gate", healthy_gate("v1.0.0"))
        .answer("release-candidate", active("qts-observer"));
    let (code, _, log) = run(&e, &f, &handoff());
    assert_eq!(code, 3);
    let after: Vec<_> = log.iter().skip_while(|s| **s != "gate").copied().collect();
    assert_eq!(
        after,
        [
            "gate",
            "history",
            "restore-env",
            "up",
            "gate",
            "release-candidate",
            "remove-candidate",
            "history",
            "unlock"
        ]
    );
    // ... and when the previous version fails too: exit 4.
    let f = server(&e);
    f.answer("candidate-gate", candidate_gate("v1.1.0"))
        .answer("soak", ok("ok soak healthy"))
        .answer("handoff", active("qts-observer-next"))
        .answer("gate", unhealthy_gate())
        .answer("gate", unhealthy_gate());
    assert_eq!(run(&e, &f, &handoff()).0, 4);
}

/// The probe of a server that runs v1.1.0 with exactly the files this deploy uploads (or not).
fn running_v110(e: &Env, same_files: bool) -> Output {
    let sh = Ctx::new().unwrap();
    let pay = rollout::Payload::read(&sh, e, "v1.1.0", "deploy").unwrap();
    let mut files = pay.hashes();
    if !same_files {
        files[0] = "0".repeat(64); // another .env (a new secret value)
    }
    ok(&format!(
        "compose=v2\nlast_good=v1.1.0 sha256:00\nrunning={}\nstate=running\nwriter=x\nfiles={}\n",
        e.image("v1.1.0"),
        files.join(" ")
    ))
}

#[test]
fn redeploying_the_running_version_verifies_it_and_stops_nothing() {
    let e = env();
    let f = Fake::default();
    f.answer("probe", running_v110(&e, true))
        .answer("gate", healthy_gate("v1.1.0"));
    let (code, _, log) = run(&e, &f, &handoff());
    assert_eq!(code, 0);
    assert_eq!(log, ["probe", "gate"]);
    let f = Fake::default();
    f.answer("probe", running_v110(&e, true))
        .answer("gate", unhealthy_gate());
    let (code, _, log) = run(&e, &f, &handoff());
    assert_eq!(code, 1);
    assert_eq!(log, ["probe", "gate"]);
}

#[test]
fn redeploying_the_running_version_with_a_changed_env_hands_off() {
    let e = env();
    let f = Fake::default();
    f.answer("probe", running_v110(&e, false))
        .answer("pull", ok(&format!("[\"{}@{DIGEST}\"]", e.repo())))
        .answer("candidate-gate", candidate_gate("v1.1.0"))
        .answer("soak", ok("ok soak healthy"))
        .answer("handoff", active("qts-observer-next"))
        .answer("gate", healthy_gate("v1.1.0"))
        .answer("release-candidate", active("qts-observer"));
    let (code, _, log) = run(&e, &f, &handoff());
    assert_eq!(code, 0);
    assert!(
        log.contains(&"upload-env") && log.contains(&"handoff"),
        "{log:?}"
    );
}

#[test]
fn a_running_observer_without_the_writer_lock_is_replaced_by_recreate() {
    let e = env();
    let f = Fake::default();
    f.answer(
        "probe",
        ok(&format!(
            "compose=v2\nlast_good=v1.0.0 sha256:00\nrunning={}\nstate=running\nwriter=\n",
            e.image("v1.0.0")
        )),
    )
    .answer("pull", ok(&format!("[\"{}@{DIGEST}\"]", e.repo())))
    .answer("gate", healthy_gate("v1.1.0"));
    let (code, _, log) = run(&e, &f, &handoff());
    assert_eq!(code, 0);
    assert!(!log.contains(&"candidate"), "{log:?}");
}

mod audit;
mod endings;
pub mod foreign_and_prune;
mod interrupts;
mod nonroot;
mod snapshot_delta_scripts;
mod snapshot_routes;
