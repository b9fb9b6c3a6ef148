//! `cargo xtask history`: the audit trail of deploys, rollbacks and restores (issue 15; stub until implemented).

use crate::ctx::Ctx;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct History {}

impl History {
    pub fn run(self, _sh: &Ctx) -> Result<()> {
        anyhow::bail!("`history` is not implemented yet")
    }
}
