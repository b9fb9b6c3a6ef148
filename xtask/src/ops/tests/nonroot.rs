//! Issue 13 item 3 through the fake transport: a non-root deploy user (the server's
//! `snapshot-tools` step answers `uid 1000`) reaches the image user's files as root in a
//! container of the observer image; without an image it is refused before anything is locked or
//! stopped. A root deploy user keeps the direct path.

use super::*;
use crate::core::exit;
use crate::core::signals;
use crate::ops::snapshot;
use crate::server::snapshot::{Access, ArchiveInfo, Manifest, PartialTail};

const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

/// The fake, and every remote script it was asked to run, by step id.
#[derive(Clone)]
struct Scripts {
    fake: Fake,
    seen: Rc<RefCell<Vec<(&'static str, String)>>>,
}

impl Transport for Scripts {
    fn exec(&mut self, sh: &Ctx, step: &Step) -> Result<Output> {
        if let crate::plan::Cmd::Remote(s) = &step.cmd {
            self.seen.borrow_mut().push((step.id, s.clone()));
        }
        self.fake.exec(sh, step)
    }
    fn stream(&mut self, server: &str, script: &str, stdin: bool) -> Result<duct::Expression> {
        self.fake.stream(server, script, stdin)
    }
    fn connections(&self) -> u32 {
        1
    }
}

impl Scripts {
    fn of(&self, id: &str) -> Vec<String> {
        self.seen
            .borrow()
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

fn tools(uid: u32) -> Output {
    ok(&format!(
        "tool tar yes\ntool zstd yes\ntool sha256sum yes\ntool gnu-tar yes\nuid {uid}\n"
    ))
}

/// A snapshot with no entries (what the fake's read-back answers) recording `version`, with a
/// partial tail to cut.
fn manifest(e: &Env, id: &str, version: &str) -> String {
    serde_json::to_string(&Manifest {
        id: id.into(),
        created: "t".into(),
        env: e.name.clone(),
        server: e.servers[0].name.clone(),
        version: version.into(),
        no_logs: false,
        archive: ArchiveInfo {
            file: format!("{id}.tar.zst"),
            size: 10,
            sha256: SHA.into(),
        },
        entries: vec![],
        partial_tails: vec![PartialTail {
            path: "config/observer/observer.jsonl".into(),
            keep_bytes: 4,
        }],
        delta: Default::default(),
        state: None,
    })
    .unwrap()
}

fn probe(e: &Env, running: Option<&str>) -> Output {
    match running {
        Some(v) => ok(&format!(
            "compose=v2\nlast_good={v} sha256:00\nrunning={}\nstate=running\nwriter={{\"instance\":\"ab\"}}\n",
            e.image(v)
        )),
        None => ok("compose=v2\n"),
    }
}

/// Restores a snapshot recording `version` on a server whose deploy user has `uid`, running
/// `running`: (exit code, the error, the transport).
fn restore(uid: u32, version: &str, running: Option<&str>) -> (u8, String, Scripts) {
    signals::reset();
    let e = env();
    let id = "20260101T000000Z-aa";
    let f = Fake::default();
    f.answer("snapshot-tools", tools(uid))
        .answer("manifest", ok(&manifest(&e, id, version)))
        .answer("snapshot-read-back", ok(&format!("A 10 {SHA}\n")))
        .answer("probe", probe(&e, running))
        .answer(
            "gate",
            healthy_gate(if version.is_empty() {
                "v1.0.0"
            } else {
                version
            }),
        );
    let t = Scripts {
        fake: f,
        seen: Rc::default(),
    };
    let sh = Ctx::new().unwrap();
    let mut x = Executor::new(&sh, false, Box::new(t.clone()));
    let r = snapshot::restore(&sh, &mut x, &e, &e.servers[0].name, id);
    match r {
        Ok(_) => (0, String::new(), t),
        Err(err) => (exit::code_of(&err), format!("{err:#}"), t),
    }
}

#[test]
fn a_non_root_restore_moves_extracts_and_cuts_in_a_container_of_the_restored_version() {
    let e = env();
    let (code, err, t) = restore(1000, "v1.0.0", Some("v1.0.0"));
    assert_eq!(code, 0, "{err}");
    let image = e.image("v1.0.0");
    for id in ["aside", "extract", "tail"] {
        let s = t.of(id);
        assert_eq!(s.len(), 1, "{id}: {s:?}");
        assert!(
            s[0].contains("docker run --rm")
                && s[0].contains("--user 0 --network none --pull never")
                && s[0].contains(&image),
            "{id} does not take the container route: {}",
            s[0]
        );
    }
    // The state comes back owned by the image's user, before the service starts.
    let ids: Vec<&str> = t.seen.borrow().iter().map(|(i, _)| *i).collect();
    let pos = |id: &str| ids.iter().position(|i| *i == id).unwrap_or(usize::MAX);
    assert!(pos("stop") < pos("aside") && pos("tail") < pos("chown") && pos("chown") < pos("up"));
    assert!(t.of("chown")[0].contains(&image));
    // Restoring a snapshot that records no version: the running version's image.
    let (code, err, t) = restore(1000, "", Some("v1.0.0"));
    assert_eq!(code, 0, "{err}");
    assert!(t.of("aside")[0].contains(&image));
}

#[test]
fn a_root_restore_keeps_the_direct_path() {
    let (code, err, t) = restore(0, "v1.0.0", Some("v1.0.0"));
    assert_eq!(code, 0, "{err}");
    for id in ["aside", "extract", "tail"] {
        assert!(!t.of(id)[0].contains("docker run"), "{id}: {:?}", t.of(id));
    }
}

#[test]
fn a_non_root_restore_without_an_image_is_refused_before_anything_stops() {
    // The snapshot records no version and nothing runs: no image to run as root in.
    let (code, err, t) = restore(1000, "", None);
    assert_eq!(code, exit::FAILED, "{err}");
    assert!(
        err.contains("refusing to restore") && err.contains("not root"),
        "{err}"
    );
    assert!(err.contains("cargo xtask deploy --env"), "{err}");
    let ids: Vec<&str> = t.seen.borrow().iter().map(|(i, _)| *i).collect();
    for never in ["lock", "pull", "stop", "aside", "extract", "up"] {
        assert!(!ids.contains(&never), "{never} ran: {ids:?}");
    }
    // A root deploy user needs no image: the same snapshot restores directly.
    let (code, err, _) = restore(0, "", None);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_non_root_snapshot_tars_in_a_container_or_is_refused_without_an_image() {
    let e = env();
    let server = e.servers[0].name.clone();
    let sh = Ctx::new().unwrap();
    let f = Fake::default();
    f.answer("snapshot-tools", tools(1000))
        .answer("snapshot-create", ok(&format!("A 10 {SHA}\n")));
    let t = Scripts {
        fake: f,
        seen: Rc::default(),
    };
    let mut x = Executor::new(&sh, false, Box::new(t.clone()));
    let image = e.image("v1.1.0");
    let m = snapshot::create(
        &mut x,
        &e,
        &server,
        "v1.0.0",
        Some(image.clone()),
        Default::default(),
    )
    .unwrap();
    assert_eq!(m.archive.sha256, SHA);
    let s = t.of("snapshot-create");
    assert!(
        s[0].contains("docker run --rm --user 0") && s[0].contains(&image),
        "{s:?}"
    );
    assert!(
        s[0].contains(":ro -w "),
        "the deploy root is mounted read-only: {s:?}"
    );
    // No image: refused, nothing written.
    let f = Fake::default();
    f.answer("snapshot-tools", tools(1000));
    let mut x = Executor::new(&sh, false, Box::new(f.clone()));
    let err = snapshot::create(&mut x, &e, &server, "", None, Default::default()).unwrap_err();
    assert_eq!(exit::code_of(&err), exit::FAILED);
    assert!(
        format!("{err:#}").contains("refusing to snapshot"),
        "{err:#}"
    );
    assert_eq!(f.ran(), ["snapshot-tools"]);
    // Root: direct, with or without an image.
    assert_eq!(
        snapshot::create_access(&e, true, None).unwrap(),
        Access::Direct
    );
}
