//! Scheduled commands, as a handler asks for them: [`Context::schedule`] sends a command
//! later, [`Context::cancel`] takes it back before it is due. The store keeps them (see
//! `store::schedule` for what it guarantees under kills).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};

use super::context::Context;
use super::delivery::Scheduling;
use crate::contract::event::{Command, Event};
use crate::contract::service::Service;
use crate::error::{Error, Result};
use crate::store::schedule::{DueAt, ScheduleOp, ScheduledRecord};

/// The header naming when a scheduled record was due, in milliseconds since the Unix epoch.
pub(crate) const SCHEDULED_FOR: &str = "atoll_scheduled_for";
/// The header naming the key a scheduled record was scheduled under.
pub(crate) const SCHEDULE_KEY: &str = "atoll_schedule_key";

/// The handle of a scheduled command: scheduling under a key replaces the command pending
/// under it, and [`Context::cancel`] drops it. Unique within the service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScheduleKey(String);

impl ScheduleKey {
    /// A key of your own (say `"reminder/order-42"`).
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key [`Context::schedule`] gives a command of type `C` whose key is `key`: its
    /// CloudEvents type without the version, then the key
    /// (`acme.shop.inventory.expire_reservation/o-42`). Cancel it with
    /// `ctx.cancel(&ScheduleKey::of::<C>(key))`. Without the version, a later version of the
    /// command replaces or cancels one scheduled before an upgrade.
    pub fn of<C: Event>(key: &str) -> Self {
        let ce_type = C::ce_type();
        let unversioned = ce_type.rsplit_once('.').map_or(ce_type, |(t, _)| t);
        Self(format!("{unversioned}/{key}"))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ScheduleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a scheduled command is due: a [`Duration`] after the transaction commits (by the
/// database's clock), or a [`SystemTime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due(DueAt);

impl From<Duration> for Due {
    fn from(after: Duration) -> Self {
        Self(DueAt::After(millis(after)))
    }
}

impl From<SystemTime> for Due {
    fn from(at: SystemTime) -> Self {
        Self(DueAt::At(millis(
            at.duration_since(UNIX_EPOCH).unwrap_or_default(),
        )))
    }
}

/// `d` in milliseconds, at most [`LATEST_MS`]: a longer delay or a later time is due then,
/// not an overflow of the database's arithmetic.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).map_or(LATEST_MS, |ms| ms.min(LATEST_MS))
}

/// The latest a command can be due, and the longest delay: 10,000 years in milliseconds.
const LATEST_MS: i64 = 10_000 * 365 * 24 * 3_600 * 1_000;

impl Due {
    /// When it is due by this process's clock, in milliseconds since the Unix epoch (for the
    /// record's `atoll_scheduled_for` header).
    fn estimate_ms(self) -> i64 {
        match self.0 {
            DueAt::After(ms) => crate::store::now_ms().saturating_add(ms),
            DueAt::At(ms) => ms,
        }
    }
}

impl<S: Service> Context<S> {
    /// Sends `command` to its owner once `due` (a [`Duration`] from the commit, or a
    /// [`SystemTime`]), under the key [`ScheduleKey::of`] gives it (from the command's key);
    /// returns that key. A command pending under the key is replaced.
    ///
    /// The command is written in the handler's transaction and kept in the store until it is
    /// due, then published through the outbox: it survives restarts and kills, and it is
    /// sent once (a kill at the wrong moment publishes it again under the same `ce_id`, which
    /// a transactional listener's inbox drops). It carries the handled record's correlation
    /// id, and `atoll_scheduled_for` and `atoll_schedule_key` headers.
    ///
    /// # Errors
    /// [`Error::Config`] (permanent: the record is dead-lettered) outside a transactional
    /// listener (one whose handler takes [`Tx`](crate::Tx)) or
    /// [`StoreTx::context`](crate::StoreTx::context), in a view's listener (a rebuild would
    /// schedule it again), or when the command has no key (use
    /// [`schedule_keyed`](Self::schedule_keyed)); [`Error::Encode`] when it cannot be
    /// encoded.
    pub async fn schedule<C: Command>(
        &self,
        command: C,
        due: impl Into<Due>,
    ) -> Result<ScheduleKey> {
        let key = command.key().ok_or_else(|| {
            Error::Config(format!(
                "ctx.schedule: `{}` has no key field; name a key with ctx.schedule_keyed",
                C::ce_type()
            ))
        })?;
        self.schedule_keyed(ScheduleKey::of::<C>(&key), command, due)
            .await
    }

    /// Like [`schedule`](Self::schedule), under a key of your own.
    ///
    /// # Errors
    /// As [`schedule`](Self::schedule)'s.
    pub async fn schedule_keyed<C: Command>(
        &self,
        key: ScheduleKey,
        command: C,
        due: impl Into<Due>,
    ) -> Result<ScheduleKey> {
        let due = due.into();
        let cell = self.schedule_cell("ctx.schedule")?;
        let record = self.event_record(C::topic(), &command).await;
        let mut made = self.outgoing(record)?;
        made.headers = with_schedule(made.headers, due, &key);
        cell.schedule(ScheduleOp::Put(ScheduledRecord {
            key: key.0.clone(),
            record: made.into_outbox(),
            due: due.0,
        }));
        Ok(key)
    }

    /// Drops the command pending under `key`, when the transaction commits. None pending is
    /// no error: it may have been sent already (cancelling acts on commands not yet due).
    ///
    /// # Errors
    /// As [`schedule`](Self::schedule)'s, where it may not schedule.
    pub async fn cancel(&self, key: &ScheduleKey) -> Result<()> {
        let cell = self.schedule_cell("ctx.cancel")?;
        cell.schedule(ScheduleOp::Cancel(key.0.clone()));
        Ok(())
    }

    /// The transaction a schedule change goes into, or why there is none.
    fn schedule_cell(&self, what: &str) -> Result<&std::sync::Arc<super::transaction::TxCell>> {
        match self.outbox() {
            Some((cell, to)) if to.scheduling == Scheduling::Allowed => Ok(cell),
            Some(_) => Err(Error::Config(format!(
                "{what} in a view's listener: a rebuild would schedule everything again; \
                 schedule from a listener that is not a view"
            ))),
            None => Err(Error::Config(format!(
                "{what} needs a transactional listener (a handler taking `Tx`) or \
                 `Running::transaction`: the schedule is written in the record's transaction"
            ))),
        }
    }
}

/// `headers` with the scheduled record's due time and key.
fn with_schedule(headers: OwnedHeaders, due: Due, key: &ScheduleKey) -> OwnedHeaders {
    headers
        .insert(Header {
            key: SCHEDULED_FOR,
            value: Some(due.estimate_ms().to_string().as_bytes()),
        })
        .insert(Header {
            key: SCHEDULE_KEY,
            value: Some(key.as_str().as_bytes()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_counts_from_the_commit_and_a_time_is_kept() {
        assert_eq!(Due::from(Duration::from_secs(90)).0, DueAt::After(90_000));
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(Due::from(at).0, DueAt::At(1_700_000_000_123));
        // A time before the epoch is due at once, not a panic; "never" is due in 10,000 years,
        // not an overflow.
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(Due::from(before).0, DueAt::At(0));
        assert_eq!(Due::from(Duration::MAX).0, DueAt::After(LATEST_MS));
    }
}
