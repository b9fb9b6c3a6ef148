//! The benchmarks themselves: each runs its baseline and the xtask alternately on the sandbox.

use super::stats::{largest_gap, row};
use crate::compose::{self, Compose};
use crate::config::Env;
use crate::core::contract::CONTAINER;
use crate::core::util::sh_quote;
use crate::ctx::Ctx;
use crate::sandbox_state;
use crate::transport::Session;
use crate::verbs::sandbox::http_status;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xshell::cmd;

/// The bench's test bed: the sandbox environment and this binary.
pub struct Bed<'a> {
    pub sh: &'a Ctx,
    pub env: Env,
    pub exe: PathBuf,
    pub smoke: bool,
    pub runs: usize,
}

impl Bed<'_> {
    /// Runs this binary with `args`: (success, stdout, seconds).
    pub fn run(&self, args: &[&str]) -> Result<(bool, String, f64)> {
        self.xtask(args)
    }

    fn xtask(&self, args: &[&str]) -> Result<(bool, String, f64)> {
        let t = Instant::now();
        let exe = &self.exe;
        let out = self.sh.capture(cmd!(self.sh, "{exe} {args...}"), None)?;
        Ok((out.ok, out.stdout, t.elapsed().as_secs_f64()))
    }

    pub fn archive(&self) -> String {
        std::fs::read_to_string(
            PathBuf::from(&self.env.remote_dir).join("config/observer/observer.jsonl"),
        )
        .unwrap_or_default()
    }

    fn accepted(&self) -> usize {
        let log = sandbox_state::Paths::new(self.sh).sshd_log();
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    fn deploy(&self, tag: &str) -> Result<f64> {
        self.deploy_with(tag, "handoff")
    }

    fn deploy_with(&self, tag: &str, strategy: &str) -> Result<f64> {
        let (ok, _, secs) = self.xtask(&[
            "deploy",
            "--env",
            "sandbox",
            "--tag",
            tag,
            "--no-snapshot",
            "--strategy",
            strategy,
            BENCH_IMAGES[0],
            BENCH_IMAGES[1],
        ])?;
        if !ok {
            bail!("bench: `deploy --tag {tag} --strategy {strategy}` failed");
        }
        Ok(secs)
    }

    /// Polls `/health` on the service's host port every 50 ms while `f` runs: the longest time
    /// (seconds) it did not answer 200.
    fn port_outage<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let port = self.env.cfg.host_port;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let poller = std::thread::spawn(move || {
            let (mut worst, mut down_since): (f64, Option<Instant>) = (0.0, None);
            while !flag.load(Ordering::Relaxed) {
                let ok = http_status(port, "/health") == Some(200);
                match (ok, down_since) {
                    (false, None) => down_since = Some(Instant::now()),
                    (true, Some(t)) => {
                        worst = worst.max(t.elapsed().as_secs_f64());
                        down_since = None;
                    }
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(t) = down_since {
                worst = worst.max(t.elapsed().as_secs_f64());
            }
            worst
        });
        let r = f();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let worst = poller.join().unwrap_or(f64::NAN);
        Ok((r?, worst))
    }

    /// Build and push the bench images A, B (healthy) and BROKEN (never healthy).
    pub fn images(&self) -> Result<()> {
        let creds = crate::registry::credentials(self.sh, &self.env)
            .context("sandbox registry credentials")?;
        let sh = self.sh;
        let (user, registry) = (&creds.user, &self.env.registry);
        let login = sh.capture(
            cmd!(
                sh,
                "docker login --username {user} --password-stdin {registry}"
            ),
            Some(format!("{}\n", creds.token).as_bytes()),
        )?;
        if !login.ok {
            bail!("docker login to the sandbox registry failed");
        }
        for (tag, ver) in [(A, A), (B, B)] {
            let image = self.env.image(tag);
            let b = format!("BASE_IMAGE={}", self.env.cfg.base_image);
            let v = format!("VERSION={ver}");
            sh.read(cmd!(
                sh,
                "docker build -q --build-arg {b} --build-arg {v} -t {image} -f app/Dockerfile app"
            ))?;
            sh.read(cmd!(sh, "docker push -q {image}"))?;
        }
        let broken = self.env.image(BROKEN);
        // Its archive directory cannot be created: /health answers 503 and the container turns
        // unhealthy, as a real bad release would.
        let dockerfile = format!(
            "FROM {}\nENV OBSERVER_CONFIG_DIR=/proc/observer-broken\n",
            self.env.image(A)
        );
        let out = sh.capture(
            cmd!(sh, "docker build -q -t {broken} -"),
            Some(dockerfile.as_bytes()),
        )?;
        if !out.ok {
            bail!("building the broken bench image failed: {}", out.stderr);
        }
        sh.read(cmd!(sh, "docker push -q {broken}"))?;
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
            format!("{script} && until [ \"$(docker inspect -f '{{{{.State.Health.Status}}}}' {})\" = healthy ]; do sleep 0.2; done", CONTAINER)
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

    pub fn settle(&self) {
        std::thread::sleep(Duration::from_millis(if self.smoke { 800 } else { 2000 }));
    }
}

/// The bench images are pushed without a release (no annotated tag records their digest), and
/// A and B take turns, whatever version ran before: a bench deploy allows both.
pub const BENCH_IMAGES: [&str; 2] = ["--allow-unverified", "--allow-downgrade"];
pub const A: &str = "v0.0.1-bench.a";
pub const B: &str = "v0.0.1-bench.b";
pub const BROKEN: &str = "v0.0.1-bench.broken";

pub fn gap(c: &Bed) -> Result<Value> {
    let (mut naive, mut recreate, mut handoff) = (Vec::new(), Vec::new(), Vec::new());
    let (mut port_naive, mut port_recreate, mut port_handoff) =
        (Vec::new(), Vec::new(), Vec::new());
    c.deploy(A)?;
    let mut next = B;
    for _ in 0..c.runs {
        for how in ["naive", "recreate", "handoff"] {
            c.settle();
            let from = c.archive().lines().count();
            let ((), outage) = c.port_outage(|| match how {
                "naive" => c.naive(next, true, false).map(|_| ()),
                s => c.deploy_with(next, s).map(|_| ()),
            })?;
            c.settle();
            let g = largest_gap(&c.archive(), from);
            match how {
                "naive" => (naive.push(g), port_naive.push(outage)),
                "recreate" => (recreate.push(g), port_recreate.push(outage)),
                _ => (handoff.push(g), port_handoff.push(outage)),
            };
            next = if next == A { B } else { A };
        }
    }
    let rows = vec![
        row(
            "largest archive hole across a good deploy: recreate",
            "s",
            &naive,
            &recreate,
        ),
        row(
            "largest archive hole across a good deploy: handoff",
            "s",
            &naive,
            &handoff,
        ),
        row(
            "/health on the host port unavailable: recreate",
            "s",
            &port_naive,
            &port_recreate,
        ),
        row(
            "/health on the host port unavailable: handoff",
            "s",
            &port_naive,
            &port_handoff,
        ),
    ];
    Ok(json!({"rows": rows, "handoff_holes": handoff,
    "baseline": "ssh: compose down && compose pull && compose up -d",
    "interval_ms": c.env.cfg.interval_ms}))
}

pub fn overhead(c: &Bed) -> Result<Value> {
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

pub fn rollback(c: &Bed) -> Result<Value> {
    let (mut verdict, mut recover) = (Vec::new(), Vec::new());
    let (mut hole_recreate, mut hole_handoff) = (Vec::new(), Vec::new());
    let broken = [
        "deploy",
        "--env",
        "sandbox",
        "--tag",
        BROKEN,
        "--no-snapshot",
    ];
    for _ in 0..c.runs {
        c.deploy(A)?;
        c.settle();
        let from = c.archive().lines().count();
        let (ok, _, _) =
            c.xtask(&[&broken[..], &["--strategy", "recreate"], &BENCH_IMAGES[..]].concat())?;
        if ok {
            bail!("the broken bench image passed its health gate");
        }
        c.settle();
        hole_recreate.push(largest_gap(&c.archive(), from));
        c.deploy(A)?;
        c.settle();
        let from = c.archive().lines().count();
        let (ok, out, total) = c.xtask(&[&broken[..], &["--json"], &BENCH_IMAGES[..]].concat())?;
        c.settle();
        hole_handoff.push(largest_gap(&c.archive(), from));
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
        json!({"rows": [row("deploy start → failure verdict", "s", &[], &verdict), row("failure verdict → deploy finished (the last good version never stopped)", "s", &[], &recover),
                        row("archive hole across a broken deploy (baseline: recreate; xtask: handoff)", "s", &hole_recreate, &hole_handoff)],
              "baseline": "none (absolute times); for the hole, the same broken release deployed with --strategy recreate"}),
    )
}

/// Runs `argv` under GNU time: (seconds, peak RSS in MiB).
fn peak_rss(argv: &[String]) -> Result<(f64, f64)> {
    peak_rss_err(argv).map(|(s, m, _)| (s, m))
}

/// [`peak_rss`], and what the command printed on stderr.
fn peak_rss_err(argv: &[String]) -> Result<(f64, f64, String)> {
    let t = Instant::now();
    let out = duct::cmd(
        "/usr/bin/time",
        ["-f", "maxrss_kib=%M"]
            .iter()
            .map(|s| s.to_string())
            .chain(argv.iter().cloned()),
    )
    .stdin_null()
    .stdout_null()
    .stderr_capture()
    .unchecked()
    .run()?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            argv.first().map(|s| s.as_str()).unwrap_or(""),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(f64::NAN);
    Ok((secs, kib / 1024.0, err.into_owned()))
}

/// The seconds of the step `==> title` as the executor printed them (`    ok (1.2s)`).
fn step_secs(stderr: &str, title: &str) -> f64 {
    let header = format!("==> {title}");
    let Some(at) = stderr.find(&header) else {
        return f64::NAN;
    };
    stderr[at..]
        .lines()
        .filter_map(|l| l.strip_prefix("    ok ("))
        .next()
        .and_then(|l| l.strip_suffix("s)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Bytes over SSH (the connection's own totals, both directions, MiB), seconds and peak RSS
/// (MiB) of one `snapshot create` with `extra` arguments.
fn snapshot_run(c: &Bed, extra: &[&str]) -> Result<(f64, f64, f64)> {
    snapshot_step(c, extra).map(|(b, s, m, _)| (b, s, m))
}

/// [`snapshot_run`], and the seconds of its step "Create the snapshot" alone (what a deploy's
/// pre-deploy snapshot costs on its already open connection).
fn snapshot_step(c: &Bed, extra: &[&str]) -> Result<(f64, f64, f64, f64)> {
    let log = c.sh.path(format!(
        "target/bench/ssh-{}.log",
        crate::core::util::random_hex(4)?
    ));
    let _ = std::fs::remove_file(&log);
    let mut argv = vec![
        "env".to_string(),
        format!("XTASK_SSH_TRANSFER_LOG={}", log.display()),
        c.exe.display().to_string(),
        "snapshot".into(),
        "create".into(),
        "--env".into(),
        "sandbox".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let (secs, mib, err) = peak_rss_err(&argv)?;
    let step = step_secs(&err, "Create the snapshot");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let bytes: u64 = text
        .lines()
        .filter_map(|l| l.split("Transferred: sent ").nth(1))
        .map(|l| {
            l.split(|ch: char| !ch.is_ascii_digit())
                .filter(|w| !w.is_empty())
                .take(2)
                .filter_map(|w| w.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    if bytes == 0 {
        eprintln!("bench: no ssh transfer totals were logged (reported as NaN)");
        return Ok((f64::NAN, secs, mib, step));
    }
    Ok((bytes as f64 / (1u64 << 20) as f64, secs, mib, step))
}

/// The archive size (MiB) of the newest snapshot in the sandbox's backups folder (the sandbox's
/// server is this machine).
fn newest_archive_mib(c: &Bed) -> Result<f64> {
    let mut newest: Option<(String, u64)> = None;
    for e in std::fs::read_dir(&c.env.backups_dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(id) = name.strip_suffix(".tar.zst") {
            if newest.as_ref().is_none_or(|(n, _)| id > n.as_str()) {
                newest = Some((id.to_string(), e.metadata()?.len()));
            }
        }
    }
    let (_, bytes) = newest.ok_or_else(|| anyhow::anyhow!("no snapshot in the backups folder"))?;
    Ok(bytes as f64 / (1u64 << 20) as f64)
}

/// Issue 13: a snapshot made on the server against the same pipeline run there (`tar | zstd -T0
/// | sha256sum`; the sandbox's server is this machine) and against the stream through the
/// controller (`--stream`, how snapshots were made before): seconds, bytes over SSH, peak RSS.
pub fn snapshot(c: &Bed) -> Result<Value> {
    let sizes: &[(u64, &str)] = if c.smoke {
        &[(1 << 20, "1 MiB")]
    } else {
        &[(0, "0 MiB"), (300 << 20, "300 MiB"), (1 << 30, "1 GiB")]
    };
    let data = PathBuf::from(&c.env.remote_dir).join("data");
    std::fs::create_dir_all(&data)?;
    let file = data.join("bench.jsonl");
    let mut rows = Vec::new();
    for (size, label) in sizes {
        let gen = format!(
            "import sys\nout = open(sys.argv[1], 'w')\nn = 0\ni = 0\nwhile n < {size}:\n    line = '{{\"ts\":\"2026-11-28T21:%02d:%02d.%03dZ\",\"seq\":%d,\"instance\":\"5f0c2b9e41d7a3c8\",\"version\":\"v1.2.3\"}}\\n' % (i // 60000 % 60, i // 1000 % 60, i % 1000, i)\n    out.write(line)\n    n += len(line)\n    i += 1\n"
        );
        let ok = c.sh.ok(cmd!(c.sh, "python3 -c {gen} {file}"));
        if !ok {
            bail!("generating {label} of JSON lines failed");
        }
        let (mut bt, mut xt, mut st) = (Vec::new(), Vec::new(), Vec::new());
        let (mut xb, mut sb, mut xm, mut sm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // Issue 13 item 2: an incremental snapshot after 1 MiB was appended, beside the full
        // one just taken (time, bytes over SSH, disk).
        let (mut it, mut ib, mut fd, mut id) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut fs = Vec::new();
        for _ in 0..c.runs {
            let pipeline = format!(
                "tar -C {} -cf - config data logs .deploy | zstd -T0 -3 -q | sha256sum >/dev/null",
                sh_quote(&c.env.remote_dir)
            );
            let (s, _) = peak_rss(&["sh".into(), "-c".into(), pipeline])?;
            bt.push(s);
            let (b, s, m, step) = snapshot_step(c, &[])?;
            xb.push(b);
            xt.push(s);
            xm.push(m);
            fs.push(step);
            fd.push(newest_archive_mib(c)?);
            let more = "import sys\nwith open(sys.argv[1], 'a') as f:\n    n = 0\n    while n < 1048576:\n        line = '{\"ts\":\"2026-11-29T00:00:00.000Z\",\"seq\":%d,\"instance\":\"5f0c2b9e41d7a3c8\",\"version\":\"v1.2.3\"}\\n' % n\n        f.write(line)\n        n += len(line)\n";
            if !c.sh.ok(cmd!(c.sh, "python3 -c {more} {file}")) {
                bail!("appending 1 MiB to {} failed", file.display());
            }
            let (b, _, _, step) = snapshot_step(c, &["--incremental"])?;
            ib.push(b);
            it.push(step);
            id.push(newest_archive_mib(c)?);
            let (b, s, m) = snapshot_run(c, &["--stream"])?;
            sb.push(b);
            st.push(s);
            sm.push(m);
        }
        rows.push(row(
            &format!("{label}: snapshot create on the server (baseline: tar | zstd -T0 | sha256sum there)"),
            "s",
            &bt,
            &xt,
        ));
        rows.push(row(
            &format!("{label}: snapshot create --stream, as before issue 13 (baseline: the same pipeline)"),
            "s",
            &bt,
            &st,
        ));
        rows.push(row(
            &format!("{label}: bytes over SSH (baseline: --stream; xtask: on the server)"),
            "MiB",
            &sb,
            &xb,
        ));
        rows.push(row(
            &format!("{label}: xtask peak RSS (baseline: --stream; xtask: on the server)"),
            "MiB",
            &sm,
            &xm,
        ));
        rows.push(row(
            &format!("{label} + 1 MiB appended: the snapshot step on an open connection (baseline: full; xtask: incremental)"),
            "s",
            &fs,
            &it,
        ));
        rows.push(row(
            &format!(
                "{label} + 1 MiB appended: disk per snapshot (baseline: full; xtask: incremental)"
            ),
            "MiB",
            &fd,
            &id,
        ));
        rows.push(row(
            &format!("{label} + 1 MiB appended: bytes over SSH (baseline: full on the server; xtask: incremental)"),
            "MiB",
            &xb,
            &ib,
        ));
        let _ = std::fs::remove_file(&file);
    }
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
        json!({"rows": rows, "baseline": "tar -cf - DIR | zstd -T0 -3 | sha256sum on the server (the sandbox's server is this machine; no ssh)",
              "note": "bytes over SSH: the ssh client's own totals (sent + received) for the whole `snapshot create`, its probe and tool check included"}),
    )
}

pub fn build(c: &Bed) -> Result<Value> {
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
        let pkg: Vec<&str> = pkg.map(|p| vec!["-p", p]).unwrap_or_default();
        let cmd = cmd!(c.sh, "{cargo} build --manifest-path {manifest} {pkg...}")
            .env("CARGO_TARGET_DIR", &target);
        let t = Instant::now();
        let out = c.sh.capture(cmd, None)?;
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
        let ok = c.sh.ok(cmd!(c.sh, "{cargo} run -q -p xtask -- --help"));
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
