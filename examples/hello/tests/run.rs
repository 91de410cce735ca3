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
