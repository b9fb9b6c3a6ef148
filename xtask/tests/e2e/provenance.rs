//! End-to-end: provenance fails closed. A deploy starts only the digest `release` recorded in the
//! annotated tag (read from the git remote when this clone lacks the tag); a re-pushed image is
//! refused even without the local tag; no record is refused unless `--allow-unverified`; a
//! downgrade needs `--allow-downgrade` (or `rollback`); `release` refuses an unpushed HEAD.

use crate::common::*;
#[allow(unused_imports)]
use crate::{deploy::*, release::*, sandbox::*, snapshot::*};
use std::process::Command;

/// Builds `FROM <from>` plus a label as `<registry>/observer:<tag>` and pushes it (a different
/// digest than any release).
fn push_derived(from: &str, tag: &str) {
    let reg = registry();
    let image = format!("{reg}/observer:{tag}");
    let dockerfile = format!(
        "FROM {reg}/observer:{from}\nLABEL e2e.derived=\"{}\"\n",
        unique()
    );
    let r = run_stdin(
        Command::new("docker").args(["build", "-q", "-t", &image, "-"]),
        &dockerfile,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run_stdin(
        Command::new("docker").args([
            "login",
            "--username",
            "observer-ci",
            "--password-stdin",
            &reg,
        ]),
        &format!("{}\n", token()),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run(Command::new("docker").args(["push", "-q", &image]));
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn provenance_remote_tag_is_read_and_a_repushed_image_refused() {
    ensure_sandbox();
    let c = Clone::new("prov");
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let released: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    // The local tag is gone: the annotated tag is read from the git remote, into no local tag.
    assert_eq!(c.git(&format!("tag -d {v}")).code, 0);
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v, "--no-snapshot"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("annotated tag on the git remote"),
        "{}",
        r.stderr
    );
    assert!(c.git(&format!("tag -l {v}")).stdout.trim().is_empty());
    assert!(c.git("for-each-ref refs/xtask").stdout.trim().is_empty());

    // The same tag re-pushed with another image: refused before any connection, even with
    // --allow-unverified, the local tag still absent.
    push_derived(&v, &v);
    assert_ne!(
        registry_digest("observer", &v).as_deref(),
        released["digest"].as_str()
    );
    let (running, conns, good) = (running_version(), accepted(), last_good());
    for extra in [None, Some("--allow-unverified")] {
        let mut args = vec!["deploy", "--env", "sandbox", "--tag", v.as_str()];
        args.extend(extra);
        let r = c.xtask(&args);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(r.stderr.contains("re-pushed"), "{}", r.stderr);
    }
    // A lightweight local tag does not count as a record either.
    assert_eq!(c.git(&format!("tag {v}")).code, 0);
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("re-pushed"), "{}", r.stderr);
    assert_eq!(accepted(), conns, "refused before connecting");
    assert_eq!(running_version(), running);
    assert_eq!(last_good(), good);
    assert_no_secret(&[&token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn provenance_no_record_is_refused_unless_allowed() {
    ensure_sandbox();
    let c = Clone::new("prov-none");
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    // An image pushed without `release`: no annotated tag anywhere.
    let bare = version();
    push_derived(&v, &bare);
    let conns = accepted();
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &bare]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("no recorded digest"), "{}", r.stderr);
    assert!(r.stderr.contains("--allow-unverified"), "{}", r.stderr);
    // A lightweight tag here, none on the remote: still no record.
    assert_eq!(c.git(&format!("tag {bare}")).code, 0);
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &bare]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("lightweight"), "{}", r.stderr);
    assert_eq!(accepted(), conns, "refused before connecting");
    let r = c.xtask(&[
        "deploy",
        "--env",
        "sandbox",
        "--tag",
        &bare,
        "--no-snapshot",
        "--allow-unverified",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("UNVERIFIED DEPLOY"), "{}", r.stderr);
    assert_eq!(running_version().0, bare);
    assert_no_secret(&[&token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn provenance_downgrade_needs_permission() {
    ensure_sandbox();
    let c = Clone::new("downgrade");
    let (low, high) = (version(), version());
    for v in [&low, &high] {
        let r = c.xtask(&["release", v, "--env", "sandbox"]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let deploy = |v: &str, extra: &[&str]| {
        let mut args = vec!["deploy", "--env", "sandbox", "--tag", v, "--no-snapshot"];
        args.extend_from_slice(extra);
        c.xtask(&args)
    };
    let r = deploy(&high, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let (running, good) = (running_version(), last_good());
    let r = deploy(&low, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("refusing to downgrade"), "{}", r.stderr);
    assert!(r.stderr.contains("--allow-downgrade"), "{}", r.stderr);
    assert_eq!(running_version(), running, "nothing touched");
    assert_eq!(last_good(), good);
    assert!(!server_dir().join(".deploy/lock").exists());
    let r = deploy(&low, &["--allow-downgrade"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(running_version().0, low);
    // `rollback --to` goes down without a flag.
    let r = deploy(&high, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = c.xtask(&["rollback", "--env", "sandbox", "--to", &low]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(running_version().0, low);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn release_refuses_a_head_the_remote_branch_lacks() {
    ensure_sandbox();
    let c = Clone::new("unpushed");
    assert_eq!(c.git("commit -q --allow-empty -m unpushed").code, 0);
    let v = version();
    let before = world(&c);
    for extra in [None, Some("--no-push-tag"), Some("--dry-run")] {
        let mut args = vec!["release", v.as_str(), "--env", "sandbox"];
        args.extend(extra);
        let r = c.xtask(&args);
        assert_eq!(r.code, 1, "{}", r.all());
        assert!(
            r.stderr.contains("is not on `main` of the git remote"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("push it first"), "{}", r.stderr);
    }
    assert_eq!(world(&c), before, "nothing built, pushed or tagged");
    c.publish();
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_no_secret(&[&token()]);
}
