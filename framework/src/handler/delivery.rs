//! How a listener's outputs leave: chosen once per listener at start, then one sink per
//! attempt and one settled result per success.
//!
//! ```text
//! Delivery::begin ─→ Sink (the attempt's Context produces into it) ─→ handler returns Ok
//!        │                                                                   │
//!        └─→ Begun::Duplicate (transactional, handled before)          Sink::settle ─→ Settled
//! ```
//!
//! - **At least once**: the handler's records go to the producer as they are made; a success
//!   is settled once the broker acknowledged them (now, or in the background while the
//!   partition's next record is handled).
//! - **Transactional** (the handler takes `Tx`): its SQL, the record's inbox row and its
//!   outputs (in the outbox) commit together, and the record is finished: its outputs can no
//!   longer be lost. They are published from memory right after the commit, or by the relay
//!   when an older row of one of their keys is still in the outbox (see `store::outbox` for
//!   what that guarantees). A record handled before is not called again.
//! - **Exactly once**: the outputs are staged and leave with the record's offset, in the
//!   Kafka transaction of the listener's committer.
//!
//! A failed attempt drops its sink: staged outputs are never committed, an open transaction
//! rolls back, and records already handed to the producer are left to be produced again by the
//! next attempt (at least once). The worker and [`crate::testing::TestBed`] both run this code.

use std::sync::Arc;

use parking_lot::Mutex;

use super::context::Meta;
use super::transaction::{self, TxCell};
use crate::contract::service::Service;
use crate::error::{Error, Result};
use crate::produce::transactional::Output;
use crate::produce::{Pending, Producer};
use crate::store::driver::Driver;
use crate::store::outbox::{self, Committed, Delete, Route, Settling};
use crate::store::Store;

/// How a listener's outputs leave, chosen at start from its handler (a `Tx` makes it
/// transactional) and its `delivery` setting.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    /// Produced as the handler goes; the record is finished once they are acknowledged.
    AtLeastOnce,
    /// Through the store's transaction and outbox.
    Transactional {
        /// The listener's consumer group: with the record's id, its inbox row.
        group: String,
        /// Where the committed outputs go.
        outbox: Arc<Outboxed>,
    },
    /// Staged, committed with the record's offset in one Kafka transaction.
    ExactlyOnce,
}

/// How a transaction's outbox rows are published once it commits.
#[derive(Debug)]
pub(crate) struct Outboxed {
    /// The services' database.
    pub(crate) store: Store,
    /// Publishes the committed outbox rows.
    pub(crate) producer: Producer,
    /// The service's dead-letter topic, for a row that can never be published.
    pub(crate) dead_letters: String,
    /// The driver its transactions begin on.
    pub(crate) driver: Driver,
    /// The service whose records these are: its scheduled records' keys are its own.
    pub(crate) service: String,
    /// Whether its handlers may schedule records.
    pub(crate) scheduling: Scheduling,
}

/// Whether a transaction's handler may schedule records (see
/// [`Context::schedule`](super::context::Context::schedule)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheduling {
    /// In the transaction, with its outbox.
    Allowed,
    /// Refused: a view's listener (a rebuild would schedule everything again, under new ids).
    View,
}

/// Where one attempt's outputs go, as its [`Context`](super::context::Context) produces them.
#[derive(Debug)]
pub(crate) enum Sink {
    /// Produced at once; their acknowledgements are kept here.
    Producer(Mutex<Vec<Pending>>),
    /// Into the outbox of the record's transaction, published once it commits.
    Outbox(Arc<TxCell>, Arc<Outboxed>),
    /// Staged for the Kafka transaction that commits the record's offset.
    Stage(Mutex<Vec<Output>>),
}

/// How an attempt begins.
#[derive(Debug)]
pub(crate) enum Begun {
    /// Call the handler with this sink.
    Fresh(Arc<Sink>),
    /// Handled before (its inbox row exists): not called again. What its first handling left
    /// in the outbox is the relay's.
    Duplicate,
}

/// Whether a success's acknowledgements are awaited now or handed back to be awaited while the
/// partition's next record is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acks {
    /// Hand them back: [`Settled::Acking`].
    Background,
    /// Await them now (a record handled again because its outputs were not acknowledged).
    Wait,
}

/// A successful attempt, settled.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Nothing left to wait for: the record is finished.
    Done,
    /// Finished once these acknowledgements land.
    Acking(Acking),
    /// Finished with these outputs, which its offset's Kafka transaction commits.
    Staged(Vec<Output>),
}

/// Why a successful handler's outputs did not settle.
#[derive(Debug)]
pub(crate) enum Unsettled {
    /// The broker did not acknowledge a record the handler produced: the attempt failed.
    NotAcknowledged(Error),
    /// The store did not commit the record's transaction.
    Store(Error),
}

