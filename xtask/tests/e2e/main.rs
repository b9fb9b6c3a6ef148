//! End-to-end tests against the real sandbox, one module per area: `cargo xtask ci` runs them
//! with `cargo test -p xtask --test e2e -- --ignored --test-threads=1`. They drive the real tools
//! (docker, ssh, git, curl and the xtask binary) from outside, as a person would, so they start
//! processes directly.
#![allow(clippy::disallowed_methods)]

mod common;

mod benchmarks;
mod check_env;
mod conformance;
mod day_two_admin;
mod day_two_logs;
mod deploy;
mod endings;
mod foreign;
mod handoff;
mod hardening;
mod history;
mod monitoring;
mod provenance;
mod registry_auth;
mod release;
mod sandbox;
mod secrets;
mod snapshot;
mod snapshot_delta;
mod snapshot_nonroot;
mod snapshot_server;
mod swarm;
mod swarm_sandbox;

pub const E2E: &str = "e2e: needs the sandbox; run by `cargo xtask ci`";
