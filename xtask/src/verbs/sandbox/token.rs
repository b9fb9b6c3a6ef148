//! The sandbox registry's token mode, as GHCR answers: `docker-registry` with `auth: token` and a
//! token service on 127.0.0.1 (`xtask/sandbox/token_service.py`, embedded here and run from a copy
//! under `target/sandbox/token-service/`) implementing the distribution token specification:
//! basic credentials (the sandbox user and its generated token) in, an ES256 JWT out, scoped to
//! the requested `repository:NAME:pull,push`, valid 300 s, with the libtrust key ID of its signing
//! key in the header; the registry trusts the key through its self-signed certificate
//! (`rootcertbundle`). The service runs on Debian's python3 with python3-jwt and
//! python3-cryptography.

use super::daemons::{choose_port, http_status, pid_alive, stop_pid, wait_port_free, wait_until};
use crate::ctx::Ctx;
use crate::sandbox_state::{Paths, State, REGISTRY_USER};
use crate::transport::spawn_daemon;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;
use xshell::cmd;

/// The service the registry names in its challenge (the token's `aud`).
pub const SERVICE: &str = "observer-sandbox-registry";
/// The token's `iss`, which the registry requires.
pub const ISSUER: &str = "observer-sandbox-token-service";
const SCRIPT: &str = include_str!("../../../sandbox/token_service.py");
const SCRIPT_NAME: &str = "token_service.py";

fn script(p: &Paths) -> PathBuf {
    p.token_service().join(SCRIPT_NAME)
}

fn cert(p: &Paths) -> PathBuf {
    p.token_service().join("cert.pem")
}

/// Debian's python3 (it has python3-jwt and python3-cryptography) before whatever `python3` is
/// first on PATH, which may be another interpreter without them.
fn python(sh: &Ctx) -> Result<PathBuf> {
    let candidates = [
        Some(PathBuf::from("/usr/bin/python3")),
        which::which("python3").ok(),
    ];
    for py in candidates.into_iter().flatten() {
        if py.is_file() && sh.ok(cmd!(sh, "{py} -c 'import jwt, cryptography'")) {
            return Ok(py);
        }
    }
    bail!("the registry's token mode needs python3 with the jwt and cryptography modules (Debian: python3-jwt python3-cryptography); install them with `bash scripts/install-prereqs.sh` (root)")
}

/// Whether our token service runs and answers.
pub fn running(p: &Paths, st: &State) -> bool {
    st.token_pid.is_some_and(|pid| pid_alive(pid, &script(p)))
        && http_status(st.token_port, "/health") == Some(200)
}

/// Starts (or reuses) the token service; its signing key and certificate are made once.
pub fn start(sh: &Ctx, p: &Paths, st: &mut State) -> Result<()> {
    let dir = p.token_service();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // A fault a test left behind (the service would hand out that token) never survives `up`.
    let _ = fs::remove_file(dir.join("serve-token"));
    let current = fs::read_to_string(script(p)).unwrap_or_default();
    if running(p, st) {
        if current == SCRIPT {
            eprintln!(
                "token service already running (pid {}, 127.0.0.1:{})",
                st.token_pid.unwrap_or(0),
                st.token_port
            );
            return Ok(());
        }
        eprintln!("token service: its script changed; restarting it");
        let port = st.token_port;
        stop(p, st);
        wait_port_free(port);
    } else if let Some(pid) = st.token_pid.take() {
        eprintln!("token service: stale PID record (pid {pid}); starting it again");
    }
    let py = python(sh)?;
    if current != SCRIPT {
        let tmp = dir.join(format!("{SCRIPT_NAME}.tmp"));
        fs::write(&tmp, SCRIPT)?;
        fs::rename(&tmp, script(p))?;
    }
    let s = script(p);
    sh.read(cmd!(sh, "{py} {s} init --dir {dir}"))
        .context("creating the token service's signing key and certificate")?;
    let port = choose_port(st.token_port, "token service")?;
    let args: Vec<String> = [
        s.display().to_string(),
        "serve".into(),
        "--dir".into(),
        dir.display().to_string(),
        "--port".into(),
        port.to_string(),
        "--issuer".into(),
        ISSUER.into(),
        "--service".into(),
        SERVICE.into(),
        "--user".into(),
        REGISTRY_USER.into(),
        "--password-file".into(),
        p.token().display().to_string(),
    ]
    .into();
    let log = dir.join("token-service.log");
    let pid = spawn_daemon(&py, &args, &log)?;
    st.token_pid = Some(pid);
    st.token_port = port;
    wait_until("the token service", &log, Duration::from_secs(10), || {
        http_status(port, "/health") == Some(200)
    })
}

/// Stops our token service, if one is recorded.
pub fn stop(p: &Paths, st: &mut State) {
    if let Some(pid) = st.token_pid.take() {
        stop_pid(pid, &script(p), "token service");
    }
}

/// The `auth:` block of the registry's config in token mode.
pub fn auth_config(p: &Paths, st: &State) -> String {
    format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        st.token_port,
        cert(p).display()
    )
}

/// The token service's address, for the summary.
pub fn realm(st: &State) -> String {
    format!("http://127.0.0.1:{}/token", st.token_port)
}
