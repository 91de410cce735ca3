//! The shop's stateful services crashing on a real broker (tansu) with their state in
//! PostgreSQL: inventory and payments SIGKILLed thirty times during 2,000 orders, and a crash
//! between a database commit and the outbox's publish. Every order ends, stock is conserved,
//! and the databases show each effect once.

mod common;

use std::time::Duration;

use atoll_testkit::postgres::Postgres;
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::Tansu;
use common::{effects_once, field, finished, joined, Shop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_payments_killed_thirty_times_during_2000_orders_repeat_and_lose_nothing() {
    let broker = Tansu::start();
    let pg = Postgres::start();
    let shop = Shop::new(&broker, &pg);
    let fixed: Vec<Proc> = ["orders", "shipping", "storefront"]
        .iter()
        .map(|s| shop.serve(s, &[]))
        .collect();
    let mut inventory = shop.serve("inventory", &[]);
    let mut payments = shop.serve("payments", &[]);
    joined(&[&fixed[0], &fixed[1], &fixed[2], &inventory, &payments]);
    let place = shop.place(&["--orders", "2000", "--rate", "10", "--timeout-secs", "600"]);
    // Ten kills of inventory, ten of payments, ten of both at once; each once the process
    // has joined again and worked for a while.
    for round in 0..30 {
        let (inv, pay) = match round / 10 {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        let targets: Vec<&Proc> = [(inv, &inventory), (pay, &payments)]
            .into_iter()
            .filter_map(|(hit, p)| hit.then_some(p))
            .collect();
        joined(&targets);
        std::thread::sleep(Duration::from_millis(1500));
        if inv {
            inventory.kill();
            inventory = shop.serve("inventory", &[]);
        }
        if pay {
            payments.kill();
            payments = shop.serve("payments", &[]);
        }
    }
    let (summary, stdout) = finished(place, &[&inventory, &payments, &fixed[0]]);
    assert_eq!(field(&summary, "placed"), 2000, "{summary}");
    assert_eq!(
        field(&summary, "completed") + field(&summary, "cancelled"),
        2000,
        "{summary}"
    );
    assert_eq!(field(&summary, "dead_lettered"), 0, "{summary}");
    assert!(stdout.contains("stock: conserved"), "{stdout}");
    effects_once(&shop, &summary).await;
    let deduplicated = [&inventory, &payments]
        .iter()
        .map(|p| p.log().matches("handled before (inbox): skipped").count())
        .sum::<usize>();
    eprintln!("{summary}; repeats skipped by the restarted processes' inboxes: {deduplicated}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_commit_and_the_publish_loses_nothing() {
    let broker = Tansu::start();
    let pg = Postgres::start();
    let shop = Shop::new(&broker, &pg);
    let fixed: Vec<Proc> = ["orders", "inventory", "shipping"]
        .iter()
        .map(|s| shop.serve(s, &[]))
        .collect();
    // Payments aborts after its 20th commit, before publishing what that one emitted and
    // replied; restarted, it finds the record's inbox row (the record is skipped), and the rows
    // the first handling left behind are published once their claim runs out, by its relay or
    // by the next transaction of their key (later outputs of their keys wait behind them).
    let mut payments = shop.serve("payments", &[("ATOLL_TEST_CRASH_AFTER_COMMITS", "20")]);
    joined(&[&fixed[0], &fixed[1], &fixed[2], &payments]);
    let place = shop.place(&["--orders", "100", "--rate", "20", "--timeout-secs", "180"]);
    let crashed = wait_until(Duration::from_secs(120), || !payments.running());
    assert!(crashed, "payments did not crash:\n{}", payments.log());
    assert!(
        payments
            .log()
            .contains("aborting after a commit, before its publish"),
        "{}",
        payments.log()
    );
    let left: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM atoll_outbox")
        .fetch_one(&shop.pool("payments").await)
        .await
        .unwrap();
    assert!(left.0 > 0, "the crash left the committed rows unpublished");
    payments = shop.serve("payments", &[]);
    let (summary, _) = finished(place, &[&payments, &fixed[0]]);
    assert_eq!(
        field(&summary, "completed") + field(&summary, "cancelled"),
        100,
        "{summary}"
    );
    assert_eq!(field(&summary, "dead_lettered"), 0, "{summary}");
    effects_once(&shop, &summary).await;
    // The rows left behind went out (through the relay, or taken over by a later transaction
    // of their key once their claim ran out), and every effect happened once.
    let left: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM atoll_outbox")
        .fetch_one(&shop.pool("payments").await)
        .await
        .unwrap();
    assert_eq!(left.0, 0, "every row published and deleted");
}
