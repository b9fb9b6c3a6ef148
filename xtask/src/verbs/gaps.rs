//! `cargo xtask gaps`: the archive-continuity report (issue 15; stub until implemented).

use crate::ctx::Ctx;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct Gaps {}

impl Gaps {
    pub fn run(self, _sh: &Ctx) -> Result<()> {
        anyhow::bail!("`gaps` is not implemented yet")
    }
}
