//! The relay: publishes the outbox rows no one is sending (left by a crash, given back after a
//! failed publish, or queued behind an older row of their key), each row on its own.
//!
//! A pass claims up to a batch of free rows (one claimer at a time: on PostgreSQL under an
//! advisory lock, on SQLite under the file's one writer), skipping every row of a key with
//! another row claimed or waiting out a failure. It sends them in order, stopping a key at
//! its first refused row, and settles each row by what the broker answered: acknowledged
//! rows are deleted, failed ones are tried again later or dead-lettered as [`verdict`] says.
//! One bad row never keeps the others from being published.

use rdkafka::message::OwnedMessage;
use rdkafka::Timestamp;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::verdict::{self, Cause, Verdict};
use super::{decode_headers, owned_headers, LEASE_MS};
use crate::contract::dead_letter::{DeadLetterKind, Failure};
use crate::error::{store_error, Error, Result};
use crate::ops::metrics::OutboxMetrics;
use crate::produce::{Pending, Producer};
use crate::store::{Backend, Store};

/// The key of the advisory lock relays claim under on PostgreSQL ("outbox" in ASCII).
const CLAIM_LOCK: i64 = 0x6f_75_74_62_6f_78;

/// What one pass of the relay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Rows claimed.
    pub(crate) claimed: usize,
    /// Rows the broker acknowledged.
    pub(crate) published: usize,
    /// Rows that failed and wait to be tried again.
    pub(crate) failed: usize,
    /// Rows dead-lettered.
    pub(crate) dead_lettered: usize,
}

/// An outbox row as the relay claimed it.
#[derive(Debug)]
struct Claimed {
    id: i64,
    topic: String,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<u8>,
    /// Failed tries before this one.
    attempts: u32,
    dead_letter_topic: Option<String>,
    source: Option<String>,
}

impl Claimed {
    fn of(row: &AnyRow) -> Result<Self> {
        let get = store_error("reading an outbox row");
        let attempts: i32 = row.try_get("attempts").map_err(&get)?;
        Ok(Self {
            id: row.try_get("id").map_err(&get)?,
            topic: row.try_get("topic").map_err(&get)?,
            partition: row.try_get("record_partition").map_err(&get)?,
            key: row.try_get("record_key").map_err(&get)?,
            payload: row.try_get("payload").map_err(&get)?,
            headers: row.try_get("headers").map_err(&get)?,
            attempts: u32::try_from(attempts).unwrap_or(0),
            dead_letter_topic: row.try_get("dead_letter_topic").map_err(&get)?,
            source: row.try_get("source").map_err(&get)?,
        })
    }

    /// The row as the record it was to be: the dead letter's original.
    fn message(&self) -> OwnedMessage {
        let headers = decode_headers(&self.headers).unwrap_or_default();
        OwnedMessage::new(
            Some(self.payload.clone()),
            self.key.clone(),
            self.topic.clone(),
            Timestamp::NotAvailable,
            self.partition.unwrap_or(-1),
            // Never written: no offset.
            -1,
            Some(owned_headers(&headers)),
        )
    }
}

/// One relay pass: claims up to `batch` free rows, publishes them and settles each.
pub(crate) async fn relay_once(
    store: &Store,
    producer: &Producer,
    batch: i64,
    metrics: &OutboxMetrics,
) -> Result<Pass> {
    let claimed_at = std::time::Instant::now();
    let rows = claim(store, batch).await?;
    let mut pass = Pass {
        claimed: rows.len(),
        ..Pass::default()
    };
    if rows.is_empty() {
        return Ok(pass);
    }
    let inflight = store.inflight();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    inflight.sending(&ids, claimed_at);
    // A key whose row was refused sends nothing after it in this pass.
    let mut stopped: Vec<(&str, &[u8])> = Vec::new();
    let mut sent: Vec<(&Claimed, Result<Pending>)> = Vec::with_capacity(rows.len());
    let mut held = Vec::new();
    for row in &rows {
        let key = row.key.as_deref().map(|k| (row.topic.as_str(), k));
        if key.is_some_and(|k| stopped.contains(&k)) {
            held.push(row.id);
            continue;
        }
        let result = send(producer, row).await;
        match (&result, key) {
            (Err(_), Some(k)) => stopped.push(k),
            (Ok(_), _) => inflight.handed(row.id),
            (Err(_), None) => {}
        }
        sent.push((row, result));
    }
    inflight.give_back(held);
    let mut acked = Vec::with_capacity(sent.len());
    for (row, result) in sent {
        let answer = match result {
            Ok(pending) => pending.acked().await,
            Err(e) => Err(e),
        };
        let Err(e) = answer else {
            acked.push(row.id);
            continue;
        };
        // Before anything else: rows of its key written from now on wait for it.
        inflight.not_handed(row.id);
        metrics.failed.inc();
        // Its lease is renewed while it is dead-lettered or its failure recorded.
        match settle_failure(store, producer, row, &e).await {
            Ok(Verdict::DeadLetter) => {
                metrics.dead_lettered.inc();
                pass.dead_lettered += 1;
                inflight.forget(&[row.id]);
            }
            Ok(Verdict::Retry(_)) => {
                pass.failed += 1;
                inflight.forget(&[row.id]);
            }
            Err(db) => {
                // Not recorded: given back without a backoff, tried again soon.
                tracing::warn!(row = row.id, error = %db, "recording an outbox row's failure failed");
                pass.failed += 1;
                inflight.give_back(vec![row.id]);
            }
        }
    }
    pass.published = acked.len();
    metrics.relayed.inc_by(acked.len() as u64);
    inflight.acked(acked);
    Ok(pass)
}

