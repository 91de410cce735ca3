//! `shop demo` on the embedded broker.

use std::process::Command;

const SHOP: &str = env!("CARGO_BIN_EXE_shop");

fn field(summary: &str, name: &str) -> usize {
    example_shop::driver::Summary::field(summary, name)
        .unwrap_or_else(|| panic!("no {name} in {summary:?}"))
}

/// Runs `shop demo` on the embedded broker with `args`; asserts it succeeded and that all
/// `orders` ended with nothing dead-lettered, stock conserved, and analytics' exactly-once
/// results one line per end fact. Returns (stdout, stderr).
fn demo_ends_every_order(orders: usize, args: &[&str]) -> (String, String) {
    let out = Command::new(SHOP)
        .arg("demo")
        .args(["--orders", &orders.to_string()])
        .args(args)
        .env_remove("ATOLL_KAFKA__BOOTSTRAP_SERVERS")
        .env("RUST_LOG", "atoll=warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(out.status.success(), "{summary}\n{stderr}");
    assert_eq!(field(summary, "placed"), orders, "{summary}");
    assert_eq!(
        field(summary, "completed") + field(summary, "cancelled"),
        orders,
        "{summary}"
    );
    assert_eq!(field(summary, "dead_lettered"), 0, "{summary}");
    assert!(stdout.contains("stock: conserved"), "{stdout}");
    let sales = example_shop::driver::SalesCheck::Matching {
        completed: field(summary, "completed"),
        cancelled: field(summary, "cancelled"),
    }
    .to_string();
    assert!(stdout.contains(&sales), "{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn a_flaky_payment_gateway_heals_by_retrying() {
    let (_, stderr) = demo_ends_every_order(60, &["--flaky-payments", "0.3"]);
    assert!(
        stderr.contains("payment gateway timed out"),
        "the gateway did fail, and was retried"
    );
}

#[test]
fn flakiness_out_of_range_is_refused() {
    let out = Command::new(SHOP)
        .args(["demo", "--flaky-payments", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--flaky-payments must be"));
}

#[test]
fn the_decline_rate_decides_the_cancellations() {
    let (stdout, _) = demo_ends_every_order(50, &["--decline-rate", "0.2"]);
    let summary = stdout.lines().last().unwrap_or_default();
    // Stock never runs out at this size, so every cancellation is a declined payment.
    assert_eq!(
        (field(summary, "completed"), field(summary, "cancelled")),
        (40, 10),
        "{summary}"
    );
    let out = Command::new(SHOP)
        .args(["demo", "--decline-rate", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not between 0 and 1"));
}

#[test]
fn the_demo_runs_with_avro() {
    demo_ends_every_order(30, &["--codec", "avro"]);
}
