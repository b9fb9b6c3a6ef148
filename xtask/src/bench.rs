//! `cargo xtask bench <NAME|all>`: what users of this tool care about, measured on the sandbox
//! side by side against a baseline in the same run (A B A B ...), so every figure is a ratio that
//! holds on a noisy machine. Benchmarks are commands, never assertions in tests.

use crate::compose::{self, Compose};
use crate::config::{self, Env};
use crate::deploy;
use crate::shell::{fail, run_capture, sh_quote, Shell};
use crate::ssh::Session;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// median, min, max of a sample.
fn stats(v: &[f64]) -> Value {
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

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A row: metric, unit, baseline sample, xtask sample; the ratio is xtask / baseline.
fn row(metric: &str, unit: &str, baseline: &[f64], xtask: &[f64]) -> Value {
    let b = stats(baseline);
    let x = stats(xtask);
    let ratio = x["median"]
        .as_f64()
        .zip(b["median"].as_f64())
        .map(|(x, b)| if b == 0.0 { f64::NAN } else { r3(x / b) });
    json!({"metric": metric, "unit": unit, "baseline": b, "xtask": x, "ratio": ratio})
}

/// Unix milliseconds from the observer's `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn ts_ms(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 23 {
        return None;
    }
    let n = |a: usize, z: usize| ts.get(a..z)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (hh, mm, ss, ms) = (n(11, 13)?, n(14, 16)?, n(17, 19)?, n(20, 23)?);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

/// The largest gap (seconds) between consecutive records of the archive from line `from` on.
pub fn largest_gap(text: &str, from: usize) -> f64 {
    let ts: Vec<i64> = text
        .lines()
        .skip(from.saturating_sub(1))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["ts"].as_str().and_then(ts_ms))
        .collect();
    ts.windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1000.0)
        .fold(0.0, f64::max)
}

struct Ctx<'a> {
    sh: &'a Shell,
    env: Env,
    exe: PathBuf,
    smoke: bool,
    runs: usize,
}

