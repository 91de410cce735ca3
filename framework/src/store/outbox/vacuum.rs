//! Keeps the outbox table small on PostgreSQL, where a deleted row stays in the table and in
//! its indexes (a dead row version) until a `VACUUM` removes it.
//!
//! Why atoll vacuums itself: the outbox is a queue. At a steady 5,000 records/s it deletes
//! 300,000 rows a minute while holding a few thousand, and autovacuum looks at a table at most
//! once per `autovacuum_naptime` (a minute by default), then only when its dead rows pass a
//! fifth of the live ones. Between two runs every lookup of a key's rows (a transaction's
//! route, the relay's claim) walks that key's dead index entries and reads their pages: in the
//! benchmark a route lookup of two keys read 550 pages for 17 live rows. So the process that
//! deletes runs `VACUUM` once it deleted [`AFTER_ROWS`] rows, at most once per
//! [`MIN_INTERVAL`], with `SKIP_LOCKED` so that replicas never queue behind each other's, and
//! `TRUNCATE OFF`: giving the table's empty end back to the system takes a lock that every
//! writer waits for (seen in the benchmark), and a queue's table grows back at once.
//! Queue libraries on PostgreSQL do the same (PGMQ and pg-boss vacuum their queue tables on a
//! schedule); SQLite reuses a deleted row's space at once and needs none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::store::{Backend, Store};

/// Rows deleted after which the table is vacuumed.
const AFTER_ROWS: u64 = 20_000;
/// The shortest time between two vacuums of one process.
const MIN_INTERVAL: Duration = Duration::from_secs(2);

/// What this process deleted since it last vacuumed the outbox.
#[derive(Debug)]
pub(crate) struct Vacuum {
    deleted: AtomicU64,
    last: Mutex<Instant>,
}

impl Default for Vacuum {
    fn default() -> Self {
        Self {
            deleted: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Vacuum {
    /// `rows` outbox rows were deleted.
    pub(crate) fn deleted(&self, rows: u64) {
        self.deleted.fetch_add(rows, Ordering::Relaxed);
    }
}

/// Whether a process that deleted `deleted` rows since its last vacuum, `since` ago, vacuums.
fn due(deleted: u64, since: Duration) -> bool {
    deleted >= AFTER_ROWS && since >= MIN_INTERVAL
}

/// Vacuums the outbox if this process deleted enough rows since it last did (PostgreSQL only).
/// A vacuum that fails is logged and tried again after the next rows.
pub(crate) async fn if_due(store: &Store, vacuum: &Vacuum) {
    if store.backend() != Backend::Postgres {
        return;
    }
    let deleted = vacuum.deleted.load(Ordering::Relaxed);
    if !due(deleted, vacuum.last.lock().elapsed()) {
        return;
    }
    vacuum.deleted.fetch_sub(deleted, Ordering::Relaxed);
    *vacuum.last.lock() = Instant::now();
    let started = Instant::now();
    match sqlx::raw_sql("VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON, TRUNCATE OFF) atoll_outbox")
        .execute(store.pool())
        .await
    {
        Ok(_) => tracing::debug!(deleted, took = ?started.elapsed(), "outbox vacuumed"),
        Err(e) => tracing::warn!(error = %e, "vacuuming the outbox failed; trying again later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_is_vacuumed_after_enough_deletes_and_not_too_often() {
        let s = Duration::from_secs;
        #[rustfmt::skip]
        let cases = [
            ("nothing deleted",                 0,              s(60), false),
            ("few deleted, long ago",           AFTER_ROWS - 1, s(60), false),
            ("enough deleted",                  AFTER_ROWS,     MIN_INTERVAL, true),
            ("enough, but just vacuumed",       AFTER_ROWS * 5, s(1), false),
        ];
        for (what, deleted, since, want) in cases {
            assert_eq!(due(deleted, since), want, "{what}");
        }
    }
}
