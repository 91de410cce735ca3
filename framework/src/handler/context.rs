//! What a handler gets besides its event: typed producing and the record's metadata.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::codec::Codec;
use crate::contract::envelope::Outgoing;
use crate::contract::event::{Command, Event, FactOf};
use crate::contract::service::Service;
use crate::contract::topic::TopicName;
use crate::error::{Error, HandlerError, Result};
use crate::handler::delivery::Sink;
use crate::handler::transaction::TxCell;
use crate::ops::telemetry::propagation::inject_current;
use crate::produce::transactional::Output;
use crate::produce::{Pending, Producer};
use crate::store::outbox::{header_pairs, OutboxRecord};
use tracing::Instrument;

/// An encoded payload and its content type, or why it could not be encoded.
pub(crate) type Encoded = Result<(Vec<u8>, &'static str)>;

/// `value` as JSON (atoll's own records: saga starts and states).
pub(crate) fn json<T: serde::Serialize>(ce_type: &'static str, value: &T) -> Encoded {
    serde_json::to_vec(value)
        .map(|p| (p, crate::contract::codec::JSON))
        .map_err(|source| Error::Encode { ce_type, source })
}

/// A record a handler produces.
pub(crate) struct Record<'a> {
    pub(crate) topic: TopicName,
    /// Explicit partition; `None` lets the partitioner decide from the key.
    pub(crate) partition: Option<i32>,
    /// `None`: the handled record's key.
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) ce_type: &'static str,
    pub(crate) payload: Encoded,
    pub(crate) reply_to: Option<&'a str>,
    pub(crate) reply_partition: Option<i32>,
    /// `None`: a fresh id.
    pub(crate) id: Option<&'a str>,
}

impl<'a> Record<'a> {
    /// An empty record for `topic` (no type, no payload): for struct update syntax.
    pub(crate) fn default_for(topic: TopicName) -> Self {
        Self {
            topic,
            partition: None,
            key: None,
            ce_type: "",
            payload: Ok((Vec::new(), crate::contract::codec::JSON)),
            reply_to: None,
            reply_partition: None,
            id: None,
        }
    }
}

/// Where the handled record came from and which flow it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Meta {
    /// The listener handling the record.
    pub listener: &'static str,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The record key (the aggregate id), if any and UTF-8.
    pub key: Option<String>,
    /// The record key as it was written, whatever its bytes: outputs that name no key of
    /// their own (replies, keyless events) carry it unchanged.
    pub key_bytes: Option<Vec<u8>>,
    /// `ce_id`.
    pub id: String,
    /// `ce_source`: who produced the record. With `ce_id` it identifies the event (CloudEvents:
    /// producers keep ids unique per source), so a transactional listener's inbox keys on both.
    pub source: Option<String>,
    /// `ce_type`.
    pub ce_type: String,
    /// `ce_correlationid` (the record's own id when it had none).
    pub correlation_id: String,
    /// `ce_replyto`, on commands that expect a reply.
    pub reply_to: Option<String>,
    /// `ce_causationid`: the `ce_id` of the record that caused this one (on a reply, the
    /// command's).
    pub causation_id: Option<String>,
    /// `atoll_reply_partition`: the partition of `reply_to` the reply goes to, if named.
    pub reply_partition: Option<i32>,
    /// `content-type`: how the payload is encoded (JSON when absent).
    pub content_type: Option<String>,
    /// `ce_time`: when the record was produced (RFC 3339), as its producer said. A view that
    /// stamps its rows with it gives the same answers when rebuilt.
    pub time: Option<String>,
    /// When the listener's poll thread received the record (in `atoll::testing`,
    /// when the harness delivered it; `None` in a transaction opened outside a listener):
    /// `received_at.elapsed()` at the handler's start is the time the record waited inside
    /// the process. Two `Meta`s of one record delivered twice differ in it.
    pub received_at: Option<std::time::Instant>,
}

#[derive(Debug, Clone)]
struct Scope {
    producer: Producer,
    codec: Arc<Codec>,
    source: Arc<str>,
    /// Shared by every attempt at the record.
    meta: Arc<Meta>,
    /// Where this attempt's records go (see [`crate::handler::delivery`]).
    sink: Arc<Sink>,
    /// A set-based handler's call: the batch's records, each its scope and payload (see
    /// [`crate::handler::batch`]); empty for a call with one record.
    members: Arc<[(Arc<Scope>, Vec<u8>)]>,
    /// The failure a set-based handler marked this record with (`BatchRecord::fail`).
    mark: Mark,
}

