//! The outbox: records a transactional handler produced, written in its transaction and
//! published after the commit.
//!
//! What it guarantees, under kills, failed acknowledgements and several replicas on one
//! database:
//! - **every row is published at least once**: a row is deleted only once the broker
//!   acknowledged it; a row published twice (a kill between the acknowledgement and the delete)
//!   keeps its `ce_id`, so downstream inboxes drop the repeat;
//! - **no two publishers send a row at the same time**: a publisher sends only rows it
//!   claimed, and a claim is a lease in the *database's* clock (no clock of a process is
//!   compared with another's). The commit path claims its rows in the transaction that writes
//!   them and publishes them from memory; [`inflight`] renews the leases of rows on their way
//!   and deletes or gives back the rows once the broker answered; the relay ([`relay`]) claims
//!   free rows only, one claimer at a time;
//! - **rows of one key leave in the order they were written**: a transaction whose key has a
//!   free older row in the outbox claims it and sends it first; one whose key has an older
//!   row held elsewhere leaves its rows to the relay ([`route`]), and the relay claims no row of a key while another one is held by
//!   a publisher or waiting out a failure (reading the clock once per claim). (Two records of one key handled in one
//!   partition commit in order; outputs of one key written from different partitions at once
//!   have no order to keep.) One case is left: when the broker fails a row after it accepted
//!   a later row of the same key from the same producer, the failed row goes out after it;
//!   the idempotent producer makes that rare (its retries keep order), not impossible;
//! - **one bad row stalls nothing**: rows are settled one by one, and a row that can never be
//!   published (too large, a partition its topic lacks, refused for minutes) is dead-lettered
//!   with its cause ([`verdict`]), counted, and shown on the readiness probe while it is
//!   retried.
//!
//! The design follows the transactional outbox as Debezium and MassTransit run it (the row is
//! the truth, a relay polls it), with two differences: rows are first sent from memory by the
//! process that wrote them (no read of the table on the hot path), and claims are leases
//! rather than row locks held across the broker's round trip, which SQLite (one writer for
//! the whole file) could not afford.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use sqlx::AssertSqlSafe;

pub(crate) mod inflight;
pub(crate) mod relay;
pub(crate) mod vacuum;
pub(crate) mod verdict;

use super::driver::{on_conn, Conn};
use super::{Backend, Store};
use crate::error::{store_error, Error, Result};
use crate::produce::{Pending, Producer};
use inflight::InFlight;

/// A record waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxRecord {
    pub(crate) topic: String,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Vec<u8>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
    pub(crate) ce_id: String,
}

/// A record's columns as atoll's tables keep it: topic, partition, key, payload, the headers
/// as [`encode_headers`] wrote them, and `ce_id`.
pub(crate) type Stored = (
    String,
    Option<i32>,
    Option<Vec<u8>>,
    Vec<u8>,
    Vec<u8>,
    String,
);

impl OutboxRecord {
    /// The record `columns` hold; `None` when its headers do not decode.
    pub(crate) fn stored((topic, partition, key, payload, headers, ce_id): Stored) -> Option<Self> {
        Some(Self {
            topic,
            partition,
            key,
            payload,
            headers: decode_headers(&headers)?,
            ce_id,
        })
    }
}

/// `headers` as bytes: per header, the key's length (u16), the key, the value's length (i32,
/// -1 for none) and the value, big-endian.
pub(crate) fn encode_headers(headers: &[(String, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in headers {
        let key_len = u16::try_from(key.len()).expect("header keys are short");
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(key.as_bytes());
        match value {
            Some(v) => {
                let len = i32::try_from(v.len()).expect("header values fit i32");
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    out
}

/// The headers [`encode_headers`] wrote; `None` when the bytes are not such headers.
pub(crate) fn decode_headers(mut bytes: &[u8]) -> Option<Vec<(String, Option<Vec<u8>>)>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = tail;
        Some(head)
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key_len = u16::from_be_bytes(take(&mut bytes, 2)?.try_into().ok()?);
        let key = std::str::from_utf8(take(&mut bytes, key_len.into())?).ok()?;
        let len = i32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        let value = match usize::try_from(len) {
            Ok(n) => Some(take(&mut bytes, n)?.to_vec()),
            Err(_) if len == -1 => None,
            Err(_) => return None,
        };
        out.push((key.to_owned(), value));
    }
    Some(out)
}

/// The key/value pairs of Kafka headers.
pub(crate) fn header_pairs(headers: &OwnedHeaders) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .iter()
        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
        .collect()
}

pub(crate) fn owned_headers(pairs: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    pairs.iter().fold(
        OwnedHeaders::new_with_capacity(pairs.len()),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: value.as_deref(),
            })
        },
    )
}

