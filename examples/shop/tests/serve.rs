//! The shop as six service processes plus a driver, on a real broker (tansu), the stateful
//! services each on a SQLite store of its own.

mod common;

use std::process::Command;
use std::time::Duration;

use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::Tansu;

use common::SHOP;

/// Starts `service` on `broker`, its store a SQLite file of its own (one process per file).
fn serve(broker: &Tansu, service: &str) -> Proc {
    Proc::start(
        SHOP,
        &["serve", service],
        &common::own_sqlite_env(broker, service),
    )
}

#[test]
fn six_processes_complete_500_orders_and_analytics_lines_each_once() {
    let broker = Tansu::start();
    let env = broker.env();
    let services: Vec<Proc> = example_shop::SERVICES
        .iter()
        .map(|s| serve(&broker, s))
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
    let field = |name: &str| field(&summary, name);
    assert_eq!(field("placed"), 500, "{summary}");
    assert_eq!(field("completed") + field("cancelled"), 500, "{summary}");
    assert_eq!(field("dead_lettered"), 0, "{summary}");
    assert!(
        field("completed") > 0 && field("cancelled") > 0,
        "{summary}"
    );
    assert!(stdout.contains("stock: conserved"), "{stdout}");
    // Analytics ran at least once here (tansu has no transactions), without faults: each
    // order's line once.
    assert!(
        stdout.contains(
            &example_shop::driver::SalesCheck::Matching {
                completed: field("completed"),
                cancelled: field("cancelled"),
            }
            .to_string()
        ),
        "{stdout}"
    );
}

fn field(summary: &str, name: &str) -> usize {
    example_shop::driver::Summary::field(summary, name)
        .unwrap_or_else(|| panic!("no {name} in {summary:?}"))
}

/// How many sagas restored processes found waiting, summed over their log.
fn waiting_on_restore(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("saga state restored"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("waiting="))
                .and_then(|n| n.parse::<usize>().ok())
        })
        .sum()
}

#[test]
fn orders_killed_five_times_mid_saga_still_ends_every_order_and_conserves_stock() {
    let broker = Tansu::start();
    let env = broker.env();
    let others: Vec<Proc> = ["inventory", "payments", "shipping"]
        .iter()
        .map(|s| serve(&broker, s))
        .collect();
    let mut orders = serve(&broker, "orders");
    let joined = wait_until(Duration::from_secs(60), || {
        others
            .iter()
            .chain([&orders])
            .all(|p| p.log().contains("partitions assigned"))
    });
    assert!(joined, "services did not join:\n{}", orders.log());
    let place = Command::new(SHOP)
        .args([
            "place",
            "--orders",
            "1000",
            "--rate",
            "25",
            "--timeout-secs",
            "300",
        ])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shop place");
    let mut waiting = 0;
    for _ in 0..5 {
        // Kill it once it took over some partitions of the saga and worked on them a while.
        let working = wait_until(Duration::from_secs(90), || {
            orders.log().contains("saga state restored")
        });
        assert!(
            working,
            "orders did not restore its sagas:\n{}",
            orders.log()
        );
        std::thread::sleep(Duration::from_millis(2500));
        orders.kill();
        waiting += waiting_on_restore(&orders.log());
        orders = serve(&broker, "orders");
    }
    let out = place.wait_with_output().expect("shop place");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}\n--- orders:\n{}",
        String::from_utf8_lossy(&out.stderr),
        orders.log()
    );
    assert_eq!(field(&summary, "placed"), 1000, "{summary}");
    assert_eq!(
        field(&summary, "completed") + field(&summary, "cancelled"),
        1000,
        "{summary}"
    );
    assert_eq!(field(&summary, "dead_lettered"), 0, "{summary}");
    assert!(stdout.contains("stock: conserved"), "{stdout}");
    waiting += waiting_on_restore(&orders.log());
    eprintln!("{summary}; sagas found in flight by restarted processes: {waiting}");
    assert!(
        waiting > 0,
        "no restarted process found a saga in flight: the kills missed the sagas"
    );
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

#[test]
fn the_topics_job_creates_the_topics_and_health_follows_the_service() {
    let broker = Tansu::start();
    let mut env = broker.env();
    let run = |args: &[&str], env: &[(String, String)]| {
        Command::new(SHOP)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run shop")
    };
    let out = run(&["topics", "--create"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = example_shop::all_topics().len();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{n} topics present")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.extend([
        ("ATOLL_HTTP__ADDR".to_owned(), format!("0.0.0.0:{port}")),
        // The job created them: the service must not need to.
        ("ATOLL_KAFKA__CREATE_TOPICS".to_owned(), "false".to_owned()),
    ]);
    let mut service = Proc::start(SHOP, &["serve", "shipping"], &env);
    let ready = wait_until(Duration::from_secs(60), || {
        run(&["health"], &env).status.success()
    });
    assert!(ready, "never ready:\n{}", service.log());
    let out = run(&["health"], &env);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""status":"ready""#),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(service.terminate().success(), "{}", service.log());
    let out = run(&["health"], &env);
    assert!(!out.status.success(), "a stopped service is not healthy");
}

/// Runs `shop <args>` without `unset`; it must fail, saying `unset` on standard error.
fn fails_naming(args: &[&str], unset: &str) {
    let out = Command::new(SHOP)
        .args(args)
        .env_remove(unset)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} without {unset}");
    assert!(stderr.contains(unset), "{stderr}");
}

#[test]
fn the_topics_job_and_health_say_what_is_missing() {
    fails_naming(&["topics", "--create"], "ATOLL_KAFKA__BOOTSTRAP_SERVERS");
    fails_naming(&["health"], "ATOLL_HTTP__ADDR");
}

#[test]
fn health_fails_on_a_not_ready_answer() {
    // A service that answers 503, as one does before it joined its groups.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/health/ready", server.local_addr().unwrap());
    let answer = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = server.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = conn.read(&mut request).unwrap();
        let body = r#"{"status":"not_ready"}"#;
        write!(
            conn,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let out = Command::new(SHOP)
        .args(["health", "--url", &url])
        .output()
        .unwrap();
    answer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("503") && stdout.contains("not_ready"),
        "{stdout}"
    );
}
