//! Scheduled commands: records a transactional handler asked to send later
//! ([`Context::schedule`](crate::Context::schedule)), kept in `atoll_schedule` until they are
//! due, then moved into the outbox, whose relay publishes them.
//!
//! Why a table of its own rather than outbox rows that become available later: the relay keeps
//! a key's rows in order by holding back every row of a key while one of them waits, so a
//! reminder due tomorrow would hold its key's other records for a day; and cancelling or
//! replacing by a key needs a unique index the outbox must not have.
//!
//! What it guarantees under kills:
//! - **none lost**: a scheduled row is in exactly one of the two tables, and the move between
//!   them ([`promote`]) is one transaction; from the outbox on, the outbox's guarantees hold (a
//!   row is deleted only once the broker acknowledged it);
//! - **never two commands for one scheduling**: the record's `ce_id` is fixed when it is
//!   scheduled, and the move deletes what it moves (`FOR UPDATE SKIP LOCKED` on PostgreSQL,
//!   the file's one writer on SQLite), so a row moves once. The one repeat left is the
//!   outbox's: a kill between the broker's acknowledgement and the row's delete publishes the
//!   same record again, under the same `ce_id`, which a transactional consumer's inbox drops;
//! - **cancel and replace act on commands not yet due**: a cancel that commits while the row
//!   is being moved waits for the move, finds nothing, and the command goes out. A delayed
//!   command's handler checks its state again, as any handler of a command does.
//!
//! Times are kept in the database's clock ([`Backend::now_ms_sql`]), as the outbox's leases
//! are: every process on the database reads one clock.

use sqlx::AssertSqlSafe;

use super::driver::{on_conn, Conn};
use super::outbox::{encode_headers, OutboxRecord};
use super::{Backend, Store};
use crate::error::{store_error, Error, Result};

/// When a scheduled record is due: after a delay counted from its transaction's commit, or at
/// a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DueAt {
    /// This many milliseconds after the row is written, by the database's clock.
    After(i64),
    /// At this time, in milliseconds since the Unix epoch.
    At(i64),
}

impl DueAt {
    /// The statement's two parameters for `due_at = $a + $b * clock`: the delay and 1, or the
    /// time and 0.
    fn params(self) -> (i64, i64) {
        match self {
            Self::After(ms) => (ms, 1),
            Self::At(ms) => (ms, 0),
        }
    }
}

/// A record to publish once due, under a key that cancels or replaces it.
#[derive(Debug, Clone)]
pub(crate) struct ScheduledRecord {
    /// Unique per service: scheduling a key again replaces its pending record.
    pub(crate) key: String,
    pub(crate) record: OutboxRecord,
    pub(crate) due: DueAt,
}

/// What a handler asked of the schedule, applied in its transaction in the order it asked.
#[derive(Debug, Clone)]
pub(crate) enum ScheduleOp {
    /// Schedule a record, replacing the pending one of its key.
    Put(ScheduledRecord),
    /// Drop the pending record of a key, if any.
    Cancel(String),
}

/// Who schedules: the service (several share a store), the record whose handling scheduled
/// (for a dead letter's cause), and where a record that can never be published goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheduler<'a> {
    pub(crate) service: &'a str,
    pub(crate) source: Option<&'a str>,
    pub(crate) dead_letters: &'a str,
}

/// Applies `ops` in order on `conn` (a transaction's): a put replaces its key's pending
/// record, a cancel deletes it (none pending is no error: it may have gone already).
pub(crate) async fn apply(
    conn: &mut Conn<'_>,
    backend: Backend,
    by: Scheduler<'_>,
    ops: &[ScheduleOp],
) -> Result<()> {
    let put = put_sql(backend);
    for op in ops {
        match op {
            ScheduleOp::Put(s) => {
                let (a, b) = s.due.params();
                let r = &s.record;
                on_conn!(conn, |c| {
                    sqlx::query(AssertSqlSafe(put.as_str()))
                        .bind(by.service)
                        .bind(&s.key)
                        .bind(&r.topic)
                        .bind(r.partition)
                        .bind(r.key.as_deref())
                        .bind(r.payload.as_slice())
                        .bind(encode_headers(&r.headers))
                        .bind(&r.ce_id)
                        .bind(a)
                        .bind(b)
                        .bind(by.source)
                        .bind(by.dead_letters)
                        .execute(c)
                        .await
                        .map(|_| ())
                })
                .map_err(store_error("scheduling a record"))?;
            }
            ScheduleOp::Cancel(key) => {
                on_conn!(conn, |c| {
                    sqlx::query(
                        "DELETE FROM atoll_schedule WHERE service = $1 AND schedule_key = $2",
                    )
                    .bind(by.service)
                    .bind(key)
                    .execute(c)
                    .await
                    .map(|_| ())
                })
                .map_err(store_error("cancelling a scheduled record"))?;
            }
        }
    }
    Ok(())
}

