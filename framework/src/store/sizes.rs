//! How much the store holds, for the status record: the outbox's waiting rows and the age of
//! the oldest, and the inbox's rows. Read every status interval, so each is one cheap
//! statement: the outbox is kept small (it is a queue), and the inbox, which holds a week of
//! ids, is counted on PostgreSQL by the planner's estimate rather than by a scan.

use super::{Backend, Store};
use crate::error::{store_error, Result};

/// What the store holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// Outbox rows not yet published.
    pub(crate) outbox_rows: i64,
    /// How long ago the oldest of them was written, in milliseconds (by the database's clock).
    pub(crate) oldest_ms: Option<i64>,
    /// Inbox rows (an estimate on PostgreSQL; -1 before the table was first analysed reads 0).
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
        Backend::Sqlite => "SELECT COUNT(*) FROM atoll_inbox",
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
