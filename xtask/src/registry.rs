//! Layer 3. The registry's HTTP API (distribution v2), through `curl` with its config on stdin, so
//! that no credential or token reaches argv. The client follows the registry's challenge: htpasswd
//! basic auth (the sandbox's basic mode), or a bearer token fetched from the realm the challenge
//! names, with the basic credentials, for the scope it names (GHCR, and the sandbox's token mode).
//! Every auth failure is an error naming the registry and the auth step (`credentials`, `token
//! request`, `bearer token`, `basic auth`) and never a token.
//!
//! Manifests are asked for with every manifest and index media type, so a tag holding an OCI image
//! index (what a BuildKit release pushes) answers with the index's digest — the digest a server
//! records when it pulls the tag. [`Client::relate`] tells "an index and one of its own platform
//! manifests" (the same image) from a different image.

use crate::config::Env;
use crate::core::exit::fail;
use crate::core::util::env_nonempty;
use crate::ctx::Ctx;
use crate::sandbox_state;
use anyhow::{bail, Context, Result};
use serde_json::Value;

mod manifest;
pub use manifest::{is_digest, repo_digests, Manifest, Relation};

/// The Accept header of every manifest request: single manifests and indexes, OCI and Docker.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// What to check when the registry refuses the credentials.
const CREDS_HINT: &str = "check REGISTRY_USER and REGISTRY_TOKEN (GHCR: a deploy's GITHUB_TOKEN needs `packages: read`; a laptop release needs a personal access token with `write:packages`)";

#[derive(Clone)]
pub struct Creds {
    pub user: String,
    pub token: String,
}

/// `REGISTRY_USER`/`REGISTRY_TOKEN`, or the sandbox's generated ones.
pub fn credentials(sh: &Ctx, env: &Env) -> Option<Creds> {
    let c = match (
        env_nonempty("REGISTRY_USER"),
        env_nonempty("REGISTRY_TOKEN"),
    ) {
        (Some(user), Some(token)) => Some(Creds { user, token }),
        _ if env.cfg.sandbox => {
            sandbox_state::registry_credentials(sh).map(|(user, token)| Creds { user, token })
        }
        _ => None,
    };
    if let Some(c) = &c {
        sh.secret(&c.token);
    }
    c
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn curl_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn basic_line(c: &Creds) -> String {
    format!("user = {}", curl_quote(&format!("{}:{}", c.user, c.token)))
}

/// One request. `auth` is a curl config line (`user = ...` or `header = ...`), fed on stdin.
fn request(
    sh: &Ctx,
    method: &str,
    url: &str,
    accept: &str,
    auth: Option<&str>,
) -> Result<Response> {
    let mut cfg = String::new();
    if let Some(a) = auth {
        cfg.push_str(a);
        cfg.push('\n');
    }
    let accept = format!("Accept: {accept}");
    let head = if method == "HEAD" { Some("-I") } else { None };
    let c = xshell::cmd!(
        sh,
        "curl -sS -i --max-time 30 -K - -X {method} -H {accept} {head...} -L {url}"
    );
    let out = sh
        .capture(c, Some(cfg.as_bytes()))
        .context("running curl")?;
    if !out.ok {
        bail!("{url}: {}", sh.mask(out.stderr.trim()));
    }
    parse_response(&out.stdout)
}

/// Parses `curl -i -L` output: the last header block wins (redirects print several).
pub fn parse_response(raw: &str) -> Result<Response> {
    let mut rest = raw;
    loop {
        let (head, body) = match rest.find("\r\n\r\n") {
            Some(i) => (&rest[..i], &rest[i + 4..]),
            None => (rest, ""),
        };
        let status: u16 = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .context("no HTTP status line from the registry")?;
        if body.starts_with("HTTP/") && (status / 100 == 3 || status == 100) {
            rest = body;
            continue;
        }
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        return Ok(Response {
            status,
            headers,
            body: body.to_string(),
        });
    }
}

/// A `WWW-Authenticate` challenge: `Bearer realm="...",service="...",scope="...",error="..."`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercase: `bearer`, `basic`, or "" when there was no header.
    pub scheme: String,
    pub realm: String,
    pub service: String,
    pub scope: String,
    /// `insufficient_scope`, `invalid_token`, ... (RFC 6750), when the registry says why.
    pub error: String,
}

