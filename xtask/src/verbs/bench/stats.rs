//! Medians, ranges and ratios of the A/B pairs, and the archive's largest hole.

use crate::core::util::rfc3339_ms;
use serde_json::{json, Value};

/// median, min, max of a sample.
pub fn stats(v: &[f64]) -> Value {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let med = if s.is_empty() {
        f64::NAN
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    json!({"median": r3(med), "min": r3(*s.first().unwrap_or(&f64::NAN)), "max": r3(*s.last().unwrap_or(&f64::NAN)), "n": s.len()})
}

pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A row: metric, unit, baseline sample, xtask sample; the ratio is xtask / baseline.
pub fn row(metric: &str, unit: &str, baseline: &[f64], xtask: &[f64]) -> Value {
    let b = stats(baseline);
    let x = stats(xtask);
    let ratio = x["median"]
        .as_f64()
        .zip(b["median"].as_f64())
        .map(|(x, b)| if b == 0.0 { f64::NAN } else { r3(x / b) });
    json!({"metric": metric, "unit": unit, "baseline": b, "xtask": x, "ratio": ratio})
}

/// Unix milliseconds from the observer's `YYYY-MM-DDTHH:MM:SS.mmmZ`.
/// The largest gap (seconds) between consecutive records of the archive from line `from` on.
pub fn largest_gap(text: &str, from: usize) -> f64 {
    let ts: Vec<i64> = text
        .lines()
        .skip(from.saturating_sub(1))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["ts"].as_str().and_then(rfc3339_ms))
        .collect();
    ts.windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1000.0)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_gaps() {
        assert_eq!(
            rfc3339_ms("2026-11-28T20:34:56.000Z"),
            Some(1_795_898_096_000)
        );
        let text = "{\"ts\":\"2026-11-28T20:34:56.000Z\"}\n{\"ts\":\"2026-11-28T20:34:56.200Z\"}\n{\"ts\":\"2026-11-28T20:34:59.700Z\"}\n";
        assert_eq!(largest_gap(text, 0), 3.5);
        assert_eq!(largest_gap(text, 1), 3.5);
        assert_eq!(largest_gap(text, 2), 3.5);
    }

    #[test]
    fn stats_and_ratio() {
        let r = row("m", "s", &[2.0, 4.0, 3.0], &[1.0, 1.5, 2.0]);
        assert_eq!(r["baseline"]["median"], 3.0);
        assert_eq!(r["xtask"]["median"], 1.5);
        assert_eq!(r["ratio"], 0.5);
    }
}
