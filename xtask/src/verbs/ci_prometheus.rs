//! `cargo xtask ci`'s monitoring steps (contract §10.2): promtool and the Prometheus server from
//! Debian's `prometheus` package, unpacked (never installed: the package would start a system
//! service) into `target/tools/prometheus/`, then `promtool check config`, `check rules`, the rule
//! unit tests and the Grafana dashboard's queries. The e2e test `monitoring::` runs the same
//! server binary.

use super::step;
use crate::ctx::Ctx;
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use xshell::cmd;

/// The monitoring files (Prometheus config, alert rules and their tests, Grafana dashboard).
pub const DIR: &str = "app/obs_deploy/monitoring";

/// Where the package is unpacked (`dpkg-deb -x`): the binaries are under `usr/bin/`.
pub const TOOLS: &str = "target/tools/prometheus";

/// `target/tools/prometheus/usr/bin` with `promtool` and `prometheus` in it: unpacked from the
/// `prometheus` package that `apt-get download` fetches (the package index and its signatures
/// are apt's: no root needed, nothing installed) when either binary is missing; skipped when
/// both are there.
///
/// Errors: no `apt-get`/`dpkg-deb` (not Debian), the package unknown to apt (no `apt-get
/// update` yet), a failed download or unpack; nothing half-unpacked is left at [`TOOLS`].
pub fn tools(sh: &Ctx) -> Result<PathBuf> {
    let root = sh.path(TOOLS);
    let bin = root.join("usr/bin");
    if ["promtool", "prometheus"]
        .iter()
        .all(|b| bin.join(b).is_file())
    {
        return Ok(bin);
    }
    eprintln!("\n==> ci: fetch promtool and prometheus (Debian's `prometheus` package, unpacked into {TOOLS})");
    let download = sh.path("target/tools/prometheus.download");
    let partial = sh.path("target/tools/prometheus.partial");
    for d in [&download, &partial] {
        let _ = std::fs::remove_dir_all(d);
    }
    std::fs::create_dir_all(&download)
        .with_context(|| format!("creating {}", download.display()))?;
    {
        let _cd = sh.push_dir(&download);
        sh.read(cmd!(sh, "apt-get download prometheus")).context(
            "downloading Debian's `prometheus` package with `apt-get download` (nothing is \
             installed; ci stops here). Recover: run `sudo apt-get update` (apt must know the \
             package), or on a machine without apt put `promtool` and `prometheus` (2.x) into \
             target/tools/prometheus/usr/bin/ by hand, then run `cargo xtask ci` again",
        )?;
    }
    let deb = deb_in(&download)?;
    sh.read(cmd!(sh, "dpkg-deb -x {deb} {partial}"))
        .with_context(|| format!("unpacking {} with dpkg-deb", deb.display()))?;
    if !partial.join("usr/bin/promtool").is_file() || !partial.join("usr/bin/prometheus").is_file()
    {
        bail!(
            "{} has no usr/bin/promtool and usr/bin/prometheus; ci stops here. Recover: put both \
             binaries into {TOOLS}/usr/bin/ by hand",
            deb.display()
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &root)
        .with_context(|| format!("moving {} to {}", partial.display(), root.display()))?;
    let _ = std::fs::remove_dir_all(&download);
    let promtool = bin.join("promtool");
    let version = sh.read(cmd!(sh, "{promtool} --version"))?;
    eprintln!(
        "    {}",
        version.lines().next().unwrap_or("promtool (no version)")
    );
    Ok(bin)
}

/// The one `*.deb` that `apt-get download` left in `dir`.
fn deb_in(dir: &Path) -> Result<PathBuf> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    match debs.len() {
        1 => Ok(debs.remove(0)),
        n => bail!(
            "`apt-get download prometheus` left {n} .deb files in {}, expected one",
            dir.display()
        ),
    }
}