/// Sends a claimed row as it was written.
async fn send(producer: &Producer, row: &Claimed) -> Result<Pending> {
    let headers = decode_headers(&row.headers).ok_or_else(|| Error::Store {
        what: format!("outbox row {}", row.id),
        source: sqlx::Error::Decode("its headers do not decode".into()),
    })?;
    producer
        .send_to(
            &row.topic,
            row.partition,
            row.key.as_deref(),
            &row.payload,
            owned_headers(&headers),
        )
        .await
}

/// Claims up to `batch` free rows for this process's relay, oldest first, none of a key with
/// another row held: by a publisher, or waiting out a failure. Not only an older row: a row
/// given back after a failure (or whose lease ran out) while newer rows of its key are on
/// their way must wait until they are gone, or two relays would send the key at once.
///
/// The held rows are joined with the free ones as sets, not looked up per free row: with
/// thousands of rows free and thousands held (a backlog at thousands of records a second)
/// PostgreSQL, whose statistics said a few rows were held, planned a nested loop over every
/// pair, and one claim ran for minutes. On PostgreSQL the claim's transaction turns nested
/// loops off, which leaves a hash (or merge) anti-join; SQLite looks each key up in its index.
/// The clock is read once for every row's "is it held?" (see [`crate::store::Backend::now_ms_sql`]); the
/// leases it writes end [`LEASE_MS`] from when the rows are written. The outer `WHERE` asks
/// again whether each row is free: PostgreSQL checks that anew on a row a committing
/// transaction took over ([`super::route`]) while this claim waited for it, and skips it.
async fn claim(store: &Store, batch: i64) -> Result<Vec<Claimed>> {
    let backend = store.backend();
    let (now, clock) = (backend.now_ms_sql(), backend.clock_ms_sql());
    let free = format!(
        "SELECT o.id FROM atoll_outbox o
         WHERE o.available_at <= {now}
         AND NOT EXISTS (
             SELECT 1 FROM atoll_outbox p
             WHERE p.topic = o.topic AND p.record_key = o.record_key
             AND p.available_at > {now})
         ORDER BY o.id LIMIT $3"
    );
    let sql = format!(
        "UPDATE atoll_outbox SET claimed_by = $1, available_at = {clock} + $2
         WHERE {} AND available_at <= {now}
         RETURNING id, topic, record_partition, record_key, payload, headers, attempts,
             dead_letter_topic, source",
        backend.id_among(&free)
    );
    let query = sqlx::query(AssertSqlSafe(sql))
        .bind(store.inflight().relay)
        .bind(LEASE_MS)
        .bind(batch);
    let failed = store_error("claiming outbox rows");
    let rows = match backend {
        Backend::Postgres => {
            let mut tx = store.pool().begin().await.map_err(&failed)?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CLAIM_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(&failed)?;
            // The held rows hashed once (or merged), never looked up per free row: see above.
            sqlx::query("SET LOCAL enable_nestloop = off")
                .execute(&mut *tx)
                .await
                .map_err(&failed)?;
            let rows = query.fetch_all(&mut *tx).await.map_err(&failed)?;
            tx.commit().await.map_err(&failed)?;
            rows
        }
        Backend::Sqlite => query.fetch_all(store.pool()).await.map_err(&failed)?,
    };
    let mut claimed = rows.iter().map(Claimed::of).collect::<Result<Vec<_>>>()?;
    claimed.sort_by_key(|r| r.id);
    Ok(claimed)
}

