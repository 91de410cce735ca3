//! The shop's stateful services crashing on a real broker (tansu) with their state in
//! PostgreSQL: inventory and payments SIGKILLed thirty times during 2,000 orders, and a crash
//! between a database commit and the outbox's publish. Every order ends, stock is conserved,
//! and the databases show each effect once.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atoll_testkit::postgres::Postgres;
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::Tansu;
use example_shop::driver::Summary;
use sqlx::AnyPool;

const SHOP: &str = env!("CARGO_BIN_EXE_shop");

/// The shop on one broker, the stateful services each on a PostgreSQL database of their own.
struct Shop {
    env: Vec<(String, String)>,
    urls: BTreeMap<&'static str, String>,
}

impl Shop {
    fn new(broker: &Tansu, pg: &Postgres) -> Self {
        let urls = ["inventory", "payments", "storefront"]
            .into_iter()
            .map(|s| (s, pg.database(s)))
            .collect();
        Self {
            env: broker.env(),
            urls,
        }
    }

    /// Starts `service`, with `extra` environment.
    fn serve(&self, service: &str, extra: &[(&str, &str)]) -> Proc {
        let mut env = self.env.clone();
        if let Some(url) = self.urls.get(service) {
            env.extend(Postgres::env(url));
        }
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Proc::start(SHOP, &["serve", service], &env)
    }

    /// `shop place` with `args`, running.
    fn place(&self, args: &[&str]) -> Child {
        Command::new(SHOP)
            .arg("place")
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shop place")
    }

    async fn pool(&self, service: &str) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.urls[service]).await.unwrap()
    }
}

/// Waits until every process logged an assignment (it joined its groups).
fn joined(procs: &[&Proc]) {
    let ok = wait_until(Duration::from_secs(60), || {
        procs
            .iter()
            .all(|p| p.log().contains("partitions assigned"))
    });
    assert!(
        ok,
        "services did not join:\n{}",
        procs
            .iter()
            .map(|p| p.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
}

/// The placing run's summary line and output, once it ended successfully.
fn finished(place: Child, procs: &[&Proc]) -> (String, String) {
    let out = place.wait_with_output().expect("shop place");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        procs
            .iter()
            .map(|p| p.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    (summary, stdout)
}

fn field(summary: &str, name: &str) -> i64 {
    Summary::field(summary, name).unwrap_or_else(|| panic!("no {name} in {summary:?}")) as i64
}

/// Rows of `sql`, each a text and a count.
async fn rows(pool: &AnyPool, sql: &str) -> Vec<(String, i64)> {
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// What the payments and inventory databases must show after `summary`'s run: each order
/// charged at most once and refunded at most once, a refund only of a charge, exactly the
/// completed orders still charged; each stock movement once, and the stock their sum.
async fn effects_once(shop: &Shop, summary: &str) {
    let payments = shop.pool("payments").await;
    let twice = rows(
        &payments,
        "SELECT order_id || ' ' || kind, COUNT(*) FROM payments_ledger
         GROUP BY order_id, kind HAVING COUNT(*) > 1",
    )
    .await;
    assert!(twice.is_empty(), "ledger entries repeated: {twice:?}");
    let unpaid_refunds = rows(
        &payments,
        "SELECT r.order_id, r.amount_cents FROM payments_ledger r
         WHERE r.kind = 'refund' AND NOT EXISTS (SELECT 1 FROM payments_ledger c
             WHERE c.order_id = r.order_id AND c.kind = 'charge' AND c.amount_cents = r.amount_cents)",
    )
    .await;
    assert!(
        unpaid_refunds.is_empty(),
        "refunds without their charge: {unpaid_refunds:?}"
    );
    let charged = rows(
        &payments,
        "SELECT 'charged', COUNT(*) FROM payments_orders WHERE state = 'charged'",
    )
    .await;
    assert_eq!(
        charged[0].1,
        field(summary, "completed"),
        "the orders charged and not refunded are the completed ones ({summary})"
    );

    let inventory = shop.pool("inventory").await;
    let twice = rows(
        &inventory,
        "SELECT order_id || ' ' || sku || ' ' || kind, COUNT(*) FROM inventory_movements
         GROUP BY order_id, sku, kind HAVING COUNT(*) > 1",
    )
    .await;
    assert!(twice.is_empty(), "stock movements repeated: {twice:?}");
    let drift = rows(
        &inventory,
        "SELECT s.sku, CAST(s.qty - 10000 - COALESCE((SELECT SUM(m.delta)
             FROM inventory_movements m WHERE m.sku = s.sku), 0) AS BIGINT) FROM inventory_stock s",
    )
    .await;
    assert!(
        drift.iter().all(|(_, d)| *d == 0),
        "stock differs from its movements: {drift:?}"
    );
}

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
    // replied; restarted, it finds the record's inbox row (the record is skipped) and publishes
    // the rows its first handling left behind.
    let mut payments = shop.serve("payments", &[("TEST_ATOLL_CRASH_AFTER_COMMITS", "20")]);
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
    // The rows left behind went out: through the redelivered record, which found its inbox
    // row, or through the relay when the process rejoined its groups later than the relay's
    // grace.
    let log = payments.log();
    assert!(
        log.contains("published what the record's first handling left behind")
            || log.contains("outbox relay published rows left behind"),
        "{log}"
    );
}
