//! How much the store holds, for the status record: the outbox's waiting rows and the age of
//! the oldest, and the inbox's rows. Read every status interval, so each is one cheap
//! statement: the outbox is kept small (it is a queue), and the inbox, which holds a week of
//! ids, is estimated rather than counted by a scan (PostgreSQL: the planner's estimate;
//! SQLite: the span of its row ids).

use super::{Backend, Store};
use crate::error::{store_error, Result};

/// What the store holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// Outbox rows not yet published.
    pub(crate) outbox_rows: i64,
    /// How long ago the oldest of them was written, in milliseconds (by the database's clock).
    pub(crate) oldest_ms: Option<i64>,
    /// Inbox rows, estimated (PostgreSQL: 0 before the table was first analysed; SQLite: from
    /// above once rows were pruned).
    pub(crate) inbox_rows: i64,
}

/// Reads the store's [`Sizes`].
///
/// # Errors
/// [`crate::Error::Store`] when the database cannot be read.
pub(crate) async fn sizes(store: &Store) -> Result<Sizes> {
    let backend = store.backend();
    let (outbox_rows, oldest_ms): (i64, Option<i64>) = sqlx::query_as(outbox_sql(backend))
        .fetch_one(store.pool())
        .await
        .map_err(store_error("reading the outbox's size"))?;
    let inbox = match backend {
        Backend::Postgres => {
            "SELECT CAST(GREATEST(reltuples, 0) AS BIGINT) FROM pg_class
             WHERE oid = CAST('atoll_inbox' AS regclass)"
        }
        // A scan of a week of ids would hold SQLite's one connection: the span of the row ids
        // (an index's ends) estimates it, from above once rows were pruned.
        Backend::Sqlite => "SELECT COALESCE(MAX(rowid) - MIN(rowid) + 1, 0) FROM atoll_inbox",
    };
    let (inbox_rows,): (i64,) = sqlx::query_as(inbox)
        .fetch_one(store.pool())
        .await
        .map_err(store_error("reading the inbox's size"))?;
    Ok(Sizes {
        outbox_rows,
        oldest_ms: oldest_ms.map(|ms| ms.max(0)),
        inbox_rows,
    })
}

/// The outbox's rows and the age of its oldest, by the database's clock as the rows'
/// `created_at` was written ([`Backend::now_ms_sql`]).
fn outbox_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => {
            "SELECT COUNT(*),
             CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT) - MIN(created_at)
             FROM atoll_outbox"
        }
        Backend::Sqlite => {
            "SELECT COUNT(*),
             CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) - MIN(created_at)
             FROM atoll_outbox"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_is_read_by_the_clock_the_rows_were_written_with() {
        for backend in [Backend::Postgres, Backend::Sqlite] {
            assert!(
                outbox_sql(backend).contains(backend.now_ms_sql()),
                "{backend:?}"
            );
        }
    }
}
