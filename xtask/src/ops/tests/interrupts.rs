//! Interruptions the first signal handling left unsafe (found by review): a second signal cutting a step short, a signal during a restore or a repair, a machine id shared by two machines.

use super::*;
use crate::core::exit;
use crate::core::signals;
use signal_hook::consts::{SIGINT, SIGTERM};

/// Like [`Fake`]; the step `cut` receives two signals (SIGINT, then SIGTERM: what a cancelled
/// GitHub run sends 7.5 s apart) and is cut short as `Session::run` does (an error). Streams
/// serve `archive` (reads) and swallow stdin (writes).
#[derive(Default, Clone)]
struct Review {
    fake: Fake,
    cut: Option<&'static str>,
    archive: Option<std::path::PathBuf>,
}

impl Transport for Review {
    fn exec(&mut self, sh: &Ctx, step: &Step) -> Result<Output> {
        let out = self.fake.exec(sh, step)?;
        if self.cut == Some(step.id) {
            signals::simulate(SIGINT);
            signals::simulate(SIGTERM);
            bail!(
                "cut short on s by a second signal (the remote command may still be running there)"
            );
        }
        Ok(out)
    }
    fn stream(&mut self, _server: &str, _script: &str, stdin: bool) -> Result<duct::Expression> {
        Ok(if stdin {
            duct::cmd("sh", ["-c", "cat >/dev/null"])
        } else {
            duct::cmd("cat", [self.archive.clone().expect("an archive")])
        })
    }
    fn connections(&self) -> u32 {
        1
    }
}

fn handoff_opts() -> Options {
    let mut o = opts(true);
    o.strategy = rollout::Strategy::Handoff;
    o
}

fn handoff_fake() -> Fake {
    let e = env();
    let f = server(&e);
    f.answer("candidate-gate", candidate_gate("v1.1.0"))
        .answer("soak", ok("ok soak healthy for 10s without a restart"))
        .answer("gate", healthy_gate("v1.1.0"));
    f
}

/// A cancelled GitHub run: SIGINT while a step before the handoff runs, SIGTERM 7.5 s later
/// cuts that step short. The old version never stopped, so the run must still undo what it
/// started (README "Signals": the candidate removed, `.env` put back) — not leave a standby
/// `qts-observer-next` of an unverified version (which takes the archive over the next time the
/// service stops) and the new `.env` under the old version, with exit 130 "safe point".
#[test]
fn a_second_signal_cutting_a_step_before_the_handoff_short_still_undoes_the_run() {
    for at in ["soak", "candidate-gate", "pull", "chown"] {
        signals::reset();
        let e = env();
        let t = Review {
            fake: handoff_fake(),
            cut: Some(at),
            archive: None,
        };
        let sh = Ctx::new().unwrap();
        let mut x = Executor::new(&sh, false, Box::new(t.clone()));
        let r = rollout::rollout(&sh, &e, "v1.1.0", DIGEST, &handoff_opts(), &mut x, None);
        signals::reset();
        let code = match r {
            Ok((_, c, _)) => c,
            Err(e) => exit::code_of(&e),
        };
        let log = t.fake.ran();
        assert_eq!(code, 130, "{at}: {log:?}");
        let after: Vec<_> = log.iter().skip_while(|s| **s != at).copied().collect();
        assert_eq!(
            after.contains(&"remove-candidate"),
            log.contains(&"candidate"),
            "{at}: the candidate is left running: {log:?}"
        );
        assert!(
            after.contains(&"restore-env"),
            "{at}: the new .env is left under the old version: {log:?}"
        );
        assert_eq!(log.last(), Some(&"unlock"), "{at}: {log:?}");
    }
}