/// A record's failure, marked inside a batch's call: the first mark stands. A copy of a scope
/// starts unmarked (only a set-based call's own context is copied, and its records carry
/// their marks in their own scopes).
#[derive(Debug, Default)]
struct Mark(std::sync::Mutex<Option<HandlerError>>);

impl Clone for Mark {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// The handler's context for service `S`: emit its facts, send commands, read the metadata.
///
/// Cheap to clone. Every record produced through it is acknowledged by the broker before the
/// handled record's offset is committed.
pub struct Context<S> {
    scope: Arc<Scope>,
    _service: PhantomData<fn() -> S>,
}

impl<S> Clone for Context<S> {
    fn clone(&self) -> Self {
        Self {
            scope: self.scope.clone(),
            _service: PhantomData,
        }
    }
}

impl<S> std::fmt::Debug for Context<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("meta", &self.scope.meta)
            .finish_non_exhaustive()
    }
}

impl<S> Context<S> {
    /// The record's transaction, in a transactional listener.
    pub(crate) fn tx_cell(&self) -> Option<&Arc<TxCell>> {
        match &*self.scope.sink {
            Sink::Outbox(cell, _) => Some(cell),
            Sink::Producer(_) | Sink::Stage(_) => None,
        }
    }

    /// The record's transaction and where its outbox goes, in a transactional listener.
    pub(crate) fn outbox(&self) -> Option<(&Arc<TxCell>, &crate::handler::delivery::Outboxed)> {
        match &*self.scope.sink {
            Sink::Outbox(cell, to) => Some((cell, to)),
            Sink::Producer(_) | Sink::Stage(_) => None,
        }
    }

    /// The records of a set-based handler's call, each its context and payload; `None` for a
    /// call with one record (its payload is the call's).
    pub(crate) fn batch_members(&self) -> Option<impl Iterator<Item = (Context<S>, &[u8])>> {
        if self.scope.members.is_empty() {
            return None;
        }
        Some(self.scope.members.iter().map(|(scope, payload)| {
            let ctx = Self {
                scope: scope.clone(),
                _service: PhantomData,
            };
            (ctx, payload.as_slice())
        }))
    }

    /// Marks this record failed with `error` inside its batch's call, unless it was already:
    /// it is handled alone next, its neighbours are not run again (see
    /// [`crate::handler::batch`]).
    pub(crate) fn mark_failed(&self, error: HandlerError) {
        let mut mark = self.scope.mark.0.lock().unwrap_or_else(|e| e.into_inner());
        mark.get_or_insert(error);
    }

    /// The failure this record was marked with, taken off it.
    pub(crate) fn take_mark(&self) -> Option<HandlerError> {
        let mut mark = self.scope.mark.0.lock().unwrap_or_else(|e| e.into_inner());
        mark.take()
    }

    /// This context for a set-based handler's call of `members` (each record's context and
    /// payload, in offset order).
    pub(crate) fn with_members(&self, members: Vec<(Context<S>, Vec<u8>)>) -> Self {
        let scope = Scope {
            members: members
                .into_iter()
                .map(|(ctx, payload)| (ctx.scope, payload))
                .collect(),
            ..(*self.scope).clone()
        };
        Self {
            scope: Arc::new(scope),
            _service: PhantomData,
        }
    }
}

impl<S: Service> Context<S> {
    /// A context for the record `meta` describes, whose records go to `sink`.
    pub(crate) fn new(
        producer: Producer,
        codec: Arc<Codec>,
        source: Arc<str>,
        meta: Arc<Meta>,
        sink: Arc<Sink>,
    ) -> Self {
        let scope = Scope {
            producer,
            codec,
            source,
            meta,
            sink,
            members: Arc::new([]),
            mark: Mark::default(),
        };
        Self {
            scope: Arc::new(scope),
            _service: PhantomData,
        }
    }

    /// The handled record's metadata.
    pub fn meta(&self) -> &Meta {
        &self.scope.meta
    }

    /// Publishes a fact of this service on its `events` topic.
    ///
    /// The key is the fact's `#[event(key)]` field, or else the handled record's key. Only
    /// facts of `S` compile here.
    pub async fn emit<F: FactOf<S>>(&self, fact: F) -> Result<()> {
        self.emit_event(&fact).await
    }