/// A row about to be written: its record, and the record whose handling wrote it (none
/// outside listeners).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRow<'a> {
    pub(crate) record: &'a OutboxRecord,
    pub(crate) source: Option<&'a str>,
}

/// How a committed transaction's rows leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// From memory, by this process, right after the commit: the transaction claimed them for
    /// it (no other publisher takes them while its lease is renewed).
    Direct,
    /// By the relay, after older rows of their keys: some were still in the outbox.
    Relay,
}

/// How `records` (about to be written in the caller's transaction) leave, and the older rows
/// of their keys this process takes over to send first.
///
/// An older row of one of their keys in the outbox is either
/// - on its way from this process (sent by the commit path, or handed to the producer by the
///   relay): the producer keeps the order;
/// - free (left by a crash, or given back after a failed publish, and not waiting out a
///   backoff): the transaction claims it for this process ([`Routed::older`]), to be sent
///   before its own rows, so that a key does not stay the relay's for as long as records of
///   it keep coming (after a restart, every key with a row left would, and at a steady rate
///   above the relay's the outbox would grow without end);
/// - anything else (claimed by the relay or by another process, waiting out a backoff): the
///   transaction's rows are the relay's ([`Route::Relay`]), since sending them now would
///   overtake it.
pub(crate) async fn route(
    conn: &mut Conn<'_>,
    backend: Backend,
    records: &[OutboxRecord],
    inflight: &InFlight,
) -> Result<Routed> {
    let relay = Routed {
        route: Route::Relay,
        older: Vec::new(),
    };
    // Each topic's keys, each once: one statement per topic (a batch's records have one).
    let mut topics: Vec<(&str, Vec<&[u8]>)> = Vec::new();
    for r in records {
        let Some(key) = r.key.as_deref() else {
            continue;
        };
        let at = match topics.iter().position(|(t, _)| *t == r.topic) {
            Some(at) => at,
            None => {
                topics.push((&r.topic, Vec::new()));
                topics.len() - 1
            }
        };
        if !topics[at].1.contains(&key) {
            topics[at].1.push(key);
        }
    }
    let sql: std::sync::Arc<str> = format!(
        "SELECT id, claimed_by,
             CASE WHEN {} THEN 1 ELSE 0 END AS free
         {} LIMIT $2",
        free_sql(backend),
        backend.outbox_rows_of_keys()
    )
    .into();
    let mut free = Vec::new();
    for (topic, keys) in topics {
        let looks_at = ROUTE_LOOKS_AT * keys.len() as i64;
        let keys = backend.key_list(&keys);
        let older: Vec<(i64, Option<i64>, i32)> =
            on_conn!(conn, |c| sqlx::query_as(AssertSqlSafe(sql.clone()))
                .bind(topic)
                .bind(looks_at + 1)
                .bind(keys.as_str())
                .fetch_all(c)
                .await)
            .map_err(store_error("reading the outbox"))?;
        if older.len() as i64 > looks_at {
            return Ok(relay);
        }
        for (id, by, is_free) in older {
            let ours = match by {
                Some(by) if by == inflight.direct => inflight.is_sending(id),
                Some(by) if by == inflight.relay => inflight.is_handed(id),
                _ => false,
            };
            if is_free == 1 {
                free.push(id);
            } else if !ours {
                return Ok(relay);
            }
        }
    }
    if free.is_empty() {
        return Ok(Routed {
            route: Route::Direct,
            older: Vec::new(),
        });
    }
    match take_over(conn, backend, &free, inflight.direct).await? {
        Some(older) => Ok(Routed {
            route: Route::Direct,
            older,
        }),
        None => Ok(relay),
    }
}

/// SQL for "the row is free for a committing transaction to take over": no one's lease
/// runs, it never failed, and it was not given back after a failed send (`available_at` 0:
/// the relay's, which counts attempts, backs off and dead-letters).
fn free_sql(backend: Backend) -> String {
    format!(
        "available_at > 0 AND available_at <= {} AND attempts = 0",
        backend.now_ms_sql()
    )
}

