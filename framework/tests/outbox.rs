//! The outbox's guarantees on the embedded broker and a SQLite store: one bad row stalls
//! nothing and is dead-lettered with its cause; the relay settles rows one by one; a row
//! another publisher holds is not sent twice, whatever the clocks say; and a key's later
//! output never overtakes an older row of that key left in the outbox.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atoll::config::Config;
use atoll::envelope::Outgoing;
use atoll::{event_service, handlers, App, Context, Event, HandlerResult, Tx};
use rdkafka::message::{Headers, OwnedHeaders, OwnedMessage};
use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "journal", partitions = 1)]
struct Journal;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "write", version = 1, service = Journal)]
struct Write {
    #[event(key)]
    page: String,
    line: i64,
    /// The size of the memo the fact carries: large enough, and the fact cannot be published.
    memo: usize,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "written", version = 1, service = Journal)]
struct Written {
    #[event(key)]
    page: String,
    line: i64,
    memo: String,
}

#[handlers]
impl Journal {
    #[listener(name = "write", max_attempts = 1)]
    async fn write(&self, ctx: Context<Self>, mut tx: Tx, cmd: Write) -> HandlerResult {
        sqlx::query("INSERT INTO lines (page, line) VALUES ($1, $2)")
            .bind(&cmd.page)
            .bind(cmd.line)
            .execute(&mut *tx)
            .await?;
        ctx.emit(Written {
            page: cmd.page,
            line: cmd.line,
            memo: "m".repeat(cmd.memo),
        })
        .await?;
        Ok(())
    }
}

const EVENTS: &str = "acme.test.journal.events";
const DLQ: &str = "acme.test.journal.private.dlq";
/// The largest record the test's clients produce.
const MAX_BYTES: usize = 20_000;

/// The journal service on a SQLite store in a fresh directory, with the `lines` table, serving
/// its probes.
async fn start(name: &str) -> (atoll::Running, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("atoll-outbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("migrations")).unwrap();
    std::fs::write(
        dir.join("migrations/1_lines.sql"),
        "CREATE TABLE lines (page TEXT NOT NULL, line BIGINT NOT NULL);",
    )
    .unwrap();
    let mut config = Config::default();
    config.store.path = dir.join("journal.db");
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    config
        .kafka
        .properties
        .insert("message.max.bytes".into(), MAX_BYTES.to_string());
    let migrator = sqlx::migrate::Migrator::new(dir.join("migrations").as_path())
        .await
        .unwrap();
    let running = App::new(config)
        .service(Journal)
        .migrations(migrator)
        .start()
        .await
        .unwrap();
    (running, dir)
}

async fn write(running: &atoll::Running, id: &str, page: &str, line: i64, memo: usize) {
    let (headers, _) = Outgoing {
        id: Some(id),
        ..Outgoing::new(Write::ce_type(), "test")
    }
    .headers();
    let payload = serde_json::to_vec(&Write {
        page: page.into(),
        line,
        memo,
    })
    .unwrap();
    running
        .client("test")
        .send_raw(
            "acme.test.journal.commands",
            Some(page.as_bytes()),
            &payload,
            headers,
        )
        .await
        .unwrap();
}

/// The records of `topic`: until `n` were read, or `secs` passed.
async fn read(running: &atoll::Running, topic: &str, n: usize, secs: u64) -> Vec<OwnedMessage> {
    let bootstrap = running.bootstrap_servers().to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        common::read_topic_within(&bootstrap, &topic, 1, n, Duration::from_secs(secs))
    })
    .await
    .unwrap()
}

/// The `line` of each `written` fact.
fn lines(facts: &[OwnedMessage]) -> Vec<i64> {
    facts
        .iter()
        .map(|m| {
            serde_json::from_slice::<Written>(m.payload().unwrap())
                .unwrap()
                .line
        })
        .collect()
}

