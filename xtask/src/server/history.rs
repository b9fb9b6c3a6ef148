//! `.deploy/last_good_tag` and `.deploy/history.jsonl` (records in `core::records`).

use super::{deploy_dir, q};
use crate::config::Env;
use crate::core::records::{HistoryRecord, LastGood, Outcome};

/// Writes `last_good_tag` atomically (temp file + rename).
pub fn record_last_good(env: &Env, lg: &LastGood) -> String {
    let d = q(&deploy_dir(env));
    format!(
        "printf '%s %s\\n' {v} {dg} > {d}/last_good_tag.tmp && mv -f {d}/last_good_tag.tmp {d}/last_good_tag",
        v = q(&lg.version),
        dg = q(&lg.digest)
    )
}

/// The deploy-outcome textfile, beside the history (issue 15; node_exporter's textfile format).
pub const TEXTFILE: &str = "metrics/observer_deploy.prom";

/// What the deploy-outcome textfile reports about the operation a history record ends.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployOutcome {
    /// `deploy`, `rollback` or `restore`.
    pub kind: &'static str,
    pub version: String,
    pub success: bool,
    /// An automatic rollback (a rollback record of a failed version, `rollback_of`).
    pub rolled_back: bool,
    /// Seconds.
    pub duration_s: f64,
}

impl DeployOutcome {
    /// The textfile's values for `rec`; `None` for a kind that is not an operation on what runs
    /// (`repair`: records written again).
    pub fn of(rec: &HistoryRecord) -> Option<DeployOutcome> {
        let kind = match rec.kind.as_str() {
            "deploy" => "deploy",
            "rollback" => "rollback",
            "restore" => "restore",
            _ => return None,
        };
        Some(DeployOutcome {
            kind,
            version: rec.version.clone(),
            success: rec.outcome == Outcome::Success,
            rolled_back: kind == "rollback" && rec.rollback_of.is_some(),
            duration_s: rec.duration_s,
        })
    }
}

/// A Prometheus label value: `\`, `"` and line breaks escaped (exposition format).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends stdin (one JSON line) to the history; with `m`, then writes the deploy-outcome
/// textfile `<remote_dir>/.deploy/metrics/observer_deploy.prom` atomically (temp file + rename):
/// the end time is the server's clock, `observer_deploy_rollbacks_total` counts the history's
/// `rollback` records (automatic and manual, any outcome) after this one is appended. The
/// textfile is best effort: a failure to write it warns on stderr and leaves the step's exit
/// status to the append.
pub fn append(env: &Env, m: Option<&DeployOutcome>) -> String {
    let d = q(&deploy_dir(env));
    let Some(m) = m else {
        return format!("cat >> {d}/history.jsonl");
    };
    let kind = m.kind;
    let fmt = format!(
        "# HELP observer_deploy_last_timestamp_seconds When the last deploy, rollback or restore ended (Unix seconds).\\n\
# TYPE observer_deploy_last_timestamp_seconds gauge\\n\
observer_deploy_last_timestamp_seconds{{kind=\"{kind}\"}} %s\\n\
# HELP observer_deploy_last_success Whether the last deploy, rollback or restore succeeded (1) or failed (0).\\n\
# TYPE observer_deploy_last_success gauge\\n\
observer_deploy_last_success{{kind=\"{kind}\",version=\"%s\"}} {ok}\\n\
# HELP observer_deploy_last_rolled_back 1 when the last operation was an automatic rollback of a failed deploy.\\n\
# TYPE observer_deploy_last_rolled_back gauge\\n\
observer_deploy_last_rolled_back {rb}\\n\
# HELP observer_deploy_last_duration_seconds How long the last deploy, rollback or restore took.\\n\
# TYPE observer_deploy_last_duration_seconds gauge\\n\
observer_deploy_last_duration_seconds{{kind=\"{kind}\"}} {dur:.3}\\n\
# HELP observer_deploy_rollbacks_total Rollbacks (automatic and manual) in the deploy history.\\n\
# TYPE observer_deploy_rollbacks_total counter\\n\
observer_deploy_rollbacks_total %s\\n",
        ok = u8::from(m.success),
        rb = u8::from(m.rolled_back),
        dur = m.duration_s,
    );
    format!(
        "cat >> {d}/history.jsonl || exit 1
n=$(grep -c '^{{\"kind\":\"rollback\"' {d}/history.jsonl || true)
{{ mkdir -p {d}/metrics && printf {fmt} \"$(date +%s)\" {v} \"$n\" > {d}/{TEXTFILE}.tmp && mv -f {d}/{TEXTFILE}.tmp {d}/{TEXTFILE}; }} || echo 'warning: the deploy-outcome textfile {TEXTFILE} could not be written' >&2",
        fmt = q(&fmt),
        v = q(&label(&m.version)),
    )
}

/// Prints the last `n` history lines.
pub fn read(env: &Env, n: usize) -> String {
    format!(
        "tail -n {n} {}/history.jsonl 2>/dev/null; true",
        q(&deploy_dir(env))
    )
}
