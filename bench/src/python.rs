//! FastStream, the Python peer: a process of its own running `bench/peers/faststream_relay.py`
//! in the virtualenv `scripts/install-faststream` makes (FastStream and aiokafka, pinned).

use std::path::PathBuf;

use anyhow::bail;

use crate::payload::{INPUT, OUTPUT_FASTSTREAM};

/// The virtualenv's Python: `ATOLL_TEST_FASTSTREAM_PYTHON`, or where `scripts/install-faststream`
/// puts it.
fn interpreter() -> PathBuf {
    interpreter_from(std::env::var_os("ATOLL_TEST_FASTSTREAM_PYTHON"))
}

/// The interpreter `ATOLL_TEST_FASTSTREAM_PYTHON` (`named`) names, or the default venv's.
fn interpreter_from(named: Option<std::ffi::OsString>) -> PathBuf {
    named.map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".local/share/atoll/faststream-venv/bin/python")
        },
        PathBuf::from,
    )
}

/// `python`, if it exists; if not, an error that says how to install FastStream's.
fn installed(python: PathBuf) -> anyhow::Result<PathBuf> {
    if !python.exists() {
        bail!(
            "FastStream is not installed at {} (scripts/install-faststream installs it; \
             ATOLL_TEST_FASTSTREAM_PYTHON names another interpreter)",
            python.display()
        );
    }
    Ok(python)
}

/// The command that runs FastStream's relay over `records` records of the input, in `group`.
pub(crate) fn faststream(
    bootstrap: &str,
    group: &str,
    records: u64,
) -> anyhow::Result<tokio::process::Command> {
    let python = installed(interpreter())?;
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
        let named = super::interpreter_from(Some("/nonexistent/python".into()));
        let e = super::installed(named).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/python"), "{e}");
        assert!(e.contains("scripts/install-faststream"), "{e}");
    }
}
