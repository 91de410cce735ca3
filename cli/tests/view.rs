//! `atoll view rebuild` on a real broker (tansu) and PostgreSQL: the shop's storefront view,
//! emptied and rebuilt from the facts, answers `GET /orders/{id}` exactly as before; a rebuild
//! refuses to run beside the service, and says what is wrong with a bad group or store.

mod common;

use common::{atoll, ATOLL};
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::{App, Store};
use atoll_testkit::postgres::Postgres;
use atoll_testkit::process::wait_until;
use atoll_testkit::{committed, Tansu};
use example_shop::driver::{self, Plan};
use example_shop::{with_all, with_service, Options};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset};
use serde_json::Value;

const GROUP: &str = "acme.shop.storefront-orders";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every order of the view as `GET /orders/{id}` answers it, by id.
async fn answers(store: &Store, http: SocketAddr) -> Vec<(String, Value)> {
    let ids: Vec<(String,)> =
        sqlx::query_as("SELECT order_id FROM storefront_orders ORDER BY order_id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .map(|(id,)| {
                let body = reqwest::blocking::get(format!("http://{http}/orders/{id}"))
                    .and_then(|r| r.error_for_status())
                    .and_then(|r| r.text())
                    .unwrap_or_else(|e| panic!("GET /orders/{id}: {e}"));
                (id, serde_json::from_str(&body).unwrap())
            })
            .collect()
    })
    .await
    .unwrap()
}

/// The view's answers once it shows `n` orders, each completed or cancelled (or after 90 s).
async fn settled(store: &Store, http: SocketAddr, n: usize) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = answers(store, http).await;
        let ended = got
            .iter()
            .filter(|(_, a)| matches!(a["status"].as_str(), Some("completed" | "cancelled")))
            .count();
        if ended == n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until each of the view's three groups committed the end of its topic (up to 90 s):
/// every fact is in the view.
async fn caught_up(bootstrap: &str) {
    let feeds = [
        ("orders", "orders"),
        ("payment-charged", "payments"),
        ("shipment-scheduled", "shipping"),
    ];
    let bootstrap = bootstrap.to_owned();
    let done = tokio::task::spawn_blocking(move || {
        let ends: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        wait_until(Duration::from_secs(90), || {
            feeds.iter().all(|(listener, owner)| {
                let topic = format!("acme.shop.{owner}.events");
                let group = format!("acme.shop.storefront-{listener}");
                let committed = committed(&bootstrap, &group, &topic, 6);
                committed.iter().enumerate().all(|(p, at)| {
                    let (_, high) = ends
                        .fetch_watermarks(&topic, p as i32, Duration::from_secs(10))
                        .unwrap();
                    high == 0 || *at == Offset::Offset(high)
                })
            })
        })
    })
    .await
    .unwrap();
    assert!(done, "the view's groups did not catch up");
}

