//! What the operator tool's tests share.

// Each test crate uses some of them.
#![allow(dead_code)]

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

/// The probe service's binary, built beside `atoll` by the workspace's tests.
pub(crate) fn probe_bin() -> std::path::PathBuf {
    let mut p = std::path::PathBuf::from(ATOLL);
    p.set_file_name("probe");
    assert!(
        p.exists(),
        "{} is missing: run the workspace tests, or `cargo build -p atoll-testkit --bin probe`",
        p.display()
    );
    p
}
