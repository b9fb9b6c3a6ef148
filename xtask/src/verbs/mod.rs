//! Layer 6: the verbs, one per file (or folder). Each parses its own arguments (clap) and runs
//! through the operations below it. `ci`, `demo` and `bench` drive the other verbs.

pub mod bench;
pub mod check_env;
pub mod ci;
pub mod demo;
pub mod deploy;
pub mod lock;
pub mod release;
pub mod rollback;
pub mod sandbox;
pub mod snapshot;
pub mod status;
