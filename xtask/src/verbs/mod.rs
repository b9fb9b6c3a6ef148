//! Layer 6: the verbs, one per file (or folder). Each parses its own arguments (clap) and runs
//! through the operations below it. `ci`, `demo` and `bench` drive the other verbs.

pub mod bench;
pub mod check_env;
pub mod ci;
pub mod demo;
pub mod deploy;
pub mod exec;
pub mod gaps;
pub mod history;
pub mod lock;
pub mod logs;
pub mod prune;
pub mod release;
pub mod rollback;
pub mod sandbox;
pub mod setup;
pub mod show_config;
pub mod snapshot;
pub mod status;
