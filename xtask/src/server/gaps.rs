//! `gaps` (issue 15): the archive-continuity report, computed on the server. One script runs the
//! Python program [`PROGRAM`] (fed on stdin) inside the running observer with `docker exec -i`,
//! or, when none runs, in a throw-away container of its image (or of the last good version) with
//! the archive folder mounted read-only; then prints the history. Only the report (one JSON line)
//! and the history records cross the connection.

use super::{deploy_dir, q};
use crate::config::Env;
use crate::core::contract::CONTAINER;
use crate::core::records::HistoryRecord;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The program that computes the report (stdin of `python3 -`; arguments `SINCE_S INTERVAL_MS`).
pub const PROGRAM: &str = include_str!("gaps.py");

/// The line before the report.
const REPORT_MARK: &str = "=== gaps report";
/// The line before the history records.
const HISTORY_MARK: &str = "=== gaps history";
/// The prefix of the line that says why no report could be computed.
const ERROR_KEY: &str = "gaps-error=";

/// How many history lines are read (newest last).
pub const HISTORY_LINES: usize = 10_000;

/// The script: the report (`python3 -` on stdin, arguments `since_s` and the configured
/// `interval_ms`), then the history. `since_s` and `interval_ms` are numbers; the image names
/// come from the server and are quoted by the shell (`"$img"`).
pub fn script(env: &Env, since_s: u64, interval_ms: u32) -> String {
    let d = q(&deploy_dir(env));
    let cfg = q(&format!("{}/config", env.remote_dir));
    let repo = q(&format!("{}:", env.repo()));
    format!(
        "echo '{REPORT_MARK}'; \
if [ \"$(docker inspect -f '{{{{.State.Running}}}}' {CONTAINER} 2>/dev/null)\" = true ]; then \
docker exec -i {CONTAINER} python3 - {since_s} {interval_ms}; \
else \
img=$(docker inspect -f '{{{{.Config.Image}}}}' {CONTAINER} 2>/dev/null); \
if [ -z \"$img\" ] && [ -s {d}/last_good_tag ]; then img={repo}$(cut -d' ' -f1 {d}/last_good_tag); fi; \
if [ -z \"$img\" ]; then echo '{ERROR_KEY}no observer container and no last good version on the server: nothing was ever deployed here'; \
else docker run --rm -i --network none --pull never -v {cfg}:/app/config:ro --entrypoint python3 \"$img\" - {since_s} {interval_ms}; fi; \
fi; \
echo '{HISTORY_MARK}'; tail -n {HISTORY_LINES} {d}/history.jsonl 2>/dev/null; true"
    )
}

/// One hole, as the program reports it (milliseconds since the epoch, server clock).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RawHole {
    /// The last record before the hole.
    pub start_ms: i64,
    /// The first record after it (or "now" when `ongoing`).
    pub end_ms: i64,
    /// `end - start`, seconds (ms precision).
    pub seconds: f64,
    /// Records that should have been written: `length / interval - 1`, rounded.
    pub missed: u64,
    /// Nothing written since `start`: the hole lasts until now.
    pub ongoing: bool,
}

/// The program's report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct RawReport {
    /// The server's clock when the program ran.
    pub now_ms: i64,
    /// The window's start (`now - since_s`).
    pub start_ms: i64,
    pub since_s: u64,
    pub interval_ms: u64,
    /// `container` (its `OBSERVER_INTERVAL_MS`) or `config` (the environment's `interval_ms`).
    pub interval_source: String,
    /// The archive folder as the container sees it.
    pub folder: String,
    /// The `*.jsonl` files read.
    pub files: Vec<String>,
    /// Records (distinct timestamps) inside the window.
    pub records: u64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub holes: Vec<RawHole>,
}

