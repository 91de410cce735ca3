//! What the operator tool's tests share.

use std::process::{Command, Output};

/// The `atoll` binary under test.
pub(crate) const ATOLL: &str = env!("CARGO_BIN_EXE_atoll");

/// Runs `atoll <args>` with `env` and waits for it.
pub(crate) fn atoll(env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(ATOLL)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run atoll")
}
