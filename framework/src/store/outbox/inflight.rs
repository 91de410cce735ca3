//! The rows this process is publishing, and what becomes of them once the broker answered.
//!
//! A publisher (the commit path, or this process's relay) claims a row for [`LEASE_MS`] of the
//! database's clock. A row still on its way [`RENEW_AFTER`] after its lease was written has
//! it renewed (rows due are looked for every [`RENEW_EVERY`]), and again each time it is that
//! old, so no other publisher takes it however slow the broker is; should the process die,
//! renewals stop and the lease runs out. Rows the broker answers sooner (all of them, while it
//! keeps up) are never renewed: a renewal is an update of the row, and at thousands of rows a
//! second, updates of rows about to be deleted bloat the table (each a new row version and
//! index entries) until the deletes themselves slow down. Renewals share the store's
//! connections with the handlers: should none be had for about 12 s (a database out of reach,
//! a pool exhausted) a lease can run out under a row still on its way, and another process may
//! send it too (a repeat with its `ce_id`). Once the broker answered, an acknowledged row is
//! deleted and a failed one is given back (its claim dropped, free at once), and the relay is
//! woken to take it. Deletes and give-backs are batched by one task, one statement each: a
//! statement per record would cost a transaction (and a sync) per
//! record. A batch the database refuses is kept for the next round, never dropped: a row
//! acknowledged but not deleted would be published again.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::AssertSqlSafe;
use tokio::sync::Notify;

use super::vacuum::Vacuum;
use super::LEASE_MS;
use crate::error::{store_error, Result};
use crate::store::Store;

/// How long after its lease was written a row still on its way has it renewed.
pub(crate) const RENEW_AFTER: Duration = Duration::from_millis(LEASE_MS as u64 / 7);
/// How often the rows due a renewal are renewed: a row's lease is renewed within
/// [`RENEW_AFTER`] + `RENEW_EVERY` (3 s) of being written, so four renewals may fail in a
/// row before it runs out.
pub(crate) const RENEW_EVERY: Duration = Duration::from_millis(LEASE_MS as u64 / 15);
/// How long the task gathers answers before a batch (what the next records publish meanwhile).
const GATHER: Duration = Duration::from_millis(10);
/// Rows per statement.
const CHUNK: usize = 1_000;

/// This process's publishing: its claims' identities, the rows it is sending, and the answers
/// waiting to be written.
#[derive(Debug)]
pub(crate) struct InFlight {
    /// The commit path's identity in `claimed_by`: rows it claimed in their transaction.
    pub(crate) direct: i64,
    /// The relay's identity in `claimed_by`: distinct from `direct`, so that a transaction
    /// does not send a key's rows before older ones this process's relay has claimed but not
    /// yet handed to the producer.
    pub(crate) relay: i64,
    /// Rows claimed and not yet answered, each with when its lease was taken or last renewed
    /// (by this process's clock, read before the statement that wrote it): renewed once
    /// [`RENEW_AFTER`] old.
    sending: Mutex<HashMap<i64, Instant>>,
    /// Rows of the relay's already handed to the producer and not failed: the producer keeps
    /// their order with rows a transaction sends after them (see [`InFlight::is_handed`]).
    handed: Mutex<HashSet<i64>>,
    /// Acknowledged rows to delete.
    acked: Mutex<Vec<i64>>,
    /// Rows whose publish failed, to give back to the relay.
    failed: Mutex<Vec<i64>>,
    wake: Notify,
    relay_wake: Notify,
    task: OnceLock<()>,
    /// What this process deleted since it last vacuumed the table.
    pub(crate) vacuum: Vacuum,
}

impl Default for InFlight {
    fn default() -> Self {
        // Random, positive, distinct: two processes never share one.
        let direct = (rand::random::<u64>() >> 2) as i64 + 1;
        Self {
            direct,
            relay: -direct,
            sending: Mutex::default(),
            handed: Mutex::default(),
            acked: Mutex::default(),
            failed: Mutex::default(),
            wake: Notify::new(),
            relay_wake: Notify::new(),
            task: OnceLock::new(),
            vacuum: Vacuum::default(),
        }
    }
}

impl InFlight {
    /// Rows just claimed (their leases written by a statement begun at `claimed_at`) and
    /// about to be sent: their leases are renewed until answered.
    pub(crate) fn sending(&self, ids: &[i64], claimed_at: Instant) {
        self.sending
            .lock()
            .extend(ids.iter().map(|id| (*id, claimed_at)));
    }