/// The report and the history records (unparsable lines skipped), or why there is no report.
pub fn parse(stdout: &str) -> Result<(RawReport, Vec<HistoryRecord>)> {
    let (head, history) = stdout
        .split_once(HISTORY_MARK)
        .context("the gaps script ended before printing the history (see its error output)")?;
    let report = head.split_once(REPORT_MARK).map_or(head, |(_, r)| r);
    if let Some(why) = report
        .lines()
        .find_map(|l| l.trim().strip_prefix(ERROR_KEY))
    {
        bail!("{why}");
    }
    let line = report
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("the archive report program printed no report (see its error output)")?;
    let r: RawReport = serde_json::from_str(line.trim()).context("reading the archive report")?;
    let hist = history
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok((r, hist))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_report_and_history() {
        let out = "=== gaps report\n{\"now_ms\":10,\"start_ms\":1,\"since_s\":9,\"interval_ms\":200,\"interval_source\":\"container\",\"folder\":\"/app/config/observer\",\"files\":[\"observer.jsonl\"],\"records\":3,\"first_ms\":2,\"last_ms\":9,\"holes\":[{\"start_ms\":2,\"end_ms\":8,\"seconds\":0.006,\"missed\":0,\"ongoing\":false}]}\n=== gaps history\n{\"kind\":\"deploy\",\"version\":\"v1.0.0\",\"when\":\"2026-12-04T07:00:00Z\"}\nnot json\n";
        let (r, h) = parse(out).unwrap();
        assert_eq!((r.interval_ms, r.holes.len(), h.len()), (200, 1, 1));
        assert_eq!(h[0].version, "v1.0.0");
        let e =
            parse("=== gaps report\ngaps-error=nothing deployed\n=== gaps history\n").unwrap_err();
        assert_eq!(e.to_string(), "nothing deployed");
        assert!(parse("=== gaps report\n").is_err());
    }

    /// The program itself, run by the local python3 over a made-up archive: one hole of 2 s at
    /// 200 ms intervals (9 records missed), a second instance merged, a torn tail ignored, the
    /// hole before the window left out.
    #[test]
    fn the_program_finds_holes_in_the_merged_series() {
        let dir = std::env::temp_dir().join(format!(
            "xtask-gaps-{}",
            crate::core::util::random_hex(4).unwrap()
        ));
        let obs = dir.join("observer");
        std::fs::create_dir_all(&obs).unwrap();
        let now = crate::core::util::epoch() as i64 * 1000;
        let ts = |ms: i64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            humantime::format_rfc3339_millis(t).to_string()
        };
        let mut text = String::new();
        let mut push = |ms: i64, inst: &str| {
            text.push_str(&format!(
                "{{\"ts\":\"{}\",\"seq\":1,\"instance\":\"{inst}\"}}\n",
                ts(ms)
            ))
        };
        // 60 s ago .. now every 200 ms, with a 5 s hole 50 s ago (before the 30 s window: left
        // out) and a 2 s hole 20 s ago; the last second written by a second instance.
        let mut t = now - 60_000;
        while t <= now {
            push(t, if t < now - 1_000 { "a" } else { "b" });
            t += if t == now - 50_000 {
                5_000
            } else if t == now - 20_000 {
                2_000
            } else {
                200
            };
        }
        text.push_str("{\"ts\":\"torn");
        std::fs::write(obs.join("observer.jsonl"), text).unwrap();
        // Odd neighbours: a folder named *.jsonl is skipped, an empty file and one of junk
        // (not UTF-8, not JSON, JSON without a time) add nothing.
        std::fs::create_dir_all(obs.join("folder.jsonl")).unwrap();
        std::fs::write(obs.join("empty.jsonl"), "").unwrap();
        std::fs::write(
            obs.join("junk.jsonl"),
            b"garbage\n\xff\xfe\n{\"ts\":12}\n[1,2]\nnull\n{\"ts\":\"no\"}\n",
        )
        .unwrap();
        let out = duct::cmd!("python3", "-", "30", "200")
            .env("OBSERVER_CONFIG_DIR", &dir)
            .env_remove("OBSERVER_INTERVAL_MS")
            .stdin_bytes(PROGRAM)
            .read()
            .unwrap();
        let r: RawReport = serde_json::from_str(&out).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(r.interval_source, "config");
        assert_eq!(r.files, ["empty.jsonl", "junk.jsonl", "observer.jsonl"]);
        let holes: Vec<_> = r.holes.iter().filter(|h| !h.ongoing).collect();
        assert_eq!(holes.len(), 1, "{:?}", r.holes);
        assert_eq!((holes[0].seconds, holes[0].missed), (2.0, 9));
        assert_eq!(holes[0].end_ms - holes[0].start_ms, 2_000);
    }
}
