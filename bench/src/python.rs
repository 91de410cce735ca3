//! FastStream, the Python peer: a process of its own running `bench/peers/faststream_relay.py`
//! in the virtualenv `scripts/install-faststream` makes (FastStream and aiokafka, pinned).

use std::path::PathBuf;

use anyhow::bail;

use crate::payload::{INPUT, OUTPUT_FASTSTREAM};

/// The virtualenv's Python: `ATOLL_FASTSTREAM_PYTHON`, or where `scripts/install-faststream`
/// puts it.
fn interpreter() -> PathBuf {
    std::env::var_os("ATOLL_FASTSTREAM_PYTHON").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".local/share/atoll/faststream-venv/bin/python")
        },
        PathBuf::from,
    )
}

/// The command that runs FastStream's relay over `records` records of the input, in `group`.
pub(crate) fn faststream(
    bootstrap: &str,
    group: &str,
    records: u64,
) -> anyhow::Result<tokio::process::Command> {
    let python = interpreter();
    if !python.exists() {
        bail!(
            "FastStream is not installed at {} (scripts/install-faststream installs it; \
             ATOLL_FASTSTREAM_PYTHON names another interpreter)",
            python.display()
        );
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/faststream_relay.py");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .args(["--bootstrap", bootstrap, "--group", group])
        .args(["--input", INPUT, "--output", OUTPUT_FASTSTREAM])
        .args(["--records", &records.to_string()]);
    Ok(command)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_interpreter_says_how_to_install_it() {
        // The only test of this crate that touches the variable.
        std::env::set_var("ATOLL_FASTSTREAM_PYTHON", "/nonexistent/python");
        let e = super::faststream("127.0.0.1:1", "g", 10)
            .unwrap_err()
            .to_string();
        std::env::remove_var("ATOLL_FASTSTREAM_PYTHON");
        assert!(e.contains("/nonexistent/python"), "{e}");
        assert!(e.contains("scripts/install-faststream"), "{e}");
    }
}