    /// Rows no longer on their way, settled by the caller: their leases are no longer renewed.
    pub(crate) fn forget(&self, ids: &[i64]) {
        forget(self, ids);
    }

    /// Whether row `id` is on its way from this process (claimed, sent, not failed; perhaps
    /// acknowledged and waiting to be deleted).
    pub(crate) fn is_sending(&self, id: i64) -> bool {
        self.sending.lock().contains_key(&id)
    }

    /// The relay handed row `id` to the producer: rows sent after it keep their order.
    pub(crate) fn handed(&self, id: i64) {
        self.handed.lock().insert(id);
    }

    /// The relay's row `id` failed: rows of its key must wait for it again.
    pub(crate) fn not_handed(&self, id: i64) {
        self.handed.lock().remove(&id);
    }

    /// Whether the relay's row `id` was handed to the producer and has not failed (perhaps
    /// acknowledged and waiting to be deleted): a transaction's rows of its key may then be
    /// sent behind it by the same producer, instead of waiting in the outbox for the relay.
    pub(crate) fn is_handed(&self, id: i64) -> bool {
        self.handed.lock().contains(&id)
    }

    /// Rows the broker acknowledged: deleted soon (on their way until then).
    pub(crate) fn acked(&self, ids: Vec<i64>) {
        if !ids.is_empty() {
            self.acked.lock().extend(ids);
            self.wake.notify_one();
        }
    }

    /// Rows whose publish failed: no longer on their way from now (so no later row of their
    /// keys is sent past them), and given back to the relay soon.
    pub(crate) fn give_back(&self, ids: Vec<i64>) {
        if !ids.is_empty() {
            forget(self, &ids);
            self.failed.lock().extend(ids);
            self.wake.notify_one();
        }
    }

    /// Wakes the relay: rows are waiting for it.
    pub(crate) fn wake_relay(&self) {
        self.relay_wake.notify_one();
    }

    /// Resolves when [`wake_relay`](Self::wake_relay) was called (since the last time).
    pub(crate) async fn relay_woken(&self) {
        self.relay_wake.notified().await;
    }

    /// At shutdown, once the producer flushed: writes the answers still queued, until no row
    /// is on its way or `within` passed (rows left then are published again by whoever takes
    /// them over: repeats with their `ce_id`).
    pub(crate) async fn drain(&self, store: &Store, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Err(e) = write_answers(store).await {
                tracing::warn!(error = %e, "writing the outbox's last answers failed");
            }
            let left = self.sending.lock().len();
            if left == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    rows = left,
                    "outbox rows still on their way at shutdown; they will be published again"
                );
                return;
            }
            tokio::time::sleep(GATHER).await;
        }
    }

    /// Starts the task that writes the answers and renews the leases, once per store.
    pub(crate) fn start(&self, store: &Store) {
        self.task.get_or_init(|| {
            tokio::spawn(bookkeeping(store.clone()));
        });
    }
}

/// Writes answers as they come and renews leases every [`RENEW_EVERY`], for the process's life.
async fn bookkeeping(store: Store) {
    let inflight = store.inflight();
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let renewal = tokio::select! {
            () = inflight.wake.notified() => {
                tokio::time::sleep(GATHER).await;
                false
            }
            _ = renew.tick() => true,
        };
        // Renewals first: answers that the database is slow to take must not hold them up.
        if renewal {
            if let Err(e) = renew_leases(&store).await {
                tracing::warn!(error = %e, "renewing the outbox rows' leases failed; trying again");
            }
        }
        if let Err(e) = write_answers(&store).await {
            tracing::warn!(error = %e, "writing what the broker answered to the outbox failed; trying again");
            tokio::time::sleep(Duration::from_millis(200)).await;
            inflight.wake.notify_one();
        }
        super::vacuum::if_due(&store, &inflight.vacuum).await;
    }
}

