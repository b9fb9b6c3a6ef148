//! The health gate (contract §6.3): the container healthy, `/health` answering 200 from the
//! server, `config/observer/` present, the start line in `logs/observer.log`, the contract env
//! injected (values for non-secrets, presence for secrets), the forbidden variable absent.

use super::handoff::role_of;
use super::q;
use crate::config::Env;
use crate::core::contract::{start_line, APP_SECRETS, CONTRACT_VARS, FORBIDDEN_VAR};

/// Waits up to `timeout_s` seconds for `container`'s health, then checks every criterion, one
/// line each: `ok NAME DETAIL` or `fail NAME DETAIL`, plus `env K=V` / `secret K=set|unset` /
/// `forbidden K=set` lines read inside the container and its `role ...` line. `/health` is asked
/// on the host port when `host_port` (the service; at `bind_address`, or the loopback when that
/// binds all addresses), else from inside the container (a candidate
/// has no host port). The start line must be THIS container's: the instance id it printed at
/// start must be in `logs/observer.log` (not a line an earlier instance left there), or in
/// `logs/observer.log.1` when the file was rotated by size since (the observer's own rotation,
/// issue 15).
pub fn script(
    env: &Env,
    version: &str,
    container: &str,
    host_port: bool,
    timeout_s: u64,
) -> String {
    let r = q(&env.remote_dir);
    let port = env.cfg.host_port;
    let host = env.cfg.local_http_host();
    let plain: Vec<&str> = CONTRACT_VARS.iter().map(|(n, _)| *n).collect();
    let started = start_line(version);
    let http = if host_port {
        format!("if command -v curl >/dev/null 2>&1; then code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{host}:{port}/health); else docker exec {container} python3 -m observer.healthcheck && code=200 || code=000; fi")
    } else {
        format!(
            "code=$({} | sed -n 's/^status=\\([0-9]*\\).*/\\1/p'); code=${{code:-000}}",
            role_of(container)
        )
    };
    format!(
        r#"s=none; i=0; while [ $i -lt {timeout_s} ]; do s=$(docker inspect -f '{{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{else}}}}{{{{.State.Status}}}}{{{{end}}}}' {container} 2>/dev/null || echo missing); [ "$s" = healthy ] && break; [ "$s" = unhealthy ] && break; [ "$s" = exited ] && break; [ "$s" = missing ] && [ $i -gt 5 ] && break; sleep 1; i=$((i+1)); done
if [ "$s" = healthy ]; then echo "ok health container healthy"; else echo "fail health container $s after ${{i}}s"; fi
img=$(docker inspect -f '{{{{.Config.Image}}}}' {container} 2>/dev/null); case "$img" in *:{version}) echo "ok image $img";; *) echo "fail image running $img, expected {version}";; esac
{http}
if [ "$code" = 200 ]; then echo "ok http /health answered 200"; else echo "fail http /health answered $code"; fi
if [ -d {r}/config/observer ]; then echo "ok archive-dir config/observer exists"; else echo "fail archive-dir config/observer missing"; fi
inst=$(docker logs {container} 2>&1 | grep -F '{started}' | tail -n 1 | sed -n 's/.* instance=\([0-9a-f]*\).*/\1/p')
if [ -n "$inst" ]; then if cat {r}/logs/observer.log.1 {r}/logs/observer.log 2>/dev/null | grep -F '{started}' | grep -q "instance=$inst"; then echo "ok start-line instance $inst in logs/observer.log"; else echo "fail start-line instance $inst wrote no start line to logs/observer.log"; fi; elif cat {r}/logs/observer.log.1 {r}/logs/observer.log 2>/dev/null | grep -q '{started}'; then echo "ok start-line found in logs/observer.log (no instance id)"; else echo "fail start-line no '{started}' in logs/observer.log"; fi
docker exec {container} sh -c 'for n in {plain}; do printf "env %s=%s\n" "$n" "$(printenv "$n")"; done; for n in {secret}; do if [ -n "$(printenv "$n")" ]; then echo "secret $n=set"; else echo "secret $n=unset"; fi; done; if [ -n "$(printenv {FORBIDDEN_VAR})" ]; then echo "forbidden {FORBIDDEN_VAR}=set"; fi' 2>/dev/null || echo "fail env cannot exec in the container"
echo "role $({role})"
"#,
        plain = plain.join(" "),
        secret = APP_SECRETS.join(" "),
        role = role_of(container),
    )
}

/// What the gate found: the failed criteria (empty: passed) and every line it printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    pub failed: Vec<String>,
    pub lines: Vec<String>,
    /// `active`, `standby`, `starting`, or "" (an observer too old to say).
    pub role: String,
}

impl Gate {
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Parses [`script`]'s output; a contract variable with another value than the contract's fails.
pub fn parse(out: &str) -> Gate {
    let mut failed = Vec::new();
    let mut lines = Vec::new();
    let mut role = String::new();
    for l in out.lines() {
        lines.push(l.to_string());
        if let Some(rest) = l.strip_prefix("fail ") {
            failed.push(rest.to_string());
        } else if let Some(kv) = l.strip_prefix("env ") {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match CONTRACT_VARS.iter().find(|(n, _)| *n == k) {
                Some((_, want)) if *want != v => {
                    failed.push(format!("env {k}={v}, expected {want}"))
                }
                _ => {}
            }
        } else if let Some(rest) = l.strip_prefix("role ") {
            role = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("role="))
                .unwrap_or("")
                .to_string();
        } else if let Some(rest) = l.strip_prefix("forbidden ") {
            failed.push(format!("forbidden variable {rest} is set in the container"));
        }
    }
    if !lines.iter().any(|l| l.starts_with("env ")) && !failed.iter().any(|f| f.starts_with("env"))
    {
        failed.push("env: the container's environment could not be read".into());
    }
    Gate {
        failed,
        lines,
        role,
    }
}
