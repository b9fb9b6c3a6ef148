//! Typed records the tool stores on the server under `<remote_dir>/.deploy/`. Every writer builds
//! them through the constructors here, so every field is filled; readers accept records written by
//! older versions of the tool (missing fields take their defaults).

use serde::{Deserialize, Serialize};

/// `.deploy/lock/holder.json`: who holds the deploy lock.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct LockHolder {
    /// Random id; only the holder with this id releases the lock.
    pub id: String,
    /// The operation holding it: `deploy`, `rollback` or `restore`.
    pub operation: String,
    /// `user@host`, with ` (GitHub Actions)` under Actions.
    pub who: String,
    /// The controller's host name.
    pub host: String,
    /// The controller's process id.
    pub pid: u32,
    /// The version being deployed or restored (may be empty for a restore of no version).
    pub version: String,
    /// RFC 3339 UTC.
    pub started: String,
    /// Unix seconds; the lock's age is measured from here (`lock_ttl_s`).
    pub started_epoch: u64,
    /// What tells a dead holder from a live one across machines (`core::liveness`, issue 12):
    /// the controller's `/etc/machine-id`,
    pub machine_id: String,
    /// its `/proc/sys/kernel/random/boot_id` (a reboot changes it),
    pub boot_id: String,
    /// its PID namespace (`pid:[N]`: pids compare only within one),
    pub pid_ns: String,
    /// and the process's start time in clock ticks since boot (a reused pid has another).
    pub start_ticks: u64,
    /// Under GitHub Actions: the workflow run holding the lock.
    pub workflow_run: Option<WorkflowRun>,
    /// A maintenance window's message (`lock acquire -m MSG`, operation `maintenance`; issue 15).
    pub message: String,
    /// Unix seconds a maintenance window ends (`lock acquire --for`); 0: held until `lock
    /// release`. A maintenance lock is never judged stale by its process's death
    /// (`core::liveness::judge`).
    pub expires_epoch: u64,
}

/// The operation name of a maintenance window's lock.
pub const MAINTENANCE: &str = "maintenance";

/// A GitHub Actions workflow run (the `GITHUB_*` variables of the runner).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default)]
pub struct WorkflowRun {
    /// `owner/name`.
    pub repository: String,
    /// `owner/name/.github/workflows/deploy.yml` (`GITHUB_WORKFLOW_REF` without its `@ref`).
    pub workflow: String,
    pub run_id: String,
    pub run_attempt: String,
    /// The run's page.
    pub url: String,
}

/// Whether a deploy moved forward, or failed.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    #[default]
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
        }
    }
}

/// A step's wall time, in the order run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct StepTime {
    pub step: String,
    pub seconds: f64,
}

/// One line of `.deploy/history.jsonl`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct HistoryRecord {
    /// `deploy`, `rollback` or `restore`.
    pub kind: String,
    /// The version this record is about (the one started).
    pub version: String,
    /// Its digest (`sha256:…`), when verified.
    pub digest: Option<String>,
    pub outcome: Outcome,
    pub who: String,
    /// RFC 3339 UTC.
    pub when: String,
    /// The image reference running before (empty: nothing).
    pub previous: String,
    /// The pre-deploy snapshot's id.
    pub snapshot: Option<String>,
    /// For an automatic rollback: the version that failed.
    pub rollback_of: Option<String>,
    /// The failed health-gate criteria.
    pub failed: Vec<String>,
    /// Seconds.
    pub duration_s: f64,
    pub steps: Vec<StepTime>,
    /// The controller's host name (issue 15).
    pub host: String,
    /// Under GitHub Actions: the workflow run that did it.
    pub workflow_run: Option<WorkflowRun>,
    /// The tool's version (`CARGO_PKG_VERSION`).
    pub tool_version: String,
    /// The git revision of the checkout the tool ran from (`git rev-parse --short HEAD`, with
    /// `-dirty` when its tree had changes; empty outside a git checkout).
    pub tool_revision: String,
}

/// `.deploy/last_good_tag`: one line `VERSION DIGEST` (the contract's name, §1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LastGood {
    pub version: String,
    pub digest: String,
}

impl LastGood {
    /// Parses the file's text; `None` when empty.
    pub fn parse(text: &str) -> Option<LastGood> {
        let mut w = text.split_whitespace();
        let version = w.next()?.to_string();
        Some(LastGood {
            version,
            digest: w.next().unwrap_or("").to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_records_still_read() {
        let h: HistoryRecord = serde_json::from_str(
            r#"{"version":"v1","kind":"deploy","outcome":"success","who":"a","when":"t","digest":null}"#,
        )
        .unwrap();
        assert_eq!(h.outcome, Outcome::Success);
        assert!(h.steps.is_empty());
        assert!(h.host.is_empty() && h.workflow_run.is_none() && h.tool_revision.is_empty());
        let l: LockHolder = serde_json::from_str(r#"{"id":"x","pid":7}"#).unwrap();
        assert_eq!((l.id.as_str(), l.pid, l.started_epoch), ("x", 7, 0));
        assert_eq!(
            LastGood::parse("v1.2.3 sha256:ab\n"),
            Some(LastGood {
                version: "v1.2.3".into(),
                digest: "sha256:ab".into()
            })
        );
        assert_eq!(LastGood::parse("  \n"), None);
    }
}