/// Parses a challenge; quoted values may hold commas (`scope="repository:x:pull,push"`).
pub fn parse_challenge(h: &str) -> Challenge {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut c = Challenge {
        scheme: scheme.to_ascii_lowercase(),
        ..Challenge::default()
    };
    let mut it = rest.chars().peekable();
    loop {
        while it.peek().is_some_and(|&ch| ch == ' ' || ch == ',') {
            it.next();
        }
        let key: String = it.by_ref().take_while(|&ch| ch != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if it.peek() == Some(&'"') {
            it.next();
            while let Some(ch) = it.next() {
                match ch {
                    '\\' => value.extend(it.next()),
                    '"' => break,
                    _ => value.push(ch),
                }
            }
        } else {
            value = it.by_ref().take_while(|&ch| ch != ',').collect();
        }
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => c.realm = value,
            "service" => c.service = value,
            "scope" => c.scope = value,
            "error" => c.error = value,
            _ => {}
        }
    }
    c
}

/// Percent-encodes a query value (unreserved characters and `:,/` stay).
pub fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b':'
            | b','
            | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `: CODE: message` from a distribution error body (`{"errors":[{"code","message"}]}`), or "".
pub fn error_detail(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return String::new();
    };
    let Some(e) = v["errors"].get(0) else {
        return String::new();
    };
    let mut s = format!(
        ": {}: {}",
        e["code"].as_str().unwrap_or("?"),
        e["message"].as_str().unwrap_or("")
    );
    s.truncate(200);
    s
}

/// Which auth the second try used.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AuthStep {
    Basic,
    Bearer,
}

pub struct Client<'a> {
    sh: &'a Ctx,
    /// `host[:port]`, for messages.
    registry: String,
    base: String,
    creds: Option<Creds>,
    auth: Option<String>,
}