impl Ctx<'_> {
    fn xtask(&self, args: &[&str]) -> Result<(bool, String, f64)> {
        let t = Instant::now();
        let out = run_capture(
            self.sh.cmd(&self.exe.display().to_string()).args(args),
            None,
        )?;
        Ok((out.ok, out.stdout, t.elapsed().as_secs_f64()))
    }

    fn archive(&self) -> String {
        std::fs::read_to_string(
            PathBuf::from(&self.env.remote_dir).join("config/observer/observer.jsonl"),
        )
        .unwrap_or_default()
    }

    fn accepted(&self) -> usize {
        let log = crate::sandbox::Paths::new(self.sh).sshd_log();
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    fn deploy(&self, tag: &str) -> Result<f64> {
        let (ok, _, secs) =
            self.xtask(&["deploy", "--env", "sandbox", "--tag", tag, "--no-snapshot"])?;
        if !ok {
            bail!("bench: `deploy --tag {tag}` failed");
        }
        Ok(secs)
    }

    /// Build and push the bench images A, B (healthy) and BROKEN (never healthy).
    fn images(&self) -> Result<()> {
        let creds = crate::registry::credentials(self.sh, &self.env)
            .context("sandbox registry credentials")?;
        let sh = self.sh;
        let login = run_capture(
            sh.cmd("docker").args([
                "login",
                "--username",
                &creds.user,
                "--password-stdin",
                &self.env.registry,
            ]),
            Some(format!("{}\n", creds.token).as_bytes()),
        )?;
        if !login.ok {
            bail!("docker login to the sandbox registry failed");
        }
        for (tag, ver) in [(A, A), (B, B)] {
            let image = self.env.image(tag);
            let b = format!("BASE_IMAGE={}", self.env.cfg.base_image);
            let v = format!("VERSION={ver}");
            sh.read(&[
                "docker",
                "build",
                "-q",
                "--build-arg",
                &b,
                "--build-arg",
                &v,
                "-t",
                &image,
                "-f",
                "app/Dockerfile",
                "app",
            ])?;
            sh.read(&["docker", "push", "-q", &image])?;
        }
        let broken = self.env.image(BROKEN);
        // Its archive directory cannot be created: /health answers 503 and the container turns
        // unhealthy, as a real bad release would.
        let dockerfile = format!(
            "FROM {}\nENV OBSERVER_CONFIG_DIR=/proc/observer-broken\n",
            self.env.image(A)
        );
        let out = run_capture(
            sh.cmd("docker").args(["build", "-q", "-t", &broken, "-"]),
            Some(dockerfile.as_bytes()),
        )?;
        if !out.ok {
            bail!("building the broken bench image failed: {}", out.stderr);
        }
        sh.read(&["docker", "push", "-q", &broken])?;
        Ok(())
    }

    /// The baseline a person types: one ssh command with compose down, pull, up.
    fn naive(&self, tag: &str, wait_healthy: bool, minimal: bool) -> Result<f64> {
        let c = compose::detect_local(self.sh).unwrap_or(Compose::V1);
        let r = sh_quote(&self.env.remote_dir);
        let f = "-f docker-compose.server.yml";
        let image = sh_quote(&self.env.image(tag));
        let set_tag = format!("sed -i 's/^IMAGE_TAG=.*/IMAGE_TAG={tag}/' .env");
        let script = if minimal {
            format!(
                "cd {r} && {set_tag} && docker pull -q {image} >/dev/null && {c} {f} up -d 2>&1",
                c = c.shell()
            )
        } else {
            format!("cd {r} && {set_tag} && {c} {f} down 2>&1 && {c} {f} pull 2>&1 && {c} {f} up -d 2>&1", c = c.shell())
        };
        let script = if wait_healthy {
            format!("{script} && until [ \"$(docker inspect -f '{{{{.State.Health.Status}}}}' {})\" = healthy ]; do sleep 0.2; done", deploy::CONTAINER)
        } else {
            script
        };
        let t = Instant::now();
        let mut s = Session::new(&self.env, &self.env.servers[0])?;
        let out = s.run(&script, None)?;
        if !out.ok {
            bail!("baseline sequence failed: {}", out.stdout);
        }
        Ok(t.elapsed().as_secs_f64())
    }

    fn settle(&self) {
        std::thread::sleep(Duration::from_millis(if self.smoke { 800 } else { 2000 }));
    }
}

const A: &str = "v0.0.1-bench.a";
const B: &str = "v0.0.1-bench.b";
const BROKEN: &str = "v0.0.1-bench.broken";

fn gap(c: &Ctx) -> Result<Value> {
    let (mut base, mut ours) = (Vec::new(), Vec::new());
    c.deploy(A)?;
    let mut next = B;
    for _ in 0..c.runs {
        for xt in [false, true] {
            c.settle();
            let from = c.archive().lines().count();
            if xt {
                c.deploy(next)?;
            } else {
                c.naive(next, true, false)?;
            }
            c.settle();
            let g = largest_gap(&c.archive(), from);
            if xt { &mut ours } else { &mut base }.push(g);
            next = if next == A { B } else { A };
        }
    }
    Ok(
        json!({"rows": [row("largest gap between records across a deploy", "s", &base, &ours)],
              "baseline": "ssh: compose down && compose pull && compose up -d",
              "interval_ms": c.env.cfg.interval_ms}),
    )
}

fn overhead(c: &Ctx) -> Result<Value> {
    let (mut base, mut ours, mut cb, mut cx) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    c.deploy(A)?;
    let mut next = B;
    for _ in 0..c.runs {
        for xt in [false, true] {
            let before = c.accepted();
            let secs = if xt {
                c.deploy(next)?
            } else {
                c.naive(next, true, true)?
            };
            let conns = (c.accepted() - before) as f64;
            if xt {
                ours.push(secs);
                cx.push(conns);
            } else {
                base.push(secs);
                cb.push(conns);
            }
            next = if next == A { B } else { A };
        }
    }
    Ok(
        json!({"rows": [row("deploy wall time", "s", &base, &ours), row("SSH connections per deploy", "count", &cb, &cx)],
              "baseline": "one ssh: docker pull && compose up -d && wait for healthy"}),
    )
}

