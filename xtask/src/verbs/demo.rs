//! `cargo xtask demo`: the whole flow on the sandbox, on a fresh machine, in one command.
//! Each stage runs this same binary, exactly as a person would type it.

use crate::core::exit::fail;
use crate::core::util::{epoch, is_root};
use crate::ctx::Ctx;
use anyhow::{Context, Result};
use xshell::cmd;

pub fn run(sh: &Ctx) -> Result<()> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let stamp = epoch();
    let v1 = format!("v0.1.0-demo.{stamp}");
    let v2 = format!("v0.2.0-demo.{stamp}");
    let mut up = vec!["sandbox", "up"];
    if is_root() {
        up.push("--install");
    }
    let stages: Vec<Vec<&str>> = vec![
        up,
        vec!["check-env", "--env", "sandbox"],
        vec!["release", &v1, "--env", "sandbox"],
        vec!["deploy", "--env", "sandbox", "--tag", &v1],
        vec!["release", &v2, "--env", "sandbox"],
        vec!["deploy", "--env", "sandbox", "--tag", &v2],
        vec!["status", "--env", "sandbox"],
    ];
    for args in &stages {
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
