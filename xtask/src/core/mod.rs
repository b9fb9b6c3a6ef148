//! Layer 0, the leaves: exit codes and errors, the contract's names, small utilities, the version
//! rule and the typed records stored on the server. Nothing here uses any other module of the crate.

pub mod contract;
pub mod dotenv;
pub mod exit;
pub mod liveness;
pub mod records;
pub mod signals;
pub mod util;
pub mod version;
