//! `hello` on the embedded broker: every greeting handled, then a clean stop.

#[test]
fn greets_three_names_and_stops() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hello"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("hello runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["hello, ada", "hello, edsger", "hello, grace"]);
}

#[test]
fn logs_its_start_its_partitions_and_its_stop_by_default() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hello"))
        .env_remove("RUST_LOG")
        .output()
        .expect("hello runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for line in ["atoll started", "partitions assigned", "atoll stopped"] {
        assert!(stderr.contains(line), "no `{line}` in:\n{stderr}");
    }
}

#[test]
fn logs_json_lines_when_configured() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hello"))
        .env_remove("RUST_LOG")
        .env("ATOLL_TELEMETRY__LOG_FORMAT", "json")
        .output()
        .expect("hello runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no logs");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}
