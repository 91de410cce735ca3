//! The inbox: which events each transactional listener has handled, by consumer group,
//! `ce_source` and `ce_id` (CloudEvents makes ids unique per source only: two producers may
//! reuse one id). A record's row is inserted in the transaction of its handler's effects, so a
//! redelivered record finds it and is skipped: its effects, and its outbox rows, exist already.

use sqlx::AssertSqlSafe;

use super::driver::{on_conn, Conn};
use super::{now_ms, Backend, Store};
use crate::error::{store_error, Result};

/// What identifies an event: its `ce_source` (empty when the record has none) and `ce_id` (a
/// record without one is known by topic, partition and offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventId<'a> {
    pub(crate) source: &'a str,
    pub(crate) id: &'a str,
}

/// Claims `event` for `group` within the caller's transaction: `true` when this is its first
/// delivery, `false` when the group handled it before. Until the rows written before the
/// inbox knew sources are pruned (`legacy_before`: when it learnt them, 0 once none is left),
/// a row of such an id without a source counts as handled too.
pub(crate) async fn claim(
    conn: &mut Conn<'_>,
    group: &str,
    event: EventId<'_>,
    legacy_before: i64,
) -> Result<bool> {
    let inserted = on_conn!(conn, |c| sqlx::query(
        "INSERT INTO atoll_inbox (consumer_group, ce_source, ce_id, received_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (consumer_group, ce_source, ce_id) DO NOTHING",
    )
    .bind(group)
    .bind(event.source)
    .bind(event.id)
    .bind(now_ms())
    .execute(c)
    .await
    .map(|done| done.rows_affected()))
    .map_err(store_error("writing the inbox"))?;
    if inserted != 1 {
        return Ok(false);
    }
    if legacy_before == 0 || event.source.is_empty() {
        return Ok(true);
    }
    let old: Option<(String,)> = on_conn!(conn, |c| {
        sqlx::query_as(
        "SELECT ce_id FROM atoll_inbox WHERE consumer_group = $1 AND ce_source = '' AND ce_id = $2
         AND received_at < $3",
    )
    .bind(group)
    .bind(event.id)
    .bind(legacy_before)
    .fetch_optional(c)
    .await
    })
    .map_err(store_error("reading the inbox"))?;
    Ok(old.is_none())
}

/// Claims `events` for `group` within the caller's transaction, in one statement (the events
/// as one JSON parameter: one statement text whatever their number): for each, in order,
/// `true` when this is its first delivery. An event twice in `events` is claimed by its first
/// occurrence. Rows written before the inbox knew sources are not looked at: the caller uses
/// [`claim`] while `legacy_before` is not 0.
pub(crate) async fn claim_all(
    conn: &mut Conn<'_>,
    backend: Backend,
    group: &str,
    events: &[EventId<'_>],
) -> Result<Vec<bool>> {
    let rows = match backend {
        Backend::Postgres => "SELECT $1, e->>0, e->>1, $2 FROM json_array_elements(CAST($3 AS json)) AS e",
        // `WHERE true`: SQLite reads `ON CONFLICT` after a bare `SELECT … FROM` as a join's.
        Backend::Sqlite => {
            "SELECT $1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), $2 FROM json_each($3) WHERE true"
        }
    };
    let sql = format!(
        "INSERT INTO atoll_inbox (consumer_group, ce_source, ce_id, received_at) {rows}
         ON CONFLICT (consumer_group, ce_source, ce_id) DO NOTHING RETURNING ce_source, ce_id"
    );
    let json = as_json(events);
    let claimed: Vec<(String, String)> =
        on_conn!(conn, |c| sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(group)
            .bind(now_ms())
            .bind(json.as_str())
            .fetch_all(c)
            .await)
        .map_err(store_error("writing the inbox"))?;
    let mut fresh: std::collections::HashSet<(&str, &str)> = claimed
        .iter()
        .map(|(source, id)| (source.as_str(), id.as_str()))
        .collect();
    let claimed_here: Vec<bool> = events
        .iter()
        .map(|e| fresh.remove(&(e.source, e.id)))
        .collect();
    if !fresh.is_empty() {
        // Never taken for "handled before" (skipped: lost) by a mismatch of the two texts.
        let why = "the inbox returned events it was not given".to_owned();
        return Err(store_error("writing the inbox")(sqlx::Error::Protocol(why)));
    }
    Ok(claimed_here)
}

/// Deletes the inbox rows of `events` for `group` within the caller's transaction, in one
/// statement: claimed by [`claim_all`] in it, but not handled after all.
pub(crate) async fn unclaim_all(
    conn: &mut Conn<'_>,
    backend: Backend,
    group: &str,
    events: &[EventId<'_>],
) -> Result<()> {
    let rows = match backend {
        Backend::Postgres => "SELECT e->>0, e->>1 FROM json_array_elements(CAST($2 AS json)) AS e",
        Backend::Sqlite => {
            "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each($2)"
        }
    };
    let sql = format!(
        "DELETE FROM atoll_inbox WHERE consumer_group = $1 AND (ce_source, ce_id) IN ({rows})"
    );
    let json = as_json(events);
    on_conn!(conn, |c| sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(group)
        .bind(json.as_str())
        .execute(c)
        .await
        .map(drop))
    .map_err(store_error("writing the inbox"))?;
    Ok(())
}

/// `events` as one JSON parameter: an array of `[source, id]` pairs.
fn as_json(events: &[EventId<'_>]) -> String {
    let pairs: Vec<[&str; 2]> = events.iter().map(|e| [e.source, e.id]).collect();
    serde_json::to_string(&pairs).expect("strings serialize")
}

/// When the inbox learnt sources (migration 5), if rows written before it are left (0 when
/// none is): [`claim`] then checks those too.
pub(crate) async fn legacy_before(store: &Store) -> Result<i64> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT s.applied_at FROM atoll_schema s WHERE s.version = 5 AND EXISTS (
             SELECT 1 FROM atoll_inbox i WHERE i.ce_source = '' AND i.received_at < s.applied_at)",
    )
    .fetch_optional(store.pool())
    .await
    .map_err(store_error("reading the inbox"))?;
    Ok(row.map_or(0, |(at,)| at))
}

/// Deletes up to `batch` inbox rows received before `before_ms`; how many it deleted.
pub(crate) async fn prune(store: &Store, before_ms: i64, batch: i64) -> Result<u64> {
    let row = match store.backend() {
        Backend::Postgres => "ctid",
        Backend::Sqlite => "rowid",
    };
    let sql = format!(
        "DELETE FROM atoll_inbox WHERE {row} IN
         (SELECT {row} FROM atoll_inbox WHERE received_at < $1 LIMIT $2)"
    );
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(before_ms)
        .bind(batch)
        .execute(store.pool())
        .await
        .map_err(store_error("pruning the inbox"))?;
    Ok(done.rows_affected())
}
