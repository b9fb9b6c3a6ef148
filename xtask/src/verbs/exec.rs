//! `cargo xtask exec`: a command in the running container (issue 15; stub until implemented).

use crate::ctx::Ctx;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct Exec {}

impl Exec {
    pub fn run(self, _sh: &Ctx) -> Result<()> {
        anyhow::bail!("`exec` is not implemented yet")
    }
}
