//! `cargo xtask history [-n N] [--json] [--env NAME]`: the audit trail of deploys, rollbacks and
//! restores from the server's `.deploy/history.jsonl` (`core::records::HistoryRecord`; issue 15).
//! Read-only, over one SSH connection.

use crate::config;
use crate::core::records::HistoryRecord;
use crate::ctx::Ctx;
use crate::ops;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct History {
    #[arg(long, default_value = "production")]
    env: String,
    /// How many records, newest first.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 20)]
    n: usize,
    /// One JSON array on stdout: the records as stored (`HistoryRecord`), newest first.
    #[arg(long)]
    json: bool,
}

impl History {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, &self.env)?;
        let (mut x, server) = ops::connect(sh, &env, false)?;
        let mut hist = ops::read_history(&mut x, &server.name, &env, self.n)?;
        hist.reverse();
        if self.json {
            println!("{}", sh.mask(&serde_json::to_string_pretty(&hist)?));
        } else {
            print!("{}", sh.mask(&table(&hist)));
        }
        Ok(())
    }
}

/// Where a record was made: the workflow run's id under GitHub Actions, else the controller's host
/// ("-" for records of tools before issue 15).
fn from(h: &HistoryRecord) -> String {
    match (&h.workflow_run, h.host.as_str()) {
        (Some(r), _) => format!("run {}", r.run_id),
        (None, "") => "-".into(),
        (None, host) => host.to_string(),
    }
}

/// The text table: one row per record in the order given, columns padded to their widths.
pub fn table(hist: &[HistoryRecord]) -> String {
    if hist.is_empty() {
        return "no history yet\n".into();
    }
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut rows = vec![[
        "WHEN", "KIND", "VERSION", "OUTCOME", "SECONDS", "WHO", "FROM", "TOOL",
    ]
    .map(String::from)];
    for h in hist {
        let outcome = match &h.rollback_of {
            Some(of) => format!("{} (of {of})", h.outcome.as_str()),
            None => h.outcome.as_str().to_string(),
        };
        let tool = match (h.tool_version.as_str(), h.tool_revision.as_str()) {
            ("", _) => "-".to_string(),
            (v, "") => v.to_string(),
            (v, r) => format!("{v} {r}"),
        };
        rows.push([
            dash(&h.when),
            dash(&h.kind),
            dash(&h.version),
            outcome,
            format!("{:.1}", h.duration_s),
            dash(&h.who),
            from(h),
            tool,
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::records::{Outcome, WorkflowRun};

    #[test]
    fn a_table_names_who_from_where_the_tool_and_old_records_read() {
        let new = HistoryRecord {
            kind: "rollback".into(),
            version: "v1.0.0".into(),
            outcome: Outcome::Success,
            who: "ann@box".into(),
            when: "2026-12-04T07:00:00Z".into(),
            rollback_of: Some("v1.1.0".into()),
            duration_s: 12.34,
            host: "box".into(),
            workflow_run: Some(WorkflowRun {
                run_id: "42".into(),
                ..WorkflowRun::default()
            }),
            tool_version: "0.1.0".into(),
            tool_revision: "abc1234-dirty".into(),
            ..HistoryRecord::default()
        };
        let old: HistoryRecord =
            serde_json::from_str(r#"{"kind":"deploy","version":"v0.9.0","outcome":"failed"}"#)
                .unwrap();
        let t = table(&[new, old]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("WHEN"), "{t}");
        for want in [
            "success (of v1.1.0)",
            "12.3",
            "ann@box",
            "run 42",
            "0.1.0 abc1234-dirty",
        ] {
            assert!(lines[1].contains(want), "{want}: {t}");
        }
        assert!(
            lines[2].contains("v0.9.0") && lines[2].contains("failed"),
            "{t}"
        );
        assert_eq!(table(&[]), "no history yet\n");
    }
}