    /// Sends a command to the service that owns it, on that service's `commands` topic.
    pub async fn send<C: Command>(&self, command: C) -> Result<()> {
        let record = self.event_record(C::topic(), &command).await;
        self.produce(record).await?;
        Ok(())
    }

    /// The codec this service produces with.
    pub(crate) fn codec(&self) -> &Codec {
        &self.scope.codec
    }

    /// Event `E` encoded for `topic`, keyed by its key field.
    pub(crate) async fn event_record<E: Event>(
        &self,
        topic: TopicName,
        event: &E,
    ) -> Record<'static> {
        let payload = self.scope.codec.encode(&topic, event).await;
        Record {
            key: event.key().map(String::into_bytes),
            ce_type: E::ce_type(),
            payload,
            ..Record::default_for(topic)
        }
    }

    /// Sends a command whose handler replies to this service's `private.reply` topic, and
    /// returns the command's `ce_id`: the reply's `ce_causationid`. Handle the reply with a
    /// listener of the reply type; whatever continues the flow must be persisted, since any
    /// process of this service may receive the reply. For multi-step flows with
    /// compensations, use a [`Saga`](crate::Saga).
    pub async fn request<C: Command>(&self, command: C) -> Result<String> {
        let reply_to = S::ID.reply();
        let record = self.event_record(C::topic(), &command).await;
        self.produce(Record {
            reply_to: Some(reply_to.as_str()),
            ..record
        })
        .await
    }

    /// Sends a handler's reply to the handled command's `ce_replyto`, if it has one, and to
    /// its `atoll_reply_partition` when it names one. The reply keeps the command's key.
    pub(crate) async fn reply<R: Event>(&self, reply: &R) -> Result<()> {
        let meta = &self.scope.meta;
        let Some(to) = meta.reply_to.clone() else {
            tracing::debug!(
                ce_type = R::ce_type(),
                "the command asked for no reply; none sent"
            );
            return Ok(());
        };
        let to: TopicName = to.parse()?;
        let record = self.event_record(to, reply).await;
        self.produce(Record {
            partition: meta.reply_partition,
            key: None,
            ..record
        })
        .await?;
        Ok(())
    }

    async fn emit_event<E: Event>(&self, event: &E) -> Result<()> {
        let record = self.event_record(E::topic(), event).await;
        self.produce(record).await?;
        Ok(())
    }

    /// Produces within the handled record's flow (same correlation id, caused by it); the key
    /// defaults to the handled record's. Returns the new record's `ce_id`. The record is
    /// acknowledged before the handled record's offset is committed.
    pub(crate) async fn produce(&self, record: Record<'_>) -> Result<String> {
        let (id, pending) = self.start_produce(record).await?;
        if let (Some(pending), Sink::Producer(produced)) = (pending, &*self.scope.sink) {
            produced.lock().push(pending);
        }
        Ok(id)
    }

    /// Like [`produce`](Self::produce), and waits for the acknowledgement now (in a
    /// transaction, or staged: not at all; the commit publishes it): the offset the record was
    /// written at, when known then.
    pub(crate) async fn produce_acked(&self, record: Record<'_>) -> Result<Option<i64>> {
        let (_, pending) = self.start_produce(record).await?;
        match pending {
            Some(pending) => pending.acked_at().await,
            None => Ok(None),
        }
    }

    /// Hands the record to the producer, or to the transaction's outbox (no pending
    /// acknowledgement then: it is published after the commit), or to the stage of an
    /// exactly-once listener (published with the record's offset).
    async fn start_produce(&self, record: Record<'_>) -> Result<(String, Option<Pending>)> {
        let made = self.outgoing(record)?;
        match &*self.scope.sink {
            Sink::Outbox(tx, _) => {
                let id = made.ce_id.clone();
                tx.push(made.into_outbox());
                Ok((id, None))
            }
            Sink::Stage(stage) => {
                let id = made.ce_id;
                stage.lock().push(Output {
                    topic: made.topic.to_string(),
                    partition: made.partition,
                    key: made.key,
                    payload: made.payload,
                    headers: made.headers,
                });
                Ok((id, None))
            }
            Sink::Producer(_) => {
                let Made {
                    topic,
                    partition,
                    key,
                    payload,
                    headers,
                    ce_id,
                } = made;
                let pending = self
                    .scope
                    .producer
                    .send_to(topic.as_str(), partition, key.as_deref(), &payload, headers)
                    .await?;
                Ok((ce_id, Some(pending)))
            }
        }
    }

    /// `record` as it leaves, within the handled record's flow: its key (the handled record's
    /// when it names none), its envelope's headers and its `ce_id`.
    pub(crate) fn outgoing(&self, record: Record<'_>) -> Result<Made> {
        let meta = &self.scope.meta;
        let (payload, content_type) = record.payload?;
        let key = record.key.or_else(|| meta.key_bytes.clone());
        let (headers, ce_id) = Outgoing {
            ce_type: record.ce_type,
            source: &self.scope.source,
            correlation_id: Some(&meta.correlation_id),
            causation_id: Some(&meta.id),
            reply_to: record.reply_to,
            reply_partition: record.reply_partition,
            id: record.id,
            content_type: Some(content_type),
        }
        .headers();
        Ok(Made {
            topic: record.topic,
            partition: record.partition,
            key,
            payload,
            headers: inject_current(headers),
            ce_id,
        })
    }
}

