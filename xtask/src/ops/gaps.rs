//! `gaps` (issue 15): the archive's holes (computed on the server, `server::gaps`) matched to the
//! history's deploys, rollbacks and restores that overlap them; the report as text or JSON.

use crate::config::Env;
use crate::core::records::HistoryRecord;
use crate::core::util::rfc3339_ms;
use crate::plan::{Executor, Step};
use crate::server::gaps::{self, RawHole, RawReport};
use anyhow::Result;
use serde::Serialize;

/// How far (ms) an operation may lie from a hole and still count as its cause: the history's
/// `when` has second precision, and a run's first and last steps (connecting, the lock) touch
/// nothing.
pub const TOLERANCE_MS: i64 = 2_000;

/// What a hole with no overlapping operation says.
pub const NO_DEPLOY: &str = "no deploy: the service was down";

/// A deploy, rollback or restore that overlaps a hole.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Cause {
    pub kind: String,
    pub version: String,
    pub outcome: String,
    /// When it ended (RFC 3339, the history's `when`).
    pub when: String,
    pub duration_s: f64,
    /// For an automatic rollback: the version that failed.
    pub rollback_of: Option<String>,
}

impl Cause {
    /// `deploy v1.2.3 (success, 14.2 s, ended 2026-12-04T07:00:00Z)`.
    pub fn describe(&self) -> String {
        let of = self
            .rollback_of
            .as_ref()
            .map(|v| format!(" of {v}"))
            .unwrap_or_default();
        format!(
            "{} {}{of} ({}, {:.1} s, ended {})",
            self.kind, self.version, self.outcome, self.duration_s, self.when
        )
    }
}

/// One hole with its causes.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Hole {
    /// The last record before the hole, RFC 3339 UTC with milliseconds.
    pub start: String,
    /// The first record after it (now, when `ongoing`).
    pub end: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Its length, seconds.
    pub seconds: f64,
    /// Records missed: `length / interval - 1`, rounded.
    pub missed: u64,
    /// Nothing was written since `start`.
    pub ongoing: bool,
    /// The operations that overlap it (within [`TOLERANCE_MS`]).
    pub causes: Vec<Cause>,
    /// The causes in words, or [`NO_DEPLOY`].
    pub cause: String,
}

/// The report `gaps --json` prints.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Report {
    pub env: String,
    pub server: String,
    /// The server's clock when the report was computed.
    pub now: String,
    pub window_start: String,
    pub since_s: u64,
    pub interval_ms: u64,
    pub interval_source: String,
    pub folder: String,
    pub files: Vec<String>,
    pub records: u64,
    /// `--max-hole`, seconds: `-q` exits 1 when a hole is longer.
    pub max_hole_s: f64,
    pub holes: Vec<Hole>,
}

impl Report {
    /// Whether a hole is longer than `max_hole_s` (`-q`'s exit status 1).
    pub fn exceeds(&self) -> bool {
        self.holes.iter().any(|h| h.seconds > self.max_hole_s)
    }
}