/// The ci steps: `promtool check config` (which loads `rules.yml` too, relative to the config),
/// `promtool check rules`, `promtool test rules` (every alert firing and not), and the dashboard:
/// valid JSON whose every query parses as PromQL (checked by promtool as recording rules).
pub fn checks(sh: &Ctx, bin: &Path) -> Result<()> {
    let promtool = bin.join("promtool");
    let dir = sh.path(DIR);
    let (config, rules, tests) = (
        dir.join("prometheus.yml"),
        dir.join("rules.yml"),
        dir.join("rules_test.yml"),
    );
    step(
        sh,
        "promtool check config (monitoring/prometheus.yml)",
        cmd!(sh, "{promtool} check config {config}"),
    )?;
    step(
        sh,
        "promtool check rules (monitoring/rules.yml)",
        cmd!(sh, "{promtool} check rules {rules}"),
    )?;
    step(
        sh,
        "promtool test rules (monitoring/rules_test.yml)",
        cmd!(sh, "{promtool} test rules {tests}"),
    )?;
    let dashboard = dir.join("grafana-dashboard.json");
    let text = std::fs::read_to_string(&dashboard)
        .with_context(|| format!("reading {}", dashboard.display()))?;
    let queries = dashboard_queries(&text)
        .with_context(|| format!("{} is not a valid dashboard", dashboard.display()))?;
    let as_rules = sh.path("target/tools/dashboard-queries.rules.yml");
    std::fs::write(&as_rules, recording_rules(&queries))
        .with_context(|| format!("writing {}", as_rules.display()))?;
    step(
        sh,
        "promtool: the Grafana dashboard's queries parse",
        cmd!(sh, "{promtool} check rules {as_rules}"),
    )
}

/// Every PromQL query of a Grafana dashboard (panel targets' and annotations' `expr`), in
/// order. Errors: not JSON, no panels, or a panel target without an `expr`.
pub fn dashboard_queries(json: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(json).context("not JSON")?;
    let panels = v["panels"]
        .as_array()
        .filter(|p| !p.is_empty())
        .context("no `panels`")?;
    let mut out = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().with_context(|| {
                format!("panel {:?}: a target without `expr`", p["title"].as_str())
            })?;
            out.push(e.to_string());
        }
    }
    for a in v["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(e) = a["expr"].as_str() {
            out.push(e.to_string());
        }
    }
    Ok(out)
}

/// `queries` as a Prometheus rule file of recording rules `dashboard_query_N` (JSON is YAML), for
/// `promtool check rules` to parse each.
pub fn recording_rules(queries: &[String]) -> String {
    let rules: Vec<serde_json::Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"record": format!("dashboard_query_{i}"), "expr": q}))
        .collect();
    serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dashboard() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(DIR)
                .join("grafana-dashboard.json"),
        )
        .unwrap()
    }

    #[test]
    fn the_dashboard_parses_and_shows_what_the_issue_asks() {
        let q = dashboard_queries(&dashboard()).unwrap();
        for want in [
            "rate(observer_records_total",
            "observer_last_write_timestamp_seconds",
            "observer_deploy_last_timestamp_seconds",
            "observer_role",
            "observer_write_errors_total",
        ] {
            assert!(q.iter().any(|e| e.contains(want)), "no query with {want}");
        }
    }

    #[test]
    fn dashboard_errors_name_the_fault() {
        assert!(dashboard_queries("{").is_err());
        let e = dashboard_queries(r#"{"panels":[{"title":"x","targets":[{}]}]}"#).unwrap_err();
        assert!(format!("{e:#}").contains("without `expr`"), "{e:#}");
        assert!(dashboard_queries(r#"{"panels":[]}"#).is_err());
    }

    #[test]
    fn recording_rules_are_valid_json_with_one_rule_per_query() {
        let r = recording_rules(&["up".into(), "rate(x[1m])".into()]);
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["groups"][0]["rules"][1]["expr"], "rate(x[1m])");
        assert_eq!(v["groups"][0]["rules"][1]["record"], "dashboard_query_1");
    }
}
