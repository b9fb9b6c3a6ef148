//! Issue 13 item 1: a snapshot made on the server records the same entries and partial tails as
//! one streamed through the controller, for the same content. The server's scripts run here, on
//! this machine's GNU tar, zstd and sha256sum (through `sh -c`, as the server's shell would).

use crate::ops::snapshot::{choose, compare, Route};
use crate::ops::snapshot_stream::walk;
use crate::server::snapshot::{Access, ArchiveInfo, Manifest, PartialTail};
use crate::server::snapshot_remote as sr;
use std::io::Read;

pub(super) fn sh(script: &str) -> (bool, String, String) {
    let out = duct::cmd("sh", ["-c", script])
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(super) fn have(tool: &str) -> bool {
    sh(&format!("command -v {tool}")).0
}

#[test]
fn the_server_side_manifest_equals_the_streamed_one() {
    if !have("zstd") || !sh("tar --version | grep -q 'GNU tar'").0 {
        eprintln!("skipping: no zstd or GNU tar here");
        return;
    }
    let base = std::env::temp_dir().join(format!(
        "snap-routes-{}-{}",
        std::process::id(),
        crate::core::util::random_hex(3).unwrap()
    ));
    let root = base.join("root it's");
    let backups = base.join("backups");
    let mut env = crate::config::test_env(root.to_str().unwrap(), "/tmp/r.git");
    env.backups_dir = backups.display().to_string();
    let setup = format!(
        "set -e; cd {r}; mkdir -p config/observer 'data/sp ace' logs .deploy; printf '{{\"a\":1}}\\n{{\"a\":2}}\\n{{\"a' > config/observer/observer.jsonl; printf 'x\\n' > logs/whole.jsonl; : > data/empty.jsonl; printf 'nonl' > data/nonl.jsonl; printf 'q' > 'data/sp ace/na\"me\\tx'; ln -s ../observer/observer.jsonl config/observer/link; echo p > data/plain; ln data/plain data/hard; chmod 2750 'data/sp ace'; chmod 0600 logs/whole.jsonl; echo held > .deploy/lock; echo v1 > .deploy/last_good_tag",
        r = crate::server::q(root.to_str().unwrap())
    );
    std::fs::create_dir_all(&root).unwrap();
    assert!(sh(&setup).0);
    let partial = "20261201T000000Z-abcdef.tar.zst.partial";
    let (ok, made, err) = sh(&sr::create(&env, false, partial, &Access::Direct));
    assert!(ok, "{err}");
    let (ok, out, err) = sh(&sr::read_back(&env, partial));
    assert!(ok, "{err}");
    let rb = sr::parse_read_back(&out).unwrap_or_else(|e| panic!("{e:?}\n{out}"));
    // One pass (create hashes what it writes) and a later read-back agree.
    assert_eq!(sr::parse_read_back(&made).ok(), Some(rb.clone()), "{made}");
    assert_eq!(rb.windows.len(), 7, "{:?}", rb.windows);
    assert!(!backups.read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".create")));
    // The same reply whichever sha256 tool the server has (openssl, or coreutils' sha256sum).
    let no_openssl = base.join("path-without-openssl");
    std::fs::create_dir_all(&no_openssl).unwrap();
    let link = format!(
        "cd {} && for d in /usr/local/bin /usr/bin /bin; do for f in \"$d\"/*; do n=${{f##*/}}; [ \"$n\" = openssl ] && continue; [ -e \"$n\" ] || ln -s \"$f\" \"$n\"; done; done",
        crate::server::q(no_openssl.to_str().unwrap())
    );
    assert!(sh(&link).0);
    let (ok, out2, err) = sh(&format!(
        "PATH={}; export PATH; {}",
        crate::server::q(no_openssl.to_str().unwrap()),
        sr::read_back(&env, partial)
    ));
    assert!(ok, "{err}");
    assert_eq!(sr::parse_read_back(&out2).ok(), Some(rb.clone()));

    // Today's path over the same archive: the tar crate's walk, and the last newline.
    let bytes = std::fs::read(backups.join(partial)).unwrap();
    let tar = zstd::decode_all(&bytes[..]).unwrap();
    let mut entries = Vec::new();
    let mut tails = Vec::new();
    walk(&tar[..], |e, last| {
        if e.kind == "file" && e.path.ends_with(".jsonl") && e.size > 0 && last != Some(b'\n') {
            tails.push(e.path.clone());
        }
        entries.push(e);
        Ok(())
    })
    .unwrap();
    let mut keep = Vec::new();
    let mut ar = tar::Archive::new(&tar[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if tails.contains(&p) {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            let k = v.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            keep.push(PartialTail {
                path: p,
                keep_bytes: k as u64,
            });
        }
    }
    assert_eq!(rb.entries, entries);
    assert_eq!(rb.partial_tails, keep);
    assert_eq!(rb.partial_tails.len(), 2, "{:?}", rb.partial_tails);
    assert!(entries.iter().all(|e| e.path != ".deploy/lock"));
    assert!(entries.iter().any(|e| e.kind == "hardlink"));
    assert!(entries.iter().any(|e| e.mode == 0o2750));
    use sha2::Digest;
    assert_eq!(
        rb.sha256,
        crate::core::util::hex(&sha2::Sha256::digest(&bytes))
    );
    assert_eq!(rb.size, bytes.len() as u64);

    // verify's comparison: equal passes, one changed hash is named.
    let mut m = Manifest {
        id: "x".into(),
        created: "t".into(),
        env: env.name.clone(),
        server: "s".into(),
        version: String::new(),
        no_logs: false,
        archive: ArchiveInfo {
            file: partial.into(),
            size: rb.size,
            sha256: rb.sha256.clone(),
        },
        entries: entries.clone(),
        partial_tails: keep,
        delta: Default::default(),
        state: None,
    };
    assert!(compare(&m, &rb).is_ok());
    let f = m.entries.iter_mut().find(|e| e.kind == "file").unwrap();
    f.sha256 = Some("0".repeat(64));
    let path = f.path.clone();
    let e = compare(&m, &rb).unwrap_err();
    assert!(
        format!("{e:#}").contains(&format!("mismatch at {path}")),
        "{e:#}"
    );

    // A checked extraction writes the same tree; a changed archive extracts nothing.
    let out_dir = base.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let (ok, _, err) = sh(&sr::extract(
        &env,
        partial,
        &rb.sha256,
        out_dir.to_str().unwrap(),
        &Access::Direct,
    ));
    assert!(ok, "{err}");
    assert!(out_dir.join("config/observer/observer.jsonl").is_file());
    let other = base.join("out2");
    std::fs::create_dir_all(&other).unwrap();
    let (ok, _, err) = sh(&sr::extract(
        &env,
        partial,
        &"0".repeat(64),
        other.to_str().unwrap(),
        &Access::Direct,
    ));
    assert!(
        !ok && err.contains("changed since it was verified"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_missing_tool_falls_back_to_the_stream() {
    assert_eq!(choose(vec![]), Route::Server);
    assert_eq!(
        choose(sr::missing_tools(
            "tool tar yes\ntool gnu-tar yes\ntool sha256sum yes\n"
        )),
        Route::Stream(vec!["zstd".into()])
    );
    // No reply at all (an older shell, a failed probe): the stream, never a half-made snapshot.
    assert!(matches!(choose(sr::missing_tools("")), Route::Stream(m) if m.len() == 4));
}

#[test]
fn a_failed_write_removes_the_partial_file() {
    if !have("zstd") {
        return;
    }
    let base = std::env::temp_dir().join(format!("snap-fail-{}", std::process::id()));
    let root = base.join("root");
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::fs::write(root.join("config/a"), b"a").unwrap();
    let mut env = crate::config::test_env(root.to_str().unwrap(), "/tmp/r.git");
    // A backups "folder" that is a file: zstd cannot write there.
    std::fs::write(base.join("file"), b"").unwrap();
    env.backups_dir = base.join("file").display().to_string();
    let (ok, _, _) = sh(&sr::create(
        &env,
        false,
        "x.tar.zst.partial",
        &Access::Direct,
    ));
    assert!(!ok);
    // /dev/full: the write fails after the file was opened; the partial is removed.
    let full = base.join("full");
    std::fs::create_dir_all(&full).unwrap();
    env.backups_dir = full.display().to_string();
    if std::path::Path::new("/dev/full").exists() {
        assert!(
            sh(&format!(
                "ln -s /dev/full '{}/x.tar.zst.partial'",
                full.display()
            ))
            .0
        );
        let (ok, _, err) = sh(&sr::create(
            &env,
            false,
            "x.tar.zst.partial",
            &Access::Direct,
        ));
        assert!(!ok && err.contains("writing the snapshot failed"), "{err}");
        assert!(!full.join("x.tar.zst.partial").exists());
    }
    let _ = std::fs::remove_dir_all(&base);
}