/// The upsert of a scheduled record: a new row, or the pending row of its key replaced (with
/// the new record's `ce_id`: it is another command).
fn put_sql(backend: Backend) -> String {
    let (now, clock) = (backend.now_ms_sql(), backend.clock_ms_sql());
    format!(
        "INSERT INTO atoll_schedule (service, schedule_key, topic, record_partition, record_key,
             payload, headers, ce_id, due_at, created_at, source, dead_letter_topic)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9 + $10 * {clock}, {now}, $11, $12)
         ON CONFLICT (service, schedule_key) DO UPDATE SET
             topic = excluded.topic, record_partition = excluded.record_partition,
             record_key = excluded.record_key, payload = excluded.payload,
             headers = excluded.headers, ce_id = excluded.ce_id, due_at = excluded.due_at,
             created_at = excluded.created_at, source = excluded.source,
             dead_letter_topic = excluded.dead_letter_topic"
    )
}

/// The outbox's columns a scheduled row fills, in [`promote`]'s statements.
const MOVED: &str = "topic, record_partition, record_key, payload, headers, ce_id, source,
    dead_letter_topic";

/// Moves up to `limit` due records into the outbox (free, for the relay to publish), soonest
/// due first, in one transaction: how many it moved.
///
/// One promoter at a time: on PostgreSQL the move takes a transaction's advisory lock (another
/// process's promoter holding it, this one moves nothing now), so that a key's commands enter
/// the outbox, whose ids order the relay's publishing, in the order they are due; rows a
/// handler's transaction is replacing are skipped (`SKIP LOCKED`), for the next pass. On
/// SQLite the insert takes the file's one writer first, so its delete sees the same rows (the
/// bound is read once, from the process's clock, which is the database's there). Either way it
/// first asks whether anything is due, so that a pass with nothing to move writes nothing.
pub(crate) async fn promote(store: &Store, limit: i64) -> Result<u64> {
    let failed = store_error("moving due scheduled records to the outbox");
    let backend = store.backend();
    let now = backend.now_ms_sql();
    let due_now = format!("SELECT 1 FROM atoll_schedule WHERE due_at <= {now} LIMIT 1");
    let any: Option<(i32,)> = sqlx::query_as(AssertSqlSafe(due_now))
        .fetch_optional(store.pool())
        .await
        .map_err(&failed)?;
    if any.is_none() {
        return Ok(0);
    }
    let mut tx = store.pool().begin().await.map_err(&failed)?;
    let moved = match backend {
        Backend::Postgres => {
            let (mine,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
                .bind(PROMOTE_LOCK)
                .fetch_one(&mut *tx)
                .await
                .map_err(&failed)?;
            if !mine {
                return Ok(0);
            }
            let sql = format!(
                "WITH due AS (
                     DELETE FROM atoll_schedule WHERE id IN (
                         SELECT id FROM atoll_schedule WHERE due_at <= {now}
                         ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
                     RETURNING id, due_at, {MOVED})
                 INSERT INTO atoll_outbox ({MOVED}, claimed_by, created_at, available_at)
                 SELECT {MOVED}, NULL, {now}, 0 FROM due ORDER BY due_at, id"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(limit)
                .execute(&mut *tx)
                .await
                .map_err(&failed)?
                .rows_affected()
        }
        Backend::Sqlite => {
            let due = "FROM atoll_schedule WHERE due_at <= $1 ORDER BY due_at, id LIMIT $2";
            let insert = format!(
                "INSERT INTO atoll_outbox ({MOVED}, claimed_by, created_at, available_at)
                 SELECT {MOVED}, NULL, {now}, 0 {due}"
            );
            let delete = format!("DELETE FROM atoll_schedule WHERE id IN (SELECT id {due})");
            let cut = super::now_ms();
            let mut rows = Vec::with_capacity(2);
            for sql in [insert, delete] {
                let done = sqlx::query(AssertSqlSafe(sql))
                    .bind(cut)
                    .bind(limit)
                    .execute(&mut *tx)
                    .await
                    .map_err(&failed)?;
                rows.push(done.rows_affected());
            }
            let (moved, deleted) = (rows[0], rows[1]);
            if deleted != moved {
                // Cannot be while the transaction holds the writer: rolled back, not guessed at.
                return Err(Error::Store {
                    what: format!(
                        "moving due scheduled records: {moved} copied, {deleted} deleted"
                    ),
                    source: sqlx::Error::Protocol("the schedule changed during its move".into()),
                });
            }
            moved
        }
    };
    tx.commit().await.map_err(&failed)?;
    Ok(moved)
}

/// The key of the advisory lock a PostgreSQL promoter holds ("atollsch" in ASCII, as a
/// number: apart from the schema's and the relay's).
const PROMOTE_LOCK: i64 = 0x61_74_6f_6c_6c_73_63_68;

/// A scheduled record not yet moved to the outbox, as [`pending`] reads it.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) service: String,
    pub(crate) key: String,
    pub(crate) record: OutboxRecord,
    /// When it is due, in milliseconds since the Unix epoch (the database's clock).
    pub(crate) due_at: i64,
}

/// The records scheduled and not yet moved to the outbox, soonest due first.
#[cfg(any(test, feature = "testing"))]
pub(crate) async fn pending(store: &Store) -> Result<Vec<Pending>> {
    type Row = (
        String,
        String,
        String,
        Option<i32>,
        Option<Vec<u8>>,
        Vec<u8>,
        Vec<u8>,
        String,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT service, schedule_key, topic, record_partition, record_key, payload, headers,
             ce_id, due_at
         FROM atoll_schedule ORDER BY due_at, id",
    )
    .fetch_all(store.pool())
    .await
    .map_err(store_error("reading the scheduled records"))?;
    rows.into_iter()
        .map(
            |(service, key, topic, partition, record_key, payload, headers, ce_id, due_at)| {
                let stored = (topic, partition, record_key, payload, headers, ce_id);
                let record = OutboxRecord::stored(stored).ok_or_else(|| Error::Store {
                    what: format!("scheduled record `{key}`"),
                    source: sqlx::Error::Decode("its headers do not decode".into()),
                })?;
                Ok(Pending {
                    service,
                    key,
                    record,
                    due_at,
                })
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::driver::Driver;

    fn put(key: &str, ce_id: &str, due: DueAt) -> ScheduleOp {
        ScheduleOp::Put(ScheduledRecord {
            key: key.to_owned(),
            record: OutboxRecord {
                topic: "acme.test.alarm.commands".to_owned(),
                partition: None,
                key: Some(key.as_bytes().to_vec()),
                payload: ce_id.as_bytes().to_vec(),
                headers: vec![("ce_id".to_owned(), Some(ce_id.as_bytes().to_vec()))],
                ce_id: ce_id.to_owned(),
            },
            due,
        })
    }

    const BY: Scheduler<'static> = Scheduler {
        service: "acme.test.alarm",
        source: Some("alarm-set 1"),
        dead_letters: "acme.test.alarm.private.dlq",
    };

    async fn commit(store: &Store, by: Scheduler<'_>, ops: &[ScheduleOp]) {
        let mut tx = store.begin(Driver::Any).await.unwrap();
        apply(&mut tx.conn(), store.backend(), by, ops)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    async fn outbox(store: &Store) -> Vec<(String, String, Option<String>)> {
        sqlx::query_as("SELECT ce_id, dead_letter_topic, source FROM atoll_outbox ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap()
    }

    fn keys(pending: &[Pending]) -> Vec<(&str, &str)> {
        pending
            .iter()
            .map(|p| (p.key.as_str(), p.record.ce_id.as_str()))
            .collect()
    }

    #[tokio::test]
    async fn a_key_scheduled_again_is_replaced_and_a_cancel_drops_it() {
        let (store, dir) = crate::store::tests::sqlite("schedule-replace").await;
        let later = DueAt::After(3_600_000);
        commit(&store, BY, &[put("a", "a1", later), put("b", "b1", later)]).await;
        commit(&store, BY, &[put("a", "a2", later)]).await;
        // Another service's key of the same name is its own.
        let other = Scheduler {
            service: "acme.test.other",
            ..BY
        };
        commit(&store, other, &[put("b", "other-b", later)]).await;
        let left = pending(&store).await.unwrap();
        let mut seen = keys(&left);
        seen.sort_unstable();
        assert_eq!(seen, [("a", "a2"), ("b", "b1"), ("b", "other-b")]);
        // Cancelled in order within one transaction: a put then a cancel leaves nothing; a
        // cancel of no pending key is no error.
        commit(
            &store,
            BY,
            &[
                ScheduleOp::Cancel("b".into()),
                put("c", "c1", later),
                ScheduleOp::Cancel("c".into()),
                ScheduleOp::Cancel("none".into()),
            ],
        )
        .await;
        let left = pending(&store).await.unwrap();
        let mut seen = keys(&left);
        seen.sort_unstable();
        assert_eq!(seen, [("a", "a2"), ("b", "other-b")]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn only_due_records_move_to_the_outbox_in_due_order_once() {
        let (store, dir) = crate::store::tests::sqlite("schedule-promote").await;
        let now = crate::store::now_ms();
        commit(
            &store,
            BY,
            &[
                put("late", "late", DueAt::After(3_600_000)),
                put("second", "second", DueAt::At(now - 1_000)),
                put("first", "first", DueAt::At(now - 2_000)),
                put("now", "now", DueAt::After(0)),
            ],
        )
        .await;
        assert_eq!(promote(&store, 500).await.unwrap(), 3);
        let moved = outbox(&store).await;
        let ids: Vec<&str> = moved.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(ids, ["first", "second", "now"]);
        assert_eq!(
            (moved[0].1.as_str(), moved[0].2.as_deref()),
            ("acme.test.alarm.private.dlq", Some("alarm-set 1"))
        );
        // Moved once: a second pass finds nothing more due.
        assert_eq!(promote(&store, 500).await.unwrap(), 0);
        assert_eq!(outbox(&store).await.len(), 3);
        let left = pending(&store).await.unwrap();
        assert_eq!(keys(&left), [("late", "late")]);
        assert_eq!(left[0].service, BY.service);
        assert!(left[0].due_at >= now + 3_590_000, "{}", left[0].due_at);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_pass_moves_at_most_its_limit_and_the_next_pass_the_rest() {
        let (store, dir) = crate::store::tests::sqlite("schedule-limit").await;
        let ops: Vec<_> = (0..5)
            .map(|i| put(&format!("k{i}"), &format!("id{i}"), DueAt::After(0)))
            .collect();
        commit(&store, BY, &ops).await;
        assert_eq!(promote(&store, 2).await.unwrap(), 2);
        assert_eq!(pending(&store).await.unwrap().len(), 3);
        assert_eq!(promote(&store, 10).await.unwrap(), 3);
        let moved = outbox(&store).await;
        let ids: Vec<&str> = moved.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(ids, ["id0", "id1", "id2", "id3", "id4"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_rolled_back_transaction_schedules_nothing() {
        let (store, dir) = crate::store::tests::sqlite("schedule-rollback").await;
        let mut tx = store.begin(Driver::Any).await.unwrap();
        apply(
            &mut tx.conn(),
            store.backend(),
            BY,
            &[put("a", "a1", DueAt::After(0))],
        )
        .await
        .unwrap();
        drop(tx);
        assert!(pending(&store).await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