/// An empty tar (end-of-archive blocks only), zstd-compressed, and its manifest.
fn empty_snapshot(e: &Env, id: &str) -> (std::path::PathBuf, String) {
    use sha2::Digest;
    let data = zstd::encode_all(&[0u8; 1024][..], 3).unwrap();
    let path = std::env::temp_dir().join(format!("review-{}-{id}.tar.zst", std::process::id()));
    std::fs::write(&path, &data).unwrap();
    let m = crate::server::snapshot::Manifest {
        id: id.into(),
        created: "t".into(),
        env: e.name.clone(),
        server: e.servers[0].name.clone(),
        version: "v1.0.0".into(),
        no_logs: false,
        archive: crate::server::snapshot::ArchiveInfo {
            file: format!("{id}.tar.zst"),
            size: data.len() as u64,
            sha256: crate::core::util::hex(&sha2::Sha256::digest(&data)),
        },
        entries: vec![],
        partial_tails: vec![],
        delta: Default::default(),
        state: None,
    };
    (path, serde_json::to_string(&m).unwrap())
}

/// `snapshot restore` / `rollback --restore`: a SIGTERM while the service is being stopped.
/// The executor is interruptible, so the steps after `stop` (move aside, extract, start) are
/// refused: the service is left STOPPED, and the exit code is 1 ("nothing touched"), neither
/// 143 with the service running nor 4.
#[test]
fn a_signal_during_a_restore_never_leaves_the_service_stopped() {
    signals::reset();
    let e = env();
    let id = "20260101T000000Z-aa";
    let (archive, manifest) = empty_snapshot(&e, id);
    let f = Fake::default();
    f.answer("manifest", ok(&manifest))
        .answer(
            "probe",
            ok(&format!(
                "compose=v2\nlast_good=v1.0.0 sha256:00\nrunning={}\nstate=running\nwriter={{\"instance\":\"ab\"}}\n",
                e.image("v1.0.0")
            )),
        )
        .answer("gate", healthy_gate("v1.0.0"));
    *f.signal_at.borrow_mut() = Some(("stop", SIGTERM));
    let t = Review {
        fake: f.clone(),
        cut: None,
        archive: Some(archive.clone()),
    };
    let sh = Ctx::new().unwrap();
    let mut x = Executor::new(&sh, false, Box::new(t));
    let r = crate::ops::snapshot::restore(&sh, &mut x, &e, &e.servers[0].name, id);
    signals::reset();
    let _ = std::fs::remove_file(&archive);
    let code = match &r {
        Ok(_) => 0,
        Err(e) => exit::code_of(e),
    };
    let log = f.ran();
    let after_stop: Vec<_> = log.iter().skip_while(|s| **s != "stop").copied().collect();
    assert!(
        after_stop.contains(&"up"),
        "the service was stopped and never started again (exit {code}): {log:?}"
    );
    assert_eq!(log.last(), Some(&"unlock"), "{log:?}");
    assert!(
        code == 143 || code == exit::UNHEALTHY,
        "exit {code}: {:?}",
        r.err()
    );
}

/// Redeploying the running version whose records a failed recording left behind (the repair):
/// a SIGINT while the lock is taken. The executor is still interruptible on this path, so the
/// repair's steps AND the unlock are refused: the lock stays held by this run, reported as exit
/// 5 ("recording failed") rather than 130.
#[test]
fn a_signal_during_the_repair_still_releases_the_lock() {
    signals::reset();
    let e = env();
    let sh = Ctx::new().unwrap();
    let files = rollout::Payload::read(&sh, &e, "v1.1.0", "deploy")
        .unwrap()
        .hashes()
        .join(" ");
    let f = Fake::default();
    f.answer(
        "probe",
        ok(&format!(
            "compose=v2\nlast_good=v1.0.0 sha256:00\nrunning={}\nstate=running\nwriter={{\"instance\":\"ab\"}}\nfiles={files}\n",
            e.image("v1.1.0")
        )),
    )
    .answer("gate", healthy_gate("v1.1.0"));
    *f.signal_at.borrow_mut() = Some(("lock", SIGINT));
    let (code, _, log) = run(&e, &f, &handoff_opts());
    signals::reset();
    assert_eq!(
        log.last(),
        Some(&"unlock"),
        "the lock is left held: {log:?}"
    );
    assert_eq!(code, 130, "{log:?}");
}
