//! Helpers of the token-mode tests (issue 17): tokens from the sandbox's token service, and the
//! registry's API with a bearer token, for building image indexes by hand. Tokens the tests fetch
//! themselves travel on curl's stdin and are never recorded in the transcript.

use super::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub const SERVICE: &str = "observer-sandbox-registry";
pub const ISSUER: &str = "observer-sandbox-token-service";

pub fn token_dir() -> PathBuf {
    sandbox_dir().join("token-service")
}

/// Runs a command WITHOUT recording its output (it carries tokens the test itself fetched).
pub fn quiet(cmd: &mut Command, input: &[u8]) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A token from the sandbox's token service for `scope`, asked for as any client would.
pub fn fetch_token(scope: &str) -> String {
    let url = format!(
        "http://127.0.0.1:{}/token?service={SERVICE}&scope={scope}",
        state()["token_port"]
    );
    let cfg = format!("user = \"observer-ci:{}\"\n", token());
    let r = quiet(
        Command::new("curl").args(["-sS", "-K", "-", &url]),
        cfg.as_bytes(),
    );
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|_| panic!("token service answered: {}", r.stderr));
    v["token"].as_str().expect("a token").to_string()
}

/// A token signed by the token service's key that expired `ago` seconds ago.
pub fn expired_token(ago: i64) -> String {
    let r = quiet(
        Command::new("/usr/bin/python3")
            .arg(token_dir().join("token_service.py"))
            .args(["mint", "--dir"])
            .arg(token_dir())
            .args([
                "--issuer",
                ISSUER,
                "--service",
                SERVICE,
                "--user",
                "observer-ci",
            ])
            .args(["--scope", "repository:observer:pull,push"])
            .arg(format!("--lifetime=-{ago}")),
        b"",
    );
    assert_eq!(r.code, 0, "mint: {}", r.stderr);
    r.stdout.trim().to_string()
}

/// The token service answers every valid request with `token` until `clear_fault`.
pub fn serve_token(token: &str) {
    std::fs::write(token_dir().join("serve-token"), token).unwrap();
}

pub fn clear_fault() {
    let _ = std::fs::remove_file(token_dir().join("serve-token"));
}

pub fn sha256(data: &[u8]) -> String {
    let h = Sha256::digest(data);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// The registry API with a bearer token for `repository:observer:pull,push` (on curl's stdin).
pub struct Api {
    pub bearer: String,
}

impl Api {
    pub fn new() -> Api {
        Api {
            bearer: fetch_token("repository:observer:pull,push"),
        }
    }

    pub fn call(&self, method: &str, url: &str, headers: &[String], body: Option<&[u8]>) -> Reply {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("http://{}{url}", registry())
        };
        let tmp = std::env::temp_dir().join(format!("regbody-{}", unique()));
        let mut c = Command::new("curl");
        c.args(["-sS", "-i", "-K", "-", "-X", method]);
        if method == "HEAD" {
            c.arg("-I");
        }
        for h in headers {
            c.args(["-H", h]);
        }
        if let Some(b) = body {
            std::fs::write(&tmp, b).unwrap();
            c.arg("--data-binary").arg(format!("@{}", tmp.display()));
        }
        c.arg(&url);
        let cfg = format!("header = \"Authorization: Bearer {}\"\n", self.bearer);
        let r = quiet(&mut c, cfg.as_bytes());
        let _ = std::fs::remove_file(&tmp);
        assert_eq!(r.code, 0, "curl {method} {url}: {}", r.stderr);
        let (head, body) = r.stdout.split_once("\r\n\r\n").unwrap_or((&r.stdout, ""));
        Reply {
            status: head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            headers: head.to_string(),
            body: body.to_string(),
        }
    }

    pub fn get(&self, path: &str, accept: &str) -> Reply {
        self.call(
            "GET",
            &format!("/v2/observer/{path}"),
            &[format!("Accept: {accept}")],
            None,
        )
    }

    pub fn head_digest(&self, tag: &str, accept: &str) -> Option<String> {
        let r = self.call(
            "HEAD",
            &format!("/v2/observer/manifests/{tag}"),
            &[format!("Accept: {accept}")],
            None,
        );
        (r.status == 200)
            .then(|| r.header("docker-content-digest"))
            .flatten()
    }

    pub fn put_blob(&self, data: &[u8]) -> String {
        let digest = sha256(data);
        let start = self.call("POST", "/v2/observer/blobs/uploads/", &[], Some(b""));
        assert_eq!(start.status, 202, "{}{}", start.headers, start.body);
        let loc = start.header("location").unwrap();
        let sep = if loc.contains('?') { '&' } else { '?' };
        let done = self.call(
            "PUT",
            &format!("{loc}{sep}digest={digest}"),
            &["Content-Type: application/octet-stream".into()],
            Some(data),
        );
        assert_eq!(done.status, 201, "{}{}", done.headers, done.body);
        digest
    }

    /// PUTs a manifest or an index under `reference` (a tag, or its digest); returns its digest.
    pub fn put_manifest(&self, reference: &str, media_type: &str, body: &[u8]) -> String {
        let r = self.call(
            "PUT",
            &format!("/v2/observer/manifests/{reference}"),
            &[format!("Content-Type: {media_type}")],
            Some(body),
        );
        assert_eq!(r.status, 201, "{}{}", r.headers, r.body);
        let d = r.header("docker-content-digest").unwrap();
        assert_eq!(d, sha256(body));
        d
    }

    /// The repository's tags (what a refused release must not change).
    pub fn tags(&self) -> String {
        let r = self.get("tags/list", "application/json");
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }
}
