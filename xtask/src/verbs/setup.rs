//! `cargo xtask setup`: prepare a provisioned server over SSH (issue 15; stub until implemented).

use crate::ctx::Ctx;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct Setup {}

impl Setup {
    pub fn run(self, _sh: &Ctx) -> Result<()> {
        anyhow::bail!("`setup` is not implemented yet")
    }
}
