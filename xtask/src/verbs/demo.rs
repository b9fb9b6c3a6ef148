//! `cargo xtask demo`: the whole flow on the sandbox, on a fresh machine, in one command.
//! Each stage runs this same binary, exactly as a person would type it.

use crate::core::exit::fail;
use crate::core::util::{epoch, is_root};
use crate::ctx::Ctx;
use crate::sandbox_state;
use anyhow::{Context, Result};
use xshell::cmd;

pub fn run(sh: &Ctx) -> Result<()> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let stamp = epoch();
    let v1 = format!("v0.1.0-demo.{stamp}");
    let v2 = format!("v0.2.0-demo.{stamp}");
    // The branch HEAD is on (main when detached): published to the sandbox's git remote under
    // the same name and released from it, so that the demo runs from a feature branch too.
    let branch = sh
        .read(cmd!(sh, "git symbolic-ref --short -q HEAD"))
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "main".into());
    let mut up = vec!["sandbox", "up"];
    if is_root() {
        up.push("--install");
    }
    let stages: Vec<Vec<&str>> = vec![
        up,
        vec!["check-env", "--env", "sandbox"],
        vec!["release", &v1, "--env", "sandbox", "--branch", &branch],
        // The sandbox may run a higher version left by the tests: the demo's first deploy may
        // be a downgrade.
        vec![
            "deploy",
            "--env",
            "sandbox",
            "--tag",
            &v1,
            "--allow-downgrade",
        ],
        vec!["release", &v2, "--env", "sandbox", "--branch", &branch],
        vec!["deploy", "--env", "sandbox", "--tag", &v2],
        vec!["status", "--env", "sandbox"],
    ];
    for args in &stages {
        if args[0] == "release" && args[1] == v1 {
            // A release tags only what the remote's release branch has: publish HEAD to the
            // sandbox's git remote (a scratch bare repository) first.
            let remote = sandbox_state::Paths::new(sh).git_remote();
            eprintln!("\n######## git push {} HEAD:{branch}", remote.display());
            let refspec = format!("HEAD:refs/heads/{branch}");
            sh.run_visible(
                "publishing HEAD to the sandbox git remote",
                cmd!(sh, "git push --quiet --force {remote} {refspec}"),
            )?;
        }
        eprintln!("\n######## cargo xtask {}", args.join(" "));
        if sh
            .run_visible("demo stage", cmd!(sh, "{exe} {args...}"))
            .is_err()
        {
            return Err(fail(format!(
                "demo stopped: `cargo xtask {}` failed",
                args.join(" ")
            )));
        }
    }
    eprintln!(
        "\ndemo: {v1} then {v2} deployed to the sandbox; `cargo xtask sandbox down` stops it"
    );
    Ok(())
}