async fn count(running: &atoll::Running, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(running.store().unwrap().pool())
        .await
        .unwrap();
    n
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The outbox's encoding of `headers` (key length, key, value length, value).
fn encoded(headers: &OwnedHeaders) -> Vec<u8> {
    let mut encoded = Vec::new();
    for h in headers.iter() {
        let key = h.key.as_bytes();
        encoded.extend_from_slice(&u16::try_from(key.len()).unwrap().to_be_bytes());
        encoded.extend_from_slice(key);
        let value = h.value.unwrap();
        encoded.extend_from_slice(&i32::try_from(value.len()).unwrap().to_be_bytes());
        encoded.extend_from_slice(value);
    }
    encoded
}

/// A `written` fact of `page`, as an outbox row would carry it: its payload and headers.
fn fact(page: &str, line: i64) -> (Vec<u8>, Vec<u8>, String) {
    let (headers, id) = Outgoing::new(Written::ce_type(), "left").headers();
    let payload = serde_json::to_vec(&Written {
        page: page.into(),
        line,
        memo: String::new(),
    })
    .unwrap();
    (payload, encoded(&headers), id)
}

/// Writes an outbox row in `tx` as a process would have left it, with the columns every schema
/// version has: for `page`'s fact number `line`, to `partition` (none: the partitioner's),
/// created at `created_at`. Callers that change the row further do so in the same transaction,
/// before the relay may see it.
async fn leave_row(
    tx: &mut sqlx::AnyConnection,
    page: &str,
    line: i64,
    partition: Option<i32>,
    created_at: i64,
) -> String {
    let (payload, headers, id) = fact(page, line);
    sqlx::query(
        "INSERT INTO atoll_outbox (topic, record_partition, record_key, payload, headers, ce_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(EVENTS)
    .bind(partition)
    .bind(page.as_bytes())
    .bind(payload)
    .bind(headers)
    .bind(&id)
    .bind(created_at)
    .execute(&mut *tx)
    .await
    .unwrap();
    id
}

/// Runs `sql` in `tx`.
async fn run(tx: &mut sqlx::AnyConnection, sql: &'static str) {
    sqlx::query(sql).execute(&mut *tx).await.unwrap();
}

async fn begin(running: &atoll::Running) -> sqlx::Transaction<'static, sqlx::Any> {
    running.store().unwrap().pool().begin().await.unwrap()
}

async fn eventually_empty(running: &atoll::Running, table: &str) -> bool {
    common::eventually(10, || async { count(running, table).await == 0 }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_too_large_to_publish_is_dead_lettered_and_stalls_nothing() {
    let (running, dir) = start("large").await;
    write(&running, "w-1", "a", 1, MAX_BYTES * 2).await;
    write(&running, "w-2", "a", 2, 0).await;

    // The next record's fact goes out: the first one's does not hold the partition.
    let facts = read(&running, EVENTS, 1, 20).await;
    assert_eq!(lines(&facts), [2], "the publishable fact, alone");
    assert_eq!(
        count(&running, "lines").await,
        2,
        "both records were handled"
    );

    // The unpublishable fact is dead-lettered with its cause, as a pointer (it is too large
    // for the DLQ too), and kept in the store.
    let dead = read(&running, DLQ, 1, 20).await;
    assert_eq!(dead.len(), 1, "one dead letter");
    let header = |name| common::header(&dead[0], name).map(str::to_owned);
    assert_eq!(header("atoll_dlq_error_kind").as_deref(), Some("publish"));
    assert_eq!(
        header("atoll_dlq_listener").as_deref(),
        Some("acme.test.journal-write")
    );
    assert_eq!(header("atoll_dlq_original_topic").as_deref(), Some(EVENTS));
    let error = header("atoll_dlq_error").unwrap();
    assert!(
        error.contains("too large") || error.contains("MessageSizeTooLarge"),
        "{error}"
    );
    assert!(error.contains("atoll_outbox_dead"), "{error}");
    assert!(header("atoll_dlq_payload_omitted").is_some());
    assert!(eventually_empty(&running, "atoll_outbox").await);
    assert_eq!(count(&running, "atoll_outbox_dead").await, 1);

    let metrics = common::scrape(running.http_addr().unwrap()).await;
    assert_eq!(metrics.sum("atoll_outbox_dead_lettered_total", &[]), 1.0);
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_settles_each_row_on_its_own() {
    let (running, dir) = start("independent").await;
    // Three rows left behind, the oldest for a partition the topic does not have.
    let mut tx = begin(&running).await;
    leave_row(&mut tx, "p", 1, Some(99), 0).await;
    let q = leave_row(&mut tx, "q", 2, None, 0).await;
    let r = leave_row(&mut tx, "r", 3, None, 0).await;
    run(
        &mut tx,
        "UPDATE atoll_outbox SET dead_letter_topic = 'acme.test.journal.private.dlq'",
    )
    .await;
    tx.commit().await.unwrap();

    // The good rows go out, once each, although the first one fails; a second's more is
    // waited to see any repeat.
    let facts = read(&running, EVENTS, 3, 6).await;
    let ids: Vec<&str> = facts
        .iter()
        .map(|m| common::header(m, "ce_id").unwrap())
        .collect();
    assert_eq!(ids, [q.as_str(), r.as_str()]);

    let dead = read(&running, DLQ, 1, 20).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        common::header(&dead[0], "atoll_dlq_error_kind"),
        Some("publish")
    );
    assert_eq!(
        common::header(&dead[0], "atoll_dlq_listener"),
        Some("outbox"),
        "a row written outside listeners"
    );
    assert_eq!(lines(&dead), [1], "with its payload");
    assert!(eventually_empty(&running, "atoll_outbox").await);
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_keeps_failing_shows_on_the_readiness_probe() {
    let (running, dir) = start("unready").await;
    let addr = running.http_addr().unwrap();
    assert!(
        common::eventually(10, || async {
            common::get(addr, "/health/ready").await.0 == 200
        })
        .await
    );
    // A row whose headers do not decode (its bytes damaged): neither the record's fault as far
    // as anyone can tell nor an outage, so it is tried ten times over minutes.
    let mut tx = begin(&running).await;
    leave_row(&mut tx, "p", 1, None, 0).await;
    run(
        &mut tx,
        "UPDATE atoll_outbox SET headers = X'000978',
         dead_letter_topic = 'acme.test.journal.private.dlq'",
    )
    .await;
    tx.commit().await.unwrap();
    let mut unready = None;
    for _ in 0..100 {
        let (status, body) = common::get(addr, "/health/ready").await;
        if status == 503 {
            unready = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = unready.expect("not ready while the row fails");
    assert!(
        body.contains("outbox row") && body.contains(EVENTS) && body.contains("do not decode"),
        "{body}"
    );
    // Once it is dealt with (an operator deletes it), ready again.
    sqlx::query("DELETE FROM atoll_outbox")
        .execute(running.store().unwrap().pool())
        .await
        .unwrap();
    assert!(
        common::eventually(10, || async {
            common::get(addr, "/health/ready").await.0 == 200
        })
        .await,
        "ready again"
    );
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_another_publisher_holds_is_not_sent_twice_whatever_the_clocks_say() {
    let (running, dir) = start("held").await;
    // A row another process claimed for 3 more seconds of the database's clock and is
    // sending; its writer's clock was far behind, so by any comparison of clocks it is old.
    let mut tx = begin(&running).await;
    let id = leave_row(&mut tx, "h", 1, None, 0).await;
    run(
        &mut tx,
        "UPDATE atoll_outbox SET claimed_by = 4242,
         available_at = CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) + 3000",
    )
    .await;
    tx.commit().await.unwrap();
    let early = read(&running, EVENTS, 1, 2).await;
    assert!(early.is_empty(), "the relay left the held row alone");
    // The other process died: its lease runs out and the relay takes the row over, once.
    let facts = read(&running, EVENTS, 2, 8).await;
    let ids: Vec<&str> = facts
        .iter()
        .map(|m| common::header(m, "ce_id").unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    assert!(eventually_empty(&running, "atoll_outbox").await);
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_later_output_never_overtakes_an_older_row_left_in_the_outbox() {
    let (running, dir) = start("order").await;
    // Page a's fact 1 was left in the outbox just now (a crash between the offset's commit
    // and the row's delete); the next record of page a comes.
    let mut tx = begin(&running).await;
    leave_row(&mut tx, "a", 1, None, now_ms()).await;
    tx.commit().await.unwrap();
    write(&running, "w-2", "a", 2, 0).await;
    let facts = read(&running, EVENTS, 3, 10).await;
    assert_eq!(lines(&facts), [1, 2], "the older row first, each once");
    assert!(eventually_empty(&running, "atoll_outbox").await);
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_from_before_dead_letter_topics_is_kept_not_retried_forever() {
    let (running, dir) = start("legacy").await;
    // Written before atoll recorded dead-letter topics, for a partition its topic lacks.
    let mut tx = begin(&running).await;
    let id = leave_row(&mut tx, "p", 1, Some(99), 0).await;
    tx.commit().await.unwrap();
    assert!(eventually_empty(&running, "atoll_outbox").await);
    let (kept,): (String,) = sqlx::query_as("SELECT ce_id FROM atoll_outbox_dead")
        .fetch_one(running.store().unwrap().pool())
        .await
        .unwrap();
    assert_eq!(kept, id, "kept in the store");
    running.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}