/// Deletes the acknowledged rows and gives back the failed ones; what the database refuses
/// stays for the next round.
async fn write_answers(store: &Store) -> Result<()> {
    let inflight = store.inflight();
    let acked = std::mem::take(&mut *inflight.acked.lock());
    let failed = std::mem::take(&mut *inflight.failed.lock());
    let mut left = (Vec::new(), Vec::new());
    let mut first_err = None;
    for chunk in acked.chunks(CHUNK) {
        match super::delete(store, chunk).await {
            Ok(()) => forget(&inflight, chunk),
            Err(e) => {
                left.0.extend_from_slice(chunk);
                first_err.get_or_insert(e);
            }
        }
    }
    for chunk in failed.chunks(CHUNK) {
        match give_back(store, chunk).await {
            Ok(()) => {}
            Err(e) => {
                left.1.extend_from_slice(chunk);
                first_err.get_or_insert(e);
            }
        }
    }
    if !failed.is_empty() {
        inflight.wake_relay();
    }
    inflight.acked.lock().extend(left.0);
    inflight.failed.lock().extend(left.1);
    first_err.map_or(Ok(()), Err)
}

fn forget(inflight: &InFlight, ids: &[i64]) {
    let mut sending = inflight.sending.lock();
    let mut handed = inflight.handed.lock();
    for id in ids {
        sending.remove(id);
        handed.remove(id);
    }
}

/// Drops this process's claims on `ids`: free for the relay at once. (They left `sending` when
/// they failed: a relay claiming one meanwhile adds it back, and that entry stays.)
async fn give_back(store: &Store, ids: &[i64]) -> Result<()> {
    let inflight = store.inflight();
    let backend = store.backend();
    let sql = format!(
        "UPDATE atoll_outbox SET claimed_by = NULL, available_at = 0
         WHERE {} AND claimed_by IN ($2, $3)",
        backend.id_in(1)
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(backend.id_list(ids))
        .bind(inflight.direct)
        .bind(inflight.relay)
        .execute(store.pool())
        .await
        .map_err(store_error("giving outbox rows back to the relay"))?;
    Ok(())
}

/// Which of the rows on their way (each with when its lease was written) are due a renewal at
/// `now`: those whose lease is [`RENEW_AFTER`] old.
fn due(sending: &HashMap<i64, Instant>, now: Instant) -> Vec<i64> {
    let mut due: Vec<i64> = sending
        .iter()
        .filter(|(_, at)| now.saturating_duration_since(**at) >= RENEW_AFTER)
        .map(|(id, _)| *id)
        .collect();
    due.sort_unstable();
    due
}

/// Extends the leases of the rows on their way that are due (see [`due`]) by [`LEASE_MS`]
/// from now (the database's now).
async fn renew_leases(store: &Store) -> Result<()> {
    let inflight = store.inflight();
    let now = Instant::now();
    let ids = due(&inflight.sending.lock(), now);
    let backend = store.backend();
    let sql = format!(
        "UPDATE atoll_outbox SET available_at = {} + $2
         WHERE {} AND claimed_by IN ($3, $4)",
        backend.clock_ms_sql(),
        backend.id_in(1)
    );
    let sql: std::sync::Arc<str> = sql.into();
    for chunk in ids.chunks(CHUNK) {
        sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(backend.id_list(chunk))
            .bind(LEASE_MS)
            .bind(inflight.direct)
            .bind(inflight.relay)
            .execute(store.pool())
            .await
            .map_err(store_error("renewing outbox leases"))?;
        // Those still on their way (not answered meanwhile) were renewed from `now` on.
        let mut sending = inflight.sending.lock();
        for id in chunk {
            if let Some(at) = sending.get_mut(id) {
                *at = (*at).max(now);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rows_on_their_way_for_a_renewal_interval_are_renewed() {
        let now = Instant::now();
        let ago = |ms: u64| now - Duration::from_millis(ms);
        let every = RENEW_AFTER.as_millis() as u64;
        #[rustfmt::skip]
        type Case = (&'static str, Vec<(i64, Instant)>, Vec<i64>);
        let cases: Vec<Case> = vec![
            ("none on their way", vec![], vec![]),
            (
                "just claimed: the lease is fresh",
                vec![(1, now), (2, ago(10))],
                vec![],
            ),
            (
                "one interval old: due",
                vec![(1, ago(every)), (2, ago(every - 1))],
                vec![1],
            ),
            (
                "long waiting ones, in id order",
                vec![(9, ago(3 * every)), (4, ago(every + 5))],
                vec![4, 9],
            ),
            (
                "claimed after now (a later claim)",
                vec![(1, now + Duration::from_millis(5))],
                vec![],
            ),
        ];
        for (what, sending, want) in cases {
            let sending: HashMap<i64, Instant> = sending.into_iter().collect();
            assert_eq!(due(&sending, now), want, "{what}");
        }
    }
}
