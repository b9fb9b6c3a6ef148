//! `cargo xtask prune`: images and snapshots beyond retention (issue 15; stub until implemented).

use crate::ctx::Ctx;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct Prune {}

impl Prune {
    pub fn run(self, _sh: &Ctx) -> Result<()> {
        anyhow::bail!("`prune` is not implemented yet")
    }
}
