//! Layer 2. The registry's HTTP API (distribution v2), through `curl` with its config on stdin, so that the
//! token never reaches argv. Works with htpasswd basic auth (the sandbox) and with bearer-token
//! registries such as GHCR.

use crate::config::Env;
use crate::core::util::env_nonempty;
use crate::ctx::Ctx;
use crate::sandbox_state;
use anyhow::{bail, Context, Result};

pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

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
        bail!(
            "cannot reach the registry at {url}: {}",
            sh.mask(out.stderr.trim())
        );
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

/// `Bearer realm="...",service="...",scope="..."` → (realm, service, scope).
pub fn bearer_challenge(h: &str) -> Option<(String, String, String)> {
    let rest = h.strip_prefix("Bearer ")?;
    let mut realm = String::new();
    let mut service = String::new();
    let mut scope = String::new();
    for part in rest.split("\",") {
        let (k, v) = part.split_once('=')?;
        let v = v.trim().trim_matches('"').to_string();
        match k.trim() {
            "realm" => realm = v,
            "service" => service = v,
            "scope" => scope = v,
            _ => {}
        }
    }
    Some((realm, service, scope))
}

pub struct Client<'a> {
    sh: &'a Ctx,
    base: String,
    creds: Option<Creds>,
    auth: Option<String>,
}

impl<'a> Client<'a> {
    pub fn new(sh: &'a Ctx, env: &Env) -> Client<'a> {
        Client {
            sh,
            base: env.registry_url(),
            creds: credentials(sh, env),
            auth: None,
        }
    }

    fn get(&mut self, method: &str, path: &str, accept: &str) -> Result<Response> {
        let url = format!("{}/v2/{path}", self.base);
        let r = request(self.sh, method, &url, accept, self.auth.as_deref())?;
        if r.status != 401 {
            return Ok(r);
        }
        let challenge = r.header("www-authenticate").unwrap_or("").to_string();
        let Some(c) = self.creds.clone() else {
            bail!("the registry wants credentials: set REGISTRY_USER and REGISTRY_TOKEN");
        };
        let basic = format!("user = {}", curl_quote(&format!("{}:{}", c.user, c.token)));
        if let Some((realm, service, scope)) = bearer_challenge(&challenge) {
            let token_url = format!("{realm}?service={service}&scope={scope}");
            let t = request(self.sh, "GET", &token_url, "application/json", Some(&basic))?;
            if t.status != 200 {
                bail!(
                    "the registry refused the credentials (token endpoint answered {})",
                    t.status
                );
            }
            let v: serde_json::Value =
                serde_json::from_str(&t.body).context("parsing the registry token")?;
            let tok = v["token"]
                .as_str()
                .or(v["access_token"].as_str())
                .context("no token in the registry's answer")?;
            self.sh.secret(tok);
            self.auth = Some(format!(
                "header = {}",
                curl_quote(&format!("Authorization: Bearer {tok}"))
            ));
        } else {
            self.auth = Some(basic);
        }
        let r = request(self.sh, method, &url, accept, self.auth.as_deref())?;
        if r.status == 401 || r.status == 403 {
            bail!("the registry refused the credentials ({})", r.status);
        }
        Ok(r)
    }

    /// The digest the registry serves for `repo:tag`, or None when the tag does not exist.
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
            s => bail!("the registry answered {s} for {repo_path}:{tag}"),
        }
    }

    /// The image config's labels for `repo:tag` (manifest → config blob), without a pull.
    pub fn labels(
        &mut self,
        repo_path: &str,
        tag: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let m = self.get(
            "GET",
            &format!("{repo_path}/manifests/{tag}"),
            MANIFEST_TYPES,
        )?;
        if m.status != 200 {
            bail!(
                "the registry answered {} for the manifest of {repo_path}:{tag}",
                m.status
            );
        }
        let manifest: serde_json::Value =
            serde_json::from_str(&m.body).context("parsing the manifest")?;
        let config = manifest["config"]["digest"]
            .as_str()
            .context("the manifest has no config digest (an index?)")?;
        let b = self.get("GET", &format!("{repo_path}/blobs/{config}"), "*/*")?;
        if b.status != 200 {
            bail!("the registry answered {} for the config blob", b.status);
        }
        let cfg: serde_json::Value =
            serde_json::from_str(&b.body).context("parsing the image config")?;
        Ok(cfg["config"]["Labels"]
            .as_object()
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
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
    fn parses_bearer_challenge() {
        let (realm, service, scope) = bearer_challenge(
            "Bearer realm=\"https://ghcr.io/token\",service=\"ghcr.io\",scope=\"repository:tawbury/observer:pull\"",
        )
        .unwrap();
        assert_eq!(realm, "https://ghcr.io/token");
        assert_eq!(service, "ghcr.io");
        assert_eq!(scope, "repository:tawbury/observer:pull");
    }
}
