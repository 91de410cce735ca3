//! The outbox's guarantees, each on SQLite and on a real PostgreSQL (a throwaway server per
//! test), with the embedded broker: one bad row stalls nothing and is dead-lettered with its
//! cause; the relay settles rows one by one; a row another publisher holds is not sent twice,
//! whatever the clocks say; a key's later output never overtakes an older row of that key left
//! in the outbox; a row that keeps failing shows on the readiness probe.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atoll::config::Config;
use atoll::envelope::{header_str as header, Outgoing};
use atoll::{event_service, handlers, App, Context, Event, HandlerResult, Tx};
use atoll_testkit::Postgres;
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

/// The store a test runs on.
enum Db {
    Sqlite,
    Postgres(Postgres),
}

impl Db {
    fn postgres() -> Self {
        Self::Postgres(Postgres::start())
    }

    /// The database's clock in milliseconds, in its SQL.
    fn now_ms(&self) -> &'static str {
        match self {
            Self::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Self::Postgres(_) => "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// A running journal service and its scratch directory.
struct Journalist {
    running: atoll::Running,
    dir: std::path::PathBuf,
    db: Db,
}

impl Journalist {
    /// The journal service on `db`, with the `lines` table, serving its probes.
    async fn start(db: Db, name: &str) -> Self {
        Self::start_with(db, name, "").await
    }

    /// [`start`](Self::start), with `url_query` after a PostgreSQL store's URL (connection
    /// options).
    async fn start_with(db: Db, name: &str, url_query: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "atoll-outbox-{name}-{}-{}",
            std::process::id(),
            matches!(db, Db::Sqlite)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("migrations")).unwrap();
        std::fs::write(
            dir.join("migrations/1_lines.sql"),
            "CREATE TABLE lines (page TEXT NOT NULL, line BIGINT NOT NULL);",
        )
        .unwrap();
        let mut config = Config::default();
        match &db {
            Db::Sqlite => config.store.path = dir.join("journal.db"),
            Db::Postgres(pg) => config.store.url = Some(pg.database(name) + url_query),
        }
        config.http.addr = Some("127.0.0.1:0".parse().unwrap());
        // Batched store transactions: records that wait are handled in batches.
        config.listener.batch_size = 100;
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
            .expect("start");
        Self { running, dir, db }
    }

    async fn stop(self) {
        self.running.shutdown().await;
        std::fs::remove_dir_all(self.dir).unwrap();
    }

    async fn write(&self, id: &str, page: &str, line: i64, memo: usize) {
        send_write(&self.running.client("test"), id, page, line, memo).await;
    }

    /// The records of `topic`: until `n` were read, or `secs` passed.
    async fn read(&self, topic: &str, n: usize, secs: u64) -> Vec<OwnedMessage> {
        let bootstrap = self.running.bootstrap_servers().to_owned();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            atoll_testkit::read_topic(&bootstrap, &topic, n, Duration::from_secs(secs))
        })
        .await
        .unwrap()
    }

    fn pool(&self) -> &sqlx::AnyPool {
        self.running.store().unwrap().pool()
    }

    async fn count(&self, table: &str) -> i64 {
        self.try_count(table).await.unwrap()
    }

    /// [`count`](Self::count), or the database's error: after a restart the test's own first
    /// queries may meet pooled connections the restart cut.
    async fn try_count(&self, table: &str) -> Result<i64, sqlx::Error> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(self.pool())
            .await?;
        Ok(n)
    }

    async fn eventually_empty(&self, table: &str) -> bool {
        for _ in 0..100 {
            if self.count(table).await == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// `GET <path>` of the service's HTTP server: the status and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.running.http_addr().unwrap());
        tokio::task::spawn_blocking(move || {
            let r = reqwest::blocking::get(url).unwrap();
            (r.status().as_u16(), r.text().unwrap())
        })
        .await
        .unwrap()
    }

    /// The first readiness answer with `status` within 10 s: its body.
    async fn ready_answer(&self, status: u16) -> Option<String> {
        for _ in 0..100 {
            let (s, body) = self.get("/health/ready").await;
            if s == status {
                return Some(body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn begin(&self) -> sqlx::Transaction<'static, sqlx::Any> {
        self.pool().begin().await.unwrap()
    }
}

/// Sends the journal command to write `page`'s `line` (with a memo of `memo` bytes), with
/// `ce_id` `id`.
async fn send_write(client: &atoll::Client, id: &str, page: &str, line: i64, memo: usize) {
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
    client
        .send_raw(
            "acme.test.journal.commands",
            Some(page.as_bytes()),
            &payload,
            headers,
        )
        .await
        .unwrap();
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

fn ce_ids(records: &[OwnedMessage]) -> Vec<&str> {
    records
        .iter()
        .map(|m| header(m, "ce_id").unwrap())
        .collect()
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

/// Writes an outbox row in `tx` as a process would have left it, with the columns every schema
/// version has: `page`'s fact number `line`, to `partition` (none: the partitioner's), created
/// at `created_at`; its `ce_id`. Callers that change the row further do so in the same
/// transaction, before the relay may see it.
async fn leave_row(
    tx: &mut sqlx::AnyConnection,
    page: &str,
    line: i64,
    partition: Option<i32>,
    created_at: i64,
) -> String {
    let (headers, id) = Outgoing::new(Written::ce_type(), "left").headers();
    let payload = serde_json::to_vec(&Written {
        page: page.into(),
        line,
        memo: String::new(),
    })
    .unwrap();
    sqlx::query(
        "INSERT INTO atoll_outbox (topic, record_partition, record_key, payload, headers, ce_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(EVENTS)
    .bind(partition)
    .bind(page.as_bytes())
    .bind(payload)
    .bind(encoded(&headers))
    .bind(&id)
    .bind(created_at)
    .execute(&mut *tx)
    .await
    .unwrap();
    id
}

/// Marks the rows in `tx` that match `which` (SQL) as claimed by another process (4242), its
/// lease ending `lease_ms` from the database's now (below zero: it ran out).
async fn held_elsewhere(tx: &mut sqlx::AnyConnection, db: &Db, lease_ms: i64, which: &str) {
    let hold = format!(
        "UPDATE atoll_outbox SET claimed_by = 4242, available_at = {} + $1 WHERE {which}",
        db.now_ms()
    );
    sqlx::query(sqlx::AssertSqlSafe(hold))
        .bind(lease_ms)
        .execute(&mut *tx)
        .await
        .unwrap();
}

/// The lease of the rows [`held_elsewhere`] claimed runs out now (its holder died): the
/// tests hold rows for long enough that the relay leaves them alone whatever the machine's
/// load, and end the hold themselves.
async fn lease_lapses(j: &Journalist) {
    let lapse = format!(
        "UPDATE atoll_outbox SET available_at = {} - 1 WHERE claimed_by = 4242",
        j.db.now_ms()
    );
    sqlx::query(sqlx::AssertSqlSafe(lapse))
        .execute(j.pool())
        .await
        .unwrap();
}

/// Names the journal's DLQ on the rows in `tx` (left rows name none).
async fn name_dead_letter_topic(tx: &mut sqlx::AnyConnection) {
    sqlx::query("UPDATE atoll_outbox SET dead_letter_topic = $1")
        .bind(DLQ)
        .execute(&mut *tx)
        .await
        .unwrap();
}

async fn too_large_output(db: Db) {
    let j = Journalist::start(db, "large").await;
    j.write("w-1", "a", 1, MAX_BYTES * 2).await;
    j.write("w-2", "a", 2, 0).await;

    // The next record's fact goes out: the first one's does not hold the partition.
    let facts = j.read(EVENTS, 1, 20).await;
    assert_eq!(lines(&facts), [2], "the publishable fact, alone");
    assert_eq!(j.count("lines").await, 2, "both records were handled");

    // The unpublishable fact is dead-lettered with its cause, as a pointer (it is too large
    // for the DLQ too), and kept in the store.
    let dead = j.read(DLQ, 1, 20).await;
    assert_eq!(dead.len(), 1, "one dead letter");
    let h = |name| header(&dead[0], name).map(str::to_owned);
    assert_eq!(h("atoll_dlq_error_kind").as_deref(), Some("publish"));
    assert_eq!(
        h("atoll_dlq_listener").as_deref(),
        Some("acme.test.journal-write")
    );
    assert_eq!(h("atoll_dlq_original_topic").as_deref(), Some(EVENTS));
    let error = h("atoll_dlq_error").unwrap();
    assert!(
        error.contains("too large") || error.contains("MessageSizeTooLarge"),
        "{error}"
    );
    assert!(error.contains("atoll_outbox_dead"), "{error}");
    assert!(h("atoll_dlq_payload_omitted").is_some());
    assert!(j.eventually_empty("atoll_outbox").await);
    assert_eq!(j.count("atoll_outbox_dead").await, 1);
    let (_, metrics) = j.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "atoll_outbox_dead_lettered_total 1"),
        "{metrics}"
    );
    j.stop().await;
}

async fn rows_settled_each_on_its_own(db: Db) {
    let j = Journalist::start(db, "independent").await;
    // Three rows left behind, the oldest for a partition the topic does not have.
    let mut tx = j.begin().await;
    leave_row(&mut tx, "p", 1, Some(99), 0).await;
    let q = leave_row(&mut tx, "q", 2, None, 0).await;
    let r = leave_row(&mut tx, "r", 3, None, 0).await;
    name_dead_letter_topic(&mut tx).await;
    tx.commit().await.unwrap();

    // The good rows go out, once each, although the first one fails; a further wait would
    // show a repeat.
    let facts = j.read(EVENTS, 3, 6).await;
    assert_eq!(ce_ids(&facts), [q.as_str(), r.as_str()]);

    let dead = j.read(DLQ, 1, 20).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "atoll_dlq_error_kind"), Some("publish"));
    assert_eq!(
        header(&dead[0], "atoll_dlq_listener"),
        Some("outbox"),
        "a row written outside listeners"
    );
    assert_eq!(lines(&dead), [1], "with its payload");
    assert!(j.eventually_empty("atoll_outbox").await);
    j.stop().await;
}

async fn failing_row_on_the_readiness_probe(db: Db) {
    let j = Journalist::start(db, "unready").await;
    assert!(j.ready_answer(200).await.is_some(), "ready at first");
    // A row whose headers do not decode (its bytes damaged): neither the record's fault as far
    // as anyone can tell nor an outage, so it is tried ten times over minutes.
    let mut tx = j.begin().await;
    leave_row(&mut tx, "p", 1, None, 0).await;
    name_dead_letter_topic(&mut tx).await;
    sqlx::query("UPDATE atoll_outbox SET headers = $1")
        .bind(vec![0_u8, 9, b'x'])
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let body = j
        .ready_answer(503)
        .await
        .expect("not ready while the row fails");
    assert!(
        body.contains("outbox row") && body.contains(EVENTS) && body.contains("do not decode"),
        "{body}"
    );
    // Once it is dealt with (an operator deletes it), ready again.
    sqlx::query("DELETE FROM atoll_outbox")
        .execute(j.pool())
        .await
        .unwrap();
    assert!(j.ready_answer(200).await.is_some(), "ready again");
    j.stop().await;
}

async fn held_row_not_sent_twice(db: Db) {
    let j = Journalist::start(db, "held").await;
    // A row another process claimed for a minute more of the database's clock and is
    // sending; its writer's clock was far behind, so by any comparison of clocks it is old.
    let mut tx = j.begin().await;
    let id = leave_row(&mut tx, "h", 1, None, 0).await;
    held_elsewhere(&mut tx, &j.db, 60_000, "TRUE").await;
    tx.commit().await.unwrap();
    // A later output of its key waits behind it.
    j.write("w-2", "h", 2, 0).await;
    let early = j.read(EVENTS, 1, 2).await;
    assert!(early.is_empty(), "the relay left the held row alone");
    // The other process died: its lease runs out, and the relay takes the row over, once,
    // then the later output.
    lease_lapses(&j).await;
    let facts = j.read(EVENTS, 3, 8).await;
    assert_eq!(lines(&facts), [1, 2]);
    assert_eq!(ce_ids(&facts)[0], id);
    assert!(j.eventually_empty("atoll_outbox").await);
    j.stop().await;
}

async fn later_output_behind_a_left_row(db: Db) {
    let j = Journalist::start(db, "order").await;
    // Page a's fact 1 was left in the outbox just now (a crash between the offset's commit
    // and the row's delete); the next record of page a comes.
    let mut tx = j.begin().await;
    leave_row(&mut tx, "a", 1, None, now_ms()).await;
    tx.commit().await.unwrap();
    j.write("w-2", "a", 2, 0).await;
    let facts = j.read(EVENTS, 3, 10).await;
    assert_eq!(lines(&facts), [1, 2], "the older row first, each once");
    assert!(j.eventually_empty("atoll_outbox").await);
    j.stop().await;
}

async fn given_back_row_behind_newer_held_ones(db: Db) {
    let j = Journalist::start(db, "behind").await;
    // Page n's fact 1 was given back to the relays (its publish failed) while its fact 2, sent
    // after it, is still held by another process's relay for a minute more.
    let mut tx = j.begin().await;
    leave_row(&mut tx, "n", 1, None, now_ms()).await;
    leave_row(&mut tx, "n", 2, None, now_ms()).await;
    held_elsewhere(
        &mut tx,
        &j.db,
        60_000,
        "id = (SELECT MAX(id) FROM atoll_outbox)",
    )
    .await;
    tx.commit().await.unwrap();
    let early = j.read(EVENTS, 1, 5).await;
    assert!(
        early.is_empty(),
        "fact 1 waits while fact 2 of its key is on its way elsewhere: {:?}",
        lines(&early)
    );
    // The other process died: its lease runs out, and this relay sends the key, in order.
    lease_lapses(&j).await;
    let facts = j.read(EVENTS, 3, 15).await;
    assert_eq!(lines(&facts), [1, 2]);
    assert!(j.eventually_empty("atoll_outbox").await);
    j.stop().await;
}

async fn later_output_behind_a_crashed_publishers_row(db: Db) {
    let j = Journalist::start(db, "crashed").await;
    // Page c's fact 1 was claimed by a process that died before sending it: its lease ran out
    // just now. The next record of page c takes it over (or the relay does, if first).
    let mut tx = j.begin().await;
    leave_row(&mut tx, "c", 1, None, now_ms()).await;
    held_elsewhere(&mut tx, &j.db, -1, "TRUE").await;
    tx.commit().await.unwrap();
    j.write("w-2", "c", 2, 0).await;
    j.write("w-3", "c", 3, 0).await;
    let facts = j.read(EVENTS, 4, 10).await;
    assert_eq!(lines(&facts), [1, 2, 3], "the older row first, each once");
    assert!(j.eventually_empty("atoll_outbox").await);
    j.stop().await;
}

async fn row_without_dead_letter_topic_kept(db: Db) {
    let j = Journalist::start(db, "legacy").await;
    // Written before atoll recorded dead-letter topics, for a partition its topic lacks.
    let mut tx = j.begin().await;
    let id = leave_row(&mut tx, "p", 1, Some(99), 0).await;
    tx.commit().await.unwrap();
    assert!(
        j.eventually_empty("atoll_outbox").await,
        "not retried forever"
    );
    let (kept,): (String,) = sqlx::query_as("SELECT ce_id FROM atoll_outbox_dead")
        .fetch_one(j.pool())
        .await
        .unwrap();
    assert_eq!(kept, id, "kept in the store");
    j.stop().await;
}

/// One test per scenario and database.
macro_rules! on_both {
    ($($scenario:ident: $sqlite:ident, $postgres:ident;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario(Db::Sqlite).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            $scenario(Db::postgres()).await;
        }
    )+};
}

on_both! {
    too_large_output:
        an_output_too_large_to_publish_is_dead_lettered_and_stalls_nothing_sqlite,
        an_output_too_large_to_publish_is_dead_lettered_and_stalls_nothing_postgres;
    rows_settled_each_on_its_own:
        the_relay_settles_each_row_on_its_own_sqlite,
        the_relay_settles_each_row_on_its_own_postgres;
    failing_row_on_the_readiness_probe:
        a_row_that_keeps_failing_shows_on_the_readiness_probe_sqlite,
        a_row_that_keeps_failing_shows_on_the_readiness_probe_postgres;
    held_row_not_sent_twice:
        a_row_another_publisher_holds_is_not_sent_twice_whatever_the_clocks_say_sqlite,
        a_row_another_publisher_holds_is_not_sent_twice_whatever_the_clocks_say_postgres;
    later_output_behind_a_left_row:
        a_keys_later_output_never_overtakes_an_older_row_left_in_the_outbox_sqlite,
        a_keys_later_output_never_overtakes_an_older_row_left_in_the_outbox_postgres;
    given_back_row_behind_newer_held_ones:
        a_row_given_back_waits_while_a_newer_row_of_its_key_is_held_sqlite,
        a_row_given_back_waits_while_a_newer_row_of_its_key_is_held_postgres;
    later_output_behind_a_crashed_publishers_row:
        a_row_a_dead_publisher_held_goes_out_before_its_keys_next_sqlite,
        a_row_a_dead_publisher_held_goes_out_before_its_keys_next_postgres;
    row_without_dead_letter_topic_kept:
        a_row_from_before_dead_letter_topics_is_kept_not_retried_forever_sqlite,
        a_row_from_before_dead_letter_topics_is_kept_not_retried_forever_postgres;
}

/// On PostgreSQL, a batch's lookups find rows by their keys and ids whatever the table's
/// statistics say. atoll's own vacuum runs once a process deleted many rows, often when the
/// outbox is nearly empty: it leaves statistics of an empty table, and the table may hold
/// 20,000 rows a moment later. With them the planner read every index entry of the topic for a
/// transaction's route (its keys only filtered the entries) and joined the take-over and the
/// relay's claim with a walk of the whole primary key: in the benchmark 0.5 to 2 s per batch,
/// its row locks held meanwhile. Read from the plans `auto_explain` logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batchs_lookups_find_rows_by_key_and_id_whatever_the_statistics_say() {
    let plans = "?options=-c%20session_preload_libraries%3Dauto_explain\
                 %20-c%20auto_explain.log_min_duration%3D0";
    let j = Journalist::start_with(Db::postgres(), "plans", plans).await;
    let pool = j.pool();
    let other_rows = |lease_ms: i64| {
        format!(
            "INSERT INTO atoll_outbox (topic, record_key, payload, headers, ce_id, created_at,
                 claimed_by, available_at)
             SELECT '{EVENTS}', CAST('z' || i AS BYTEA), CAST('{{}}' AS BYTEA), CAST('' AS BYTEA),
                 'z' || i, 0, 4242, {} + {lease_ms}
             FROM generate_series(1, 20000) AS i",
            j.db.now_ms()
        )
    };
    // 20,000 rows of other keys held by another process; then as after atoll's vacuum of an
    // emptied outbox: statistics of an empty table (autovacuum off, so that none corrects them
    // during the test), and 20,000 rows again.
    for sql in [
        "ALTER TABLE atoll_outbox SET (autovacuum_enabled = false)".to_owned(),
        other_rows(600_000),
        "DELETE FROM atoll_outbox".to_owned(),
        "VACUUM atoll_outbox".to_owned(),
        other_rows(600_000),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap();
    }
    // A row of a page a dead publisher left (free: the next transaction of the page takes it
    // over, unless the relay, which looks every second, sends it first), and that next record;
    // again with another page until a take-over was logged.
    let Db::Postgres(pg) = &j.db else {
        unreachable!("started on PostgreSQL")
    };
    let take_over = "RETURNING id, topic, record_partition, record_key, payload, headers, ce_id";
    for attempt in 0..5 {
        let page = format!("p{attempt}");
        let mut tx = j.begin().await;
        leave_row(&mut tx, &page, 1, None, now_ms()).await;
        let left = format!("record_key = CAST('{page}' AS BYTEA)");
        held_elsewhere(&mut tx, &j.db, -1, &left).await;
        tx.commit().await.unwrap();
        j.write(&format!("w-{attempt}"), &page, 2, 0).await;
        let facts = j.read(EVENTS, 2 * attempt + 3, 10).await;
        let of_page: Vec<_> = facts
            .into_iter()
            .filter(|m| m.key() == Some(page.as_bytes()))
            .collect();
        assert_eq!(lines(&of_page), [1, 2], "each once, in order");
        if pg.log().contains(take_over) {
            break;
        }
    }
    let log = pg.log();
    // Each logged plan: its query's text, then the plan.
    let plans: Vec<&str> = log.split("LOG:  duration: ").skip(1).collect();
    let of = |marker: &str| -> Vec<&str> {
        plans
            .iter()
            .copied()
            .filter(|p| p.contains(marker))
            .collect()
    };

    let routes = of("END AS free");
    assert!(!routes.is_empty(), "no route lookup was logged:\n{log}");
    for plan in routes {
        assert!(
            conditions(plan).iter().any(|c| c.contains("record_key =")),
            "a route lookup reads entries of other keys:\n{plan}"
        );
    }
    // The take-overs and the relay's claims: their rows looked up in the primary key by the
    // ids their subquery chose (a parameter; not the statement's own list of ids, which the
    // subquery alone reads).
    let looked_up_by_ids = |plan: &str| {
        conditions(plan).iter().any(|c| {
            c.contains("(id = ANY (") && !c.contains("string_to_array") && !c.contains("'{")
        })
    };
    let take_overs = of(take_over);
    let claims = of("dead_letter_topic, source");
    assert!(!take_overs.is_empty(), "no take-over in 5 tries:\n{log}");
    assert!(
        !claims.is_empty(),
        "no claim of the relay was logged:\n{log}"
    );
    for plan in take_overs.into_iter().chain(claims) {
        assert!(
            looked_up_by_ids(plan),
            "rows not looked up by their ids:\n{plan}"
        );
    }
    j.stop().await;
}