/// Acknowledgements a finished record still awaits.
#[derive(Debug)]
pub(crate) enum Acking {
    /// Records the handler produced: one not acknowledged fails the record.
    Produced(Vec<Pending>),
    /// Committed outbox rows on their way: the record is finished whatever the broker says,
    /// as its outputs are in the outbox; an acknowledged row is deleted, a failed one goes to
    /// the relay (by their own task, which records each answer as it comes).
    Outboxed(Settling),
}

impl Acking {
    /// Waits for the acknowledgements.
    pub(crate) async fn acked(self) -> Result<()> {
        match self {
            Self::Produced(pending) => Pending::all(pending).await,
            Self::Outboxed(settling) => {
                outbox::left_to_relay(settling.answered().await);
                Ok(())
            }
        }
    }
}

impl Delivery {
    /// Whether outputs go through the store's transaction and outbox.
    pub(crate) fn is_transactional(&self) -> bool {
        matches!(self, Self::Transactional { .. })
    }

    /// Begins an attempt at the record `meta` describes: its sink, or, for a transactional
    /// listener that handled the record before, [`Begun::Duplicate`] once what that handling
    /// left in the outbox is published.
    pub(crate) async fn begin(&self, meta: &Meta) -> Result<Begun> {
        Ok(match self {
            Self::AtLeastOnce => Begun::Fresh(Sink::producer()),
            Self::ExactlyOnce => Begun::Fresh(Arc::new(Sink::Stage(Mutex::default()))),
            Self::Transactional { group, outbox: o } => {
                match transaction::begin(&o.store, o.driver, group, meta).await? {
                    Some(cell) => Begun::Fresh(Arc::new(Sink::Outbox(cell, o.clone()))),
                    None => Begun::Duplicate,
                }
            }
        })
    }
}

impl Sink {
    /// A sink that produces at once (outside any listener's delivery: tests, tools).
    pub(crate) fn producer() -> Arc<Self> {
        Arc::new(Self::Producer(Mutex::default()))
    }

    /// Settles the outputs of an attempt whose handler succeeded.
    pub(crate) async fn settle(&self, acks: Acks) -> std::result::Result<Settled, Unsettled> {
        match self {
            Sink::Producer(produced) => {
                let pending = std::mem::take(&mut *produced.lock());
                match acks {
                    _ if pending.is_empty() => Ok(Settled::Done),
                    Acks::Background => Ok(Settled::Acking(Acking::Produced(pending))),
                    Acks::Wait => Pending::all(pending)
                        .await
                        .map(|()| Settled::Done)
                        .map_err(Unsettled::NotAcknowledged),
                }
            }
            Sink::Stage(staged) => Ok(Settled::Staged(std::mem::take(&mut *staged.lock()))),
            Sink::Outbox(cell, outbox) => outbox.commit(cell, acks).await,
        }
    }
}

impl Outboxed {
    /// The outbox of service `S`'s transactions on `driver`, on `store`.
    ///
    /// # Errors
    /// Why `store` cannot run transactions of `driver` (the native PostgreSQL driver on
    /// SQLite).
    pub(crate) fn new<S: Service>(
        store: Store,
        producer: Producer,
        driver: Driver,
    ) -> std::result::Result<Self, String> {
        if driver == Driver::Postgres && store.postgres().is_none() {
            return Err(crate::store::needs_postgres(driver));
        }
        Ok(Self {
            store,
            producer,
            dead_letters: S::ID.dlq().to_string(),
            driver,
            service: S::ID.to_string(),
            scheduling: Scheduling::Allowed,
        })
    }

    /// The same outbox for a view's listener, whose handlers may not schedule.
    pub(crate) fn for_view(self) -> Self {
        Self {
            scheduling: Scheduling::View,
            ..self
        }
    }

    /// Commits the record's transaction with its outbox rows, then publishes them (see
    /// [`publish`](Self::publish)).
    async fn commit(&self, cell: &TxCell, acks: Acks) -> std::result::Result<Settled, Unsettled> {
        let committed = transaction::commit(cell, self)
            .await
            .map_err(Unsettled::Store)?;
        Ok(self.publish(committed, acks).await)
    }

    /// Sends committed outbox rows from memory (or wakes the relay, when older rows of their
    /// keys come first).
    pub(crate) async fn publish(&self, committed: Committed, acks: Acks) -> Settled {
        let inflight = self.store.inflight();
        if committed.ids.is_empty() {
            return Settled::Done;
        }
        if committed.route == Route::Relay {
            inflight.wake_relay();
            return Settled::Done;
        }
        inflight.sending(&committed.ids, committed.claimed_at);
        let sent = outbox::send(&self.producer, &inflight, &committed).await;
        match acks {
            Acks::Background => {
                Settled::Acking(Acking::Outboxed(sent.settle(&self.store, Delete::Batched)))
            }
            Acks::Wait => {
                let settling = sent.settle(&self.store, Delete::Now);
                outbox::left_to_relay(settling.answered().await);
                Settled::Done
            }
        }
    }
}
