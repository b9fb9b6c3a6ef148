//! `cargo xtask config`: the resolved environment with the source of each value (issue 15; stub until implemented).

use crate::ctx::Ctx;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ShowConfig {}

impl ShowConfig {
    pub fn run(self, _sh: &Ctx) -> Result<()> {
        anyhow::bail!("`config` is not implemented yet")
    }
}