fn config(broker: &Tansu, url: &str) -> Config {
    let mut config = broker.config();
    config.store.url = Some(url.to_owned());
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storefront_view_is_rebuilt_from_the_facts_to_the_same_answers() {
    let broker = Tansu::start();
    let pg = Postgres::start();
    let url = pg.database("shop");
    let mut env = broker.env();
    env.extend(Postgres::env(&url));

    let config = config(&broker, &url);
    let running = with_all(App::new(config.clone()), &Options::default())
        .start()
        .await
        .unwrap();
    let plan = Plan {
        orders: 40,
        decline_rate: 0.25,
        rate: 0,
        timeout: Duration::from_secs(120),
    };
    let summary = driver::drive(&running, &config, &plan).await.unwrap();
    assert!(summary.all_terminal(), "{summary}");
    let store = Store::connect(&config.store).await.unwrap();
    let http = running.http_addr().unwrap();
    settled(&store, http, 40).await;
    caught_up(&broker.bootstrap()).await;
    let before = answers(&store, http).await;
    assert_eq!(before.len(), 40, "{before:?}");
    let status = |s: &str| before.iter().filter(|(_, a)| a["status"] == s).count();
    assert_eq!(
        (status("completed"), status("cancelled")),
        (summary.completed, summary.cancelled)
    );
    for (id, a) in &before {
        assert!(a["placed_at"].is_string(), "{id}: {a}");
        if a["status"] == "cancelled" {
            assert!(a["reason"].is_string(), "{id}: {a}");
        }
    }
    let missing = tokio::task::spawn_blocking(move || {
        reqwest::blocking::get(format!("http://{http}/orders/nope"))
            .unwrap()
            .status()
    })
    .await
    .unwrap();
    assert_eq!(missing.as_u16(), 404);

    // Not while the service runs.
    let out = atoll(&env, &["view", "rebuild", GROUP]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("member(s): stop the service"),
        "{}",
        text(&out)
    );
    running.shutdown().await;

    // A group that feeds no view: the groups that do are named.
    let out = atoll(
        &env,
        &["view", "rebuild", "acme.shop.inventory-reserve-stock"],
    );
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("feeds no view") && said.contains(GROUP),
        "{said}"
    );

    // A dry run names the three listeners of the view and changes nothing.
    let out = atoll(&env, &["view", "rebuild", GROUP, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert_eq!(said.matches("would rewind").count(), 3, "{said}");
    assert!(said.contains("would empty storefront_orders"), "{said}");
    let rows: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM storefront_orders")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows.0, 40);

    let out = atoll(&env, &["view", "rebuild", GROUP]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM storefront_orders")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows.0, 0, "the view is emptied");

    // The storefront alone, started again, rebuilds the view from the facts.
    let running = with_service(App::new(config), "storefront", &Options::default())
        .unwrap()
        .start()
        .await
        .unwrap();
    let http = running.http_addr().unwrap();
    // Three groups replay independently: wait until the last of them caught up.
    caught_up(&broker.bootstrap()).await;
    let after = answers(&store, http).await;
    assert_eq!(after, before, "the rebuilt view answers as before");
    running.shutdown().await;
}

#[test]
fn a_rebuild_without_a_store_says_what_to_set() {
    let dir = std::env::temp_dir().join(format!("atoll-view-nostore-{}", std::process::id()));
    let out = Command::new(ATOLL)
        .args(["view", "rebuild", GROUP])
        .env_remove("ATOLL_STORE__URL")
        .env("ATOLL_STORE__PATH", dir.join("missing.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("set ATOLL_STORE__URL"),
        "{}",
        text(&out)
    );
}

/// `view rebuild --from` on noida-db (its time index answers as Kafka's): a view whose rows
/// were wiped after a first wave of orders gets back the rows of the orders placed after the
/// time, from their facts, and keeps the wiped rows of the orders before it: its groups moved
/// back to the time, not to the start, and its table was kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_rebuilt_from_a_time_gets_the_facts_since_then_over_its_rows() {
    let broker = Tansu::builder().transactions(true).start();
    let pg = Postgres::start();
    let url = pg.database("shop");
    let mut env = broker.env();
    env.extend(Postgres::env(&url));
    let config = config(&broker, &url);
    let running = with_all(App::new(config.clone()), &Options::default())
        .start()
        .await
        .unwrap();
    let store = Store::connect(&config.store).await.unwrap();
    let http = running.http_addr().unwrap();
    let wave = |n| Plan {
        orders: n,
        decline_rate: 0.25,
        rate: 0,
        timeout: Duration::from_secs(120),
    };
    let first = driver::drive(&running, &config, &wave(10)).await.unwrap();
    assert!(first.all_terminal(), "{first}");
    settled(&store, http, 10).await;
    caught_up(&broker.bootstrap()).await;
    let early: Vec<String> = answers(&store, http)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // The time between the waves: every fact of the first is before it, of the second after.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let from = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let second = driver::drive(&running, &config, &wave(10)).await.unwrap();
    assert!(second.all_terminal(), "{second}");
    settled(&store, http, 20).await;
    caught_up(&broker.bootstrap()).await;
    let before = answers(&store, http).await;
    running.shutdown().await;

    // A bad deployment wiped every row's content.
    sqlx::query(
        "UPDATE storefront_orders SET customer_id = NULL, amount_cents = NULL, placed_at = NULL,
         charged_at = NULL, shipped_at = NULL, completed_at = NULL, cancelled_at = NULL,
         reason = NULL",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let from = from
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let out = atoll(
        &env,
        &["view", "rebuild", GROUP, "--from", &from, "--dry-run"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert_eq!(said.matches("would move").count(), 3, "{said}");
    assert!(said.contains("would keep storefront_orders"), "{said}");
    let out = atoll(&env, &["view", "rebuild", GROUP, "--from", &from]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("kept storefront_orders"),
        "{}",
        text(&out)
    );

    let running = with_service(App::new(config), "storefront", &Options::default())
        .unwrap()
        .start()
        .await
        .unwrap();
    let http = running.http_addr().unwrap();
    caught_up(&broker.bootstrap()).await;
    let after = answers(&store, http).await;
    running.shutdown().await;
    assert_eq!(after.len(), 20);
    for ((id, was), (_, now)) in before.iter().zip(&after) {
        if early.contains(id) {
            assert!(
                now["placed_at"].is_null(),
                "{id} was before the time: {now}"
            );
        } else {
            assert_eq!(now, was, "{id} was after the time");
        }
    }
}
