//! `check-env`'s hardening checks of the server compose file (issue 15).

use super::Report;

/// Issue 15, the container hardened (contract §8.2 "least privilege"): read-only root with a
/// tmpfs `/tmp`, no-new-privileges, every capability dropped, a pids limit (FAIL when missing);
/// the port bound to one address and compressed log rotation (warn). `svc` is the service as
/// `docker compose config` prints it or as the YAML reads.
pub(super) fn check(svc: &serde_json::Value, r: &mut Report) {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect(),
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Object(o) => o.keys().cloned().collect(), // tmpfs as a map
            _ => Vec::new(),
        }
    };
    let mut must = |name: &str, ok: bool, good: &str, bad: &str| {
        if ok {
            r.ok(format!("compose {name}"), good);
        } else {
            r.fail(
                format!("compose {name}"),
                format!("{bad} (issue 15: the container hardened)"),
            );
        }
    };
    must(
        "read_only",
        svc["read_only"] == true,
        "true: a read-only root filesystem",
        "missing: add `read_only: true`",
    );
    let tmpfs = strings(&svc["tmpfs"]);
    must(
        "tmpfs /tmp",
        tmpfs.iter().any(|t| t == "/tmp" || t.starts_with("/tmp:")),
        "a tmpfs on /tmp",
        "no tmpfs on /tmp: add `tmpfs: [\"/tmp:size=16m\"]`",
    );
    let sec = strings(&svc["security_opt"]);
    must(
        "no-new-privileges",
        sec.iter().any(|s| {
            s == "no-new-privileges"
                || s == "no-new-privileges:true"
                || s == "no-new-privileges=true"
        }),
        "security_opt no-new-privileges:true",
        "missing: add `security_opt: [\"no-new-privileges:true\"]`",
    );
    must(
        "cap_drop",
        strings(&svc["cap_drop"])
            .iter()
            .any(|c| c.eq_ignore_ascii_case("ALL")),
        "ALL",
        "capabilities kept: add `cap_drop: [ALL]`",
    );
    let pids = svc["pids_limit"]
        .as_i64()
        .or_else(|| svc["pids_limit"].as_str()?.parse().ok());
    must(
        "pids_limit",
        pids.is_some_and(|p| p > 0),
        &pids.unwrap_or(0).to_string(),
        "missing: add `pids_limit: 128`",
    );
    // Short syntax (`${OBSERVER_BIND_ADDRESS:-127.0.0.1}:8000:8000`, as the YAML reads it) or
    // long (`host_ip`, as compose prints it).
    let ports = svc["ports"].as_array().cloned().unwrap_or_default();
    let bound = !ports.is_empty()
        && ports.iter().all(|p| match p {
            serde_json::Value::String(s) => {
                s.contains("OBSERVER_BIND_ADDRESS")
                    || (!s.contains('$')
                        && s.matches(':').count() >= 2
                        && !s.starts_with("0.0.0.0:"))
            }
            serde_json::Value::Object(o) => o
                .get("host_ip")
                .and_then(|h| h.as_str())
                .is_some_and(|h| !h.is_empty() && h != "0.0.0.0" && h != "::"),
            _ => false,
        });
    if bound {
        r.ok(
            "compose port binding",
            "one address (OBSERVER_BIND_ADDRESS, default 127.0.0.1)",
        );
    } else {
        r.warn(
            "compose port binding",
            "the port is published on every address: use \"${OBSERVER_BIND_ADDRESS:-127.0.0.1}:${OBSERVER_HOST_PORT:-8000}:8000\"",
        );
    }
    let log = &svc["logging"];
    let compress = &log["options"]["compress"];
    if log["driver"] == "json-file" && (compress == "true" || *compress == true) {
        r.ok("compose logging", "json-file, rotated and compressed");
    } else {
        r.warn(
            "compose logging",
            "not json-file with `compress: \"true\"`: the container's log is not rotated compressed",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verbs::check_env::Status;

    fn committed() -> serde_json::Value {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(crate::config::COMPOSE_PATH),
        )
        .unwrap();
        crate::compose::parse_yaml(&text).unwrap()["services"]["qts-observer"].clone()
    }

    #[test]
    fn the_committed_compose_file_is_hardened() {
        let mut r = Report::default();
        check(&committed(), &mut r);
        let bad: Vec<_> = r
            .checks
            .iter()
            .filter(|c| c.status != Status::Ok)
            .map(|c| format!("{} {}", c.name, c.detail))
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(r.checks.len(), 7);
    }

    #[test]
    fn what_a_hardening_lacks_is_named() {
        let mut svc = committed();
        let o = svc.as_object_mut().unwrap();
        for k in [
            "read_only",
            "tmpfs",
            "security_opt",
            "cap_drop",
            "pids_limit",
        ] {
            o.remove(k);
        }
        o.insert(
            "ports".into(),
            serde_json::json!(["${OBSERVER_HOST_PORT:-8000}:8000"]),
        );
        o.insert("logging".into(), serde_json::json!({"driver": "json-file"}));
        let mut r = Report::default();
        check(&svc, &mut r);
        assert_eq!(r.failed(), 5);
        let warned: Vec<&str> = r
            .checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(warned, ["compose port binding", "compose logging"]);
        // As `docker compose config` prints a bound port.
        let mut svc = committed();
        svc["ports"] =
            serde_json::json!([{"host_ip": "127.0.0.1", "published": "8000", "target": 8000}]);
        let mut r = Report::default();
        check(&svc, &mut r);
        assert_eq!(r.failed(), 0);
        assert!(r.checks.iter().all(|c| c.status == Status::Ok));
    }
}
