//! End-to-end: a non-root deploy user in the `docker` group (issue 13 item 3). The sandbox's
//! `observer-deploy` (`XTASK_SANDBOX_NONROOT=1`) owns its deploy root and backups folder while
//! `config/ logs/ data/` belong to uid 10001, one file of them unreadable to anyone else (0600):
//! snapshot create, verify, restore and prune work through the container route; without any
//! observer image on the server a snapshot is refused, nothing written.

use crate::common::*;
use crate::deploy::running_version;
use crate::release::version;
use std::path::PathBuf;

const NONROOT: [(&str, &str); 1] = [("XTASK_SANDBOX_NONROOT", "1")];
const USER: &str = "observer-deploy";

fn root() -> PathBuf {
    sandbox_dir().join("server-nonroot/observer")
}

fn backups() -> PathBuf {
    sandbox_dir().join("server-nonroot/backups")
}

fn as_deploy(c: &Clone, args: &[&str]) -> Run {
    xtask(&c.dir, args, &NONROOT)
}

/// `compose down` of the observer deployed in `dir`, if any.
fn compose_down(dir: &std::path::Path) {
    let r = sh(&format!(
        "cd '{}' 2>/dev/null || exit 0; [ -f docker-compose.server.yml ] || exit 0; docker compose -f docker-compose.server.yml down --timeout 10",
        dir.display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
}

/// Paths under config/ logs/ data/ not owned by 10001:10001.
fn not_qts(dir: &std::path::Path) -> String {
    sh(&format!(
        "cd '{}' && find config logs data \\( ! -uid 10001 -o ! -gid 10001 \\) -print",
        dir.display()
    ))
    .stdout
}

fn owner_and_mode(p: &std::path::Path) -> String {
    sh(&format!("stat -c '%u:%g %a' '{}'", p.display()))
        .stdout
        .trim()
        .to_string()
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn snapshot_create_verify_restore_prune_as_a_non_root_docker_group_user() {
    ensure_sandbox();
    assert_eq!(
        state()["deploy_user"],
        USER,
        "the sandbox has no non-root deploy user (`sandbox up` as root creates it)"
    );
    let groups = sh(&format!("id -nG {USER}"));
    assert!(
        groups.stdout.split_whitespace().any(|g| g == "docker"),
        "{}",
        groups.all()
    );
    assert_ne!(sh(&format!("id -u {USER}")).stdout.trim(), "0");
    // One service at a time on this engine: the root deploy root's observer stops, and this
    // user's deploy root starts empty (config/ logs/ data/ owned by 10001, as `sandbox up` made).
    compose_down(&sandbox_dir().join("server/observer"));
    compose_down(&root());
    let r = sh(&format!(
        "set -e; cd '{r}'; find . -mindepth 1 -delete; rm -rf '{b}'/*; mkdir -p config/observer logs data; chown -R 10001:10001 config logs data",
        r = root().display(),
        b = backups().display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    let c = Clone::new("snap-nonroot");

    // Nothing runs and nothing is recorded: no image to run tar as root in. Refused.
    let r = as_deploy(&c, &["snapshot", "create", "--env", "sandbox"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("refusing to snapshot") && r.stderr.contains("not root"),
        "{}",
        r.all()
    );
    assert_eq!(
        std::fs::read_dir(backups()).unwrap().count(),
        0,
        "a refused snapshot writes nothing"
    );

    // Deployed by the non-root user (its pre-deploy snapshot goes through the container too).
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = as_deploy(&c, &["deploy", "--env", "sandbox", "--tag", &v]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(running_version().0, v);
    let secret = root().join("config/observer/private.key");
    let r = sh(&format!(
        "printf 'original\\n' > '{f}' && chown 10001:10001 '{f}' && chmod 0600 '{f}'",
        f = secret.display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = sh(&format!("runuser -u {USER} -- cat '{}'", secret.display()));
    assert_ne!(r.code, 0, "the deploy user must not read it directly");

    let r = as_deploy(&c, &["snapshot", "create", "--env", "sandbox", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let id = serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(backups().join(format!("{id}.manifest.json"))).unwrap(),
    )
    .unwrap();
    let entry = manifest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "config/observer/private.key")
        .unwrap_or_else(|| panic!("the 0600 file is not in the snapshot: {manifest}"));
    assert_eq!(entry["mode"], 0o600);
    // The snapshot's files are the deploy user's.
    let owners = sh(&format!("stat -c %U '{}'/*", backups().display()));
    assert!(owners.stdout.lines().all(|l| l == USER), "{}", owners.all());

    let r = as_deploy(&c, &["snapshot", "verify", &id, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());

    // Change the state, then restore: the service comes back with the snapshot's state, owned by
    // 10001, and the replaced state is kept aside.
    let r = sh(&format!(
        "printf 'changed\\n' > '{f}' && printf x > '{r}/data/new-file' && chown 10001:10001 '{r}/data/new-file'",
        f = secret.display(),
        r = root().display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    // An incremental snapshot of the changed state (issue 13 item 2): its window checks, copies
    // and tar run in the container too (the 0600 file is read there).
    let r = as_deploy(
        &c,
        &[
            "snapshot",
            "create",
            "--incremental",
            "--env",
            "sandbox",
            "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let made: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(made["parent"], id.as_str(), "{}", r.all());
    let delta = made["id"].as_str().unwrap().to_string();
    let r = as_deploy(&c, &["snapshot", "verify", &delta, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = as_deploy(
        &c,
        &[
            "snapshot", "restore", &id, "--env", "sandbox", "--yes", "--json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(running_version().0, v);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "original\n");
    assert_eq!(owner_and_mode(&secret), "10001:10001 600");
    assert!(!root().join("data/new-file").exists());
    assert_eq!(
        not_qts(&root()),
        "",
        "every path under config/ logs/ data/ is 10001's"
    );
    let undo = serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["undo"]
        .as_str()
        .unwrap()
        .to_string();
    let undo = PathBuf::from(undo);
    assert_eq!(
        std::fs::read_to_string(undo.join("config/observer/private.key")).unwrap(),
        "changed\n"
    );
    assert!(undo.join("data/new-file").is_file());
    // The deploy user's records stay its own: it keeps writing them.
    let r = sh(&format!(
        "find '{}/.deploy' ! -user {USER} -print",
        root().display()
    ));
    assert_eq!(r.stdout, "", "{}", r.all());

    // The incremental one restores its chain through the container: the changed state.
    let r = as_deploy(
        &c,
        &["snapshot", "restore", &delta, "--env", "sandbox", "--yes"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "changed\n");
    assert_eq!(owner_and_mode(&secret), "10001:10001 600");
    assert!(root().join("data/new-file").is_file());
    assert!(!root().join(".xtask-append").exists());
    assert_eq!(not_qts(&root()), "");
    let r = sh(&format!(
        "find '{}/.deploy' ! -user {USER} -print",
        root().display()
    ));
    assert_eq!(r.stdout, "", "{}", r.all());

    // Prune as the deploy user: one valid snapshot stays.
    let r = as_deploy(
        &c,
        &["snapshot", "prune", "--keep", "1", "--env", "sandbox"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let r = as_deploy(&c, &["snapshot", "list", "--env", "sandbox", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let valid = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "valid")
        .count();
    assert_eq!(valid, 1, "{listed}");

    // Leave the engine as the other modules expect it: this user's observer stopped.
    compose_down(&root());
    assert_no_secret(&[&token()]);
}