fn ms_text(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The span (ms) of an operation: `when` (its end, second precision) minus `duration_s`, to one
/// second after `when`. `None` when `when` does not parse.
pub fn span(h: &HistoryRecord) -> Option<(i64, i64)> {
    let end = rfc3339_ms(&h.when)?;
    Some((end - (h.duration_s.max(0.0) * 1000.0) as i64, end + 1_000))
}

/// The operations of `history` overlapping `[start_ms, end_ms]` within [`TOLERANCE_MS`].
pub fn causes(start_ms: i64, end_ms: i64, history: &[HistoryRecord]) -> Vec<Cause> {
    history
        .iter()
        .filter(|h| {
            span(h).is_some_and(|(a, b)| a - TOLERANCE_MS <= end_ms && b + TOLERANCE_MS >= start_ms)
        })
        .map(|h| Cause {
            kind: h.kind.clone(),
            version: h.version.clone(),
            outcome: h.outcome.as_str().into(),
            when: h.when.clone(),
            duration_s: h.duration_s,
            rollback_of: h.rollback_of.clone(),
        })
        .collect()
}

/// One raw hole, matched.
pub fn hole(r: &RawHole, history: &[HistoryRecord]) -> Hole {
    let causes = causes(r.start_ms, r.end_ms, history);
    let cause = if causes.is_empty() {
        NO_DEPLOY.to_string()
    } else {
        causes
            .iter()
            .map(Cause::describe)
            .collect::<Vec<_>>()
            .join("; ")
    };
    Hole {
        start: ms_text(r.start_ms),
        end: ms_text(r.end_ms),
        start_ms: r.start_ms,
        end_ms: r.end_ms,
        seconds: r.seconds,
        missed: r.missed,
        ongoing: r.ongoing,
        causes,
        cause,
    }
}

/// The report: every hole matched to the history. `max_hole_s` `None`: 3 intervals.
pub fn report(
    env: &Env,
    server: &str,
    raw: &RawReport,
    history: &[HistoryRecord],
    max_hole_s: Option<f64>,
) -> Report {
    Report {
        env: env.name.clone(),
        server: server.into(),
        now: ms_text(raw.now_ms),
        window_start: ms_text(raw.start_ms),
        since_s: raw.since_s,
        interval_ms: raw.interval_ms,
        interval_source: raw.interval_source.clone(),
        folder: raw.folder.clone(),
        files: raw.files.clone(),
        records: raw.records,
        max_hole_s: max_hole_s.unwrap_or(raw.interval_ms as f64 * 3.0 / 1000.0),
        holes: raw.holes.iter().map(|h| hole(h, history)).collect(),
    }
}

/// The report as text: a header, one row per hole, a summary.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "archive    {} ({}), {} records in the window\nwindow     {} .. {} (server clock)\ninterval   {} ms ({}): holes are gaps longer than {} ms\n",
        r.folder,
        if r.files.is_empty() {
            "no *.jsonl file".to_string()
        } else {
            r.files.join(", ")
        },
        r.records,
        r.window_start,
        r.now,
        r.interval_ms,
        r.interval_source,
        r.interval_ms * 3 / 2,
    );
    if r.holes.is_empty() {
        s.push_str("no holes\n");
        return s;
    }
    s.push_str(&format!(
        "\n{:<24}  {:<24}  {:>9}  {:>7}  CAUSE\n",
        "START", "END", "LENGTH", "MISSED"
    ));
    for h in &r.holes {
        let end = if h.ongoing {
            "(ongoing)".to_string()
        } else {
            h.end.clone()
        };
        s.push_str(&format!(
            "{:<24}  {:<24}  {:>8.3}s  {:>7}  {}\n",
            h.start, end, h.seconds, h.missed, h.cause
        ));
    }
    let missed: u64 = r.holes.iter().map(|h| h.missed).sum();
    let longest = r.holes.iter().map(|h| h.seconds).fold(0.0, f64::max);
    s.push_str(&format!(
        "\n{} hole(s), {missed} record(s) missed, the longest {longest:.3} s (--max-hole {:.3} s: {})\n",
        r.holes.len(),
        r.max_hole_s,
        if r.exceeds() { "exceeded" } else { "not exceeded" }
    ));
    s
}

