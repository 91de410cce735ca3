//! A transactional listener on the embedded broker and a SQLite store: the handler's SQL, the
//! record's inbox row and what it emits commit together; a record delivered twice changes the
//! database once and its outputs appear once; outputs left in the outbox are published by the
//! relay; a failing handler rolls everything back. (The outbox's own guarantees, on SQLite and
//! PostgreSQL: `testkit/tests/outbox.rs`.)

mod common;

use std::time::Duration;

use atoll::config::Config;
use atoll::envelope::Outgoing;
use atoll::{event_service, handlers, App, Context, Event, HandlerError, HandlerResult, Tx};
use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "ledger", partitions = 1)]
struct Ledger;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "credit", version = 1, service = Ledger)]
struct Credit {
    #[event(key)]
    account: String,
    cents: i64,
    /// Fail after the update (and the emit): nothing of it may remain.
    fail: bool,
    /// Hold the transaction this long first, in ms (records queue up behind it meanwhile).
    #[serde(default)]
    hold_ms: u64,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "credited", version = 1, service = Ledger)]
struct Credited {
    #[event(key)]
    account: String,
    cents: i64,
}

#[handlers]
impl Ledger {
    #[listener(name = "credit", max_attempts = 1)]
    async fn credit(&self, ctx: Context<Self>, mut tx: Tx, cmd: Credit) -> HandlerResult {
        tokio::time::sleep(Duration::from_millis(cmd.hold_ms)).await;
        sqlx::query("UPDATE accounts SET cents = cents + $1 WHERE id = $2")
            .bind(cmd.cents)
            .bind(&cmd.account)
            .execute(&mut *tx)
            .await?;
        ctx.emit(Credited {
            account: cmd.account,
            cents: cmd.cents,
        })
        .await?;
        if cmd.fail {
            return Err(HandlerError::permanent("refused after writing"));
        }
        Ok(())
    }
}

fn store_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("atoll-tx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("migrations")).unwrap();
    std::fs::write(
        dir.join("migrations/1_accounts.sql"),
        "CREATE TABLE accounts (id TEXT PRIMARY KEY, cents BIGINT NOT NULL);
         INSERT INTO accounts (id, cents) VALUES ('a', 0), ('b', 0);",
    )
    .unwrap();
    dir
}

/// The ledger service on a SQLite store in a fresh directory, with the accounts table.
async fn start(name: &str) -> (atoll::Running, std::path::PathBuf) {
    start_with(name, Config::default()).await
}

/// [`start`] with `config` (its store's path set here).
async fn start_with(name: &str, mut config: Config) -> (atoll::Running, std::path::PathBuf) {
    let dir = store_dir(name);
    config.store.path = dir.join("ledger.db");
    let migrator = sqlx::migrate::Migrator::new(dir.join("migrations").as_path())
        .await
        .unwrap();
    let running = App::new(config)
        .service(Ledger)
        .migrations(migrator)
        .start()
        .await
        .unwrap();
    (running, dir)
}

/// The `credited` facts on the events topic: until `n` were read, or 5 s passed.
async fn credited(running: &atoll::Running, n: usize) -> Vec<Credited> {
    facts_on(running, "acme.test.ledger.events", n).await
}

/// The facts on `topic` (one partition): until `n` were read, or 5 s passed.
async fn facts_on<T: serde::de::DeserializeOwned>(
    running: &atoll::Running,
    topic: &'static str,
    n: usize,
) -> Vec<T> {
    let bootstrap = running.bootstrap_servers().to_owned();
    let facts = tokio::task::spawn_blocking(move || {
        common::read_topic_within(&bootstrap, topic, 1, n, Duration::from_secs(5))
    })
    .await
    .unwrap();
    facts
        .iter()
        .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
        .collect()
}

/// Waits until accounts a and b hold `a` and `b` cents (every record once), or fails.
async fn balances_reach(running: &atoll::Running, a: i64, b: i64) {
    assert!(
        common::eventually(30, || async {
            balance(running, "a").await == a && balance(running, "b").await == b
        })
        .await,
        "every record once: a {} of {a}, b {} of {b}",
        balance(running, "a").await,
        balance(running, "b").await
    );
}

