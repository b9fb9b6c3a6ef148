//! End-to-end: the registry answering as GHCR does (issue 17). `sandbox up --registry-auth token`
//! restarts the sandbox registry (same port, same storage) with `auth: token` behind the sandbox's
//! token service; every registry call is answered `401 Bearer realm=...` first. Release and deploy
//! run against it; a wrong token, a token for another repository and an expired token each fail
//! naming the registry and the auth step, touching nothing; and a tag holding an OCI image index
//! (built here by hand through the registry API: the image's own manifest, a second platform's,
//! and an index over both) gives one digest to release verification, deploy verification and the
//! server's pull. Each test restores basic mode when it ends (the other modules expect basic).

use crate::common::bearer::*;
use crate::common::*;
use crate::deploy::{accepted, last_good, server_dir};
use crate::release::version;
use serde_json::{json, Value};
use std::process::Command;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ALL_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// The sandbox in token mode while the guard lives; basic mode again when it drops.
struct TokenMode;

impl TokenMode {
    fn on() -> TokenMode {
        ensure_sandbox();
        let basic_at = registry();
        let r = xtask(&repo(), &["sandbox", "up", "--registry-auth", "token"], &[]);
        assert_eq!(r.code, 0, "sandbox up --registry-auth token:\n{}", r.all());
        assert!(
            r.stderr.contains("switching from basic to token auth"),
            "{}",
            r.stderr
        );
        assert_eq!(registry(), basic_at, "switching keeps the registry's port");
        TokenMode
    }
}

impl Drop for TokenMode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(token_dir().join("serve-token"));
        let r = xtask(&repo(), &["sandbox", "up"], &[]);
        if r.code != 0 {
            eprintln!("restoring the basic-auth registry failed:\n{}", r.all());
        }
    }
}

/// Registry tags, local images, git tags here and on the remote: what a refused release keeps.
fn release_world(c: &Clone) -> String {
    let tags = Api::new().tags();
    let imgs = sh("docker images --format '{{.Repository}}:{{.Tag}} {{.ID}}' | sort").stdout;
    let remote = sh(&format!(
        "git --git-dir='{}' tag -l",
        sandbox_dir().join("git/observer.git").display()
    ))
    .stdout;
    format!("{tags}\n{imgs}\n{}\n{remote}", c.git("tag -l").stdout)
}

/// The server: SSH logins, last good version, history, the running container.
fn server_world() -> String {
    let hist =
        std::fs::read_to_string(server_dir().join(".deploy/history.jsonl")).unwrap_or_default();
    let ctr = sh("docker ps -a --filter name=qts-observer --format '{{.ID}} {{.Image}} {{.Status}}' | sed 's/Up .*/Up/'").stdout;
    let lock = server_dir().join(".deploy/lock").exists();
    format!(
        "ssh logins {}\n{}\n{hist}\n{ctr}\nlock {lock}",
        accepted(),
        last_good()
    )
}