/// A record made to leave (see [`Context::outgoing`]).
pub(crate) struct Made {
    pub(crate) topic: TopicName,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Vec<u8>,
    pub(crate) headers: rdkafka::message::OwnedHeaders,
    pub(crate) ce_id: String,
}

impl Made {
    /// The record as an outbox row holds it.
    pub(crate) fn into_outbox(self) -> OutboxRecord {
        OutboxRecord {
            topic: self.topic.to_string(),
            partition: self.partition,
            key: self.key,
            payload: self.payload,
            headers: header_pairs(&self.headers),
            ce_id: self.ce_id,
        }
    }
}

/// A handler argument extracted from the context, like axum's extractors.
///
/// Handler arguments after `&self` are extractors; the last one is the event.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument of service `{S}`",
    label = "not an extractor",
    note = "handler arguments are `&self`, then extractors (`Context<Self>`, `Meta`), then the event as the last argument"
)]
pub trait FromContext<S>: Sized {
    /// The driver of the record's transaction, when the extractor needs one: a handler taking
    /// one makes its listener transactional, on that driver.
    #[doc(hidden)]
    const TRANSACTION: Option<crate::store::driver::Driver> = None;

    /// Extracts the value.
    fn from_context(ctx: &Context<S>) -> Self;
}

impl<S> FromContext<S> for Context<S> {
    fn from_context(ctx: &Context<S>) -> Self {
        ctx.clone()
    }
}

impl<S> FromContext<S> for Meta {
    fn from_context(ctx: &Context<S>) -> Self {
        Meta::clone(&ctx.scope.meta)
    }
}

/// Sends commands from outside any service: a driver, a BFF, a test.
#[derive(Debug, Clone)]
pub struct Client {
    producer: Producer,
    codec: Arc<Codec>,
    source: Arc<str>,
}

impl Client {
    pub(crate) fn new(producer: Producer, codec: Arc<Codec>, source: Arc<str>) -> Self {
        Self {
            producer,
            codec,
            source,
        }
    }

    /// Sends a command to its owner, starting a new flow; returns once the broker
    /// acknowledged it.
    ///
    /// With tracing on (see [`crate::telemetry`]) this starts a trace: a `send` span whose
    /// `traceparent` the command carries.
    pub async fn send<C: Command>(&self, command: &C) -> Result<()> {
        let topic = C::topic();
        let span = crate::ops::telemetry::spans::send(topic.as_str());
        let (payload, content_type) = self.codec.encode(&topic, command).await?;
        let (headers, _) = Outgoing {
            content_type: Some(content_type),
            ..Outgoing::new(C::ce_type(), &self.source)
        }
        .headers();
        let headers = span.in_scope(|| inject_current(headers));
        let key = command.key();
        self.send_raw(
            topic.as_str(),
            key.as_deref().map(str::as_bytes),
            &payload,
            headers,
        )
        .instrument(span)
        .await
    }

    /// Produces raw bytes with the given headers: for tools and tests that must write what a
    /// service would not (replays, bad input).
    pub async fn send_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: rdkafka::message::OwnedHeaders,
    ) -> Result<()> {
        self.producer
            .send(topic, key, payload, headers)
            .await?
            .acked()
            .await
    }
}
