//! Golden tests: every server builder's exact text, for an environment whose `remote_dir` holds a
//! space and a quote, pinned in `server/golden/NAME.sh` (regenerate with `UPDATE_GOLDEN=1 cargo
//! test -p xtask --bins golden`, then review the diff). Every script must also parse with `sh -n`;
//! `cargo xtask ci` runs `shellcheck -s sh` over the same files.

use super::*;
use crate::compose::Compose;
use crate::config::{self, Env};
use crate::core::dotenv::Entry;
use crate::core::records::LastGood;
use std::path::PathBuf;

fn env() -> Env {
    let mut e = config::test_env("/srv/obs dir/it's", "/tmp/r.git");
    e.backups_dir = "/srv/obs backups".into();
    e
}

/// (name, script) for every builder in `server/`.
pub fn all_scripts() -> Vec<(&'static str, String)> {
    let e = env();
    let root = snapshot::Access::Direct;
    let ctr = snapshot::Access::Container(e.image("v1.2.3"));
    let tail = snapshot::PartialTail {
        path: "config/observer/observer.jsonl".into(),
        keep_bytes: 4096,
    };
    vec![
        (
            "snapshot-keep-history",
            snapshot::keep_history(&e, ".restore-undo/20261204T070000Z-before-s1"),
        ),
        ("probe", probe::script(&e)),
        ("swarm-probe", swarm::probe(&e)),
        ("swarm-status", swarm::status(&e)),
        ("swarm-pause", swarm::pause_others(&e, "0123456789abcdef")),
        ("swarm-resume", swarm::resume_paused(&e)),
        ("swarm-deploy-login", swarm::deploy(&e, true)),
        ("swarm-deploy", swarm::deploy(&e, false)),
        (
            "swarm-watch",
            swarm::watch(
                &e,
                &swarm::pinned(&e, "sha256:0123"),
                "1764800000000000000",
                "40",
                "xtsw-w1",
                200,
            ),
        ),
        (
            "swarm-soak",
            swarm::soak(&swarm::pinned(&e, "sha256:0123"), 10),
        ),
        ("swarm-rollback", swarm::rollback()),
        ("swarm-logs", swarm::logs()),
        ("status", probe::status_script(&e)),
        ("remote-checks", probe::remote_checks_script(&e)),
        ("lock-acquire", lock::acquire(&e)),
        ("lock-acquire-wait", lock::acquire_wait(&e, 30)),
        ("lock-release", lock::release(&e, "0123456789abcdef")),
        ("lock-read", lock::read(&e)),
        ("lock-force-release", lock::force_release(&e)),
        ("upload-env", app::upload(&e, ".env", "600")),
        (
            "env-has",
            app::env_has(&e, &["KIS_API_KEY".into(), "KIS_API_SECRET".into()]),
        ),
        (
            "upload-compose",
            app::upload(&e, "docker-compose.server.yml", "644"),
        ),
        ("pull-login", app::pull(&e, &e.image("v1.2.3"), true)),
        ("pull", app::pull(&e, &e.image("v1.2.3"), false)),
        ("make-dirs", app::make_dirs(&e)),
        ("chown", app::chown(&e, &e.image("v1.2.3"))),
        ("up-v1", app::up(&e, Compose::V1)),
        ("up-v2", app::up(&e, Compose::V2)),
        ("down-v1", app::down(&e, Compose::V1)),
        ("down-v2", app::down(&e, Compose::V2)),
        ("logs", app::logs()),
        ("images", app::images(&e)),
        (
            "rmi",
            app::rmi(&e, &["v1.0.0".into(), "v1.1.0-rc.1".into()]),
        ),
        ("gate", gate::script(&e, "v1.2.3", "qts-observer", true, 90)),
        (
            "gate-candidate",
            gate::script(&e, "v1.2.3", handoff::CANDIDATE, false, 90),
        ),
        ("keep-env", app::keep_env(&e)),
        ("restore-env", app::restore_env(&e)),
        ("clean-candidate", handoff::clean_candidate()),
        (
            "start-candidate-v1",
            handoff::start_candidate(&e, Compose::V1),
        ),
        (
            "start-candidate-v2",
            handoff::start_candidate(&e, Compose::V2),
        ),
        ("soak", handoff::soak(handoff::CANDIDATE, 10)),
        (
            "hand-over",
            handoff::hand_over("qts-observer", handoff::CANDIDATE, 30),
        ),
        ("start-old", handoff::start("qts-observer")),
        ("remove-candidate", handoff::remove_candidate()),
        (
            "record-last-good",
            history::record_last_good(
                &e,
                &LastGood {
                    version: "v1.2.3".into(),
                    digest: "sha256:0123".into(),
                },
            ),
        ),
        ("history-append", history::append(&e, None)),
        (
            "history-append-metrics",
            history::append(
                &e,
                Some(&history::DeployOutcome {
                    kind: "rollback",
                    version: "v1.2.3".into(),
                    success: true,
                    rolled_back: true,
                    duration_s: 12.3456,
                }),
            ),
        ),
        ("history-read", history::read(&e, 5)),
        ("snapshot-tar", snapshot::tar(&e, false, &root)),
        ("snapshot-tar-no-logs", snapshot::tar(&e, true, &root)),
        ("snapshot-tar-container", snapshot::tar(&e, false, &ctr)),
        (
            "snapshot-write-partial",
            snapshot::write_partial(&e, "20261129T100000Z-abcdef.tar.zst.partial"),
        ),
        (
            "snapshot-remove-partial",
            snapshot::remove_partial(&e, "20261129T100000Z-abcdef.tar.zst.partial"),
        ),
        (
            "snapshot-finish",
            snapshot::finish(
                &e,
                "20261129T100000Z-abcdef",
                "20261129T100000Z-abcdef.tar.zst.partial",
                "20261129T100000Z-abcdef.tar.zst",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
        ),
        (
            "snapshot-cat",
            snapshot::cat(&e, "20261129T100000Z-abcdef.manifest.json"),
        ),
        ("snapshot-list", snapshot::list(&e)),
        ("snapshot-extract", snapshot::extract(&e.remote_dir, &root)),
        (
            "snapshot-extract-container",
            snapshot::extract(&e.remote_dir, &ctr),
        ),
        (
            "snapshot-move-aside",
            snapshot::move_aside(&e, ".restore-undo/20261129T100000Z-before-x", &root),
        ),
        (
            "snapshot-move-aside-container",
            snapshot::move_aside(&e, ".restore-undo/20261129T100000Z-before-x", &ctr),
        ),
        ("snapshot-cut-tail", snapshot::cut_tail(&e, &tail, &root)),
        (
            "snapshot-cut-tail-container",
            snapshot::cut_tail(&e, &tail, &ctr),
        ),
        ("snapshot-prune-scan", snapshot::prune_scan(&e)),
        ("snapshot-tools", snapshot_remote::tools()),
        (
            "snapshot-create",
            snapshot_remote::create(&e, false, "20261129T100000Z-abcdef.tar.zst.partial", &root),
        ),
        (
            "snapshot-create-no-logs",
            snapshot_remote::create(&e, true, "20261129T100000Z-abcdef.tar.zst.partial", &root),
        ),
        (
            "snapshot-create-container",
            snapshot_remote::create(&e, false, "20261129T100000Z-abcdef.tar.zst.partial", &ctr),
        ),
        (
            "snapshot-read-back",
            snapshot_remote::read_back(&e, "20261129T100000Z-abcdef.tar.zst"),
        ),
        (
            "snapshot-extract-checked",
            snapshot_remote::extract(
                &e,
                "20261129T100000Z-abcdef.tar.zst",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                &e.remote_dir,
                &root,
            ),
        ),
        (
            "snapshot-extract-checked-container",
            snapshot_remote::extract(
                &e,
                "20261129T100000Z-abcdef.tar.zst",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                &e.remote_dir,
                &ctr,
            ),
        ),
        ("snapshot-scan", snapshot_delta::scan(&e, false, true)),
        (
            "snapshot-create-delta",
            snapshot_delta::create(
                &e,
                &delta_plan(),
                "20261129T100000Z-abcdef.tar.zst.partial",
                &snapshot::Access::Direct,
            ),
        ),
        (
            "snapshot-apply-delta",
            snapshot_delta::apply(&e, &delta_manifest(), &snapshot::Access::Direct),
        ),
        (
            "snapshot-create-delta-container",
            snapshot_delta::create(
                &e,
                &delta_plan(),
                "20261129T100000Z-abcdef.tar.zst.partial",
                &ctr,
            ),
        ),
        (
            "snapshot-apply-delta-container",
            snapshot_delta::apply(&e, &delta_manifest(), &ctr),
        ),
        (
            "snapshot-remove-files",
            snapshot::remove_files(
                &e,
                &[
                    "20261129T100000Z-abcdef.tar.zst".into(),
                    "20261129T100000Z-abcdef.tar.zst.partial".into(),
                ],
            ),
        ),
    ]
    .into_iter()
    .chain(super::tests_day_two::scripts(&e))
    .collect()
}

/// A delta plan with names a shell must not interpret.
fn delta_plan() -> snapshot_delta::Plan {
    snapshot_delta::Plan {
        whole: vec![
            "config".into(),
            "config/observer".into(),
            "logs/it's $(id).log".into(),
        ],
        candidates: vec![snapshot_delta::Candidate {
            path: "config/observer/observer.jsonl".into(),
            offset: 1_048_576,
            window_len: 4096,
            window: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        }],
        removed: vec!["logs/observer.log.1".into()],
        unchanged: vec![],
    }
}

/// An incremental manifest: one removed path, one append.
fn delta_manifest() -> snapshot::Manifest {
    snapshot::Manifest {
        id: "20261129T110000Z-abcdef".into(),
        created: String::new(),
        env: "production".into(),
        server: "s".into(),
        version: "v1.2.3".into(),
        no_logs: false,
        archive: snapshot::ArchiveInfo {
            file: "20261129T110000Z-abcdef.tar.zst".into(),
            size: 1,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
        },
        entries: vec![],
        partial_tails: vec![],
        delta: snapshot::Delta {
            parent: Some("20261129T100000Z-abcdef".into()),
            depth: 1,
            appends: vec![snapshot::Append {
                path: "config/observer/observer.jsonl".into(),
                offset: 1_048_576,
            }],
            removed: vec!["logs/it's $(id).log".into()],
        },
        state: None,
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/server/golden")
}

#[test]
fn golden_scripts() {
    let dir = golden_dir();
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut wrong = Vec::new();
    let all = all_scripts();
    for (name, script) in &all {
        let file = dir.join(format!("{name}.sh"));
        let text = format!("# golden: server builder `{name}` (see server/tests.rs)\n{script}\n");
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(want) if want == text => {}
            Ok(_) => wrong.push(format!("{name}: differs from {}", file.display())),
            Err(_) => wrong.push(format!("{name}: {} is missing", file.display())),
        }
    }
    // No stale golden file either.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let n = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".sh")
            .to_string();
        if !all.iter().any(|(name, _)| *name == n) {
            wrong.push(format!("{n}: golden file without a builder"));
        }
    }
    assert!(
        wrong.is_empty(),
        "golden scripts changed (UPDATE_GOLDEN=1 to accept, then review the diff):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_script_parses_with_sh_n() {
    for (name, script) in all_scripts() {
        let out = duct::cmd!("sh", "-n")
            .stdin_bytes(script.clone())
            .stderr_capture()
            .unchecked()
            .run()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: sh -n: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_remote_dir_is_always_quoted() {
    for (name, script) in all_scripts() {
        if script.contains("/srv/obs dir") {
            assert!(
                script.contains(r"'/srv/obs dir/it'\''s"),
                "{name} interpolates the remote dir unquoted:\n{script}"
            );
        }
    }
}

#[test]
fn gate_parsing() {
    let out = "ok health container healthy\nok http /health answered 200\nenv QTS_OBSERVER_STANDALONE=1\nenv PYTHONPATH=/app/src:/app\nenv OBSERVER_DATA_DIR=/app/data/observer\nenv OBSERVER_LOG_DIR=/wrong\nsecret KIS_API_KEY=set\n";
    let g = gate::parse(out);
    assert_eq!(
        g.failed,
        vec!["env OBSERVER_LOG_DIR=/wrong, expected /app/logs".to_string()]
    );
    let g = gate::parse("fail health container unhealthy after 9s\n");
    assert!(g.failed[0].contains("unhealthy"));
    assert!(g
        .failed
        .iter()
        .any(|f| f.contains("environment could not be read")));
    let g = gate::parse("env QTS_OBSERVER_STANDALONE=1\nforbidden OBSERVER_STANDALONE=set\n");
    assert!(g.failed.iter().any(|f| f.contains("forbidden")));
}

#[test]
fn pruning_keeps_newest_running_and_last_good() {
    let listing = "v1.0.0 2026-01-01 00:00:00\nv1.1.0 2026-02-01 00:00:00\nv1.2.0 2026-03-01 00:00:00\nv1.3.0 2026-04-01 00:00:00\n<none> 2026-05-01\nlatest 2026-05-01\n";
    assert_eq!(
        app::prune_candidates(listing, 2, &["v1.3.0", "v1.0.0"]),
        vec!["v1.1.0".to_string()]
    );
    assert!(app::prune_candidates(listing, 10, &[]).is_empty());
}

#[test]
fn env_file_carries_tag_and_given_secrets() {
    let e = env();
    let text = app::env_file(
        &e,
        "v1.2.3",
        &[
            Entry::Line("KIS_API_KEY".into(), "'k'".into()),
            Entry::Keep("KIS_API_SECRET".into()),
        ],
    );
    assert!(text.contains("IMAGE_TAG=v1.2.3\n"));
    assert!(text.contains("IMAGE_REPO=127.0.0.1:5000/observer\n"));
    assert!(text.contains("COMPOSE_PROJECT_NAME=observer\n"));
    assert!(text.contains("OBSERVER_BIND_ADDRESS=127.0.0.1\n"));
    assert!(text.ends_with("KIS_API_KEY='k'\n# xtask-keep KIS_API_SECRET\n"));
}

#[test]
fn probe_and_fields() {
    let p = probe::parse("compose=v2\nlast_good=v1.2.3 sha256:ab\nrunning=r/o:v1.2.3\n");
    assert_eq!(p.compose, "v2");
    assert_eq!(p.last_good.unwrap().version, "v1.2.3");
    assert_eq!(tag_of(&p.running), "v1.2.3");
    assert_eq!(tag_of("r/o:latest"), "");
    assert_eq!(field("a=1\nab=2\n", "a"), "1");
    assert_eq!(
        digest_in("[\"r/o@sha256:1\",\"x/y@sha256:2\"]", "x/y").as_deref(),
        Some("sha256:2")
    );
}

/// Runs the `.env` upload script in a scratch deploy root: (exit code, stdout, the new `.env`, the
/// files left there).
fn upload_env_run(old: Option<&str>, new: &str) -> (i32, String, String, Vec<String>) {
    let dir = std::env::temp_dir().join(format!(
        "xtask-upload-env-{}",
        crate::core::util::random_hex(6).unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(o) = old {
        std::fs::write(dir.join(".env"), o).unwrap();
    }
    let mut e = env();
    e.remote_dir = dir.display().to_string();
    let out = duct::cmd!("sh", "-c", app::upload(&e, ".env", "600"))
        .stdin_bytes(new.as_bytes().to_vec())
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    let text = std::fs::read_to_string(dir.join(".env")).unwrap_or_default();
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    if out.status.success() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(".env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        text,
        left,
    )
}

#[test]
fn upload_env_carries_kept_secrets_without_printing_them() {
    let old = "IMAGE_TAG=v1.0.0\nKIS_API_KEY='old key $x #1'\nKIS_API_SECRET=\"s\\\\ec\"\n";
    let new = "IMAGE_TAG=v1.1.0\n# xtask-keep KIS_API_KEY\n# xtask-keep-if-present KIS_API_SECRET\n# xtask-keep-if-present OTHER\n";
    let (code, out, text, left) = upload_env_run(Some(old), new);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        text,
        "IMAGE_TAG=v1.1.0\nKIS_API_KEY='old key $x #1'\nKIS_API_SECRET=\"s\\\\ec\"\n"
    );
    assert!(!out.contains("old key") && !out.contains("ec"), "{out}");
    assert_eq!(left, [".env"], "no temporary file stays");
    // Plain text (no directive) is written as given, the last line without a newline too.
    let (code, _, text, _) = upload_env_run(Some(old), "IMAGE_TAG=v2.0.0\nKIS_API_KEY='n'");
    assert_eq!(code, 0);
    assert_eq!(text, "IMAGE_TAG=v2.0.0\nKIS_API_KEY='n'\n");
}

#[test]
fn upload_env_refuses_a_kept_secret_the_server_lacks_and_changes_nothing() {
    let old = "IMAGE_TAG=v1.0.0\nKIS_API_SECRET='s3cr3t-value'\n";
    let (code, out, text, left) =
        upload_env_run(Some(old), "IMAGE_TAG=v1.1.0\n# xtask-keep KIS_API_KEY\n");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("xtask-missing KIS_API_KEY"), "{out}");
    assert!(!out.contains("s3cr3t"));
    assert_eq!(text, old, "the old .env stays");
    assert_eq!(left, [".env"]);
    let (code, _, _, left) = upload_env_run(None, "# xtask-keep KIS_API_KEY\n");
    assert_eq!(code, 3);
    assert!(left.is_empty(), "{left:?}");
    let (code, out, _, _) = upload_env_run(Some(old), "# xtask-keep BAD;NAME\n");
    assert_eq!(code, 3);
    assert!(out.contains("xtask-bad-directive"), "{out}");
}

/// The candidate gate's `/health` line, run for real with a stand-in `docker` on PATH: the
/// status must come through (a `||` fallback without grouping once swallowed it).
#[test]
fn candidate_gate_reads_the_status_through_the_role_probe() {
    let dir = std::env::temp_dir().join(format!("obs-fake-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let docker = dir.join("docker");
    std::fs::write(
        &docker,
        "#!/bin/sh\necho 'status=200 role=standby instance=ab'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = gate::script(&env(), "v1.2.3", handoff::CANDIDATE, false, 1);
    let line = script.lines().find(|l| l.starts_with("code=$(")).unwrap();
    let run = |path: String| {
        duct::cmd!("sh", "-c", format!("{line}; echo \"$code\""))
            .env("PATH", path)
            .read()
            .unwrap()
    };
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    assert_eq!(run(path), "200");
    std::fs::write(&docker, "#!/bin/sh\nexit 1\n").unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    assert_eq!(run(path), "0", "no answer reads as status 0");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn foreign_containers_are_parsed_from_their_labels() {
    let out = "running=observer:latest\nowner.qts-observer=app|/home/p/app\nowner.qts-observer-next=observer|/srv/observer\n";
    let f = probe::parse(out).foreign;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].container, "qts-observer");
    assert_eq!(
        f[0].describe(),
        "qts-observer belongs to compose project `app` (working dir /home/p/app), not `observer`: not the deployed service"
    );
    assert!(f[0]
        .recovery()
        .contains("`docker rename qts-observer qts-observer-local`"));
    assert!(f[0].recovery().contains("docker compose -p app down"));
    // No container: no line value; no label: foreign, of no project.
    assert!(probe::parse_foreign("owner.qts-observer=\n").is_empty());
    let f = probe::parse_foreign("owner.qts-observer-next=|\n");
    assert_eq!(f[0].container, "qts-observer-next");
    assert!(f[0].describe().contains("no compose project"), "{f:?}");
}

/// The candidate clean-up run for real with a stand-in `docker`: a foreign `qts-observer-next`
/// is never removed (the step fails instead); the observer project's is.
#[test]
fn clean_candidate_never_removes_a_foreign_candidate() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("obs-fake-docker-cc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log");
    for (project, code, removed) in [("app", 1, false), ("observer", 0, true), ("", 1, false)] {
        let _ = std::fs::remove_file(&log);
        std::fs::write(
            dir.join("docker"),
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$*\" in 'container inspect -f'*) echo '{project}';; esac\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(dir.join("docker"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
        for script in [handoff::clean_candidate(), handoff::remove_candidate()] {
            let _ = std::fs::remove_file(&log);
            let out = duct::cmd!("sh", "-c", &script)
                .env("PATH", &path)
                .stderr_capture()
                .unchecked()
                .run()
                .unwrap();
            let calls = std::fs::read_to_string(&log).unwrap_or_default();
            assert_eq!(calls.contains("rm -f"), removed, "{project}: {calls}");
            assert!(!calls.contains("rename"), "{calls}");
            assert!(removed || !calls.contains("stop"), "{calls}");
            if script == handoff::clean_candidate() {
                assert_eq!(out.status.code(), Some(code), "{project}: {calls}");
            } else {
                assert!(out.status.success());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
