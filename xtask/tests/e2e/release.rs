//! End-to-end: release.

use crate::common::*;
#[allow(unused_imports)]
use crate::{deploy::*, sandbox::*, snapshot::*};
#[allow(unused_imports)]
use std::process::Command;

/// Registry tags, local images and git tags (local and remote): what must not change.
pub fn world(c: &Clone) -> String {
    let cat = registry_get("observer/tags/list", false).stdout;
    let imgs = sh("docker images --format '{{.Repository}}:{{.Tag}} {{.ID}}' | sort").stdout;
    let local = c.git("tag -l").stdout;
    let remote = sh(&format!(
        "git --git-dir='{}' tag -l",
        sandbox_dir().join("git/observer.git").display()
    ))
    .stdout;
    format!("{cat}\n{imgs}\n{local}\n{remote}")
}

pub fn version() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "v0.{}.{}",
        unique(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn release_happy_path_then_immutable() {
    ensure_sandbox();
    let c = Clone::new("release");
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let s: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let digest = s["digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"));
    assert_eq!(
        registry_digest("observer", &v).as_deref(),
        Some(digest.as_str())
    );
    let head = c.git("rev-parse HEAD").stdout.trim().to_string();
    assert_eq!(s["revision"], head.as_str());

    // Labels, read back from the registry's config blob.
    let manifest: serde_json::Value =
        serde_json::from_str(&registry_get(&format!("observer/manifests/{v}"), false).stdout)
            .unwrap();
    let cfg_digest = manifest["config"]["digest"].as_str().unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&registry_get(&format!("observer/blobs/{cfg_digest}"), false).stdout)
            .unwrap();
    let labels = &cfg["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], v.as_str());
    assert_eq!(labels["org.opencontainers.image.revision"], head.as_str());
    assert!(labels["org.opencontainers.image.created"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(labels["org.opencontainers.image.title"], "observer");

    // The annotated tag on the remote records image and digest.
    let remote = sandbox_dir().join("git/observer.git");
    let tag = sh(&format!(
        "git --git-dir='{}' cat-file -p refs/tags/{v}",
        remote.display()
    ));
    assert_eq!(tag.code, 0, "{}", tag.all());
    assert!(
        tag.stdout.starts_with("object "),
        "not an annotated tag: {}",
        tag.stdout
    );
    assert!(
        tag.stdout.contains(&format!("digest: {digest}")),
        "{}",
        tag.stdout
    );
    assert!(tag
        .stdout
        .contains(&format!("image: {}/observer:{v}", registry())));

    // Tag already local and remote: refused, nothing changed.
    let before = world(&c);
    let again = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(again.code, 1, "{}", again.all());
    assert!(
        again.stderr.contains("already exists on the remote"),
        "{}",
        again.stderr
    );
    // Tag only remote (deleted locally): still refused.
    c.git(&format!("tag -d {v}"));
    let again = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("already exists on the remote"),
        "{}",
        again.stderr
    );
    c.git(&format!(
        "fetch -q --no-tags '{}' refs/tags/{v}:refs/tags/{v}",
        remote.display()
    ));
    assert_eq!(world(&c), before);

    // The same version from another commit, with no tag anywhere: the registry refuses it.
    let c2 = Clone::new("release-other");
    c2.git("commit -q --allow-empty -m other");
    c2.publish();
    sh(&format!("git --git-dir='{}' tag -d {v}", remote.display()));
    let other = c2.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(other.code, 1, "{}", other.all());
    assert!(
        other.stderr.contains("already exists in the registry"),
        "{}",
        other.stderr
    );
    assert!(other.stderr.contains("immutable"));
    assert_eq!(
        registry_digest("observer", &v).as_deref(),
        Some(digest.as_str())
    );
    assert_no_secret(&[&token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn release_rejects_hostile_versions_touching_nothing() {
    ensure_sandbox();
    let c = Clone::new("hostile");
    let before = world(&c);
    let long = format!("v1.2.3-{}", "x".repeat(300));
    let hostile = [
        "v1.2.3;touch /tmp/pwned",
        "v1.2.3$(touch /tmp/pwned)",
        "v1.2.3`id`",
        "v1.2.3 && id",
        "v1 .2.3",
        "1.2.3",
        "v01.2.3",
        "v1.2.03",
        "v١.٢.٣",
        "",
        long.as_str(),
        "v1.2.3\nv1.2.4",
        "-x",
        "v1.2.3|id",
        "../v1.2.3",
        "v1.2.3'",
    ];
    for v in hostile {
        let r = c.xtask(&["release", v, "--env", "sandbox"]);
        assert_eq!(r.code, 2, "{v:?}: {}", r.all());
        assert!(
            r.stderr.contains("invalid version") || r.stderr.contains("error:"),
            "{v:?}: {}",
            r.stderr
        );
    }
    assert!(!std::path::Path::new("/tmp/pwned").exists());
    assert_eq!(world(&c), before);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn release_preflight_refusals_change_nothing() {
    ensure_sandbox();
    let c = Clone::new("preflight");
    let v = version();
    let before = world(&c);
    // Dirty tree.
    std::fs::write(c.dir.join("app/src/paths.py"), "changed\n").unwrap();
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("uncommitted changes"), "{}", r.stderr);
    c.git("checkout -q -- app/src/paths.py");
    // Wrong branch.
    c.git("checkout -q -b feature");
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("not on the release branch `main`"),
        "{}",
        r.stderr
    );
    c.git("checkout -q main");
    // Tag already local (on another commit).
    c.git(&format!("tag {v} HEAD~1"));
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already exists locally"), "{}", r.stderr);
    c.git(&format!("tag -d {v}"));
    assert_eq!(world(&c), before);
    // Dry run: prints the plan, changes nothing.
    let r = c.xtask(&["release", &v, "--env", "sandbox", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for word in [
        "docker build",
        "docker push",
        "git tag --annotate",
        "git push",
        "--password-stdin",
    ] {
        assert!(
            r.stderr.contains(word),
            "dry run must show `{word}`: {}",
            r.stderr
        );
    }
    assert_eq!(world(&c), before);
    assert_no_secret(&[&token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn release_resumes_after_failed_tag_push() {
    ensure_sandbox();
    let c = Clone::new("resume");
    let v = version();
    let hook = sandbox_dir().join("git/observer.git/hooks/pre-receive");
    std::fs::write(&hook, format!("#!/bin/sh\nwhile read old new ref; do [ \"$ref\" = refs/tags/{v} ] && {{ echo rejected by test >&2; exit 1; }}; done\nexit 0\n")).unwrap();
    sh(&format!("chmod +x '{}'", hook.display()));
    let first = c.xtask(&["release", &v, "--env", "sandbox"]);
    let _ = std::fs::remove_file(&hook);
    assert_eq!(first.code, 1, "{}", first.all());
    assert!(first.stderr.contains("recover:"), "{}", first.stderr);
    let digest = registry_digest("observer", &v).expect("image pushed before the tag push failed");
    let second = c.xtask(&["release", &v, "--env", "sandbox", "--json"]);
    assert_eq!(second.code, 0, "{}", second.all());
    let s: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(s["resumed"], true);
    assert_eq!(s["digest"], digest.as_str());
    assert!(
        !second.stderr.contains("==> Build"),
        "a resumed release must not build again"
    );
    let tag = sh(&format!(
        "git --git-dir='{}' cat-file -p refs/tags/{v}",
        sandbox_dir().join("git/observer.git").display()
    ));
    assert!(
        tag.stdout.contains(&format!("digest: {digest}")),
        "{}",
        tag.all()
    );
    assert_no_secret(&[&token()]);
}
