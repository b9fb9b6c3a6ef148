//! e2e (issue 15): see the module's tests.
#[allow(unused_imports)]
use crate::common::*;
