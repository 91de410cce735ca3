//! A set-based handler's input: a batch of a partition's records in one call, so that one
//! statement (an `UNNEST` upsert, a multi-row `INSERT`), one bulk request or one aggregate can
//! take them all.
//!
//! A handler that takes `Batch<Self, E>` instead of `E` is called once per batch with its
//! records, in offset order, each with a context of its own: what a record's context emits is
//! that record's output (its causation is that record; in a transactional listener, its outbox
//! row names it). Batches form of a partition's records, with `partition` ordering: those
//! already waiting when the worker takes one, up to `listener.batch_size`, or more that come
//! within `listener.batch_wait_ms` (see `consume::batch`). A record handled alone (a trickle, a
//! retry, a record whose batch failed) comes as a batch of one. In a transactional listener
//! the batch runs in one database transaction; outside one, each record's outputs are
//! acknowledged (at least once) or staged in the Kafka transaction (exactly once) as its own,
//! and each record's offset is committed once its outputs are. Why: per-record calls leave one
//! statement or request per record, the last cost of a batch that the framework cannot remove
//! for the application.

use futures::future::BoxFuture;

use super::context::{Context, Meta};
use super::input::{Input, InputType};
use crate::codec::DecodeError;
use crate::contract::service::Service;
use crate::error::HandlerError;

/// The records of one call of a set-based handler, in offset order (see the module's doc):
///
/// ```ignore
/// #[listener(name = "deposit")]
/// async fn deposit(&self, mut tx: Tx<Postgres>, batch: Batch<Self, Deposit>) -> HandlerResult {
///     let (ids, cents): (Vec<&str>, Vec<i64>) =
///         batch.events().map(|d| (d.account.as_str(), d.cents)).unzip();
///     sqlx::query("INSERT INTO accounts (id, cents) SELECT * FROM UNNEST($1::text[], $2::bigint[])
///                  ON CONFLICT (id) DO UPDATE SET cents = accounts.cents + excluded.cents")
///         .bind(&ids).bind(&cents).execute(&mut *tx).await?;
///     for record in &batch {
///         record.ctx.emit(Deposited::from(&record.event)).await?;
///     }
///     Ok(())
/// }
/// ```
///
/// A record that failed while the others did not is marked with [`BatchRecord::fail`]: its
/// neighbours are done and not run again, and it alone is called again next. When the whole
/// call fails (an `Err`, a panic, a timeout), which record made it fail is not known: nothing
/// of it commits, and the batch is split in halves, each called again, until the failing
/// record is alone: it then takes its retry budget and dead letter as ever, and its neighbours
/// are done without it. (In a store transaction, a marked record fails the whole call too: the
/// transaction rolls back, since one statement may hold the marked record's rows, and the
/// records before it are run again without it.) A handler's other extractors (`Meta`,
/// `Context<Self>`) and what it returns belong to the batch's first record.
pub struct Batch<S, E> {
    records: Vec<BatchRecord<S, E>>,
}

/// One record of a [`Batch`]: its event and its own context.
pub struct BatchRecord<S, E> {
    /// The event.
    pub event: E,
    /// The record's context: its metadata, and what it emits or sends is the record's output.
    pub ctx: Context<S>,
}

impl<S: Service, E> BatchRecord<S, E> {
    /// The record's metadata.
    pub fn meta(&self) -> &Meta {
        self.ctx.meta()
    }

    /// Marks this record failed, for a call that otherwise succeeded: its neighbours are
    /// done, and not run again; it alone is called again next, in a batch of one, where a
    /// failure (returned, or marked again) takes its retry budget, retry topic and dead letter
    /// as ever. What it emitted in this call fares as a failed attempt's outputs do: sent, at
    /// least once; dropped, exactly once or in a store transaction. The first mark stands.
    pub fn fail(&self, error: impl Into<HandlerError>) {
        self.ctx.mark_failed(error.into());
    }
}

impl<S: Service, E: std::fmt::Debug> std::fmt::Debug for BatchRecord<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRecord")
            .field("event", &self.event)
            .field("meta", self.ctx.meta())
            .finish()
    }
}

impl<S: Service, E: std::fmt::Debug> std::fmt::Debug for Batch<S, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.records).finish()
    }
}

impl<S, E> Batch<S, E> {
    /// How many records it holds (at least one).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds none (never, for a batch a handler is given).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Its records, in offset order.
    pub fn iter(&self) -> std::slice::Iter<'_, BatchRecord<S, E>> {
        self.records.iter()
    }

    /// Its events, in offset order.
    pub fn events(&self) -> impl Iterator<Item = &E> {
        self.records.iter().map(|r| &r.event)
    }
}

impl<S, E> IntoIterator for Batch<S, E> {
    type Item = BatchRecord<S, E>;
    type IntoIter = std::vec::IntoIter<BatchRecord<S, E>>;

    fn into_iter(self) -> Self::IntoIter {
        self.records.into_iter()
    }
}

impl<'a, S, E> IntoIterator for &'a Batch<S, E> {
    type Item = &'a BatchRecord<S, E>;
    type IntoIter = std::slice::Iter<'a, BatchRecord<S, E>>;

    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}

impl<S: Service, E: Input<S>> Input<S> for Batch<S, E> {
    const SET: bool = true;

    fn types() -> (InputType, Vec<InputType>) {
        E::types()
    }

    fn decode<'a>(
        ctx: &'a Context<S>,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Self, DecodeError>> {
        Box::pin(async move {
            let Some(members) = ctx.batch_members() else {
                let event = E::decode(ctx, payload).await?;
                return Ok(Self {
                    records: vec![BatchRecord {
                        event,
                        ctx: ctx.clone(),
                    }],
                });
            };
            let mut records = Vec::new();
            for (ctx, payload) in members {
                let event = E::decode(&ctx, payload).await?;
                records.push(BatchRecord { event, ctx });
            }
            Ok(Self { records })
        })
    }
}
