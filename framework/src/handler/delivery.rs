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
//!   outputs (in the outbox) commit together; the committed records are then published from
//!   memory, before the partition's (or the key's) next record, so each key keeps its order.
//!   A record handled before is not called again: what its first handling left in the outbox
//!   goes out instead.
//! - **Exactly once**: the outputs are staged and leave with the record's offset, in the
//!   Kafka transaction of the listener's committer.
//!
//! A failed attempt drops its sink: staged outputs are never committed, an open transaction
//! rolls back, and records already handed to the producer are left to be produced again by the
//! next attempt (at least once). The worker and [`crate::testing::TestBed`] both run this code.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::context::Meta;
use super::transaction::{self, TxCell};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::produce::transactional::Output;
use crate::produce::{Pending, Producer};
use crate::store::{outbox, Store};

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
    /// How a publish the broker refuses is waited out.
    pub(crate) backoff: Backoff,
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
    /// Handled before (its inbox row exists): not called again; what its first handling left
    /// in the outbox was published.
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
    /// The partition was revoked, or the process is stopping, before the committed outputs
    /// were published: the record is not finished, and whoever handles it next finds its inbox
    /// row and publishes them first (or the relay does).
    Revoked,
}

/// Acknowledgements a finished record still awaits, and the outbox rows to delete once they
/// land.
#[derive(Debug)]
pub(crate) struct Acking {
    pending: Vec<Pending>,
    rows: Option<(Store, Vec<i64>)>,
}

impl Acking {
    /// Waits for the acknowledgements, then hands the outbox rows to the store's batched
    /// delete (not here: the partition's loop does not poll this future while it handles the
    /// next record, which may need the connection a delete would hold; SQLite has one).
    pub(crate) async fn acked(self) -> Result<()> {
        let acked = Pending::all(self.pending).await;
        if let Some((store, ids)) = self.rows {
            match acked {
                Ok(()) => store.forget_published(ids),
                // Left for the record's next delivery, or the relay.
                Err(_) => store.not_sending(&ids),
            }
        }
        acked
    }
}

impl Delivery {
    /// Begins an attempt at the record `meta` describes: its sink, or, for a transactional
    /// listener that handled the record before, [`Begun::Duplicate`] once what that handling
    /// left in the outbox is published.
    pub(crate) async fn begin(&self, meta: &Meta) -> Result<Begun> {
        Ok(match self {
            Self::AtLeastOnce => Begun::Fresh(Sink::producer()),
            Self::ExactlyOnce => Begun::Fresh(Arc::new(Sink::Stage(Mutex::default()))),
            Self::Transactional { group, outbox: o } => {
                match transaction::begin(&o.store, group, &meta.id).await? {
                    Some(cell) => Begun::Fresh(Arc::new(Sink::Outbox(cell, o.clone()))),
                    None => {
                        // A crash may have come between its commit and its publish: what it
                        // produced goes out now, before the records after it.
                        let source = transaction::source(group, &meta.id);
                        let n = outbox::publish_left_by(&o.store, &o.producer, &source).await?;
                        if n > 0 {
                            tracing::info!(
                                rows = n,
                                "published what the record's first handling left behind"
                            );
                        }
                        Begun::Duplicate
                    }
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
    pub(crate) async fn settle(
        &self,
        acks: Acks,
        cancel: &CancellationToken,
    ) -> std::result::Result<Settled, Unsettled> {
        match self {
            Sink::Producer(produced) => {
                let pending = std::mem::take(&mut *produced.lock());
                match acks {
                    _ if pending.is_empty() => Ok(Settled::Done),
                    Acks::Background => Ok(Settled::Acking(Acking {
                        pending,
                        rows: None,
                    })),
                    Acks::Wait => Pending::all(pending)
                        .await
                        .map(|()| Settled::Done)
                        .map_err(Unsettled::NotAcknowledged),
                }
            }
            Sink::Stage(staged) => Ok(Settled::Staged(std::mem::take(&mut *staged.lock()))),
            Sink::Outbox(cell, outbox) => outbox.commit(cell, acks, cancel).await,
        }
    }
}

impl Outboxed {
    /// Commits the record's transaction with its outbox rows, then publishes them from memory,
    /// retrying while the broker refuses them, until revoked.
    async fn commit(
        &self,
        cell: &TxCell,
        acks: Acks,
        cancel: &CancellationToken,
    ) -> std::result::Result<Settled, Unsettled> {
        let committed = transaction::commit(cell).await.map_err(Unsettled::Store)?;
        let rows = committed.ids.len();
        let failed = |e: Error, _| {
            tracing::warn!(error = %e, rows, "publishing the outbox failed; retrying");
        };
        match acks {
            Acks::Wait => {
                let publish = || outbox::publish(&self.store, &self.producer, &committed);
                self.backoff
                    .retry_until_cancelled(cancel, publish, failed)
                    .await
                    .map(|()| Settled::Done)
                    .ok_or(Unsettled::Revoked)
            }
            Acks::Background => {
                // Not the relay's while this process publishes them.
                self.store.sending(&committed.ids);
                let send = || outbox::send(&self.producer, &committed.records);
                match self
                    .backoff
                    .retry_until_cancelled(cancel, send, failed)
                    .await
                {
                    Some(pending) => Ok(Settled::Acking(Acking {
                        pending,
                        rows: Some((self.store.clone(), committed.ids)),
                    })),
                    None => {
                        self.store.not_sending(&committed.ids);
                        Err(Unsettled::Revoked)
                    }
                }
            }
        }
    }
}
