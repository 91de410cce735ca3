//! The shop run as processes on a broker and PostgreSQL, and the checks of its databases,
//! shared by the crash and chaos tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atoll_testkit::postgres::Postgres;
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::Tansu;
use example_shop::driver::Summary;
use sqlx::AnyPool;

pub(crate) const SHOP: &str = env!("CARGO_BIN_EXE_shop");

/// The shop on one broker, the stateful services each on a PostgreSQL database of their own.
pub(crate) struct Shop {
    pub(crate) env: Vec<(String, String)>,
    pub(crate) urls: BTreeMap<&'static str, String>,
}

impl Shop {
    pub(crate) fn new(broker: &Tansu, pg: &Postgres) -> Self {
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
    pub(crate) fn serve(&self, service: &str, extra: &[(&str, &str)]) -> Proc {
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
    pub(crate) fn place(&self, args: &[&str]) -> Child {
        Command::new(SHOP)
            .arg("place")
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shop place")
    }

    pub(crate) async fn pool(&self, service: &str) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.urls[service]).await.unwrap()
    }
}

/// The environment of `service` on `broker` with a SQLite store of its own (one process per
/// file); analytics at least once, as tansu has no transactions.
pub(crate) fn own_sqlite_env(broker: &Tansu, service: &str) -> Vec<(String, String)> {
    let mut env = broker.env();
    env.push((
        "ATOLL_STORE__PATH".to_owned(),
        broker.store_path(service).display().to_string(),
    ));
    if service == "analytics" {
        env.extend(example_shop::analytics::without_transactions_env());
    }
    env
}

/// Waits until every process logged an assignment (it joined its groups).
pub(crate) fn joined(procs: &[&Proc]) {
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
pub(crate) fn finished(place: Child, procs: &[&Proc]) -> (String, String) {
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

pub(crate) fn field(summary: &str, name: &str) -> i64 {
    Summary::field(summary, name).unwrap_or_else(|| panic!("no {name} in {summary:?}")) as i64
}

/// Rows of `sql`, each a text and a count.
pub(crate) async fn rows(pool: &AnyPool, sql: &str) -> Vec<(String, i64)> {
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// What the payments and inventory databases must show after `summary`'s run: each order
/// charged at most once and refunded at most once, a refund only of a charge, exactly the
/// completed orders still charged; each stock movement once, and the stock their sum.
pub(crate) async fn effects_once(shop: &Shop, summary: &str) {
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