fn rollback(c: &Ctx) -> Result<Value> {
    let (mut verdict, mut recover) = (Vec::new(), Vec::new());
    for _ in 0..c.runs {
        c.deploy(A)?;
        let (ok, out, total) = c.xtask(&[
            "deploy",
            "--env",
            "sandbox",
            "--tag",
            BROKEN,
            "--no-snapshot",
            "--json",
        ])?;
        if ok {
            bail!("the broken bench image passed its health gate");
        }
        let v: Value = serde_json::from_str(&out).context("deploy --json")?;
        if v["exit_code"] != 3 {
            bail!("expected exit 3 (rolled back), got {}", v["exit_code"]);
        }
        let mut until = 0.0;
        for s in v["steps"].as_array().into_iter().flatten() {
            until += s["seconds"].as_f64().unwrap_or(0.0);
            if s["step"]
                .as_str()
                .is_some_and(|t| t.starts_with("Health gate"))
            {
                break;
            }
        }
        verdict.push(until);
        recover.push((total - until).max(0.0));
    }
    Ok(
        json!({"rows": [row("deploy start → failure verdict", "s", &[], &verdict), row("verdict → last good healthy again", "s", &[], &recover)],
              "baseline": "none (absolute times)"}),
    )
}

fn peak_rss(cmd: &mut Command) -> Result<(f64, f64)> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(f64::NAN);
    Ok((secs, kib / 1024.0))
}