/// Claims the free rows `ids` for `publisher` in the caller's transaction: their records, by
/// id; `None` when it could not take them all (another publisher claimed one first, or one's
/// headers do not decode: the relay's to dead-letter), the rows it took given back in the same
/// transaction.
async fn take_over(
    conn: &mut Conn<'_>,
    backend: Backend,
    ids: &[i64],
    publisher: i64,
) -> Result<Option<Vec<(i64, OutboxRecord)>>> {
    // The rows free again in the `WHERE`: PostgreSQL checks that anew on a row claimed while
    // this waited for it. On PostgreSQL it waits for none: a row another transaction locks
    // (the relay claiming it) is skipped, so the two never wait for each other.
    let pick = match backend {
        Backend::Postgres => backend.id_among(&format!(
            "SELECT id FROM atoll_outbox WHERE {} AND {} ORDER BY id FOR UPDATE SKIP LOCKED",
            backend.id_in(1),
            free_sql(backend)
        )),
        Backend::Sqlite => format!("{} AND {}", backend.id_in(1), free_sql(backend)),
    };
    let sql = format!(
        "UPDATE atoll_outbox SET claimed_by = $2, available_at = {} + $3
         WHERE {pick} AND {}
         RETURNING id, topic, record_partition, record_key, payload, headers, ce_id",
        backend.clock_ms_sql(),
        free_sql(backend)
    );
    let failed = store_error("taking over outbox rows");
    let list = backend.id_list(ids);
    let rows: Vec<TakenRow> = on_conn!(conn, |c| sqlx::query_as(AssertSqlSafe(sql.as_str()))
        .bind(list.as_str())
        .bind(publisher)
        .bind(LEASE_MS)
        .fetch_all(c)
        .await)
    .map_err(&failed)?;
    let mut taken = Vec::with_capacity(rows.len());
    let mut all_decode = true;
    for (id, topic, partition, key, payload, headers, ce_id) in rows {
        let record = OutboxRecord::stored((topic, partition, key, payload, headers, ce_id));
        all_decode &= record.is_some();
        taken.push((id, record));
    }
    if taken.len() < ids.len() || !all_decode {
        let back: Vec<i64> = taken.iter().map(|(id, _)| *id).collect();
        if !back.is_empty() {
            let sql = format!(
                "UPDATE atoll_outbox SET claimed_by = NULL, available_at = 0 WHERE {}",
                backend.id_in(1)
            );
            let list = backend.id_list(&back);
            on_conn!(conn, |c| sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(list.as_str())
                .execute(c)
                .await
                .map(drop))
            .map_err(&failed)?;
        }
        return Ok(None);
    }
    let mut taken: Vec<(i64, OutboxRecord)> = taken
        .into_iter()
        .filter_map(|(id, r)| r.map(|r| (id, r)))
        .collect();
    taken.sort_by_key(|(id, _)| *id);
    Ok(Some(taken))
}

/// An outbox row [`take_over`] claimed: id, topic, partition, key, payload, encoded headers,
/// `ce_id`.
type TakenRow = (
    i64,
    String,
    Option<i32>,
    Option<Vec<u8>>,
    Vec<u8>,
    Vec<u8>,
    String,
);

/// How a transaction's rows leave ([`route`]), and the older rows of their keys it took over.
#[derive(Debug)]
pub(crate) struct Routed {
    pub(crate) route: Route,
    /// Free older rows of the transaction's keys, claimed by it: sent first, in id order.
    pub(crate) older: Vec<(i64, OutboxRecord)>,
}

/// How many rows per key [`route`] looks at: more are a backlog, and the relay's.
const ROUTE_LOOKS_AT: i64 = 1_000;

