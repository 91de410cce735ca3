//! The shop as four service processes plus a driver, on a real broker (tansu).

use std::process::Command;
use std::time::Duration;

use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::Tansu;

const SHOP: &str = env!("CARGO_BIN_EXE_shop");

#[test]
fn four_processes_complete_500_orders() {
    let broker = Tansu::start();
    let env = broker.env();
    let services: Vec<Proc> = ["orders", "inventory", "payments", "shipping"]
        .iter()
        .map(|s| Proc::start(SHOP, &["serve", s], &env))
        .collect();
    // Each service has joined its groups once it logged an assignment for every listener.
    let joined = wait_until(Duration::from_secs(60), || {
        services
            .iter()
            .all(|p| p.log().contains("partitions assigned"))
    });
    assert!(
        joined,
        "services did not join:\n{}",
        services
            .iter()
            .map(Proc::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    let out = Command::new(SHOP)
        .args(["place", "--orders", "500", "--timeout-secs", "120"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run shop place");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(
        out.status.success(),
        "{summary}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> usize {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("placed"), 500, "{summary}");
    assert_eq!(field("completed") + field("cancelled"), 500, "{summary}");
    assert_eq!(field("dead_lettered"), 0, "{summary}");
    assert!(
        field("completed") > 0 && field("cancelled") > 0,
        "{summary}"
    );
    assert!(stdout.contains("stock: conserved"), "{stdout}");
}

#[test]
fn place_without_a_broker_says_what_to_set() {
    let out = Command::new(SHOP)
        .args(["place", "--orders", "1"])
        .env_remove("ATOLL_KAFKA__BOOTSTRAP_SERVERS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ATOLL_KAFKA__BOOTSTRAP_SERVERS"), "{err}");
}

#[test]
fn serve_rejects_an_unknown_service() {
    let out = Command::new(SHOP)
        .args(["serve", "billing"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown service `billing`"));
}
