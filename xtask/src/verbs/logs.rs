//! `cargo xtask logs`: the container's log and logs/observer.log (issue 15; stub until implemented).

use crate::ctx::Ctx;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct Logs {}

impl Logs {
    pub fn run(self, _sh: &Ctx) -> Result<()> {
        anyhow::bail!("`logs` is not implemented yet")
    }
}
