//! `cargo xtask bench <NAME|all>`: what users of this tool care about, measured on the sandbox
//! side by side against a baseline in the same run (A B A B ...), so every figure is a ratio that
//! holds on a noisy machine. Benchmarks are commands, never assertions in tests.

mod cases;
mod stats;
mod swarm;

use crate::config;
use crate::core::exit::{fail, usage};
use crate::core::util::now_rfc3339;
use crate::ctx::Ctx;
use crate::sandbox_state;
use anyhow::Result;
use cases::Bed;
use clap::Args;
use serde_json::{json, Value};
use stats::r3;
use std::time::Instant;

const NAMES: &[&str] = &["gap", "overhead", "rollback", "snapshot", "build"];

#[derive(Args)]
pub struct Bench {
    /// gap, overhead, rollback, snapshot, build, or all.
    name: String,
    /// Pairs of runs (baseline, xtask) per figure.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Tiny sizes and one pair: what the test suite runs so that benchmarks cannot rot.
    #[arg(long)]
    smoke: bool,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Regenerate docs/benchmarks.md from target/bench/*.json afterwards.
    #[arg(long)]
    write_docs: bool,
}

fn machine() -> Value {
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: u64 = mem
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    json!({"cores": cores, "memory_gib": r3(kib as f64 / 1048576.0), "date": now_rfc3339()})
}

impl Bench {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let names: Vec<&str> = if self.name == "all" {
            NAMES.to_vec()
        } else {
            vec![self.name.as_str()]
        };
        if let Some(bad) = names.iter().find(|n| !NAMES.contains(n)) {
            return Err(usage(format!(
                "unknown benchmark `{bad}` (known: {}, all)",
                NAMES.join(", ")
            )));
        }
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, "sandbox")?;
        let c = Bed {
            sh,
            env,
            exe: std::env::current_exe()?,
            smoke: self.smoke,
            runs: if self.smoke { 1 } else { self.runs.max(1) },
        };
        if names
            .iter()
            .any(|n| ["gap", "overhead", "rollback"].contains(n))
        {
            eprintln!("==> bench: building and pushing the bench images");
            c.images()?;
        }
        let out_dir = sh.path("target/bench");
        std::fs::create_dir_all(&out_dir)?;
        let mut all = Vec::new();
        for name in names {
            eprintln!(
                "==> bench {name} ({} pair(s){})",
                c.runs,
                if c.smoke { ", smoke" } else { "" }
            );
            let t = Instant::now();
            let mut v = match name {
                "gap" => cases::gap(&c).and_then(|mut v| {
                    // issue 14: the same holes on the swarm sandbox, when it is up.
                    if sandbox_state::load(sh).is_some_and(|s| s.swarm.is_some()) {
                        let handoff: Vec<f64> = serde_json::from_value(v["handoff_holes"].take())?;
                        let more = swarm::gap_rows(&c, &handoff)?;
                        if let Some(rows) = v["rows"].as_array_mut() {
                            rows.extend(more);
                        }
                    } else {
                        eprintln!("    (the swarm sandbox is not up: no Swarm rows; `cargo xtask sandbox up --swarm`)");
                    }
                    Ok(v)
                }),
                "overhead" => cases::overhead(&c),
                "rollback" => cases::rollback(&c),
                "snapshot" => cases::snapshot(&c),
                _ => cases::build(&c),
            }
            .map_err(|e| fail(format!("bench {name}: {e:#}")))?;
            v["name"] = name.into();
            v["machine"] = machine();
            v["smoke"] = c.smoke.into();
            v["runs"] = c.runs.into();
            v["command"] = format!("cargo xtask bench {name} --runs {}", c.runs).into();
            v["elapsed_s"] = r3(t.elapsed().as_secs_f64()).into();
            std::fs::write(
                out_dir.join(format!("{name}.json")),
                serde_json::to_string_pretty(&v)?,
            )?;
            print_table(&v);
            all.push(v);
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        if self.write_docs {
            write_docs(sh)?;
        }
        Ok(())
    }
}

fn fmt_stats(s: &Value) -> String {
    if s["n"].as_u64() == Some(0) {
        return "—".into();
    }
    format!("{} ({}–{})", s["median"], s["min"], s["max"])
}

fn fmt_ratio(row: &Value) -> String {
    row["ratio"]
        .as_f64()
        .map(|x| format!("{x:.2}"))
        .unwrap_or_else(|| "—".into())
}

fn print_table(v: &Value) {
    eprintln!(
        "{:<46} {:>6} {:>24} {:>24} {:>7}",
        "metric", "unit", "baseline median (min–max)", "xtask median (min–max)", "ratio"
    );
    for r in v["rows"].as_array().into_iter().flatten() {
        eprintln!(
            "{:<46} {:>6} {:>24} {:>24} {:>7}",
            r["metric"].as_str().unwrap_or(""),
            r["unit"].as_str().unwrap_or(""),
            fmt_stats(&r["baseline"]),
            fmt_stats(&r["xtask"]),
            fmt_ratio(r)
        );
    }
}

/// docs/benchmarks.md from the JSON results in target/bench.
pub fn write_docs(sh: &Ctx) -> Result<()> {
    let mut md = String::from("# Benchmarks\n\nMeasured on the sandbox (`cargo xtask sandbox up`) by `cargo xtask bench all --write-docs`.\nEach figure is the median (min–max) of alternating runs, baseline and xtask side by side in the\nsame run; the ratio is xtask / baseline. Regenerate with `cargo xtask bench all --write-docs`.\n");
    let old = std::fs::read_to_string(sh.path("docs/benchmarks.md")).unwrap_or_default();
    let old_section = |name: &str| {
        old.split("\n## ")
            .skip(1)
            .find(|s| s.lines().next() == Some(name))
            .map(|s| format!("\n## {}\n", s.trim_end()))
    };
    for name in NAMES {
        let Ok(text) = std::fs::read_to_string(sh.path(format!("target/bench/{name}.json"))) else {
            // Not measured this time: the figures on record stay.
            if let Some(section) = old_section(name) {
                md.push_str(&section);
            }
            continue;
        };
        let v: Value = serde_json::from_str(&text)?;
        md.push_str(&format!(
            "\n## {name}\n\nBaseline: {}. Machine: {} cores, {} GiB; {}; {} run(s){}. Reproduce: `{}`.\n\n| metric | unit | baseline | xtask | ratio |\n|---|---|---|---|---|\n",
            v["baseline"].as_str().unwrap_or(""),
            v["machine"]["cores"],
            v["machine"]["memory_gib"],
            v["machine"]["date"].as_str().unwrap_or(""),
            v["runs"],
            if v["smoke"] == true { " (smoke sizes)" } else { "" },
            v["command"].as_str().unwrap_or("")
        ));
        for r in v["rows"].as_array().into_iter().flatten() {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r["metric"].as_str().unwrap_or(""),
                r["unit"].as_str().unwrap_or(""),
                fmt_stats(&r["baseline"]),
                fmt_stats(&r["xtask"]),
                fmt_ratio(r)
            ));
        }
        if let Some(n) = v["note"].as_str() {
            md.push_str(&format!("\n{n}.\n"));
        }
    }
    // Sections measured by other tools (the observer's own `python3 -m observer.bench`) are kept.
    for section in old.split("\n## ").skip(1) {
        let name = section.lines().next().unwrap_or("");
        if !NAMES.contains(&name) {
            md.push_str(&format!("\n## {}", section.trim_end()));
            md.push('\n');
        }
    }
    std::fs::create_dir_all(sh.path("docs"))?;
    std::fs::write(sh.path("docs/benchmarks.md"), md)?;
    eprintln!("wrote docs/benchmarks.md");
    Ok(())
}