/// Writes `rows` into the outbox within the caller's transaction, naming `dead_letters` as
/// where each goes should it never be publishable; their row ids, in order.
/// [`Route::Direct`] rows are claimed by `publisher` for a lease (in the database's time);
/// [`Route::Relay`] rows are free for the relay at once.
///
/// Many rows take few statements: chunks of [`INSERT_CHUNKS`] rows, each one statement whose
/// text depends only on its size, so the database prepares each size once.
pub(crate) async fn insert(
    conn: &mut Conn<'_>,
    backend: Backend,
    rows: &[NewRow<'_>],
    dead_letters: &str,
    route: Route,
    publisher: i64,
) -> Result<Vec<i64>> {
    let (claimed_by, lease) = match route {
        Route::Direct => (Some(publisher), LEASE_MS),
        Route::Relay => (None, 0),
    };
    let mut ids = Vec::with_capacity(rows.len());
    let mut left = rows;
    while !left.is_empty() {
        let n = chunk(left.len());
        let (now, rest) = left.split_at(n);
        left = rest;
        let sql = insert_sql(backend, n);
        let written: Vec<(i64,)> = on_conn!(conn, |c| {
            let mut query = sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(dead_letters)
                .bind(claimed_by)
                .bind(lease);
            for row in now {
                let r = row.record;
                query = query
                    .bind(&r.topic)
                    .bind(r.partition)
                    .bind(r.key.as_deref())
                    .bind(r.payload.as_slice())
                    .bind(encode_headers(&r.headers))
                    .bind(&r.ce_id)
                    .bind(row.source);
            }
            query.fetch_all(c).await
        })
        .map_err(store_error("writing the outbox"))?;
        let mut chunk_ids: Vec<i64> = written.into_iter().map(|(id,)| id).collect();
        // Ids are drawn in the order of the rows in the statement; `RETURNING` need not keep it.
        chunk_ids.sort_unstable();
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

/// The sizes of the statements [`insert`] writes rows with, largest first.
const INSERT_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// The rows the next statement of [`insert`] writes when `left` are left: the largest chunk
/// that fits.
fn chunk(left: usize) -> usize {
    INSERT_CHUNKS.into_iter().find(|&n| n <= left).unwrap_or(1)
}

/// The statement writing `rows` outbox rows: the dead-letter topic, the claimer and the lease
/// (`$1`–`$3`) shared, then seven values per row.
fn insert_sql(backend: Backend, rows: usize) -> String {
    use std::fmt::Write as _;
    let (now, clock) = (backend.now_ms_sql(), backend.clock_ms_sql());
    let mut sql = String::from(
        "INSERT INTO atoll_outbox (topic, record_partition, record_key, payload, headers, ce_id,
             source, dead_letter_topic, claimed_by, created_at, available_at) VALUES ",
    );
    for i in 0..rows {
        let p = 4 + i * 7;
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(
            sql,
            "{sep}(${p}, ${}, ${}, ${}, ${}, ${}, ${}, $1, $2, {now}, {clock} + $3)",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6
        );
    }
    sql.push_str(" RETURNING id");
    sql
}

/// How long a publisher's claim on a row lasts unless renewed (see [`inflight`]): longer than
/// a renewal's interval, short enough that rows a crashed process claimed are taken over soon.
pub(crate) const LEASE_MS: i64 = 15_000;

/// A committed transaction's outbox: its rows' ids, the records still in memory, and how they
/// leave.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) ids: Vec<i64>,
    pub(crate) records: Vec<OutboxRecord>,
    pub(crate) route: Route,
    /// When the statements claiming its rows began (their leases run from then at the latest).
    pub(crate) claimed_at: std::time::Instant,
}

/// Produces a committed transaction's records from memory, in their order (no read of the
/// table). On the first record the client refuses, the rest are not sent: they go back to the
/// relay at once, before anything else is sent, so that a later transaction's rows of their
/// keys wait behind them (see [`route`]); the pending acknowledgements of those sent, and why
/// the rest were not.
pub(crate) async fn send(producer: &Producer, inflight: &InFlight, committed: &Committed) -> Sent {
    let mut sent = Sent::default();
    for (i, (r, id)) in committed.records.iter().zip(&committed.ids).enumerate() {
        match producer
            .send_to(
                &r.topic,
                r.partition,
                r.key.as_deref(),
                &r.payload,
                owned_headers(&r.headers),
            )
            .await
        {
            Ok(pending) => sent.pending.push((*id, pending)),
            Err(e) => {
                inflight.give_back(committed.ids[i..].to_vec());
                sent.refused = Some(e);
                break;
            }
        }
    }
    sent
}

/// What [`send`] handed to the client, and what it did not.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    /// Each row's pending acknowledgement.
    pub(crate) pending: Vec<(i64, Pending)>,
    /// Why the client refused a row (that row and the rest were given back to the relay).
    pub(crate) refused: Option<Error>,
}