fn snapshot(c: &Ctx) -> Result<Value> {
    let sizes: &[(u64, &str)] = if c.smoke {
        &[(1 << 20, "1 MiB")]
    } else {
        &[(100 << 20, "100 MiB"), (1 << 30, "1 GiB")]
    };
    let data = PathBuf::from(&c.env.remote_dir).join("data");
    std::fs::create_dir_all(&data)?;
    let file = data.join("bench.jsonl");
    let mut rows = Vec::new();
    for (size, label) in sizes {
        let gen = format!(
            "import sys\nout = open(sys.argv[1], 'w')\nn = 0\ni = 0\nwhile n < {size}:\n    line = '{{\"ts\":\"2026-11-28T21:%02d:%02d.%03dZ\",\"seq\":%d,\"instance\":\"5f0c2b9e41d7a3c8\",\"version\":\"v1.2.3\"}}\\n' % (i // 60000 % 60, i // 1000 % 60, i % 1000, i)\n    out.write(line)\n    n += len(line)\n    i += 1\n"
        );
        let ok =
            c.sh.cmd("python3")
                .arg("-c")
                .arg(&gen)
                .arg(&file)
                .status()?
                .success();
        if !ok {
            bail!("generating {label} of JSON lines failed");
        }
        let mib = *size as f64 / (1u64 << 20) as f64;
        let (mut bt, mut xt, mut bm, mut xm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..c.runs {
            let pipeline = format!(
                "tar -C {} -cf - config data logs .deploy | zstd -T0 -3 -q | sha256sum >/dev/null",
                sh_quote(&c.env.remote_dir)
            );
            let (s, m) = peak_rss(Command::new("/usr/bin/time").args([
                "-f",
                "maxrss_kib=%M",
                "sh",
                "-c",
                &pipeline,
            ]))?;
            bt.push(mib / s);
            bm.push(m);
            let (s, m) = peak_rss(
                Command::new("/usr/bin/time")
                    .args(["-f", "maxrss_kib=%M"])
                    .arg(&c.exe)
                    .args(["snapshot", "create", "--env", "sandbox"]),
            )?;
            xt.push(mib / s);
            xm.push(m);
        }
        rows.push(row(&format!("{label}: throughput"), "MiB/s", &bt, &xt));
        rows.push(row(&format!("{label}: peak RSS"), "MiB", &bm, &xm));
    }
    let _ = std::fs::remove_file(&file);
    // Leave the backups as they were: drop what the benchmark made.
    let _ = c.xtask(&[
        "snapshot",
        "prune",
        "--env",
        "sandbox",
        "--keep",
        &c.env.cfg.keep_snapshots.to_string(),
    ]);
    Ok(
        json!({"rows": rows, "baseline": "tar -cf - DIR | zstd -T0 -3 | sha256sum (local, no ssh)",
              "note": "the xtask also streams twice through ssh (server → xtask → server) and hashes every entry"}),
    )
}

fn build(c: &Ctx) -> Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let dir = c.sh.path("target/bench/build");
    let empty = dir.join("empty");
    if !empty.join("Cargo.toml").is_file() {
        std::fs::create_dir_all(empty.join("src"))?;
        std::fs::write(
            empty.join("Cargo.toml"),
            "[package]\nname = \"empty\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )?;
        std::fs::write(empty.join("src/main.rs"), "fn main() {}\n")?;
    }
    let cold = |manifest: PathBuf, pkg: Option<&str>| -> Result<(f64, f64)> {
        let target = dir.join("cold-target");
        let _ = std::fs::remove_dir_all(&target);
        let mut cmd = c.sh.cmd(&cargo);
        cmd.args(["build", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target);
        if let Some(p) = pkg {
            cmd.args(["-p", p]);
        }
        let t = Instant::now();
        let out = run_capture(&mut cmd, None)?;
        let secs = t.elapsed().as_secs_f64();
        if !out.ok {
            bail!("cargo build failed: {}", out.stderr);
        }
        let crates = out
            .stderr
            .lines()
            .filter(|l| l.trim_start().starts_with("Compiling "))
            .count() as f64;
        let _ = std::fs::remove_dir_all(&target);
        Ok((secs, crates))
    };
    let (mut bt, mut xt, mut bc, mut xc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..c.runs {
        let (s, n) = cold(empty.join("Cargo.toml"), None)?;
        bt.push(s);
        bc.push(n);
        let (s, n) = cold(c.sh.path("Cargo.toml"), Some("xtask"))?;
        xt.push(s);
        xc.push(n);
    }
    let mut warm = Vec::new();
    for _ in 0..(c.runs * 3) {
        let t = Instant::now();
        let ok = run_capture(
            c.sh.cmd(&cargo)
                .args(["run", "-q", "-p", "xtask", "--", "--help"]),
            None,
        )?
        .ok;
        if !ok {
            bail!("cargo xtask --help failed");
        }
        warm.push(t.elapsed().as_secs_f64());
    }
    Ok(
        json!({"rows": [row("cold build wall time", "s", &bt, &xt), row("crates compiled", "count", &bc, &xc), row("warm `cargo xtask --help`", "s", &[], &warm)],
              "baseline": "cargo build of an empty binary crate (the floor)"}),
    )
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
    json!({"cores": cores, "memory_gib": r3(kib as f64 / 1048576.0), "date": crate::shell::now_rfc3339()})
}

impl Bench {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let names: Vec<&str> = if self.name == "all" {
            NAMES.to_vec()
        } else {
            vec![self.name.as_str()]
        };
        if let Some(bad) = names.iter().find(|n| !NAMES.contains(n)) {
            return Err(crate::shell::usage(format!(
                "unknown benchmark `{bad}` (known: {}, all)",
                NAMES.join(", ")
            )));
        }
        let file = config::load(sh)?;
        let env = config::environment(sh, &file, "sandbox")?;
        let c = Ctx {
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
                "gap" => gap(&c),
                "overhead" => overhead(&c),
                "rollback" => rollback(&c),
                "snapshot" => snapshot(&c),
                _ => build(&c),
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
pub fn write_docs(sh: &Shell) -> Result<()> {
    let mut md = String::from("# Benchmarks\n\nMeasured on the sandbox (`cargo xtask sandbox up`) by `cargo xtask bench all --write-docs`.\nEach figure is the median (min–max) of alternating runs, baseline and xtask side by side in the\nsame run; the ratio is xtask / baseline. Regenerate with `cargo xtask bench all --write-docs`.\n");
    for name in NAMES {
        let Ok(text) = std::fs::read_to_string(sh.path(format!("target/bench/{name}.json"))) else {
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
    std::fs::create_dir_all(sh.path("docs"))?;
    std::fs::write(sh.path("docs/benchmarks.md"), md)?;
    eprintln!("wrote docs/benchmarks.md");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_gaps() {
        assert_eq!(ts_ms("1970-01-01T00:00:01.500Z"), Some(1500));
        assert_eq!(ts_ms("2026-11-28T20:34:56.000Z"), Some(1_795_898_096_000));
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