/// Runs the report's one script over `x`'s session (program on stdin): the raw report and the
/// history.
pub fn fetch(
    x: &mut Executor,
    env: &Env,
    server: &str,
    since_s: u64,
) -> Result<(RawReport, Vec<HistoryRecord>)> {
    let step = Step::remote(
        "gaps",
        "Archive-continuity report",
        server,
        gaps::script(env, since_s, env.cfg.interval_ms),
    )
    .data_stdin(gaps::PROGRAM.as_bytes().to_vec())
    .read_only();
    let out = x.run(&step)?;
    gaps::parse(&out.stdout).map_err(|e| {
        // The program's traceback is on stderr, which a successful step does not print.
        let err = x.sh.mask(out.stderr.trim());
        if err.is_empty() {
            e
        } else {
            e.context(format!(
                "its error output:\n{}",
                crate::core::util::tail(&err, 20)
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::records::Outcome;

    fn rec(kind: &str, version: &str, when: &str, dur: f64) -> HistoryRecord {
        HistoryRecord {
            kind: kind.into(),
            version: version.into(),
            outcome: Outcome::Success,
            when: when.into(),
            duration_s: dur,
            ..HistoryRecord::default()
        }
    }

    fn at(ts: &str) -> i64 {
        rfc3339_ms(ts).unwrap()
    }

    #[test]
    fn holes_match_the_operations_that_overlap_them() {
        let hist = vec![
            // 10:00:00 .. 10:00:20
            rec("deploy", "v1.0.0", "2026-12-04T10:00:20Z", 20.0),
            // 10:05:00 .. 10:05:30, then its automatic rollback 10:05:30 .. 10:05:40
            rec("deploy", "v1.1.0", "2026-12-04T10:05:30Z", 30.0),
            HistoryRecord {
                rollback_of: Some("v1.1.0".into()),
                ..rec("rollback", "v1.0.0", "2026-12-04T10:05:40Z", 10.0)
            },
            rec("restore", "v1.0.0", "garbage", 10.0),
        ];
        // Inside the first deploy.
        let c = causes(
            at("2026-12-04T10:00:10Z"),
            at("2026-12-04T10:00:12Z"),
            &hist,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].version, "v1.0.0");
        // Just after its recorded end (second precision + tolerance).
        assert_eq!(
            causes(
                at("2026-12-04T10:00:22.500Z"),
                at("2026-12-04T10:00:23Z"),
                &hist
            )
            .len(),
            1
        );
        // Across the failed deploy and its rollback: both.
        let c = causes(
            at("2026-12-04T10:05:29Z"),
            at("2026-12-04T10:05:33Z"),
            &hist,
        );
        assert_eq!(
            c.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>(),
            ["deploy", "rollback"]
        );
        assert!(c[1]
            .describe()
            .starts_with("rollback v1.0.0 of v1.1.0 (success"));
        // Between operations: the service was down.
        let raw = RawHole {
            start_ms: at("2026-12-04T10:02:00Z"),
            end_ms: at("2026-12-04T10:02:03Z"),
            seconds: 3.0,
            missed: 14,
            ongoing: false,
        };
        let h = hole(&raw, &hist);
        assert_eq!(h.cause, NO_DEPLOY);
        assert_eq!(h.start, "2026-12-04T10:02:00.000Z");
    }

    /// The whole verb's remote part with the fake transport: one read-only step over the one
    /// connection, its report matched to the history it returned.
    #[test]
    fn one_step_brings_report_and_history() {
        use crate::ops::tests::{ok, Fake};
        let env = crate::ops::tests::env();
        let sh = crate::ctx::Ctx::new().unwrap();
        let fake = Fake::default();
        let (a, b) = (at("2026-12-04T10:00:05Z"), at("2026-12-04T10:00:07Z"));
        fake.answer(
            "gaps",
            ok(&format!(
                "=== gaps report\n{{\"now_ms\":{b},\"start_ms\":0,\"interval_ms\":200,\"holes\":[{{\"start_ms\":{a},\"end_ms\":{b},\"seconds\":2.0,\"missed\":9,\"ongoing\":false}}]}}\n=== gaps history\n{}\n",
                serde_json::to_string(&rec("deploy", "v1.2.3", "2026-12-04T10:00:20Z", 20.0))
                    .unwrap()
            )),
        );
        let mut x = Executor::new(&sh, false, Box::new(fake.clone()));
        let (raw, hist) = fetch(&mut x, &env, "s", 3600).unwrap();
        assert_eq!((fake.ran(), x.connections()), (vec!["gaps"], 1));
        let r = report(&env, "s", &raw, &hist, None);
        assert_eq!(r.holes[0].causes[0].version, "v1.2.3");
        assert!(r.exceeds());
        assert!(render(&r).contains("deploy v1.2.3 (success, 20.0 s, ended 2026-12-04T10:00:20Z)"));
    }

    #[test]
    fn max_hole_defaults_to_three_intervals() {
        let env = crate::config::test_env("/srv/obs", "/tmp/r.git");
        let mut raw = RawReport {
            interval_ms: 200,
            holes: vec![RawHole {
                start_ms: 0,
                end_ms: 600,
                seconds: 0.6,
                missed: 2,
                ongoing: false,
            }],
            ..RawReport::default()
        };
        let r = report(&env, "s", &raw, &[], None);
        assert_eq!(r.max_hole_s, 0.6);
        assert!(
            !r.exceeds(),
            "a hole of exactly --max-hole does not exceed it"
        );
        assert!(render(&r).contains(NO_DEPLOY));
        raw.holes[0].seconds = 0.601;
        assert!(report(&env, "s", &raw, &[], None).exceeds());
        assert!(!report(&env, "s", &raw, &[], Some(1.0)).exceeds());
        raw.holes.clear();
        assert!(render(&report(&env, "s", &raw, &[], None)).contains("no holes"));
    }
}