fn server_repo_digests(tag: &str) -> String {
    let img = format!("{}/observer:{tag}", registry());
    sh(&format!(
        "docker image inspect --format '{{{{json .RepoDigests}}}}' '{img}'"
    ))
    .stdout
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn token_mode_release_deploy_then_basic_again() {
    let guard = TokenMode::on();
    let st = xtask(&repo(), &["sandbox", "status", "--json"], &[]);
    assert_eq!(st.code, 0, "{}", st.all());
    let s: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(s["registry"]["auth"], "token");
    assert_eq!(s["token_service"]["running"], true);
    // The registry answers as GHCR does: a bearer challenge naming the token service.
    let ch = sh(&format!("curl -sS -I http://{}/v2/", registry()));
    let realm = format!(
        "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"{SERVICE}\"",
        state()["token_port"]
    );
    assert!(ch.stdout.contains(&realm), "{}", ch.stdout);
    // Basic credentials alone get nowhere.
    assert!(
        registry_get("observer/tags/list", false)
            .stdout
            .contains("UNAUTHORIZED"),
        "basic auth must not work in token mode"
    );

    let c = Clone::new("token");
    let v = version();
    let r = c.xtask(&["release", &v, "--env", "sandbox", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let out: Value = serde_json::from_str(&r.stdout).unwrap();
    let digest = out["digest"].as_str().unwrap().to_string();
    let api = Api::new();
    assert_eq!(api.head_digest(&v, ALL_TYPES).as_deref(), Some(&*digest));
    // What `docker push` recorded is what the registry serves.
    assert!(
        server_repo_digests(&v).contains(&format!("@{digest}")),
        "{}",
        server_repo_digests(&v)
    );
    // docker itself went through the token service for pull and push.
    let log = std::fs::read_to_string(token_dir().join("token-service.log")).unwrap();
    assert!(
        log.contains("scope=repository:observer:pull,push HTTP/1.1\" 200"),
        "{log}"
    );
    let pull = sh(&format!("docker pull -q {}/observer:{v}", registry()));
    assert_eq!(pull.code, 0, "{}", pull.all());

    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v, "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("digest {digest} matches git tag {v}")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("pulled {digest}")),
        "{}",
        r.stderr
    );
    assert_eq!(last_good().trim(), format!("{v} {digest}"));
    assert_no_secret(&[&token()]);

    // Basic again: same port, same storage, the image still there.
    drop(guard);
    let st = xtask(&repo(), &["sandbox", "status", "--json"], &[]);
    let s: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(s["registry"]["auth"], "basic", "{}", st.all());
    assert_eq!(s["registry"]["running"], true);
    assert_eq!(s["token_service"]["running"], false);
    assert_eq!(registry_digest("observer", &v).as_deref(), Some(&*digest));
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn token_mode_auth_failures_name_the_registry_and_step_and_touch_nothing() {
    let _guard = TokenMode::on();
    let c = Clone::new("token-fail");
    let released = version();
    let r = c.xtask(&["release", &released, "--env", "sandbox"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let fresh = version();
    let reg = format!("registry {}", registry());
    let other_repo = fetch_token(&format!("repository:other-{}:pull,push", unique()));
    let expired = expired_token(600);
    let wrong = format!("wrong-{}", unique());

    let cases: [(&str, Option<&str>, &[&str]); 3] = [
        (
            "wrong token",
            None,
            &[
                "auth step `token request` failed",
                "refused the credentials of user observer-ci",
                "HTTP 401",
            ],
        ),
        (
            "token for another repository",
            Some(&other_repo),
            &[
                "auth step `bearer token` failed",
                "error=\"insufficient_scope\"",
                "does not grant repository:observer:pull",
            ],
        ),
        (
            "expired token",
            Some(&expired),
            &[
                "auth step `bearer token` failed",
                "error=\"invalid_token\"",
                "expired",
            ],
        ),
    ];
    for (what, fault, expect) in cases {
        let before = (release_world(&c), server_world());
        let creds: Vec<(&str, &str)> = match fault {
            Some(t) => {
                serve_token(t);
                vec![]
            }
            None => vec![("REGISTRY_USER", "observer-ci"), ("REGISTRY_TOKEN", &wrong)],
        };
        let rel = xtask(&c.dir, &["release", &fresh, "--env", "sandbox"], &creds);
        let dep = xtask(
            &c.dir,
            &["deploy", "--env", "sandbox", "--tag", &released],
            &creds,
        );
        clear_fault();
        for (verb, r) in [("release", &rel), ("deploy", &dep)] {
            assert_eq!(r.code, 1, "{what}: {verb}:\n{}", r.all());
            assert!(r.stderr.contains(&reg), "{what}: {verb}:\n{}", r.stderr);
            for e in expect {
                assert!(
                    r.stderr.contains(e),
                    "{what}: {verb}: expected `{e}`:\n{}",
                    r.stderr
                );
            }
        }
        assert!(
            dep.stderr.contains("==> Verify") && !dep.stderr.contains("==> Connect"),
            "{what}: the deploy must stop at its registry check:\n{}",
            dep.stderr
        );
        assert!(
            !rel.stderr.contains("==> Build"),
            "{what}: the release must stop in its preflight:\n{}",
            rel.stderr
        );
        assert_eq!(
            (release_world(&c), server_world()),
            before,
            "{what}: nothing may change"
        );
    }
    // The registry itself refuses those tokens, the same way.
    for (t, err) in [
        (&other_repo, "insufficient_scope"),
        (&expired, "invalid_token"),
    ] {
        let r = Api { bearer: t.clone() }.get("tags/list", "application/json");
        assert_eq!(r.status, 401);
        assert!(
            r.header("www-authenticate")
                .unwrap_or_default()
                .contains(err),
            "{}",
            r.headers
        );
    }
    assert_no_secret(&[&token(), &wrong, &other_repo, &expired]);
}

#[test]
#[ignore = "e2e: needs the sandbox; run by `cargo xtask ci`"]
pub fn token_mode_image_index_has_one_digest_everywhere() {
    let _guard = TokenMode::on();
    let c = Clone::new("index");
    // The image built from HEAD, pushed by a release (a single Docker manifest).
    let base = version();
    let r = c.xtask(&["release", &base, "--env", "sandbox", "--no-push-tag"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let api = Api::new();
    let m = api.get(&format!("manifests/{base}"), ALL_TYPES);
    assert_eq!(m.status, 200, "{}", m.body);
    let docker_manifest = m.header("docker-content-digest").unwrap();
    let manifest: Value = serde_json::from_str(&m.body).unwrap();
    let cfg_digest = manifest["config"]["digest"].as_str().unwrap();
    let cfg_body = api.get(&format!("blobs/{cfg_digest}"), "*/*").body;
    assert_eq!(sha256(cfg_body.as_bytes()), cfg_digest);
    let layers: Vec<Value> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| json!({"mediaType": OCI_LAYER, "digest": l["digest"], "size": l["size"]}))
        .collect();
    let oci = |cfg: &str, size: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cfg, "size": size},
            "layers": layers,
        }))
        .unwrap()
    };
    // This machine's platform: the image itself, as an OCI manifest.
    let mut cfg: Value = serde_json::from_str(&cfg_body).unwrap();
    let arch = cfg["architecture"].as_str().unwrap().to_string();
    let native = oci(cfg_digest, cfg_body.len());
    let native_digest = api.put_manifest(&sha256(&native), OCI_MANIFEST, &native);
    // A second platform: the same layers under a config that names another architecture.
    let other_arch = if arch == "arm64" { "amd64" } else { "arm64" };
    cfg["architecture"] = json!(other_arch);
    let cfg2 = serde_json::to_vec(&cfg).unwrap();
    let cfg2_digest = api.put_blob(&cfg2);
    let foreign = oci(&cfg2_digest, cfg2.len());
    let foreign_digest = api.put_manifest(&sha256(&foreign), OCI_MANIFEST, &foreign);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": native_digest, "size": native.len(),
             "platform": {"os": "linux", "architecture": arch}},
            {"mediaType": OCI_MANIFEST, "digest": foreign_digest, "size": foreign.len(),
             "platform": {"os": "linux", "architecture": other_arch}},
        ],
    }))
    .unwrap();
    let v = version();
    let index_digest = api.put_manifest(&v, OCI_INDEX, &index);
    // Asked with every manifest and index type (as registry.rs asks) the tag is the index; a
    // client that accepts only single manifests does not get the index's digest.
    assert_eq!(
        api.head_digest(&v, ALL_TYPES).as_deref(),
        Some(&*index_digest)
    );
    assert_ne!(
        api.head_digest(
            &v,
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
        )
        .as_deref(),
        Some(&*index_digest)
    );

    // Release: the registry holds the tag, built from HEAD (labels read through the index): the
    // release resumes and its annotated tag records the index's digest.
    let r = c.xtask(&["release", &v, "--env", "sandbox", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["digest"], index_digest.as_str());
    assert_eq!(s["resumed"], true);
    let tag = c.git(&format!("tag -l --format='%(contents)' {v}")).stdout;
    assert!(tag.contains(&format!("digest: {index_digest}")), "{tag}");

    // Deploy: the registry check, the server's pull (pulled by tag: RepoDigests holds the index's
    // digest) and the record all agree on the index's digest.
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("digest {index_digest} matches git tag {v}")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("pulled {index_digest}")),
        "{}",
        r.stderr
    );
    assert!(
        server_repo_digests(&v).contains(&format!("@{index_digest}")),
        "{}",
        server_repo_digests(&v)
    );
    assert_eq!(last_good().trim(), format!("{v} {index_digest}"));

    let annotate = |ver: &str, digest: &str| {
        let msg = format!(
            "observer {img}\n\nimage: {img}\ndigest: {digest}\n",
            img = format!("{}/observer:{ver}", registry())
        );
        let r = run(Command::new("git").current_dir(&c.dir).args([
            "tag",
            "--annotate",
            ver,
            "--message",
            &msg,
            "HEAD",
        ]));
        assert_eq!(r.code, 0, "{}", r.all());
    };
    // The git tag records the platform manifest, the registry serves the index holding it: the
    // same image, never taken for a re-pushed tag.
    let v2 = version();
    api.put_manifest(&v2, OCI_INDEX, &index);
    annotate(&v2, &native_digest);
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v2]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "the registry serves image index {index_digest}, whose linux/{arch} image is {native_digest}"
        )),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("re-pushed"), "{}", r.stderr);
    assert_eq!(last_good().trim(), format!("{v2} {index_digest}"));
    // The other way round: the git tag records the index, the tag now serves its platform
    // manifest.
    let v3 = version();
    api.put_manifest(&v3, OCI_MANIFEST, &native);
    annotate(&v3, &index_digest);
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v3]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "the registry serves {native_digest}, the linux/{arch} image of image index {index_digest}"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(last_good().trim(), format!("{v3} {native_digest}"));
    // A digest the index does not hold (the same layers, pushed as another manifest): re-pushed.
    let v4 = version();
    api.put_manifest(&v4, OCI_INDEX, &index);
    annotate(&v4, &docker_manifest);
    let before = server_world();
    let r = c.xtask(&["deploy", "--env", "sandbox", "--tag", &v4]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("the image tag was re-pushed; refusing"),
        "{}",
        r.stderr
    );
    assert_eq!(server_world(), before, "a refused deploy touches nothing");
    assert_no_secret(&[&token()]);
}
