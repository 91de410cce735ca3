//! The outbox: records a transactional handler produced, written in its transaction and
//! published after the commit.
//!
//! Right after a commit atoll publishes that transaction's rows (idempotent producer), waits
//! for the broker's acknowledgement and deletes them. Rows a crash left behind are published by
//! the relay ([`relay_once`]), oldest first, so per-key order holds; every row keeps its
//! `ce_id`, so a row published twice (a crash between the acknowledgement and the delete) is a
//! repeat that downstream inboxes drop. On PostgreSQL publishers lock the rows they publish
//! (`FOR UPDATE SKIP LOCKED`), so two processes never publish the same row at once.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::{now_ms, Backend, Store};
use crate::error::{Error, Result};
use crate::produce::{Pending, Producer};

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

fn store_error(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |source| Error::Store {
        what: what.into(),
        source,
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

fn owned_headers(pairs: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
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

/// Writes `records` into the outbox within the caller's transaction; their row ids, in order.
/// `source` names the record whose handling wrote them (none outside listeners).
pub(crate) async fn insert(
    conn: &mut AnyConnection,
    records: &[OutboxRecord],
    source: Option<&str>,
) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(records.len());
    let now = now_ms();
    for r in records {
        let row = sqlx::query(
            "INSERT INTO atoll_outbox
                 (topic, record_partition, record_key, payload, headers, ce_id, created_at, source)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&r.topic)
        .bind(r.partition)
        .bind(r.key.as_deref())
        .bind(r.payload.as_slice())
        .bind(encode_headers(&r.headers))
        .bind(&r.ce_id)
        .bind(now)
        .bind(source)
        .fetch_one(&mut *conn)
        .await
        .map_err(store_error("writing the outbox"))?;
        ids.push(
            row.try_get::<i64, _>(0)
                .map_err(store_error("reading an outbox id"))?,
        );
    }
    Ok(ids)
}

/// `$1, $2, …, $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value bound to a `WHERE` clause of [`publish_where`].
enum Bind<'a> {
    Int(i64),
    Text(&'a str),
}

/// The statement deleting outbox rows `ids`.
fn delete_rows(ids: &[i64]) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    let sql = format!(
        "DELETE FROM atoll_outbox WHERE id IN ({})",
        placeholders(ids.len())
    );
    ids.iter()
        .fold(sqlx::query(AssertSqlSafe(sql)), |q, id| q.bind(*id))
}

/// Publishes the rows `clause` picks (locked on PostgreSQL while they are published), waits for
/// their acknowledgements and deletes them; how many it published. `clause` is a `WHERE …`
/// clause over `atoll_outbox`, with its binds.
async fn publish_where(
    store: &Store,
    producer: &Producer,
    clause: &str,
    binds: &[Bind<'_>],
) -> Result<usize> {
    // PostgreSQL: the rows stay locked while they are published (`FOR UPDATE SKIP LOCKED`), so
    // two publishers never send the same row. SQLite has one writer for the whole file: holding
    // it while the broker acknowledges would stall every other transaction, so the rows are
    // read, published, then deleted in short statements. A row two publishers read at once (the
    // relay only takes rows older than its grace) is sent twice: a repeat that keeps its `ce_id`,
    // which consumers' inboxes drop.
    let (mut tx, lock) = match store.backend() {
        Backend::Postgres => (
            Some(
                store
                    .pool()
                    .begin()
                    .await
                    .map_err(store_error("publishing the outbox"))?,
            ),
            " FOR UPDATE SKIP LOCKED",
        ),
        Backend::Sqlite => (None, ""),
    };
    let sql = format!(
        "SELECT id, topic, record_partition, record_key, payload, headers FROM atoll_outbox
         WHERE {clause} ORDER BY id{lock}"
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for b in binds {
        query = match b {
            Bind::Int(i) => query.bind(*i),
            Bind::Text(t) => query.bind(*t),
        };
    }
    let rows = match tx.as_mut() {
        Some(tx) => query.fetch_all(&mut **tx).await,
        None => query.fetch_all(store.pool()).await,
    }
    .map_err(store_error("reading the outbox"))?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut pending: Vec<Pending> = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    for row in &rows {
        let get = store_error("reading an outbox row");
        let id: i64 = row.try_get("id").map_err(&get)?;
        if store.is_sending(id) {
            // This process is publishing it already.
            continue;
        }
        pending.push(send_row(producer, row, id).await?);
        ids.push(id);
    }
    Pending::all(pending).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let delete = delete_rows(&ids);
    let deleted = match tx.as_mut() {
        Some(tx) => delete.execute(&mut **tx).await,
        None => delete.execute(store.pool()).await,
    };
    deleted.map_err(store_error("deleting published outbox rows"))?;
    if let Some(tx) = tx {
        tx.commit()
            .await
            .map_err(store_error("deleting published outbox rows"))?;
    }
    Ok(ids.len())
}

/// Sends the outbox row `id` as it was read.
async fn send_row(producer: &Producer, row: &sqlx::any::AnyRow, id: i64) -> Result<Pending> {
    let get = store_error("reading an outbox row");
    let topic: String = row.try_get("topic").map_err(&get)?;
    let partition: Option<i32> = row.try_get("record_partition").map_err(&get)?;
    let key: Option<Vec<u8>> = row.try_get("record_key").map_err(&get)?;
    let payload: Vec<u8> = row.try_get("payload").map_err(&get)?;
    let headers: Vec<u8> = row.try_get("headers").map_err(&get)?;
    let headers = decode_headers(&headers).ok_or_else(|| Error::Store {
        what: format!("outbox row {id}"),
        source: sqlx::Error::Decode("its headers do not decode".into()),
    })?;
    let headers = owned_headers(&headers);
    producer
        .send_to(&topic, partition, key.as_deref(), &payload, headers)
        .await
}

/// A committed transaction's outbox: its rows' ids and the records, still in memory.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    pub(crate) ids: Vec<i64>,
    pub(crate) records: Vec<OutboxRecord>,
}

/// Produces a committed transaction's records from memory, in their order (no read of the
/// table): their acknowledgements to await before [`delete`] removes their rows. Should the
/// process die before the delete, the relay publishes the rows again, with their `ce_id`.
pub(crate) async fn send(producer: &Producer, records: &[OutboxRecord]) -> Result<Vec<Pending>> {
    let mut pending = Vec::with_capacity(records.len());
    for r in records {
        pending.push(
            producer
                .send_to(
                    &r.topic,
                    r.partition,
                    r.key.as_deref(),
                    &r.payload,
                    owned_headers(&r.headers),
                )
                .await?,
        );
    }
    Ok(pending)
}

/// Deletes published rows.
pub(crate) async fn delete(store: &Store, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    delete_rows(ids)
        .execute(store.pool())
        .await
        .map_err(store_error("deleting published outbox rows"))?;
    Ok(())
}

/// Publishes a committed transaction's records, waits for the broker, and deletes their rows.
/// On failure the rows stay for the relay.
pub(crate) async fn publish(
    store: &Store,
    producer: &Producer,
    committed: &Committed,
) -> Result<()> {
    Pending::all(send(producer, &committed.records).await?).await?;
    delete(store, &committed.ids).await
}

/// Publishes up to `batch` rows older than `grace_ms` (left by a crash, or by a publish that
/// failed), oldest first; how many it published.
pub(crate) async fn relay_once(
    store: &Store,
    producer: &Producer,
    grace_ms: i64,
    batch: i64,
) -> Result<usize> {
    let before = now_ms() - grace_ms;
    let clause = "id IN (SELECT id FROM atoll_outbox WHERE created_at <= $1 ORDER BY id LIMIT $2)";
    publish_where(
        store,
        producer,
        clause,
        &[Bind::Int(before), Bind::Int(batch)],
    )
    .await
}

/// Publishes the rows the handling of record `source` left behind (a crash between its commit
/// and its publish), at once: called when the record comes again and the inbox skips it, so
/// that its outputs go out before those of the records after it. How many it published.
pub(crate) async fn publish_left_by(
    store: &Store,
    producer: &Producer,
    source: &str,
) -> Result<usize> {
    publish_where(store, producer, "source = $1", &[Bind::Text(source)]).await
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(placeholders(3), "$1, $2, $3");
    }
}