/// Asserts that each account's amounts, `(account, cents)` in the order read, rise.
fn each_account_in_order<'a>(facts: impl Iterator<Item = (&'a str, i64)> + Clone) {
    for account in ["a", "b"] {
        let cents: Vec<i64> = facts
            .clone()
            .filter(|(a, _)| *a == account)
            .map(|(_, c)| c)
            .collect();
        assert!(
            cents.windows(2).all(|w| w[0] < w[1]),
            "{account}'s facts in order: {cents:?}"
        );
    }
}

/// Sends `credit` with `ce_id` `id`.
async fn send_credit(client: &atoll::Client, id: &str, credit: &Credit) {
    let (headers, _) = Outgoing {
        id: Some(id),
        ..Outgoing::new(Credit::ce_type(), "test")
    }
    .headers();
    let payload = serde_json::to_vec(credit).unwrap();
    client
        .send_raw(
            "acme.test.ledger.commands",
            Some(credit.account.as_bytes()),
            &payload,
            headers,
        )
        .await
        .unwrap();
}

async fn balance(running: &atoll::Running, account: &str) -> i64 {
    let (cents,): (i64,) = sqlx::query_as("SELECT cents FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_one(running.store().expect("a store").pool())
        .await
        .unwrap();
    cents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_delivered_twice_changes_the_database_once_and_emits_once() {
    let (running, dir) = start("twice").await;
    let client = running.client("test");
    // The same record twice (one ce_id), as a redelivery after a lost commit would bring it;
    // then a record that fails after writing; then a last one to wait for.
    let credit = |account: &str, cents, fail| Credit {
        account: account.into(),
        cents,
        fail,
        hold_ms: 0,
    };
    send_credit(&client, "c-1", &credit("a", 500, false)).await;
    send_credit(&client, "c-1", &credit("a", 500, false)).await;
    send_credit(&client, "c-2", &credit("a", 70, true)).await;
    send_credit(&client, "c-3", &credit("b", 9, false)).await;

    assert!(
        common::eventually(20, || async { balance(&running, "b").await == 9 }).await,
        "the last record was handled"
    );
    assert_eq!(
        balance(&running, "a").await,
        500,
        "credited once, the failed one rolled back"
    );
    // One more than expected: a repeat would show up within the wait.
    let credited = credited(&running, 3).await;
    let amounts: Vec<(&str, i64)> = credited
        .iter()
        .map(|c| (c.account.as_str(), c.cents))
        .collect();
    assert_eq!(
        amounts,
        [("a", 500), ("b", 9)],
        "one fact per handled record"
    );
    // The failed record was dead-lettered; its fact never left the outbox.
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM atoll_outbox")
        .fetch_one(running.store().unwrap().pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "published rows are deleted");
    let (inbox,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM atoll_inbox")
        .fetch_one(running.store().unwrap().pool())
        .await
        .unwrap();
    assert_eq!(inbox, 2, "c-1 and c-3; the rolled-back c-2 left none");
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_rows_a_crash_left_in_the_outbox() {
    let dir = store_dir("relay");
    let mut config = Config::default();
    config.store.path = dir.join("ledger.db");
    let running = App::new(config).service(Ledger).start().await.unwrap();
    // As a process that committed and died before publishing would leave it.
    let (headers, id) = Outgoing::new(Credited::ce_type(), "crashed").headers();
    sqlx::query(
        "INSERT INTO atoll_outbox (topic, record_partition, record_key, payload, headers, ce_id, created_at)
         VALUES ($1, NULL, $2, $3, $4, $5, 0)",
    )
    .bind("acme.test.ledger.events")
    .bind(b"z".as_slice())
    .bind(br#"{"account":"z","cents":1}"#.as_slice())
    .bind(encoded(&headers))
    .bind(&id)
    .execute(running.store().unwrap().pool())
    .await
    .unwrap();
    let bootstrap = running.bootstrap_servers().to_owned();
    let facts = tokio::task::spawn_blocking(move || {
        common::read_topic(&bootstrap, "acme.test.ledger.events", 1, 1)
    })
    .await
    .unwrap();
    assert_eq!(facts.len(), 1, "the relay published the row");
    assert_eq!(
        common::header(&facts[0], "ce_id"),
        Some(id.as_str()),
        "with its ce_id"
    );
    assert_eq!(facts[0].key(), Some(b"z".as_slice()));
    assert!(
        common::eventually(10, || async {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM atoll_outbox")
                .fetch_one(running.store().unwrap().pool())
                .await
                .unwrap();
            n == 0
        })
        .await,
        "and deleted it"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// The outbox's encoding of `headers` (key length, key, value length, value).
fn encoded(headers: &rdkafka::message::OwnedHeaders) -> Vec<u8> {
    let mut encoded = Vec::new();
    for h in rdkafka::message::Headers::iter(headers) {
        let key = h.key.as_bytes();
        encoded.extend_from_slice(&u16::try_from(key.len()).unwrap().to_be_bytes());
        encoded.extend_from_slice(key);
        let value = h.value.unwrap();
        encoded.extend_from_slice(&i32::try_from(value.len()).unwrap().to_be_bytes());
        encoded.extend_from_slice(value);
    }
    encoded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_from_two_sources_is_two_events() {
    let (running, dir) = start("sources").await;
    let client = running.client("test");
    // CloudEvents makes an id unique per source only: two producers may reuse one.
    for source in ["billing", "refunds"] {
        let (headers, _) = Outgoing {
            id: Some("shared-1"),
            ..Outgoing::new(Credit::ce_type(), source)
        }
        .headers();
        let payload = serde_json::to_vec(&Credit {
            account: "a".into(),
            cents: 5,
            fail: false,
            hold_ms: 0,
        })
        .unwrap();
        client
            .send_raw("acme.test.ledger.commands", Some(b"a"), &payload, headers)
            .await
            .unwrap();
    }
    assert!(
        common::eventually(20, || async { balance(&running, "a").await == 10 }).await,
        "both credited: balance {}",
        balance(&running, "a").await
    );
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_outside_listeners_commits_its_sql_and_publishes_its_facts() {
    let (running, dir) = start("outside").await;

    // Rolled back: dropped without a commit.
    let tx = running.transaction::<Ledger>().await.unwrap();
    sqlx::query("UPDATE accounts SET cents = 111 WHERE id = 'a'")
        .execute(&mut *tx.conn().await)
        .await
        .unwrap();
    tx.context()
        .emit(Credited {
            account: "a".into(),
            cents: 111,
        })
        .await
        .unwrap();
    drop(tx);

    let tx = running.transaction::<Ledger>().await.unwrap();
    sqlx::query("UPDATE accounts SET cents = 25 WHERE id = 'a'")
        .execute(&mut *tx.conn().await)
        .await
        .unwrap();
    tx.context()
        .emit(Credited {
            account: "a".into(),
            cents: 25,
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(balance(&running, "a").await, 25);
    let cents: Vec<i64> = credited(&running, 2)
        .await
        .iter()
        .map(|c| c.cents)
        .collect();
    assert_eq!(cents, [25], "only the committed transaction's fact");
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_process_without_a_store_says_so() {
    let running = App::new(Config::default()).start().await.unwrap();
    let err = running.transaction::<Ledger>().await.unwrap_err();
    assert!(err.to_string().contains("no store"), "{err}");
    running.shutdown().await;
}

#[event_service(company = "acme", namespace = "test", name = "report")]
struct Report;

#[handlers]
impl Report {
    /// Declares a view but takes no `Tx`: its rows could not commit with the inbox row.
    #[listener(name = "credited", view = "report_totals")]
    async fn credited(&self, _fact: Credited) -> HandlerResult {
        Ok(())
    }
}

#[tokio::test]
async fn a_view_whose_handler_takes_no_transaction_is_refused_at_start() {
    let err = App::new(Config::default())
        .service(Report)
        .start()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("listener `credited`") && text.contains("must take `Tx`"),
        "{text}"
    );
}

#[event_service(company = "acme", namespace = "test", name = "native")]
struct Native;

#[handlers]
impl Native {
    /// Runs on sqlx's native PostgreSQL driver.
    #[listener(name = "credited")]
    async fn credited(&self, _tx: Tx<sqlx::Postgres>, _fact: Credited) -> HandlerResult {
        Ok(())
    }
}

#[tokio::test]
async fn a_native_postgres_handler_on_a_sqlite_store_is_refused_at_start() {
    let dir = store_dir("native");
    let mut config = Config::default();
    config.store.path = dir.join("native.db");
    let err = App::new(config).service(Native).start().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("listener `credited`")
            && text.contains("`Tx<Postgres>`")
            && text.contains("postgres://"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn two_sets_of_migrations_sharing_a_version_are_refused_at_start() {
    let step = |version, name: &'static str| {
        sqlx::migrate::Migrator::with_migrations(vec![sqlx::migrate::Migration::new(
            version,
            name.into(),
            sqlx::migrate::MigrationType::Simple,
            sqlx::SqlSafeStr::into_sql_str("SELECT 1"),
            false,
        )])
    };
    let err = App::new(Config::default())
        .migrations(step(1, "stock"))
        .migrations(step(1, "ledger"))
        .start()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("migration 1 (`ledger`) and migration 1 (`stock`)")
            && text.contains("number each set's migrations apart"),
        "{text}"
    );
}

#[tokio::test]
async fn a_route_on_atolls_paths_is_refused_at_start() {
    let mut config = Config::default();
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    let err = App::new(config)
        .routes(axum::Router::new().route("/metrics", axum::routing::get(|| async { "mine" })))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("overlaps atoll's"), "{err}");
}

#[tokio::test]
async fn a_route_that_takes_the_store_answers_503_in_a_process_without_one() {
    async fn count(store: atoll::Store) -> String {
        format!("{:?}", store.backend())
    }
    let mut config = Config::default();
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    let running = App::new(config)
        .routes(axum::Router::new().route("/count", axum::routing::get(count)))
        .start()
        .await
        .unwrap();
    let url = format!("http://{}/count", running.http_addr().unwrap());
    let (status, body) = tokio::task::spawn_blocking(move || {
        let r = reqwest::blocking::get(url).unwrap();
        (r.status().as_u16(), r.text().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (503, "the service's store is not open")
    );
    running.shutdown().await;
}

/// Records that wait behind a slow one are handled in batches, each batch one transaction:
/// each record once, each account's facts in order, and a record that fails in a batch alone
/// takes the per-record path (dead-lettered after its one attempt) without failing its
/// neighbours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_waiting_are_handled_in_batches_a_failing_one_alone() {
    const RECORDS: i64 = 60;
    let mut config = Config::default();
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    config.listener.batch_size = 100;
    let (running, dir) = start_with("batches", config).await;
    let client = running.client("test");
    let send = |n: i64, fail: bool, hold_ms: u64| {
        let client = client.clone();
        async move {
            let account = if n % 2 == 0 { "a" } else { "b" };
            let credit = Credit {
                account: account.into(),
                cents: n,
                fail,
                hold_ms,
            };
            send_credit(&client, &format!("r-{n}"), &credit).await;
        }
    };
    // The first holds its transaction: the others queue up behind it. Record 31 fails;
    // record 10 comes twice (one ce_id), as a producer's retry would send it.
    send(0, false, 1_500).await;
    for n in 1..RECORDS {
        send(n, n == 31, 0).await;
        if n == 10 {
            send(n, false, 0).await;
        }
    }
    let (a, b): (i64, i64) = (
        (0..RECORDS).filter(|n| n % 2 == 0).sum(),
        (0..RECORDS).filter(|n| n % 2 == 1 && *n != 31).sum(),
    );
    balances_reach(&running, a, b).await;
    let facts = credited(&running, RECORDS as usize).await;
    assert_eq!(
        facts.len(),
        RECORDS as usize - 1,
        "a fact per record but the failed one"
    );
    each_account_in_order(facts.iter().map(|c| (c.account.as_str(), c.cents)));
    let stats = running.stats();
    assert_eq!(stats[0].dead_lettered, 1, "the failing record: {stats:?}");
    let metrics = common::scrape(running.http_addr().unwrap()).await;
    let with = [("listener", "credit")];
    assert_eq!(
        metrics.sum("atoll_records_deduplicated_total", &with),
        1.0,
        "record 10's second copy skipped"
    );
    let batches = metrics.sum("atoll_batch_records_count", &with);
    let batched = metrics.sum("atoll_batch_records_sum", &with);
    assert!(
        batches >= 1.0 && batched >= 10.0 && batched / batches > 1.5,
        "records committed in batches: {batched} in {batches}"
    );
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// A batch whose time runs out takes no further record: the records it claimed but did not
/// run are given back (their inbox rows deleted before its commit) and form the next batch, so
/// each is handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_out_of_time_gives_back_the_records_it_did_not_run() {
    const RECORDS: i64 = 30;
    let mut config = Config::default();
    config.listener.batch_size = 100;
    config.listener.store_batch_ms = 1;
    let (running, dir) = start_with("batch-time", config).await;
    let client = running.client("test");
    // The first holds: the others wait, then each batch runs one or two of them (2 ms each)
    // before its time is out.
    for n in 0..RECORDS {
        client
            .send(&Credit {
                account: "a".into(),
                cents: 1,
                fail: false,
                hold_ms: if n == 0 { 1_000 } else { 2 },
            })
            .await
            .unwrap();
    }
    assert!(
        common::eventually(30, || async { balance(&running, "a").await == RECORDS }).await,
        "every record once: {} of {RECORDS}",
        balance(&running, "a").await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(balance(&running, "a").await, RECORDS, "and no more");
    assert_eq!(
        credited(&running, RECORDS as usize + 1).await.len(),
        RECORDS as usize
    );
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// A service whose handler takes the whole batch in one call (set-based).
#[event_service(company = "acme", namespace = "test", name = "payer", partitions = 1)]
struct Payer;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "pay", version = 1, service = Payer)]
struct Pay {
    #[event(key)]
    account: String,
    cents: i64,
    /// Fails every call it is in, after the writes.
    fail: bool,
    /// Is marked failed (permanently) in every call it is in, after the writes.
    #[serde(default)]
    mark: bool,
    /// Holds the call this long first, in ms.
    hold_ms: u64,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "paid", version = 1, service = Payer)]
struct Paid {
    #[event(key)]
    account: String,
    cents: i64,
}

/// The set-based handler's calls, in order: how many records each held, and whether the
/// failing one was among them.
static CALLS: std::sync::Mutex<Vec<(usize, bool)>> = std::sync::Mutex::new(Vec::new());

#[handlers]
impl Payer {
    #[listener(name = "pay", max_attempts = 1)]
    async fn pay(&self, mut tx: Tx, batch: atoll::Batch<Self, Pay>) -> HandlerResult {
        let failing = batch.events().any(|p| p.fail);
        CALLS.lock().unwrap().push((batch.len(), failing));
        let hold = batch.events().map(|p| p.hold_ms).max().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(hold)).await;
        for record in &batch {
            let pay = &record.event;
            sqlx::query("UPDATE accounts SET cents = cents + $1 WHERE id = $2")
                .bind(pay.cents)
                .bind(&pay.account)
                .execute(&mut *tx)
                .await?;
            if pay.mark {
                record.fail(HandlerError::permanent("marked after writing"));
                continue;
            }
            record
                .ctx
                .emit(Paid {
                    account: pay.account.clone(),
                    cents: pay.cents,
                })
                .await?;
        }
        if batch.events().any(|p| p.fail) {
            return Err(HandlerError::permanent("refused after writing"));
        }
        Ok(())
    }
}

/// The set-based `Payer` on a store of its own, named `name`, with batches of up to 100.
async fn start_payer(name: &str) -> (atoll::Running, std::path::PathBuf) {
    let dir = store_dir(name);
    let mut config = Config::default();
    config.store.path = dir.join("payer.db");
    config.listener.batch_size = 100;
    let migrator = sqlx::migrate::Migrator::new(dir.join("migrations").as_path())
        .await
        .unwrap();
    let running = App::new(config)
        .service(Payer)
        .migrations(migrator)
        .start()
        .await
        .unwrap();
    (running, dir)
}

/// Records waiting behind a slow one come to a set-based handler in calls of many; a call that
/// fails is split in halves until the failing record is alone, which is dead-lettered after its
/// one attempt: every other record commits once, each account's facts in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_based_handler_takes_the_waiting_records_in_one_call_a_failing_one_alone() {
    const RECORDS: i64 = 40;
    let (running, dir) = start_payer("set-based").await;
    let client = running.client("test");
    for n in 0..RECORDS {
        let pay = Pay {
            account: if n % 2 == 0 { "a" } else { "b" }.into(),
            cents: n,
            fail: n == 23,
            mark: false,
            hold_ms: if n == 0 { 5_000 } else { 0 },
        };
        client.send(&pay).await.unwrap();
    }
    let (a, b): (i64, i64) = (
        (0..RECORDS).filter(|n| n % 2 == 0).sum(),
        (0..RECORDS).filter(|n| n % 2 == 1 && *n != 23).sum(),
    );
    balances_reach(&running, a, b).await;
    let facts: Vec<Paid> = facts_on(&running, "acme.test.payer.events", RECORDS as usize).await;
    assert_eq!(
        facts.len(),
        RECORDS as usize - 1,
        "a fact per record but the failed one"
    );
    each_account_in_order(facts.iter().map(|p| (p.account.as_str(), p.cents)));
    let stats = running.stats();
    assert_eq!(stats[0].dead_lettered, 1, "the failing record: {stats:?}");
    let calls = CALLS.lock().unwrap().clone();
    assert!(
        calls.iter().any(|(n, _)| *n > 10),
        "the waiting records came in calls of many: {calls:?}"
    );
    let with_failing: Vec<usize> = calls.iter().filter(|(_, f)| *f).map(|(n, _)| *n).collect();
    assert!(
        with_failing.len() >= 3
            && with_failing.windows(2).all(|w| w[1] < w[0])
            && with_failing.last() == Some(&1),
        "the failing record's calls shrank by halves until it was alone: {calls:?}"
    );
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
    a_marked_record_rolls_back_its_batch_and_goes_alone().await;
}

/// The second half of the set-based test (its calls are counted in the same static): a record
/// the handler marks failed rolls its batch's transaction back; the records before it commit
/// in a batch without it, it alone is dead-lettered after its one attempt, the records after
/// it come next. No halving: its calls are one of many, then its own.
async fn a_marked_record_rolls_back_its_batch_and_goes_alone() {
    const RECORDS: i64 = 30;
    CALLS.lock().unwrap().clear();
    let (running, dir) = start_payer("set-marked").await;
    let client = running.client("test");
    for n in 0..RECORDS {
        let pay = Pay {
            account: if n % 2 == 0 { "a" } else { "b" }.into(),
            cents: n,
            fail: false,
            mark: n == 17,
            hold_ms: if n == 0 { 5_000 } else { 0 },
        };
        client.send(&pay).await.unwrap();
    }
    let (a, b): (i64, i64) = (
        (0..RECORDS).filter(|n| n % 2 == 0).sum(),
        (0..RECORDS).filter(|n| n % 2 == 1 && *n != 17).sum(),
    );
    balances_reach(&running, a, b).await;
    let facts: Vec<Paid> = facts_on(&running, "acme.test.payer.events", RECORDS as usize).await;
    assert_eq!(
        facts.len(),
        RECORDS as usize - 1,
        "a fact per record but the marked one"
    );
    each_account_in_order(facts.iter().map(|p| (p.account.as_str(), p.cents)));
    assert_eq!(running.stats()[0].dead_lettered, 1);
    let calls = CALLS.lock().unwrap().clone();
    assert!(
        calls.iter().any(|(n, _)| *n > 10),
        "calls of many: {calls:?}"
    );
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// Set-based listeners take runs of a partition: an ordering that runs a partition's records
/// concurrently (and a transaction per record) would give every call one record.
#[tokio::test]
async fn a_set_based_listener_that_would_never_get_a_batch_is_refused_at_start() {
    let dir = store_dir("set-refused");
    let mut config = Config::default();
    config.store.path = dir.join("payer.db");
    config.listener.ordering = atoll::config::OrderingMode::Key;
    let err = App::new(config).service(Payer).start().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("listener `pay` takes a `Batch`") && text.contains("`partition`"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[event_service(company = "acme", namespace = "test", name = "echo")]
struct Echo;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "ping", version = 1, service = Echo)]
struct Ping {
    #[event(key)]
    id: String,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "pinged", version = 1, service = Echo)]
struct Pinged {
    #[event(key)]
    id: String,
}

#[handlers]
impl Echo {
    /// Returns an output from a set-based call: whose would it be?
    #[listener(name = "ping")]
    async fn ping(&self, _tx: Tx, batch: atoll::Batch<Self, Ping>) -> HandlerResult<Pinged> {
        let id = batch.events().map(|p| p.id.clone()).collect();
        Ok(Pinged { id })
    }
}

#[tokio::test]
async fn a_set_based_handler_that_returns_outputs_is_refused_at_start() {
    let dir = store_dir("set-outputs");
    let mut config = Config::default();
    config.store.path = dir.join("echo.db");
    let err = App::new(config).service(Echo).start().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("listener `ping`") && text.contains("returns outputs"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