/// When acknowledged rows are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delete {
    /// Soon, batched with others' (a listener's records).
    Batched,
    /// Before the settling ends (for a caller that reads the outbox next: a test bed, a
    /// transaction outside listeners).
    Now,
}

impl Sent {
    /// Settles the rows in a task of their own, so that each answer is recorded as it comes,
    /// whoever awaits the handle, and even when no one does (a caller's future dropped).
    pub(crate) fn settle(self, store: &Store, when: Delete) -> Settling {
        let store = store.clone();
        Settling(tokio::spawn(async move {
            let inflight = store.inflight();
            let (acked, first) = self.answers(&inflight).await;
            match when {
                Delete::Batched => inflight.acked(acked),
                Delete::Now => match delete(&store, &acked).await {
                    Ok(()) => inflight.forget(&acked),
                    // Left for the batched delete.
                    Err(_) => inflight.acked(acked),
                },
            }
            first.map_or(Ok(()), Err)
        }))
    }

    /// The rows the broker acknowledged, and the first failure; each failed row is given back
    /// as soon as its answer comes.
    async fn answers(self, inflight: &InFlight) -> (Vec<i64>, Option<Error>) {
        let mut first = None;
        let mut acked = Vec::with_capacity(self.pending.len());
        for (id, pending) in self.pending {
            match pending.acked().await {
                Ok(()) => acked.push(id),
                Err(e) => {
                    inflight.give_back(vec![id]);
                    first.get_or_insert(e);
                }
            }
        }
        if let Some(e) = self.refused {
            first.get_or_insert(e);
        }
        (acked, first)
    }
}

/// Rows being settled by their task: [`Settling::answered`] waits for the broker's answers.
#[derive(Debug)]
pub(crate) struct Settling(tokio::task::JoinHandle<Result<()>>);

impl Settling {
    /// Waits until every row was answered: `Err` with the first failure (the failed rows are
    /// the relay's by then).
    pub(crate) async fn answered(self) -> Result<()> {
        match self.0.await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "settling outbox rows panicked; their leases run out for the relay");
                Ok(())
            }
        }
    }
}

/// Deletes rows `ids` (published and acknowledged) in one statement.
pub(crate) async fn delete(store: &Store, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let backend = store.backend();
    let sql = format!("DELETE FROM atoll_outbox WHERE {}", backend.id_in(1));
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(backend.id_list(ids))
        .execute(store.pool())
        .await
        .map_err(store_error("deleting published outbox rows"))?;
    store.inflight.vacuum.deleted(done.rows_affected());
    Ok(())
}

/// Publishes a committed transaction's records from memory and waits for the broker (or wakes
/// the relay, when they are its). A failed publish is left to the relay: logged, not returned,
/// as the transaction committed.
pub(crate) async fn publish(store: &Store, producer: &Producer, committed: &Committed) {
    let inflight = store.inflight();
    match committed.route {
        Route::Relay => inflight.wake_relay(),
        Route::Direct => {
            inflight.sending(&committed.ids, committed.claimed_at);
            let sent = send(producer, &inflight, committed).await;
            left_to_relay(sent.settle(store, Delete::Now).answered().await);
        }
    }
}

