//! End-to-end tests against the real sandbox: `cargo xtask ci` runs them with
//! `cargo test -p xtask --test e2e -- --ignored --test-threads=1`.

mod common;

use common::*;
use std::process::Command;

const E2E: &str = "e2e: needs the sandbox; run by `cargo xtask ci`";

// ------------------------------------------------------------------------------------- sandbox

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn sandbox_up_is_idempotent_and_down_stops_what_it_started() {
    let _ = E2E;
    ensure_sandbox();
    let again = xtask(&repo(), &["sandbox", "up"], &[]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stderr.contains("registry already running"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("sshd already running"),
        "{}",
        again.stderr
    );
    let st = xtask(&repo(), &["sandbox", "status", "--json"], &[]);
    assert_eq!(st.code, 0, "{}", st.all());
    let v: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["registry"]["running"], true);
    assert_eq!(v["sshd"]["running"], true);
    let pids = [
        state()["registry_pid"].as_u64().unwrap(),
        state()["sshd_pid"].as_u64().unwrap(),
    ];

    let down = xtask(&repo(), &["sandbox", "down"], &[]);
    assert_eq!(down.code, 0, "{}", down.all());
    for pid in pids {
        // Gone, or a zombie waiting for a reaper: either way no longer running.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let running = status
            .lines()
            .any(|l| l.starts_with("State:") && !l.contains("Z"));
        assert!(!running, "pid {pid} still runs after down");
    }
    let st = xtask(&repo(), &["sandbox", "status"], &[]);
    assert_eq!(
        st.code,
        1,
        "status must say the sandbox is down:\n{}",
        st.all()
    );
    // A stale record: `up` recovers.
    ensure_sandbox();
    assert_no_secret(&[&token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn sandbox_registry_login_push_pull() {
    ensure_sandbox();
    let reg = registry();
    let ok = run_stdin(
        Command::new("docker").args(["login", "-u", "observer-ci", "--password-stdin", &reg]),
        &token(),
    );
    assert_eq!(ok.code, 0, "{}", ok.all());
    let cfg = std::env::temp_dir().join(format!("docker-cfg-{}", unique()));
    std::fs::create_dir_all(&cfg).unwrap();
    let bad = run_stdin(
        Command::new("docker").arg("--config").arg(&cfg).args([
            "login",
            "-u",
            "observer-ci",
            "--password-stdin",
            &reg,
        ]),
        "wrong-password",
    );
    assert_ne!(bad.code, 0, "a wrong password must be refused");
    let _ = std::fs::remove_dir_all(&cfg);

    // A tiny image: one file, imported; pushed; removed locally; pulled back.
    let image = format!("{reg}/e2e/tiny:{}", unique());
    let r = sh(&format!(
        "d=$(mktemp -d) && echo hello > $d/hello && tar -C $d -c hello | docker import - {image} >/dev/null && rm -rf $d && docker push {image} >/dev/null && docker rmi {image} >/dev/null && docker pull {image} >/dev/null && docker rmi {image} >/dev/null"
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_no_secret(&[&token()]);
}

fn ssh_cmd(known_hosts: &std::path::Path) -> Command {
    let s = sandbox_dir();
    let mut c = Command::new("ssh");
    c.args([
        "-n",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
    ])
    .arg("-o")
    .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
    .arg("-i")
    .arg(s.join("ssh/client_ed25519"))
    .args(["-p", &state()["ssh_port"].to_string()])
    .arg(format!("{}@127.0.0.1", state()["user"].as_str().unwrap()))
    .args(["docker", "ps"]);
    c
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn sandbox_ssh_pinned_host_key() {
    ensure_sandbox();
    let s = sandbox_dir();
    let ok = run(&mut ssh_cmd(&s.join("ssh/known_hosts")));
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert!(ok.stdout.contains("CONTAINER ID"));
    // Another host key in known_hosts for the same address: refused.
    let tmp = std::env::temp_dir().join(format!("kh-{}", unique()));
    std::fs::create_dir_all(&tmp).unwrap();
    let r = sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f {d}/other && printf '[127.0.0.1]:{port} %s\\n' \"$(cut -d' ' -f1,2 {d}/other.pub)\" > {d}/known_hosts",
        d = tmp.display(),
        port = state()["ssh_port"]
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    let bad = run(&mut ssh_cmd(&tmp.join("known_hosts")));
    assert_ne!(bad.code, 0, "a changed host key must be refused");
    assert!(
        bad.stderr.contains("HOST IDENTIFICATION HAS CHANGED")
            || bad.stderr.contains("Host key verification failed"),
        "{}",
        bad.stderr
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

// ----------------------------------------------------------------------------------- check-env

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn check_env_clean_and_violations() {
    ensure_sandbox();
    let root = repo();
    let secret = format!("kis-secret-{}", unique());
    let clean = xtask(
        &root,
        &["check-env", "--env", "sandbox"],
        &[("KIS_API_KEY", &secret)],
    );
    assert_eq!(clean.code, 0, "{}", clean.all());
    assert!(clean.stdout.contains("secret KIS_API_KEY"));
    let json = xtask(
        &root,
        &["check-env", "--env", "sandbox", "--json"],
        &[("KIS_API_SECRET", &secret)],
    );
    assert_eq!(json.code, 0, "{}", json.all());
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);

    let forbidden = xtask(
        &root,
        &["check-env", "--env", "sandbox"],
        &[("OBSERVER_STANDALONE", "1")],
    );
    assert_eq!(forbidden.code, 1);
    assert!(forbidden.stdout.contains("FAIL  env OBSERVER_STANDALONE"));
    assert!(forbidden.stdout.contains("QTS_OBSERVER_STANDALONE"));

    let data = xtask(
        &root,
        &["check-env", "--env", "sandbox"],
        &[("OBSERVER_CONFIG_DIR", "/app/data/observer")],
    );
    assert_eq!(data.code, 1);
    assert!(
        data.stdout.contains("FAIL  path archive"),
        "{}",
        data.stdout
    );

    let tmp = std::env::temp_dir().join(format!("compose-{}", unique()));
    std::fs::create_dir_all(&tmp).unwrap();
    let compose =
        std::fs::read_to_string(root.join("app/obs_deploy/docker-compose.server.yml")).unwrap();
    let cases = [
        (
            "${IMAGE_TAG:?IMAGE_TAG required}",
            "${IMAGE_TAG:-latest}",
            "compose image guard",
        ),
        ("memory: 512M", "memory: 1G", "compose limits.memory"),
        ("cpus: \"0.5\"", "cpus: \"2\"", "compose reservations.cpus"),
        (
            "      - ./config:/app/config\n",
            "",
            "compose volume ./config",
        ),
    ];
    for (from, to, check) in cases {
        let f = tmp.join("compose.yml");
        assert!(compose.contains(from), "{from}");
        std::fs::write(&f, compose.replacen(from, to, 1)).unwrap();
        let r = xtask(
            &root,
            &[
                "check-env",
                "--env",
                "sandbox",
                "--compose",
                f.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(r.code, 1, "{check}: {}", r.all());
        assert!(
            r.stdout.contains(&format!("FAIL  {check}")),
            "{check}: {}",
            r.stdout
        );
    }
    let cfg = std::fs::read_to_string(root.join("app/obs_deploy/deployment_config.json")).unwrap();
    let f = tmp.join("config.json");
    std::fs::write(
        &f,
        cfg.replacen("\"keep_images\": 3,", "\"keep_imagez\": 3,", 1),
    )
    .unwrap();
    let r = xtask(
        &root,
        &[
            "check-env",
            "--env",
            "sandbox",
            "--config",
            f.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("keep_imagez"), "{}", r.stderr);
    let r = xtask(&root, &["check-env", "--env", "nope"], &[]);
    assert_eq!(r.code, 2, "{}", r.all());
    let _ = std::fs::remove_dir_all(&tmp);
    assert_no_secret(&[&secret, &token()]);
}

// ------------------------------------------------------------------------------------- release

/// Registry tags, local images and git tags (local and remote): what must not change.
fn world(c: &Clone) -> String {
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

fn version() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "v0.{}.{}",
        unique(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn release_happy_path_then_immutable() {
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
fn release_rejects_hostile_versions_touching_nothing() {
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
fn release_preflight_refusals_change_nothing() {
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
fn release_resumes_after_failed_tag_push() {
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

// -------------------------------------------------------------------------------------- deploy

fn server_dir() -> std::path::PathBuf {
    sandbox_dir().join("server/observer")
}

fn accepted() -> usize {
    std::fs::read_to_string(sandbox_dir().join("ssh/sshd.log"))
        .unwrap_or_default()
        .matches("Accepted publickey")
        .count()
}

fn last_good() -> String {
    std::fs::read_to_string(server_dir().join(".deploy/last_good_tag")).unwrap_or_default()
}

fn archive_lines() -> Vec<String> {
    let text = std::fs::read_to_string(server_dir().join("config/observer/observer.jsonl"))
        .unwrap_or_default();
    text.lines().map(|s| s.to_string()).collect()
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn deploy_v1_v2_broken_rolls_back() {
    ensure_sandbox();
    let secret = format!("kis-key-{}", unique());
    let c = Clone::new("deploy");
    let v1 = version();
    let v2 = version();
    for v in [&v1, &v2] {
        let r = c.xtask(&["release", v, "--env", "sandbox"]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let deploy = |v: &str| {
        xtask(
            &c.dir,
            &["deploy", "--env", "sandbox", "--tag", v, "--json"],
            &[("KIS_API_KEY", &secret)],
        )
    };

    let before = accepted();
    let r = deploy(&v1);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        accepted() - before,
        1,
        "a deploy must open exactly one SSH connection"
    );
    let st = c.xtask(&["status", "--env", "sandbox", "--json"]);
    assert_eq!(st.code, 0, "{}", st.all());
    let s: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(s["version"], v1.as_str());
    assert!(s["state"].as_str().unwrap().contains("healthy"));

    let r = deploy(&v2);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        last_good().starts_with(&format!("{v2} sha256:")),
        "{}",
        last_good()
    );
    let env_mode = sh(&format!(
        "stat -c %a '{}'",
        server_dir().join(".env").display()
    ));
    assert_eq!(env_mode.stdout.trim(), "600");
    // Contract §8.2 and §2.3 on the running container.
    let who = sh("docker exec qts-observer id -un");
    assert_eq!(who.stdout.trim(), "qts");
    let limits = sh("docker inspect -f '{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.MemoryReservation}} {{.HostConfig.RestartPolicy.Name}}' qts-observer");
    assert_eq!(
        limits.stdout.trim(),
        "1000000000 536870912 268435456 unless-stopped"
    );
    let lines_before = archive_lines().len();
    assert!(lines_before > 0);

    // A broken release: /health never answers 200.
    c.git("checkout -q main");
    std::fs::write(
        c.dir.join("app/src/observer/service.py"),
        std::fs::read_to_string(c.dir.join("app/src/observer/service.py"))
            .unwrap()
            .replace("return 200, body", "return 503, body"),
    )
    .unwrap();
    c.git("commit -q -am broken");
    let bad = version();
    let r = c.xtask(&["release", &bad, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = deploy(&bad);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("health gate FAILED"), "{}", r.stderr);
    assert!(r.stderr.contains("last 50 lines of the container log"));
    let st = c.xtask(&["status", "--env", "sandbox", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(
        s["version"],
        v2.as_str(),
        "the last good version must be running again"
    );
    assert!(s["state"].as_str().unwrap().contains("healthy"));
    assert!(last_good().starts_with(&v2));
    let hist = std::fs::read_to_string(server_dir().join(".deploy/history.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = hist
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let n = recs.len();
    assert_eq!(recs[n - 2]["version"], bad.as_str());
    assert_eq!(recs[n - 2]["outcome"], "failed");
    assert_eq!(recs[n - 1]["kind"], "rollback");
    assert_eq!(recs[n - 1]["version"], v2.as_str());
    assert_eq!(recs[n - 1]["outcome"], "success");
    assert!(recs
        .iter()
        .any(|r| r["version"] == v1.as_str() && r["outcome"] == "success"));
    // The archive lost nothing: it only grew, and every line parses.
    let after = archive_lines();
    assert!(after.len() >= lines_before);
    for l in &after {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("corrupt archive line {l:?}: {e}"));
    }
    // The secret reached the container but no output.
    let logs = sh("docker logs qts-observer 2>&1");
    assert!(!logs.stdout.contains(&secret));
    let remote = c.xtask(&["check-env", "--env", "sandbox", "--remote"]);
    assert_eq!(remote.code, 0, "{}", remote.all());
    assert!(
        remote.stdout.contains("container KIS_API_KEY"),
        "{}",
        remote.stdout
    );
    assert_no_secret(&[&secret, &token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn deploy_refusals_touch_nothing() {
    ensure_sandbox();
    let c = Clone::new("refuse");
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let good = last_good();
    let conns = accepted();
    // Hostile tags: exit 2, no connection made.
    for t in [
        "$(id)",
        "v1.2.3;reboot",
        "v1.2.3`id`",
        "latest",
        "v1.2.3 x",
        "",
    ] {
        let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", t]);
        assert_eq!(r.code, 2, "{t:?}: {}", r.all());
    }
    assert_eq!(accepted(), conns);
    // A version not in the registry.
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", "v0.0.1-missing"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("not in the registry"), "{}", r.stderr);
    // A wrong SSH key.
    let tmp = std::env::temp_dir().join(format!("keys-{}", unique()));
    std::fs::create_dir_all(&tmp).unwrap();
    sh(&format!(
        "ssh-keygen -q -t ed25519 -N '' -f '{}/k'",
        tmp.display()
    ));
    let key = std::fs::read_to_string(tmp.join("k")).unwrap();
    let r = xtask(
        &c.dir,
        &["deploy", "--env", "sandbox", "--tag", &v],
        &[("DEPLOY_SSH_KEY", &key)],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("authentication failed"), "{}", r.stderr);
    // A changed host key.
    let pubkey = std::fs::read_to_string(tmp.join("k.pub")).unwrap();
    let kh = format!(
        "[127.0.0.1]:{} {}",
        state()["ssh_port"],
        pubkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let r = xtask(
        &c.dir,
        &["deploy", "--env", "sandbox", "--tag", &v],
        &[("DEPLOY_KNOWN_HOSTS", &kh)],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("host key"), "{}", r.stderr);
    assert_eq!(last_good(), good, "nothing may change on the server");
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(!key.is_empty());
    assert_no_secret(&[&token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn deploy_lock_held_then_stale_then_forced() {
    ensure_sandbox();
    let c = Clone::new("lock");
    let v = version();
    assert_eq!(c.xtask(&["release", &v, "--env", "sandbox"]).code, 0);
    let lock = server_dir().join(".deploy/lock");
    std::fs::create_dir_all(&lock).unwrap();
    let holder = serde_json::json!({"id": "other", "who": "alice@laptop", "pid": 4242, "version": "v9.9.9", "started": "2026-01-01T00:00:00Z", "started_epoch": 1});
    std::fs::write(lock.join("holder.json"), holder.to_string()).unwrap();
    let good = last_good();
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("held by alice@laptop"), "{}", r.stderr);
    assert!(r.stderr.contains("STALE"), "{}", r.stderr);
    assert_eq!(last_good(), good);
    assert!(lock.exists(), "someone else's lock must not be removed");
    let st = c.xtask(&["lock", "status", "--env", "sandbox"]);
    assert!(
        st.stdout.contains("alice@laptop") && st.stdout.contains("STALE"),
        "{}",
        st.all()
    );
    let r = c.xtask(&["lock", "release", "--env", "sandbox"]);
    assert_eq!(r.code, 1, "without --force the lock stays: {}", r.all());
    let r = c.xtask(&["lock", "release", "--env", "sandbox", "--force"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!lock.exists());
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!lock.exists(), "the lock is released after a deploy");
}

fn running_version() -> (String, String) {
    let r = sh("docker inspect -f '{{.Config.Image}} {{.State.StartedAt}}' qts-observer");
    let mut w = r.stdout.split_whitespace();
    let image = w
        .next()
        .unwrap_or("")
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_string();
    (image, w.next().unwrap_or("").to_string())
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn deploy_killed_midway_converges_and_rollback_goes_back() {
    ensure_sandbox();
    let c = Clone::new("killed");
    let v1 = version();
    let v2 = version();
    for v in [&v1, &v2] {
        assert_eq!(c.xtask(&["release", v, "--env", "sandbox"]).code, 0);
    }
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v1]);
    assert_eq!(r.code, 0, "{}", r.all());

    // Kill the xtask during v2's health gate.
    let log = std::env::temp_dir().join(format!("killed-{}.log", unique()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["deploy", "--env", "sandbox", "--tag", &v2])
        .current_dir(&c.dir)
        .env("XTASK_ROOT", &c.dir)
        .env("XTASK_SANDBOX_DIR", sandbox_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("==> Health gate")
    {
        assert!(
            t.elapsed().as_secs() < 120,
            "the deploy never reached the health gate"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    TRANSCRIPT
        .lock()
        .unwrap()
        .push_str(&std::fs::read_to_string(&log).unwrap_or_default());
    let _ = std::fs::remove_file(&log);
    assert!(
        server_dir().join(".deploy/lock").exists(),
        "the killed deploy leaves its lock"
    );
    let st = c.xtask(&["lock", "status", "--env", "sandbox"]);
    assert!(
        st.stdout.contains("STALE"),
        "a dead holder is reported stale: {}",
        st.all()
    );

    // Deploying again converges: the dead holder's lock is broken, v2 ends healthy and recorded.
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v2]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("is gone: breaking its lock"),
        "{}",
        r.stderr
    );
    assert!(
        last_good().starts_with(&format!("{v2} sha256:")),
        "{}",
        last_good()
    );
    assert_eq!(running_version().0, v2);

    // `rollback` goes back to the previous good version, over one connection.
    let before = accepted();
    let r = c.xtask(&["rollback", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        accepted() - before,
        1,
        "a rollback opens one SSH connection"
    );
    assert_eq!(running_version().0, v1);
    assert!(last_good().starts_with(&format!("{v1} sha256:")));

    // The registry stopped: refused before the server is touched.
    let running = running_version();
    let pid = state()["registry_pid"].as_u64().unwrap();
    sh(&format!("kill {pid}"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v2]);
    ensure_sandbox();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("cannot reach the registry"),
        "{}",
        r.stderr
    );
    assert_eq!(
        running_version(),
        running,
        "the running version must be untouched"
    );
    assert_no_secret(&[&token()]);
}

// ------------------------------------------------------------------------------------ snapshot

fn backups_dir() -> std::path::PathBuf {
    sandbox_dir().join("server/backups")
}

fn snapshot_ids() -> Vec<(String, String)> {
    let r = xtask(
        &repo(),
        &["snapshot", "list", "--env", "sandbox", "--json"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A running observer (deployed once) to snapshot.
fn deployed(c: &Clone) -> String {
    let v = version();
    assert_eq!(c.xtask(&["release", &v, "--env", "sandbox"]).code, 0);
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("==> Pre-deploy snapshot"), "{}", r.stderr);
    v
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn snapshot_round_trip_verify_restore() {
    ensure_sandbox();
    let c = Clone::new("snap");
    let v = deployed(&c);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let r = c.xtask(&["snapshot", "create", "--env", "sandbox", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let made: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["version"], v.as_str());
    assert!(snapshot_ids().contains(&(id.clone(), "valid".into())));

    // Standard tools read it: sha256sum -c, and GNU tar with zstd.
    let b = backups_dir();
    let r = sh(&format!(
        "cd '{}' && sha256sum -c {id}.tar.zst.sha256",
        b.display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    let out = std::env::temp_dir().join(format!("snap-x-{}", unique()));
    std::fs::create_dir_all(&out).unwrap();
    let r = sh(&format!(
        "tar --zstd -xf '{}/{id}.tar.zst' -C '{}'",
        b.display(),
        out.display()
    ));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!out.join(".env").exists(), "secrets stay out of backups");
    // Every file extracted by GNU tar is byte-identical to the manifest.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(b.join(format!("{id}.manifest.json"))).unwrap(),
    )
    .unwrap();
    let mut files = 0;
    for e in manifest["entries"].as_array().unwrap() {
        if e["type"] == "file" {
            let p = out.join(e["path"].as_str().unwrap());
            let sum = sh(&format!("sha256sum '{}' | cut -d' ' -f1", p.display()));
            assert_eq!(
                sum.stdout.trim(),
                e["sha256"].as_str().unwrap(),
                "{}",
                e["path"]
            );
            files += 1;
        }
    }
    assert!(files >= 3, "config, logs and .deploy files: {manifest}");
    assert!(out.join("config/observer/observer.jsonl").is_file());
    let _ = std::fs::remove_dir_all(&out);

    let r = c.xtask(&["snapshot", "verify", &id, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = c.xtask(&["snapshot", "restore", &id, "--env", "sandbox"]);
    assert_eq!(
        r.code,
        2,
        "restore needs --yes when not interactive: {}",
        r.all()
    );

    // Restore while the observer writes: the archive parses line by line afterwards.
    let r = c.xtask(&["snapshot", "restore", &id, "--env", "sandbox", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(running_version().0, v);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let lines = archive_lines();
    assert!(!lines.is_empty());
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("corrupt line {l:?}: {e}"));
    }
    assert!(
        r.stderr.contains(".restore-undo/"),
        "the undo location is printed: {}",
        r.stderr
    );

    // One flipped byte: verify and restore refuse, nothing changes.
    let r = c.xtask(&["snapshot", "create", "--env", "sandbox", "--json"]);
    let id2 = serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let f = b.join(format!("{id2}.tar.zst"));
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&f, bytes).unwrap();
    let r = c.xtask(&["snapshot", "verify", &id2, "--env", "sandbox"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let before = running_version();
    let r = c.xtask(&["snapshot", "restore", &id2, "--env", "sandbox", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(
        running_version(),
        before,
        "a refused restore touches nothing"
    );
    std::fs::remove_file(&f).unwrap();

    // `rollback --restore`: back to the state (and version) from before the last deploy.
    let v2 = deployed(&c);
    assert_eq!(running_version().0, v2);
    let r = c.xtask(&["rollback", "--restore", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(running_version().0, v, "the snapshot's version runs again");

    // Download and prune.
    let dl = std::env::temp_dir().join(format!("snap-dl-{}", unique()));
    let r = c.xtask(&[
        "snapshot",
        "download",
        &id,
        "--env",
        "sandbox",
        "--to",
        dl.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(dl.join(format!("{id}.manifest.json")).is_file());
    let _ = std::fs::remove_dir_all(&dl);
    let r = c.xtask(&["snapshot", "prune", "--keep", "1", "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let valid: Vec<_> = snapshot_ids()
        .into_iter()
        .filter(|(_, s)| s == "valid")
        .collect();
    assert_eq!(valid.len(), 1);
    assert_no_secret(&[&token()]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn snapshot_restore_refuses_hostile_archives() {
    ensure_sandbox();
    let c = Clone::new("hostile-snap");
    deployed(&c);
    let before = running_version();
    let b = backups_dir();
    let marker = format!("evil-{}", unique());
    let cases = [
        ("dotdot", format!("t.addfile(info('../../../{marker}'), io.BytesIO(b'x'))")),
        ("absolute", format!("t.addfile(info('/tmp/{marker}'), io.BytesIO(b'x'))")),
        ("symlink", "i = info('config/etc'); i.type = tarfile.SYMTYPE; i.linkname = '/etc'; t.addfile(i)".to_string()),
        ("hardlink", "i = info('config/h'); i.type = tarfile.LNKTYPE; i.linkname = '../../outside'; t.addfile(i)".to_string()),
        ("device", "i = info('config/null'); i.type = tarfile.CHRTYPE; t.addfile(i)".to_string()),
    ];
    for (name, add) in cases {
        let id = format!("hostile-{name}-{}", unique());
        let py = format!(
            "import io, tarfile, hashlib, json, subprocess, os\n\
def info(n):\n    i = tarfile.TarInfo(n); i.size = 1 if not n.startswith('config/') else 0; return i\n\
with tarfile.open('{b}/{id}.tar', 'w', format=tarfile.GNU_FORMAT) as t:\n    {add}\n    t.addfile(info('config/ok'), io.BytesIO(b''))\n\
subprocess.run(['zstd', '-q', '--rm', '-f', '{b}/{id}.tar'], check=True)\n\
data = open('{b}/{id}.tar.zst', 'rb').read()\n\
m = {{'id': '{id}', 'created': 'x', 'env': 'sandbox', 'server': 's', 'version': '', 'no_logs': False,\n\
     'archive': {{'file': '{id}.tar.zst', 'size': len(data), 'sha256': hashlib.sha256(data).hexdigest()}},\n\
     'entries': [], 'partial_tails': []}}\n\
json.dump(m, open('{b}/{id}.manifest.json', 'w'))\n",
            b = b.display()
        );
        let r = run(Command::new("python3").arg("-c").arg(&py));
        assert_eq!(r.code, 0, "{name}: {}", r.all());
        let r = c.xtask(&["snapshot", "restore", &id, "--env", "sandbox", "--yes"]);
        assert_eq!(r.code, 1, "{name}: {}", r.all());
        assert!(
            r.stderr.contains("unsafe archive entry"),
            "{name}: {}",
            r.stderr
        );
        assert!(
            !server_dir().join("config/ok").exists(),
            "{name}: nothing may be extracted"
        );
        sh(&format!("rm -f '{}'/{id}.*", b.display()));
    }
    assert_eq!(running_version(), before);
    for p in [
        format!("/tmp/{marker}"),
        sandbox_dir().join("..").join(&marker).display().to_string(),
    ] {
        assert!(!std::path::Path::new(&p).exists(), "{p} was written");
    }
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn snapshot_full_disk_fails_cleanly() {
    ensure_sandbox();
    let b = backups_dir();
    let m = sh(&format!(
        "mount -t tmpfs -o size=1m observer-test-full '{}'",
        b.display()
    ));
    if m.code != 0 {
        eprintln!(
            "skipping: cannot mount a tmpfs here (not root?): {}",
            m.all()
        );
        return;
    }
    // Incompressible data larger than the filesystem.
    let data = server_dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    sh(&format!(
        "head -c 3000000 /dev/urandom > '{}/noise.bin'",
        data.display()
    ));
    let r = xtask(&repo(), &["snapshot", "create", "--env", "sandbox"], &[]);
    let listing = sh(&format!("ls -A '{}'", b.display()));
    let ids = snapshot_ids();
    sh(&format!("umount '{}'", b.display()));
    let _ = std::fs::remove_file(data.join("noise.bin"));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("partial file was removed"),
        "{}",
        r.stderr
    );
    assert_eq!(
        listing.stdout.trim(),
        "",
        "nothing may be left behind: {}",
        listing.stdout
    );
    assert!(ids.is_empty(), "{ids:?}");
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn snapshot_memory_stays_bounded_for_1_gib() {
    ensure_sandbox();
    let data = server_dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let big = data.join("big.jsonl");
    let r = sh(&format!(
        "yes '{{\"ts\":\"2026-11-28T21:00:00.000Z\",\"seq\":123456,\"instance\":\"0123456789abcdef\",\"version\":\"v1.2.3\"}}' | head -c 1073741824 > '{}'",
        big.display()
    ));
    assert_eq!(r.code, 0);
    // Peak resident memory of the xtask process itself (GNU time), not a timing.
    let r = run(Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kib=%M"])
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(["snapshot", "create", "--env", "sandbox", "--json"])
        .env("XTASK_SANDBOX_DIR", sandbox_dir()));
    let _ = std::fs::remove_file(&big);
    assert_eq!(r.code, 0, "{}", r.all());
    let kib: u64 = r
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("peak RSS for a 1 GiB snapshot: {} MiB", kib / 1024);
    assert!(kib < 100 * 1024, "peak RSS {kib} KiB for 1 GiB of data");
    let id = serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = xtask(
        &repo(),
        &["snapshot", "verify", &id, "--env", "sandbox"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
}

// ---------------------------------------------------------------------------------- benchmarks

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
fn bench_smoke_all_produces_every_figure() {
    ensure_sandbox();
    // Benchmarks are commands: this only checks that every one still runs and reports.
    let r = xtask(&repo(), &["bench", "all", "--smoke", "--json"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gap", "overhead", "rollback", "snapshot", "build"]);
    for b in v.as_array().unwrap() {
        let rows = b["rows"].as_array().unwrap();
        assert!(!rows.is_empty());
        for row in rows {
            assert!(row["xtask"]["median"].is_number(), "{row}");
        }
        assert!(repo()
            .join(format!("target/bench/{}.json", b["name"].as_str().unwrap()))
            .is_file());
    }
    let conns = &v[1]["rows"][1]["xtask"]["median"];
    assert_eq!(conns.as_f64(), Some(1.0), "one SSH connection per deploy");
    assert_no_secret(&[&token()]);
}