impl<'a> Client<'a> {
    pub fn new(sh: &'a Ctx, env: &Env) -> Client<'a> {
        Client {
            sh,
            registry: env.registry.clone(),
            base: env.registry_url(),
            creds: credentials(sh, env),
            auth: None,
        }
    }

    fn err(&self, msg: String) -> anyhow::Error {
        fail(self.sh.mask(&format!("registry {}: {msg}", self.registry)))
    }

    fn get(&mut self, method: &str, path: &str, accept: &str) -> Result<Response> {
        let url = format!("{}/v2/{path}", self.base);
        let r = request(self.sh, method, &url, accept, self.auth.as_deref())
            .map_err(|e| self.err(format!("cannot reach the registry at {e:#}")))?;
        if r.status == 403 {
            return Err(self.refused(&r, &Challenge::default(), AuthStep::Bearer));
        }
        if r.status != 401 {
            return Ok(r);
        }
        let ch = parse_challenge(r.header("www-authenticate").unwrap_or(""));
        let Some(c) = self.creds.clone() else {
            return Err(self.err(format!(
                "auth step `credentials`: the registry wants credentials ({} challenge) and none are set: set REGISTRY_USER and REGISTRY_TOKEN",
                if ch.scheme.is_empty() { "no" } else { &ch.scheme }
            )));
        };
        let step = if ch.scheme == "bearer" {
            let tok = self.bearer_token(&ch, &c)?;
            self.auth = Some(format!(
                "header = {}",
                curl_quote(&format!("Authorization: Bearer {tok}"))
            ));
            AuthStep::Bearer
        } else {
            self.auth = Some(basic_line(&c));
            AuthStep::Basic
        };
        let r = request(self.sh, method, &url, accept, self.auth.as_deref())
            .map_err(|e| self.err(format!("cannot reach the registry at {e:#}")))?;
        if r.status == 401 || r.status == 403 {
            return Err(self.refused(&r, &ch, step));
        }
        Ok(r)
    }

    /// A token from the challenge's realm for its service and scope, with the basic credentials.
    fn bearer_token(&self, ch: &Challenge, c: &Creds) -> Result<String> {
        let scope = if ch.scope.is_empty() {
            "the registry".to_string()
        } else {
            ch.scope.clone()
        };
        if ch.realm.is_empty() {
            return Err(self.err("auth step `token request`: the registry's bearer challenge names no realm (token service)".into()));
        }
        let mut url = ch.realm.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("service={}", query_escape(&ch.service)));
        if !ch.scope.is_empty() {
            url.push_str(&format!("&scope={}", query_escape(&ch.scope)));
        }
        let t = request(
            self.sh,
            "GET",
            &url,
            "application/json",
            Some(&basic_line(c)),
        )
        .map_err(|e| {
            self.err(format!(
                "auth step `token request`: cannot reach the token service at {e:#}"
            ))
        })?;
        if t.status == 401 || t.status == 403 {
            return Err(self.err(format!(
                "auth step `token request` failed: the token service {} refused the credentials of user {} for {scope} (HTTP {}{}): {CREDS_HINT}",
                ch.realm,
                c.user,
                t.status,
                error_detail(&t.body)
            )));
        }
        if t.status != 200 {
            return Err(self.err(format!(
                "auth step `token request` failed: the token service {} answered HTTP {} for {scope}{}",
                ch.realm,
                t.status,
                error_detail(&t.body)
            )));
        }
        let v: Value = serde_json::from_str(&t.body).map_err(|_| {
            self.err(format!(
                "auth step `token request`: the token service {} answered something that is not JSON",
                ch.realm
            ))
        })?;
        let tok = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.err(format!(
                    "auth step `token request`: the token service {} answered without a token",
                    ch.realm
                ))
            })?;
        self.sh.secret(tok);
        Ok(tok.to_string())
    }

    /// The error for a request refused after authenticating (`first`: the challenge answered).
    fn refused(&self, r: &Response, first: &Challenge, step: AuthStep) -> anyhow::Error {
        let again = parse_challenge(r.header("www-authenticate").unwrap_or(""));
        let scope = [&again.scope, &first.scope]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| "this request".into());
        let detail = error_detail(&r.body);
        let user = self.creds.as_ref().map(|c| c.user.as_str()).unwrap_or("");
        let status = r.status;
        let msg = match (step, again.error.as_str()) {
            (AuthStep::Basic, _) => format!(
                "auth step `basic auth` failed: the registry refused the credentials of user {user} (HTTP {status}{detail}): {CREDS_HINT}"
            ),
            (AuthStep::Bearer, "insufficient_scope") => format!(
                "auth step `bearer token` failed: the registry refused the token from {} (HTTP {status}, error=\"insufficient_scope\"{detail}): it does not grant {scope}; the token was issued for another repository or without that access: {CREDS_HINT}",
                if first.realm.is_empty() { "the token service" } else { &first.realm }
            ),
            (AuthStep::Bearer, "invalid_token") => format!(
                "auth step `bearer token` failed: the registry rejected the token from {} as invalid or expired (HTTP {status}, error=\"invalid_token\"{detail}) for {scope}: it is expired, not yet valid, or not signed by a key the registry trusts (compare the clocks of this machine, the token service and the registry)",
                if first.realm.is_empty() { "the token service" } else { &first.realm }
            ),
            (AuthStep::Bearer, _) if status == 403 => format!(
                "auth step `authorization` failed: the registry denied {scope} to user {user} (HTTP 403{detail}): the credentials are valid but lack access to this package: {CREDS_HINT}"
            ),
            (AuthStep::Bearer, e) => format!(
                "auth step `bearer token` failed: the registry refused the token for {scope} (HTTP {status}{}{detail})",
                if e.is_empty() { String::new() } else { format!(", error=\"{e}\"") }
            ),
        };
        self.err(msg)
    }

    /// The digest the registry serves for `repo:tag` (an index's own digest when the tag holds
    /// an index), or None when the tag does not exist.
    pub fn digest(&mut self, repo_path: &str, tag: &str) -> Result<Option<String>> {
        let r = self.get(
            "HEAD",
            &format!("{repo_path}/manifests/{tag}"),
            MANIFEST_TYPES,
        )?;
        match r.status {
            200 => Ok(Some(
                r.header("docker-content-digest")
                    .context("the registry sent no Docker-Content-Digest")?
                    .to_string(),
            )),
            404 => Ok(None),
            s => Err(self.err(format!("answered HTTP {s} for {repo_path}:{tag}"))),
        }
    }

    /// The manifest or index `reference` (a tag or a digest) names, or None when there is none.
    pub fn manifest(&mut self, repo_path: &str, reference: &str) -> Result<Option<Manifest>> {
        let r = self.get(
            "GET",
            &format!("{repo_path}/manifests/{reference}"),
            MANIFEST_TYPES,
        )?;
        match r.status {
            200 => {
                let digest = r
                    .header("docker-content-digest")
                    .map(str::to_string)
                    .or_else(|| is_digest(reference).then(|| reference.to_string()))
                    .context("the registry sent no Docker-Content-Digest")?;
                Manifest::parse(&digest, r.header("content-type"), &r.body).map(Some)
            }
            404 => Ok(None),
            s => Err(self.err(format!(
                "answered HTTP {s} for the manifest {repo_path}@{reference}"
            ))),
        }
    }

    /// How `other` relates to `served` (both digests in `repo_path`): the same object, an index
    /// and one of its own platform images (either way round), or different images.
    pub fn relate(&mut self, repo_path: &str, served: &str, other: &str) -> Result<Relation> {
        if served == other {
            return Ok(Relation::Same);
        }
        if !is_digest(served) || !is_digest(other) {
            return Ok(Relation::Different);
        }
        if let Some(s) = self.manifest(repo_path, served)? {
            if let Some(platform) = s.platform_of(other).filter(|_| s.is_index()) {
                return Ok(Relation::ServedIndexHolds { platform });
            }
        }
        if let Some(o) = self.manifest(repo_path, other)? {
            if let Some(platform) = o.platform_of(served).filter(|_| o.is_index()) {
                return Ok(Relation::HeldByOtherIndex { platform });
            }
        }
        Ok(Relation::Different)
    }

    /// The first of `candidates` that is the image the registry serves as `served`, and how.
    pub fn find_same(
        &mut self,
        repo_path: &str,
        served: &str,
        candidates: &[String],
    ) -> Result<Option<(String, Relation)>> {
        if candidates.iter().any(|c| c == served) {
            return Ok(Some((served.to_string(), Relation::Same)));
        }
        for c in candidates {
            let r = self.relate(repo_path, served, c)?;
            if r.same_image() {
                return Ok(Some((c.clone(), r)));
            }
        }
        Ok(None)
    }

    /// The image config's labels for `repo:tag` (manifest → config blob), without a pull. For
    /// an index, its first platform image's (every platform of a release has the same labels).
    pub fn labels(&mut self, repo_path: &str, tag: &str) -> Result<serde_json::Map<String, Value>> {
        let mut m = self
            .manifest(repo_path, tag)?
            .with_context(|| format!("the registry has no manifest for {repo_path}:{tag}"))?;
        if m.is_index() {
            let (child, _) =
                m.platforms().into_iter().next().with_context(|| {
                    format!("the image index {} lists no platform image", m.digest)
                })?;
            m = self.manifest(repo_path, &child)?.with_context(|| {
                format!(
                    "the registry lacks {child}, a platform image of index {}",
                    m.digest
                )
            })?;
        }
        let config = m.json["config"]["digest"]
            .as_str()
            .with_context(|| format!("the manifest {} has no config digest", m.digest))?
            .to_string();
        let b = self.get("GET", &format!("{repo_path}/blobs/{config}"), "*/*")?;
        if b.status != 200 {
            return Err(self.err(format!(
                "answered HTTP {} for the config blob {config}",
                b.status
            )));
        }
        let cfg: Value = serde_json::from_str(&b.body).context("parsing the image config")?;
        Ok(cfg["config"]["Labels"]
            .as_object()
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::manifest::{DOCKER_LIST, OCI_INDEX};
    use super::*;

    #[test]
    fn parses_redirects_and_headers() {
        let raw = "HTTP/1.1 307 Temporary Redirect\r\nLocation: x\r\n\r\nHTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:ab\r\n\r\n{}";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("docker-content-digest"), Some("sha256:ab"));
        assert_eq!(r.body, "{}");
    }

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            "Bearer realm=\"https://ghcr.io/token\",service=\"ghcr.io\",scope=\"repository:tawbury/observer:pull\"",
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.realm, "https://ghcr.io/token");
        assert_eq!(c.service, "ghcr.io");
        assert_eq!(c.scope, "repository:tawbury/observer:pull");
        assert_eq!(c.error, "");
        // distribution 2.x after a refused token; a comma inside a quoted value.
        let c = parse_challenge("Bearer realm=\"http://127.0.0.1:1/token\",service=\"s\",scope=\"repository:o:pull,push\",error=\"insufficient_scope\"");
        assert_eq!(c.scope, "repository:o:pull,push");
        assert_eq!(c.error, "insufficient_scope");
        let c = parse_challenge("Basic realm=\"observer-sandbox\"");
        assert_eq!(
            (c.scheme.as_str(), c.realm.as_str()),
            ("basic", "observer-sandbox")
        );
        assert_eq!(parse_challenge(""), Challenge::default());
        let c = parse_challenge("Bearer realm=unquoted,error=invalid_token");
        assert_eq!(
            (c.realm.as_str(), c.error.as_str()),
            ("unquoted", "invalid_token")
        );
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            query_escape("repository:tawbury/observer:pull,push"),
            "repository:tawbury/observer:pull,push"
        );
        assert_eq!(query_escape("a b&c=d"), "a%20b%26c%3Dd");
    }

    #[test]
    fn error_details_come_from_the_errors_body() {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[]}]}"#;
        assert_eq!(
            error_detail(body),
            ": UNAUTHORIZED: authentication required"
        );
        assert_eq!(error_detail(""), "");
        assert_eq!(error_detail("<html>"), "");
    }

    #[test]
    fn manifest_requests_accept_indexes_and_manifests() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        let docker = "application/vnd.docker.distribution.manifest.v2+json";
        for t in [oci, OCI_INDEX, docker, DOCKER_LIST] {
            assert!(MANIFEST_TYPES.contains(t), "{t} missing from Accept");
        }
    }
}