/// Settles a row whose publish failed with `error`: tried again after a backoff, or
/// dead-lettered. A dead letter that cannot be written leaves the row to be tried again.
async fn settle_failure(
    store: &Store,
    producer: &Producer,
    row: &Claimed,
    error: &Error,
) -> Result<Verdict> {
    let attempts = row.attempts + 1;
    let cause = Cause::of(error);
    let mut verdict = verdict::verdict(cause, attempts, &verdict::backoff());
    let mut why = error.to_string();
    if verdict == Verdict::DeadLetter {
        match dead_letter(store, producer, row, &why, attempts).await {
            Ok(()) => {
                tracing::error!(
                    row = row.id, topic = %row.topic, attempts, error = %why,
                    "an outbox row could not be published; it was dead-lettered"
                );
                return Ok(verdict);
            }
            Err(e) => {
                why = format!("{why}; dead-lettering it failed: {e}");
                verdict = Verdict::Retry(verdict::backoff().delay(attempts));
            }
        }
    }
    let Verdict::Retry(after) = verdict else {
        unreachable!("a dead letter returned above")
    };
    tracing::warn!(
        row = row.id, topic = %row.topic, attempts, error = %why,
        "publishing an outbox row failed; trying again in {after:?}"
    );
    let backend = store.backend();
    let sql = format!(
        "UPDATE atoll_outbox SET claimed_by = NULL, attempts = $2, last_error = $3,
             available_at = {} + $4
         WHERE id = $1 AND claimed_by = $5",
        backend.now_ms_sql()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(row.id)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .bind(&why)
        .bind(i64::try_from(after.as_millis()).unwrap_or(i64::MAX))
        .bind(store.inflight().relay)
        .execute(store.pool())
        .await
        .map_err(store_error("recording an outbox row's failure"))?;
    Ok(verdict)
}

/// Writes `row` to its service's dead-letter topic (with its payload, or, when that is too
/// large, a pointer naming where it is kept), then moves it to `atoll_outbox_dead` (a row that
/// names no dead-letter topic is moved alone).
async fn dead_letter(
    store: &Store,
    producer: &Producer,
    row: &Claimed,
    error: &str,
    attempts: u32,
) -> Result<()> {
    let Some(topic) = row.dead_letter_topic.as_deref() else {
        // Written before atoll recorded one: kept in the store alone.
        tracing::error!(
            row = row.id, topic = %row.topic, error,
            "an outbox row written before atoll recorded dead-letter topics could never be \
             published; it is kept in atoll_outbox_dead"
        );
        return bury(store, row.id, error).await;
    };
    let msg = row.message();
    // The record's group (its source is `<group> <id>`), or the outbox outside listeners.
    let listener = row
        .source
        .as_deref()
        .and_then(|s| s.split(' ').next())
        .unwrap_or("outbox");
    let failure = Failure {
        kind: DeadLetterKind::Publish,
        error: error.to_owned(),
        attempts,
    };
    let key = row.key.as_deref();
    let whole = match producer
        .send(topic, key, &row.payload, failure.headers(&msg, listener))
        .await
    {
        Ok(pending) => pending.acked().await,
        Err(e) => Err(e),
    };
    match whole {
        Ok(()) => {}
        Err(e) if e.is_too_large() => {
            let failure = Failure {
                error: format!(
                    "{error}; the record is kept in the store's table atoll_outbox_dead, id {}",
                    row.id
                ),
                ..failure
            };
            let (payload, headers) = failure.pointer(&msg, listener);
            producer
                .send(topic, key, &payload, headers)
                .await?
                .acked()
                .await?;
        }
        Err(e) => return Err(e),
    }
    bury(store, row.id, error).await
}

/// Moves row `id` from the outbox to `atoll_outbox_dead`, with why it was given up.
async fn bury(store: &Store, id: i64, error: &str) -> Result<()> {
    let failed = store_error("moving a dead-lettered outbox row");
    let mut tx = store.pool().begin().await.map_err(&failed)?;
    let sql = format!(
        "INSERT INTO atoll_outbox_dead (id, topic, record_partition, record_key, payload, headers,
             ce_id, created_at, source, attempts, error, failed_at)
         SELECT id, topic, record_partition, record_key, payload, headers, ce_id, created_at,
             source, attempts + 1, $2, {}
         FROM atoll_outbox WHERE id = $1",
        store.backend().now_ms_sql()
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .bind(error)
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
    sqlx::query("DELETE FROM atoll_outbox WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
    tx.commit().await.map_err(&failed)
}

/// Why the outbox keeps the process from being ready: the rows that keep failing (`None` when
/// none does).
pub(crate) async fn failing(store: &Store) -> Result<Option<String>> {
    let rows = sqlx::query(
        "SELECT id, topic, attempts, last_error FROM atoll_outbox WHERE attempts > 0
         ORDER BY id LIMIT 3",
    )
    .fetch_all(store.pool())
    .await
    .map_err(store_error("reading the outbox"))?;
    let get = store_error("reading an outbox row");
    let mut why = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id").map_err(&get)?;
        let topic: String = row.try_get("topic").map_err(&get)?;
        let attempts: i32 = row.try_get("attempts").map_err(&get)?;
        let error: Option<String> = row.try_get("last_error").map_err(&get)?;
        why.push(format!(
            "outbox row {id} to `{topic}` failed {attempts} time(s): {}",
            error.as_deref().unwrap_or("(no error recorded)")
        ));
    }
    Ok((!why.is_empty()).then(|| format!("{}; the later rows of their keys wait", why.join("; "))))
}