/// The index conditions of a plan `auto_explain` logged.
fn conditions(plan: &str) -> Vec<&str> {
    plan.lines().filter(|l| l.contains("Index Cond:")).collect()
}

/// PostgreSQL restarted (`pg_ctl -m fast`: every connection cut) while records flow through a
/// transactional listener that allows one attempt: the outage is waited out. Every record is
/// handled once, every fact published, nothing dead-lettered, each page's facts in order, the
/// outbox empty at the end; what piled up during the outage is handled in batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_run_is_waited_out() {
    const RECORDS: i64 = 300;
    const PAGES: i64 = 6;
    let j = Journalist::start(Db::postgres(), "failover").await;
    let Db::Postgres(pg) = &j.db else {
        unreachable!()
    };
    // Records keep coming, 5 ms apart, while the database is away.
    let client = j.running.client("test");
    let writer = tokio::spawn(async move {
        for n in 0..RECORDS {
            send_write(&client, &format!("w-{n}"), &format!("p{}", n % PAGES), n, 0).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    while j.count("lines").await < RECORDS / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| {
        pg.stop();
        std::thread::sleep(Duration::from_millis(500));
        pg.restart();
    });
    writer.await.unwrap();
    let mut handled = 0;
    for _ in 0..600 {
        // The restart cut the pool's connections: a query on one fails once (atoll's own
        // statements are retried; this is the test looking).
        handled = j.try_count("lines").await.unwrap_or(handled);
        if handled >= RECORDS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(handled, RECORDS, "every record handled, once");
    let facts = j.read(EVENTS, RECORDS as usize, 60).await;
    let mut ids = ce_ids(&facts);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), RECORDS as usize, "every fact published");
    for page in 0..PAGES {
        let mut seen = std::collections::HashSet::new();
        let first: Vec<i64> = facts
            .iter()
            .filter(|m| m.key() == Some(format!("p{page}").as_bytes()))
            .map(|m| lines(std::slice::from_ref(m))[0])
            .filter(|line| seen.insert(*line))
            .collect();
        assert!(
            first.windows(2).all(|w| w[0] < w[1]),
            "page p{page}'s facts in order: {first:?}"
        );
    }
    assert!(j.read(DLQ, 1, 2).await.is_empty(), "nothing dead-lettered");
    let stats = j.running.stats();
    assert_eq!(stats[0].dead_lettered, 0, "{stats:?}");
    // Attempts that met the outage did not spend the budget (the pool may also wait it out
    // before any attempt fails: how many met it varies).
    let (_, metrics) = j.get("/metrics").await;
    let unavailable = metrics
        .lines()
        .find(|l| {
            l.starts_with("atoll_records_failed_total{") && l.contains("kind=\"unavailable\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    println!("attempts that met the outage: {unavailable}");
    // What piled up meanwhile was handled in batches (the batch path's SQL, on PostgreSQL).
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("atoll_batch_records_count{") && !l.ends_with(" 0")),
        "batches:\n{metrics}"
    );
    assert!(
        j.eventually_empty("atoll_outbox").await,
        "the outbox emptied"
    );
    j.stop().await;
}
