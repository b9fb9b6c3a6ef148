//! Issue 15: `deploy --lock-wait`, a maintenance window refusing a deploy, and the history step
//! carrying the record's provenance and writing the deploy-outcome textfile.

use super::*;
use crate::core::records::HistoryRecord;
use crate::server::lock;

fn rollout_err(e: &Env, f: &Fake, o: &Options) -> String {
    let sh = Ctx::new().unwrap();
    let mut x = Executor::new(&sh, false, Box::new(f.clone()));
    match rollout::rollout(&sh, e, "v1.1.0", DIGEST, o, &mut x, None) {
        Ok(v) => format!("ok {v:?}"),
        Err(err) => format!("{err:#}"),
    }
}

/// A holder on another machine: nothing here can tell whether it runs (taken as alive).
fn elsewhere() -> String {
    format!(
        "{{\"id\":\"other\",\"who\":\"bob@ci\",\"operation\":\"deploy\",\"pid\":7,\"version\":\"v0.9.0\",\"machine_id\":\"elsewhere\",\"boot_id\":\"elsewhere\",\"started_epoch\":{}}}\nheld",
        crate::core::util::epoch()
    )
}

#[test]
fn lock_wait_polls_on_the_server_over_the_same_connection_then_deploys() {
    let e = env();
    let f = server(&e);
    f.answer("lock", failed(&elsewhere()))
        .answer("lock", ok("acquired"))
        .answer("gate", healthy_gate("v1.1.0"));
    let mut o = opts(true);
    o.lock_wait_s = 30;
    let (code, _, log) = run(&e, &f, &o);
    assert_eq!(code, 0, "{log:?}");
    let locks: Vec<String> = f
        .scripts
        .borrow()
        .iter()
        .filter(|(id, _, _)| *id == "lock")
        .map(|(_, s, _)| s.clone())
        .collect();
    assert_eq!(locks, [lock::acquire(&e), lock::acquire_wait(&e, 30)]);
    assert_eq!(f.connections(), 1);
}

#[test]
fn lock_wait_on_a_window_with_an_end_waits_only_until_that_end_then_breaks_it() {
    let e = env();
    let f = server(&e);
    let me = crate::core::liveness::Identity::this_process();
    let now = crate::core::util::epoch();
    let window = |end: u64| {
        format!(
            "{{\"id\":\"m\",\"who\":\"ann@desk\",\"operation\":\"maintenance\",\"message\":\"short\",\"pid\":4294967,\"boot_id\":\"{}\",\"machine_id\":\"{}\",\"pid_ns\":\"{}\",\"started_epoch\":{now},\"expires_epoch\":{end}}}\nheld",
            me.boot_id, me.machine_id, me.pid_ns
        )
    };
    // Held with 4 s left; after the (capped) wait it has ended: broken, then taken.
    f.answer("lock", failed(&window(now + 4)))
        .answer("lock", failed(&window(now.saturating_sub(1))))
        .answer("unlock", ok("released"))
        .answer("lock", ok("acquired"))
        .answer("gate", healthy_gate("v1.1.0"));
    let mut o = opts(true);
    o.lock_wait_s = 3600;
    let (code, _, log) = run(&e, &f, &o);
    assert_eq!(code, 0, "{log:?}");
    let waits: Vec<String> = f
        .scripts
        .borrow()
        .iter()
        .filter(|(id, _, _)| *id == "lock")
        .map(|(_, s, _)| s.clone())
        .skip(1)
        .collect();
    // Not 3600 s: at most the 4 s left and one more.
    assert!(
        waits[0] == lock::acquire_wait(&e, 5) || waits[0] == lock::acquire_wait(&e, 4),
        "{waits:?}"
    );
}

#[test]
fn lock_wait_that_times_out_refuses_naming_the_holder() {
    let e = env();
    let f = server(&e);
    f.answer("lock", failed(&elsewhere()))
        .answer("lock", failed(&elsewhere()));
    let mut o = opts(true);
    o.lock_wait_s = 5;
    let msg = rollout_err(&e, &f, &o);
    assert!(msg.contains("bob@ci") && msg.contains("waited 5s"), "{msg}");
    assert!(!f.ran().contains(&"up"));
    // Without --lock-wait: refused at once, one attempt.
    let f = server(&e);
    f.answer("lock", failed(&elsewhere()));
    let (code, _, log) = run(&e, &f, &opts(true));
    assert_eq!(code, 1);
    assert_eq!(log.iter().filter(|i| **i == "lock").count(), 1, "{log:?}");
}

#[test]
fn a_maintenance_window_refuses_a_deploy_naming_its_message_and_holder() {
    let e = env();
    let f = server(&e);
    // Its process (this machine, a pid long gone) exited: still not stale.
    let me = crate::core::liveness::Identity::this_process();
    let held = format!(
        "{{\"id\":\"m\",\"who\":\"ann@desk\",\"operation\":\"maintenance\",\"message\":\"disk swap\",\"pid\":4294967,\"boot_id\":\"{}\",\"machine_id\":\"{}\",\"pid_ns\":\"{}\",\"started\":\"2026-12-04T07:00:00Z\",\"started_epoch\":1}}\nheld",
        me.boot_id, me.machine_id, me.pid_ns
    );
    f.answer("lock", failed(&held));
    let msg = rollout_err(&e, &f, &opts(true));
    assert!(
        msg.contains("\"disk swap\"") && msg.contains("ann@desk"),
        "{msg}"
    );
    assert!(msg.contains("lock release"), "{msg}");
    assert!(!f.ran().contains(&"unlock"), "never broken: {:?}", f.ran());
}

fn history_steps(f: &Fake) -> Vec<(HistoryRecord, String)> {
    f.scripts
        .borrow()
        .iter()
        .filter(|(id, _, _)| *id == "history")
        .map(|(_, s, d)| (serde_json::from_slice(d).unwrap(), s.clone()))
        .collect()
}

#[test]
fn history_records_carry_provenance_and_write_the_textfile() {
    let e = env();
    let f = server(&e);
    f.answer("gate", healthy_gate("v1.1.0"));
    assert_eq!(run(&e, &f, &opts(true)).0, 0);
    let h = history_steps(&f);
    assert_eq!(h.len(), 1);
    let (rec, script) = &h[0];
    assert_eq!(rec.host, crate::core::util::hostname());
    assert_eq!(rec.tool_version, env!("CARGO_PKG_VERSION"));
    assert!(rec.duration_s >= 0.0 && !rec.who.is_empty());
    assert!(script.contains("metrics/observer_deploy.prom"), "{script}");
    assert!(
        script.contains("observer_deploy_last_rolled_back 0"),
        "{script}"
    );
    assert!(
        script.contains("{kind=\"deploy\",version=\"%s\"} 1"),
        "{script}"
    );
}

#[test]
fn an_automatic_rollback_is_the_last_outcome_in_the_textfile() {
    let e = env();
    let f = server(&e);
    f.answer("gate", unhealthy_gate())
        .answer("gate", healthy_gate("v1.0.0"));
    let o = Options {
        strategy: rollout::Strategy::Recreate,
        ..opts(true)
    };
    assert_eq!(run(&e, &f, &o).0, crate::core::exit::ROLLED_BACK);
    let h = history_steps(&f);
    let kinds: Vec<&str> = h.iter().map(|(r, _)| r.kind.as_str()).collect();
    assert_eq!(kinds, ["deploy", "rollback"]);
    assert!(h[0].1.contains("{kind=\"deploy\",version=\"%s\"} 0"));
    assert!(
        h[1].1.contains("observer_deploy_last_rolled_back 1"),
        "{}",
        h[1].1
    );
}