/// Logs a publish from the outbox that failed: the relay takes its rows over.
pub(crate) fn left_to_relay(answered: Result<()>) {
    if let Err(e) = answered {
        tracing::warn!(error = %e, "publishing from the outbox failed; the relay takes the rows over");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::AnyConnection;

    fn record(key: Option<&str>) -> OutboxRecord {
        OutboxRecord {
            topic: "t".into(),
            partition: None,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: Vec::new(),
            headers: Vec::new(),
            ce_id: "x".into(),
        }
    }

    fn rows(records: &[OutboxRecord]) -> Vec<NewRow<'_>> {
        records
            .iter()
            .map(|record| NewRow {
                record,
                source: None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_key_goes_out_directly_only_behind_rows_this_process_is_sending() {
        let (store, dir) = scratch_store("route").await;
        let inflight = store.inflight();
        let mut conn = store.pool().acquire().await.unwrap();
        let backend = store.backend();
        let k = [record(Some("k"))];
        let route_of = async |conn: &mut AnyConnection, records: &[OutboxRecord]| {
            route(&mut Conn::from(conn), backend, records, &inflight)
                .await
                .unwrap()
                .route
        };
        assert_eq!(
            route_of(&mut conn, &k).await,
            Route::Direct,
            "nothing older"
        );
        let me = inflight.direct;
        let ids = insert(
            &mut Conn::from(&mut *conn),
            backend,
            &rows(&k),
            "dlq",
            Route::Direct,
            me,
        )
        .await
        .unwrap();
        inflight.sending(&ids, std::time::Instant::now());
        assert_eq!(
            route_of(&mut conn, &k).await,
            Route::Direct,
            "behind its own row on its way (the producer keeps their order)"
        );
        inflight.give_back(ids.clone());
        assert_eq!(
            route_of(&mut conn, &k).await,
            Route::Relay,
            "behind its own row that failed: the relay sends that one first"
        );
        // Once the give-back is written too: still the relay's (it counts the attempt).
        sqlx::query("UPDATE atoll_outbox SET claimed_by = NULL, available_at = 0")
            .execute(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            route_of(&mut conn, &k).await,
            Route::Relay,
            "behind its own row given back"
        );
        assert_eq!(
            route_of(&mut conn, &[record(Some("j"))]).await,
            Route::Direct,
            "another key"
        );
        assert_eq!(
            route_of(&mut conn, &[record(None)]).await,
            Route::Direct,
            "no key: no order to keep"
        );
        let other = [record(Some("o"))];
        insert(
            &mut Conn::from(&mut *conn),
            backend,
            &rows(&other),
            "dlq",
            Route::Direct,
            me + 1,
        )
        .await
        .unwrap();
        assert_eq!(
            route_of(&mut conn, &other).await,
            Route::Relay,
            "behind another publisher's row"
        );
        drop(conn);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A scratch store, its directory, a connection, and `route`'s answer for records.
    async fn routing(
        name: &str,
    ) -> (
        Store,
        std::path::PathBuf,
        sqlx::pool::PoolConnection<sqlx::Any>,
    ) {
        let (store, dir) = scratch_store(name).await;
        let conn = store.pool().acquire().await.unwrap();
        (store, dir, conn)
    }

    async fn route_of(store: &Store, conn: &mut AnyConnection, records: &[OutboxRecord]) -> Route {
        route(
            &mut Conn::from(conn),
            store.backend(),
            records,
            &store.inflight(),
        )
        .await
        .unwrap()
        .route
    }

    #[tokio::test]
    async fn a_key_goes_out_directly_behind_rows_its_relay_handed_to_the_producer() {
        let (store, dir, mut conn) = routing("route-relay").await;
        let (inflight, backend) = (store.inflight(), store.backend());
        let route_of = async |conn: &mut AnyConnection, records: &[OutboxRecord]| {
            route_of(&store, conn, records).await
        };
        // A row this process's relay claimed: behind it once it is handed to the producer.
        let by_relay = insert(
            &mut Conn::from(&mut *conn),
            backend,
            &rows(&[record(Some("h"))]),
            "dlq",
            Route::Direct,
            inflight.relay,
        )
        .await
        .unwrap();
        let h = [record(Some("h"))];
        assert_eq!(
            route_of(&mut conn, &h).await,
            Route::Relay,
            "claimed, not sent yet"
        );
        inflight.handed(by_relay[0]);
        assert_eq!(
            route_of(&mut conn, &h).await,
            Route::Direct,
            "handed to the producer"
        );
        inflight.not_handed(by_relay[0]);
        assert_eq!(
            route_of(&mut conn, &h).await,
            Route::Relay,
            "its publish failed"
        );
        drop(conn);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn free_older_rows_are_taken_over_and_failed_ones_left_to_the_relay() {
        let (store, dir, mut conn) = routing("route-free").await;
        let (inflight, backend) = (store.inflight(), store.backend());
        let me = inflight.direct;
        let route_of = async |conn: &mut AnyConnection, records: &[OutboxRecord]| {
            route_of(&store, conn, records).await
        };
        // A row left free (to the relay, or by a crash): taken over, to be sent first, as it
        // was written.
        let left = OutboxRecord {
            ce_id: "left".into(),
            partition: Some(3),
            headers: vec![("ce_id".into(), Some(b"left".to_vec())), ("n".into(), None)],
            payload: b"{}".to_vec(),
            ..record(Some("r"))
        };
        let left_ids = insert(
            &mut Conn::from(&mut *conn),
            backend,
            &rows(std::slice::from_ref(&left)),
            "dlq",
            Route::Relay,
            me,
        )
        .await
        .unwrap();
        let routed = route(
            &mut Conn::from(&mut *conn),
            backend,
            &[record(Some("r"))],
            &inflight,
        )
        .await
        .unwrap();
        assert_eq!(
            routed.route,
            Route::Direct,
            "behind a free row it took over"
        );
        assert_eq!(routed.older, vec![(left_ids[0], left)]);
        let (by,): (Option<i64>,) =
            sqlx::query_as("SELECT claimed_by FROM atoll_outbox WHERE id = $1")
                .bind(left_ids[0])
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(by, Some(me), "claimed by this process");
        // A row waiting out a backoff after failures: the relay's, and so are the key's next.
        let failed = insert(
            &mut Conn::from(&mut *conn),
            backend,
            &rows(&[record(Some("f"))]),
            "dlq",
            Route::Relay,
            me,
        )
        .await
        .unwrap();
        sqlx::query("UPDATE atoll_outbox SET attempts = 2 WHERE id = $1")
            .bind(failed[0])
            .execute(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            route_of(&mut conn, &[record(Some("f"))]).await,
            Route::Relay,
            "behind a row that failed before"
        );
        drop(conn);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_take_over_that_cannot_take_every_row_takes_none() {
        let (store, dir) = scratch_store("take-over").await;
        let backend = store.backend();
        let mut conn = store.pool().acquire().await.unwrap();
        let write = async |conn: &mut AnyConnection, route: Route| {
            insert(
                &mut Conn::from(conn),
                backend,
                &rows(&[record(Some("k"))]),
                "dlq",
                route,
                5,
            )
            .await
            .unwrap()[0]
        };
        let (free, held) = (
            write(&mut conn, Route::Relay).await,
            write(&mut conn, Route::Direct).await,
        );
        // One of the rows asked for was claimed by another publisher meanwhile.
        let taken = take_over(&mut Conn::from(&mut *conn), backend, &[free, held], 9)
            .await
            .unwrap();
        assert!(taken.is_none());
        let claims: Vec<(i64, Option<i64>, i64)> =
            sqlx::query_as("SELECT id, claimed_by, available_at FROM atoll_outbox ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            (claims[0].0, claims[0].1, claims[0].2),
            (free, None, 0),
            "given back"
        );
        assert_eq!(
            (claims[1].0, claims[1].1),
            (held, Some(5)),
            "left to its holder"
        );
        // A row whose headers do not decode: the relay's, which dead-letters it.
        let broken = write(&mut conn, Route::Relay).await;
        sqlx::query("UPDATE atoll_outbox SET headers = $1 WHERE id = $2")
            .bind(vec![0u8, 9, b'x'])
            .bind(broken)
            .execute(&mut *conn)
            .await
            .unwrap();
        let taken = take_over(&mut Conn::from(&mut *conn), backend, &[broken], 9)
            .await
            .unwrap();
        assert!(taken.is_none());
        let (by,): (Option<i64>,) =
            sqlx::query_as("SELECT claimed_by FROM atoll_outbox WHERE id = $1")
                .bind(broken)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(by, None, "given back");
        drop(conn);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn many_rows_take_few_statements() {
        // rows left, the next statement's rows
        for (left, n) in [
            (1, 1),
            (3, 1),
            (4, 4),
            (15, 4),
            (16, 16),
            (63, 16),
            (64, 64),
            (500, 64),
        ] {
            assert_eq!(chunk(left), n, "{left} left");
        }
        let sql = insert_sql(Backend::Postgres, 2);
        assert!(
            sql.contains("($4, $5, $6, $7, $8, $9, $10, $1, $2,"),
            "{sql}"
        );
        assert!(
            sql.contains("($11, $12, $13, $14, $15, $16, $17, $1, $2,"),
            "{sql}"
        );
    }

    /// A store on a fresh SQLite file in a directory named after `name`.
    async fn scratch_store(name: &str) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("atoll-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = crate::config::store::StoreConfig {
            path: dir.join("s.db"),
            ..Default::default()
        };
        (Store::connect(&config).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn rows_written_in_chunks_keep_their_order_and_sources() {
        let (store, dir) = scratch_store("chunks").await;
        let mut conn = store.pool().acquire().await.unwrap();
        let records: Vec<OutboxRecord> = (0..87)
            .map(|i| OutboxRecord {
                ce_id: format!("id-{i}"),
                ..record(Some(&format!("k{}", i % 5)))
            })
            .collect();
        let sources: Vec<String> = (0..87).map(|i| format!("src-{}", i / 10)).collect();
        let new_rows: Vec<NewRow<'_>> = records
            .iter()
            .zip(&sources)
            .map(|(record, s)| NewRow {
                record,
                source: Some(s),
            })
            .collect();
        let ids = insert(
            &mut Conn::from(&mut *conn),
            store.backend(),
            &new_rows,
            "dlq",
            Route::Direct,
            7,
        )
        .await
        .unwrap();
        assert_eq!(ids.len(), 87);
        let written: Vec<(i64, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT id, ce_id, source, dead_letter_topic, claimed_by, available_at - created_at
             FROM atoll_outbox ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let shared =
            |(id, ce_id, source, dlq, by, lease): &(i64, String, String, String, i64, i64)| {
                assert_eq!((dlq.as_str(), *by), ("dlq", 7), "row {id}");
                assert!(
                    (LEASE_MS - 1_000..=LEASE_MS + 1_000).contains(lease),
                    "row {id}: {lease}"
                );
                (*id, ce_id.clone(), source.clone())
            };
        let written: Vec<(i64, String, String)> = written.iter().map(shared).collect();
        let expected: Vec<(i64, String, String)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, format!("id-{i}"), format!("src-{}", i / 10)))
            .collect();
        assert_eq!(
            written, expected,
            "each id is its row's, in the order given"
        );
        drop(conn);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn route_finds_older_rows_of_any_of_its_keys_binary_and_empty_ones_too() {
        let (store, dir) = scratch_store("route-keys").await;
        let inflight = store.inflight();
        let backend = store.backend();
        let mut conn = store.pool().acquire().await.unwrap();
        let keyed = |key: &[u8]| OutboxRecord {
            key: Some(key.to_vec()),
            ..record(None)
        };
        let binary = keyed(&[0, 0xff, b',', b'"']);
        let empty = keyed(b"");
        for left in [&binary, &empty] {
            insert(
                &mut Conn::from(&mut *conn),
                backend,
                &rows(std::slice::from_ref(left)),
                "dlq",
                // Held by another publisher.
                Route::Direct,
                1,
            )
            .await
            .unwrap();
        }
        for (records, expected) in [
            (vec![keyed(b"a"), keyed(b"b")], Route::Direct),
            (vec![keyed(b"a"), binary.clone()], Route::Relay),
            (vec![empty.clone(), keyed(b"b")], Route::Relay),
            (vec![keyed(&[0, 0xff]), keyed(b"x")], Route::Direct),
            (
                vec![OutboxRecord {
                    topic: "other".into(),
                    ..binary.clone()
                }],
                Route::Direct,
            ),
        ] {
            let got = route(&mut Conn::from(&mut *conn), backend, &records, &inflight)
                .await
                .unwrap()
                .route;
            assert_eq!(got, expected, "{records:?}");
        }
        drop(conn);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn headers_round_trip_including_binary_and_empty_values() {
        let headers = vec![
            ("ce_id".to_owned(), Some(b"0193-abc".to_vec())),
            ("binary".to_owned(), Some(vec![0, 159, 255])),
            ("empty".to_owned(), Some(Vec::new())),
            ("none".to_owned(), None),
        ];
        let bytes = encode_headers(&headers);
        assert_eq!(decode_headers(&bytes), Some(headers.clone()));
        assert_eq!(decode_headers(&[]), Some(Vec::new()));
        // Truncated or with a bad length: not headers.
        assert_eq!(decode_headers(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_headers(&[0, 1, b'k', 0xff, 0xff, 0xff, 0xfe]), None);
        let owned = owned_headers(&headers);
        assert_eq!(header_pairs(&owned), headers);
    }
}
