//! Unit-testing handlers and sagas without a broker (feature `testing`).
//!
//! A [`TestBed`] holds a service and a recording producer: whatever a handler emits, sends or
//! replies is kept instead of produced, acknowledged at once, and read back typed. Records go
//! through the same listeners, decoding, extractors and envelope as in a running service, but
//! not through the layers an app gives its handlers (`App::layer`).
//!
//! ```
//! # use atoll::{event_service, handlers, Context, Event, HandlerResult};
//! # use serde::{Deserialize, Serialize};
//! # #[event_service(company = "acme", namespace = "shop", name = "orders")]
//! # pub struct Orders;
//! # #[derive(Debug, Serialize, Deserialize, Event)]
//! # #[event(command, name = "place_order", version = 1, service = Orders)]
//! # pub struct PlaceOrder { #[event(key)] pub order_id: String }
//! # #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
//! # #[event(fact, name = "order_placed", version = 1, service = Orders)]
//! # pub struct OrderPlaced { #[event(key)] pub order_id: String }
//! # #[handlers]
//! # impl Orders {
//! #     #[listener(name = "place-order")]
//! #     async fn place(&self, ctx: Context<Self>, cmd: PlaceOrder) -> HandlerResult {
//! #         ctx.emit(OrderPlaced { order_id: cmd.order_id }).await?;
//! #         Ok(())
//! #     }
//! # }
//! use atoll::testing::TestBed;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let bed = TestBed::new(Orders);
//! bed.handle(PlaceOrder { order_id: "o-1".into() }).await.unwrap();
//! assert_eq!(bed.emitted::<OrderPlaced>(), [OrderPlaced { order_id: "o-1".into() }]);
//! # });
//! ```
//!
//! A saga is driven step by step with [`TestBed::saga`]: start it, read the command its
//! pending step sent, answer with a canned reply or let the step time out, and check where it
//! stands.

use parking_lot::Mutex;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::codec::Codec;
use crate::config::listener::DeliveryMode;
use crate::contract::codec::CodecKind;
use crate::contract::envelope::{Incoming, Outgoing};
use crate::contract::event::{Command, Event, Reply};
use crate::error::{HandlerError, Result};
use crate::handler::context::{Context, Meta};
use crate::handler::delivery::{Acks, Begun, Delivery, Outboxed, Settled, Sink, Unsettled};
use crate::handler::hooks::HookRuntime;
use crate::handler::listener::{CallError, Calls, Handlers, Listener};
use crate::handler::schedule::ScheduleKey;
use crate::ops::metrics::OutboxMetrics;
use crate::produce::{Producer, Recorded};
use crate::saga::state::{SagaState, Status};
use crate::saga::{saga_listener, start_type, state_type, timeout_type, SagaOf};
use crate::store::driver::Driver;
use crate::store::outbox::{owned_headers, relay};
use crate::store::schedule;
use crate::store::Store;

/// A listener call's result as the handler's.
fn called(result: Result<(), CallError>) -> Result<(), HandlerError> {
    match result {
        Ok(()) => Ok(()),
        Err(CallError::Handler(e)) => Err(e),
        Err(CallError::Decode(why) | CallError::Unavailable(why)) => {
            Err(HandlerError::permanent(why))
        }
    }
}

/// A record a handler produced, as the broker would have received it.
#[derive(Clone)]
pub struct Produced {
    /// The topic.
    pub topic: String,
    /// The explicit partition, if the producer named one (a saga's reply partition).
    pub partition: Option<i32>,
    /// The key, as UTF-8 (lossy).
    pub key: Option<String>,
    /// The payload.
    pub payload: Vec<u8>,
    /// The CloudEvents attributes of its headers.
    pub envelope: Incoming,
}

impl fmt::Debug for Produced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Produced")
            .field("topic", &self.topic)
            .field("key", &self.key)
            .field("ce_type", &self.envelope.ce_type)
            .field("payload", &String::from_utf8_lossy(&self.payload))
            .finish_non_exhaustive()
    }
}

impl Produced {
    fn of(r: &Recorded) -> Self {
        Self {
            topic: r.topic.clone(),
            partition: r.partition,
            key: r
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: r.payload.clone(),
            envelope: Incoming::read(Some(&r.headers)),
        }
    }

    /// Whether the record is of event type `E`.
    pub fn is<E: Event>(&self) -> bool {
        self.envelope.ce_type.as_deref() == Some(E::ce_type())
    }

    /// The payload decoded as `E` (the test bed produces JSON).
    ///
    /// # Panics
    /// When it is not `E`: a test should fail there, saying what it found.
    pub fn decode<E: Event>(&self) -> E {
        decode_json(&self.payload, E::ce_type())
    }
}

fn decode_json<T: DeserializeOwned>(payload: &[u8], what: &str) -> T {
    serde_json::from_slice(payload).unwrap_or_else(|e| {
        panic!(
            "a produced `{what}` does not decode: {e}: {}",
            String::from_utf8_lossy(payload)
        )
    })
}

/// A command a service scheduled and has not sent yet (see [`TestBed::scheduled`]).
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// The key it was scheduled under.
    pub key: ScheduleKey,
    /// When it is due.
    pub due: std::time::SystemTime,
    /// The command, as it will be sent.
    pub record: Produced,
}

/// A service under test: its listeners, fed records directly, and a recording producer.
pub struct TestBed<S> {
    svc: Arc<S>,
    store: Option<Store>,
    sink: Arc<Mutex<Vec<Recorded>>>,
    producer: Producer,
    codec: Arc<Codec>,
    source: Arc<str>,
}

impl<S> fmt::Debug for TestBed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestBed")
            .field("recorded", &self.sink.lock().len())
            .finish_non_exhaustive()
    }
}

impl<S: Handlers> TestBed<S> {
    /// A test bed for `svc`, producing JSON.
    pub fn new(svc: S) -> Self {
        let sink = Arc::default();
        Self {
            svc: Arc::new(svc),
            store: None,
            producer: Producer::recording(Arc::clone(&sink)),
            sink,
            codec: Arc::new(
                Codec::new(CodecKind::Json, None, &Default::default())
                    .expect("the JSON codec needs no configuration"),
            ),
            source: format!("{}/test", S::ID).into(),
        }
    }

    /// The same test bed, running transactional listeners (handlers that take a
    /// [`Tx`](crate::Tx)) on `store`: the handler's SQL, the inbox row and the outbox commit
    /// as in a running service, and the outbox is published to what this bed records.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The store given to [`with_store`](Self::with_store).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.svc
    }

    /// A context as a handler gets it for a record with metadata `meta`: what is produced
    /// through it is recorded here. For calling a handler method directly.
    pub fn context_for(&self, meta: Meta) -> Context<S> {
        self.context_in(meta, Sink::producer())
    }

    fn context_in(&self, meta: Meta, sink: Arc<Sink>) -> Context<S> {
        Context::new(
            self.producer.clone(),
            self.codec.clone(),
            self.source.clone(),
            Arc::new(meta),
            sink,
        )
    }

    /// A context for a fresh record of no listener (new ids, no key).
    pub fn context(&self) -> Context<S> {
        self.context_for(self.meta("test", None, "", None, None))
    }

    fn meta(
        &self,
        listener: &'static str,
        key: Option<String>,
        ce_type: &str,
        reply_to: Option<String>,
        causation_id: Option<String>,
    ) -> Meta {
        let id = uuid::Uuid::now_v7().to_string();
        Meta {
            listener,
            topic: String::new(),
            partition: 0,
            offset: 0,
            key_bytes: key.clone().map(String::into_bytes),
            key,
            correlation_id: id.clone(),
            id,
            source: Some("test".to_owned()),
            ce_type: ce_type.to_owned(),
            reply_to,
            causation_id,
            reply_partition: None,
            content_type: None,
            time: Some(
                time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            ),
            received_at: Some(std::time::Instant::now()),
        }
    }

    /// Delivers `event` to the listener of this service that handles its type, as the runtime
    /// would (encoded, decoded, extractors, handler, reply), and returns the handler's result.
    ///
    /// # Panics
    /// When no listener of the service handles `E`.
    pub async fn handle<E: Event>(&self, event: E) -> Result<(), HandlerError> {
        self.deliver(event, None).await
    }

    /// Like [`handle`](Self::handle), for a command sent with a reply topic (as
    /// [`Context::request`] and sagas send them): the handler's reply is recorded, read it with
    /// [`replies`](Self::replies).
    pub async fn request<C: Command>(&self, command: C) -> Result<(), HandlerError> {
        self.deliver(command, Some(S::ID.reply().to_string())).await
    }

    async fn deliver<E: Event>(
        &self,
        event: E,
        reply_to: Option<String>,
    ) -> Result<(), HandlerError> {
        let listener = self.listener_of(E::ce_type());
        let meta = self.meta(listener.name(), event.key(), E::ce_type(), reply_to, None);
        let payload = serde_json::to_vec(&event).map_err(HandlerError::permanent)?;
        self.call(&listener, meta, &payload).await
    }

    fn listener_of(&self, ce_type: &str) -> Listener<S> {
        S::listeners()
            .into_iter()
            .find(|l| l.ce_types().contains(&ce_type))
            .unwrap_or_else(|| panic!("no listener of `{}` handles `{ce_type}`", S::ID))
    }

    /// How `listener`'s outputs leave, as in a running service: through the bed's store when
    /// its handler takes `Tx`, staged when it is exactly once.
    fn delivery_of(&self, listener: &Listener<S>) -> Result<Delivery, HandlerError> {
        if !listener.is_transactional() {
            return Ok(match listener.settings().delivery {
                Some(DeliveryMode::ExactlyOnce) => Delivery::ExactlyOnce,
                _ => Delivery::AtLeastOnce,
            });
        }
        let store = self.store.clone().unwrap_or_else(|| {
            panic!(
                "listener `{}` is transactional: give the test bed a store, `TestBed::new(…).with_store(Store::connect(…).await?)`",
                listener.name()
            )
        });
        let driver = listener.driver().unwrap_or(Driver::Any);
        let outbox = Outboxed::new::<S>(store, self.producer.clone(), driver).map_err(|why| {
            HandlerError::permanent(format!("listener `{}`: {why}", listener.name()))
        })?;
        let outbox = match listener.view_tables() {
            [] => outbox,
            _ => outbox.for_view(),
        };
        Ok(Delivery::Transactional {
            group: listener.group_id().map_err(HandlerError::permanent)?,
            outbox: Arc::new(outbox),
        })
    }

    /// Delivers a record to `listener` through the runtime's own delivery: begin, call,
    /// settle (the acknowledgements awaited; what an exactly-once listener staged is recorded
    /// as its Kafka transaction would commit it).
    async fn call(
        &self,
        listener: &Listener<S>,
        meta: Meta,
        payload: &[u8],
    ) -> Result<(), HandlerError> {
        let delivery = self.delivery_of(listener)?;
        let sink = match delivery.begin(&meta).await? {
            Begun::Fresh(sink) => sink,
            // Handled before: skipped, as a running service would.
            Begun::Duplicate => return Ok(()),
        };
        let ctx = self.context_in(meta, sink.clone());
        called(
            listener
                .call(self.svc.clone(), ctx.clone(), payload, Vec::new)
                .await,
        )?;
        // A set-based handler marked its one record failed.
        if let Some(marked) = ctx.take_mark() {
            return Err(marked);
        }
        self.settle(&sink).await
    }

    /// Settles a successful attempt's outputs as the runtime would: acknowledged, committed,
    /// or (exactly once) recorded as the Kafka transaction would commit them.
    async fn settle(&self, sink: &Sink) -> Result<(), HandlerError> {
        match sink.settle(Acks::Wait).await {
            Ok(Settled::Done | Settled::Acking(_)) => Ok(()),
            Ok(Settled::Staged(outputs)) => {
                for o in outputs {
                    let bytes = o.key.as_deref();
                    self.producer
                        .send_to(&o.topic, o.partition, bytes, &o.payload, o.headers)
                        .await?
                        .acked()
                        .await?;
                }
                Ok(())
            }
            Err(Unsettled::NotAcknowledged(e) | Unsettled::Store(e)) => Err(e.into()),
        }
    }

    /// Delivers `events` to the set-based listener of their type (a handler that takes a
    /// [`Batch`](crate::Batch)) in one call, as the runtime does with a batch of a partition's
    /// records, each with a context of its own. Returns each record's result, in order: `Ok`
    /// when its outputs settled, the error it was marked with
    /// ([`BatchRecord::fail`](crate::BatchRecord::fail)) otherwise.
    ///
    /// # Errors
    /// The whole call's failure (the handler's `Err`): then no record's outputs settle (the
    /// runtime would split the batch and call its halves again).
    ///
    /// # Panics
    /// When no listener of the service handles `E`, when it does not take a `Batch`, or when
    /// it is transactional (its batch runs in one store transaction: test its records with
    /// [`handle`](Self::handle), each a batch of one).
    pub async fn handle_batch<E: Event>(
        &self,
        events: Vec<E>,
    ) -> Result<Vec<Result<(), HandlerError>>, HandlerError> {
        let listener = self.listener_of(E::ce_type());
        assert!(
            listener.calls() == Calls::Batch && !listener.is_transactional(),
            "handle_batch: listener `{}` must take a `Batch` and no `Tx`",
            listener.name()
        );
        let delivery = self.delivery_of(&listener)?;
        let mut records = Vec::with_capacity(events.len());
        for event in &events {
            let meta = self.meta(listener.name(), event.key(), E::ce_type(), None, None);
            let payload = serde_json::to_vec(event).map_err(HandlerError::permanent)?;
            let Begun::Fresh(sink) = delivery.begin(&meta).await? else {
                unreachable!("only a transactional listener finds a record handled before");
            };
            records.push((self.context_in(meta, sink.clone()), sink, payload));
        }
        let Some((first, _, first_payload)) = records.first() else {
            return Ok(Vec::new());
        };
        let members = records
            .iter()
            .map(|(ctx, _, payload)| (ctx.clone(), payload.clone()))
            .collect();
        let call = first.with_members(members);
        called(
            listener
                .call(self.svc.clone(), call, first_payload, Vec::new)
                .await,
        )?;
        let mut results = Vec::with_capacity(records.len());
        for (ctx, sink, _) in &records {
            results.push(match ctx.take_mark() {
                Some(marked) => Err(marked),
                None => self.settle(sink).await,
            });
        }
        Ok(results)
    }

    /// Every record produced so far, oldest first.
    pub fn records(&self) -> Vec<Produced> {
        self.sink.lock().iter().map(Produced::of).collect()
    }

    /// Forgets what was produced so far.
    pub fn clear(&self) {
        self.sink.lock().clear();
    }

    fn of_type<E: Event>(&self) -> Vec<E> {
        self.records()
            .iter()
            .filter(|r| r.is::<E>())
            .map(Produced::decode)
            .collect()
    }

    /// The facts of type `F` the service emitted, oldest first.
    pub fn emitted<F: Event>(&self) -> Vec<F> {
        self.of_type()
    }

    /// The commands of type `C` the service sent, oldest first.
    pub fn sent<C: Command>(&self) -> Vec<C> {
        self.of_type()
    }

    /// The replies of type `R` the service sent, oldest first.
    pub fn replies<R: Reply>(&self) -> Vec<R> {
        self.of_type()
    }

    /// The commands the service scheduled ([`Context::schedule`]) and that are still pending,
    /// soonest due first.
    ///
    /// # Errors
    /// When the bed has no store, or it cannot be read.
    pub async fn scheduled(&self) -> Result<Vec<Scheduled>> {
        let store = self.scheduling_store()?;
        let service = S::ID.to_string();
        Ok(schedule::pending(store)
            .await?
            .into_iter()
            .filter(|p| p.service == service)
            .map(|p| {
                let millis = u64::try_from(p.due_at).unwrap_or_default();
                Scheduled {
                    key: ScheduleKey::new(p.key),
                    due: std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis),
                    record: Produced::of(&Recorded {
                        topic: p.record.topic,
                        partition: p.record.partition,
                        key: p.record.key,
                        payload: p.record.payload,
                        headers: owned_headers(&p.record.headers),
                    }),
                }
            })
            .collect())
    }

    /// Sends every command the service scheduled now, as if its time had come, in the order
    /// they were due, through the store's outbox as a running service would: they are recorded
    /// here (read them with [`sent`](Self::sent)). Returns how many it sent.
    ///
    /// # Errors
    /// When the bed has no store, or it fails.
    pub async fn run_scheduled(&self) -> Result<u64> {
        let store = self.scheduling_store()?;
        // Due at once, in the order they were: each moved back by the latest one's time.
        let made_due = sqlx::query(
            "UPDATE atoll_schedule SET due_at = due_at -
                 (SELECT MAX(due_at) FROM atoll_schedule WHERE service = $1)
             WHERE service = $1",
        )
        .bind(S::ID.to_string())
        .execute(store.pool())
        .await
        .map_err(crate::error::store_error("making scheduled records due"))?
        .rows_affected();
        schedule::promote(store, i64::MAX).await?;
        relay::relay_once(store, &self.producer, i64::MAX, &OutboxMetrics::default()).await?;
        Ok(made_due)
    }

    fn scheduling_store(&self) -> Result<&Store> {
        self.store.as_ref().ok_or_else(|| {
            crate::error::Error::Config(
                "scheduled commands live in the store: give the test bed one, `TestBed::new(…).with_store(…)`"
                    .into(),
            )
        })
    }

    /// A driver for saga `D` of this service: its listener, fed starts, replies and timeouts.
    pub fn saga<D: SagaOf<S>>(&self) -> SagaDriver<'_, S> {
        let listener = saga_listener::<S, D>();
        let stop = CancellationToken::new();
        if let Some(hooks) = listener.hooks() {
            hooks.started(HookRuntime {
                producer: self.producer.clone(),
                clients: None,
                source: self.source.clone(),
                runtime: tokio::runtime::Handle::current(),
                stop: stop.clone(),
                saga: crate::config::SagaConfig::default(),
                sagas_live: Default::default(),
            });
            hooks.assigned(&[0]);
        }
        SagaDriver {
            bed: self,
            listener,
            steps: D::steps().iter().map(|s| s.name()).collect(),
            start_type: start_type::<D>(),
            state_type: state_type::<D>(),
            timeout_type: timeout_type::<D>(),
            stop,
        }
    }
}

/// Where a saga under test stands, from the last state it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SagaStatus {
    /// Not started, or its start wrote no state.
    NotStarted,
    /// Waiting for the reply to step `step`'s action.
    Running {
        /// The step's name.
        step: &'static str,
    },
    /// Waiting for the reply to step `step`'s compensation.
    Compensating {
        /// The step's name.
        step: &'static str,
    },
    /// Every step succeeded.
    Completed,
    /// A step failed or timed out, and the compensations ran.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Drives one saga type of a [`TestBed`]'s service: see [`TestBed::saga`].
pub struct SagaDriver<'a, S> {
    bed: &'a TestBed<S>,
    listener: Listener<S>,
    steps: Vec<&'static str>,
    start_type: &'static str,
    state_type: &'static str,
    timeout_type: &'static str,
    stop: CancellationToken,
}

impl<S> fmt::Debug for SagaDriver<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaDriver")
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl<S> Drop for SagaDriver<'_, S> {
    fn drop(&mut self) {
        // Stops the step timers the saga armed.
        self.stop.cancel();
    }
}

impl<S: Handlers> SagaDriver<'_, S> {
    /// Starts the saga with `data`, as [`Context::start_saga`] would.
    pub async fn start<D: SagaOf<S>>(&self, data: D) -> Result<(), HandlerError> {
        let meta = self.bed.meta(
            self.listener.name(),
            Some(data.id()),
            self.start_type,
            None,
            None,
        );
        let payload = serde_json::to_vec(&data).map_err(HandlerError::permanent)?;
        self.bed.call(&self.listener, meta, &payload).await
    }

    /// The request the saga waits for: the last command it sent with a reply topic.
    fn pending_request(&self) -> Produced {
        self.bed
            .records()
            .into_iter()
            .rev()
            .find(|r| r.envelope.reply_to.is_some())
            .unwrap_or_else(|| panic!("saga `{}` sent no command yet", self.listener.name()))
    }

    /// The command the saga's pending step sent, decoded as `C`.
    ///
    /// # Panics
    /// When the saga sent no command, or the last one is not a `C`.
    pub fn request<C: Command>(&self) -> C {
        let r = self.pending_request();
        assert!(
            r.is::<C>(),
            "the saga's last command is {:?}, not `{}`",
            r.envelope.ce_type,
            C::ce_type()
        );
        r.decode()
    }

    /// Answers the pending request with `reply`, as the replier's handler would.
    pub async fn reply<R: Reply>(&self, reply: R) -> Result<(), HandlerError> {
        let request = self.pending_request();
        let payload = serde_json::to_vec(&reply).map_err(HandlerError::permanent)?;
        self.answer(&request, R::ce_type(), &payload).await
    }

    /// Lets the pending request time out, as its step's timer would.
    pub async fn time_out(&self) -> Result<(), HandlerError> {
        let request = self.pending_request();
        self.answer(&request, self.timeout_type, b"{}").await
    }

    async fn answer(
        &self,
        request: &Produced,
        ce_type: &str,
        payload: &[u8],
    ) -> Result<(), HandlerError> {
        let (headers, _) = Outgoing {
            causation_id: request.envelope.id.as_deref(),
            correlation_id: request.envelope.correlation_id.as_deref(),
            ..Outgoing::new(ce_type, &self.bed.source)
        }
        .headers();
        let env = Incoming::read(Some(&headers));
        let mut meta = self.bed.meta(
            self.listener.name(),
            request.key.clone(),
            ce_type,
            None,
            env.causation_id,
        );
        meta.id = env.id.unwrap_or_default();
        self.bed.call(&self.listener, meta, payload).await
    }

    /// Where the saga stands, from the last state it wrote.
    pub fn status(&self) -> SagaStatus {
        let Some(state) = self
            .bed
            .records()
            .into_iter()
            .rev()
            .find(|r| r.envelope.ce_type.as_deref() == Some(self.state_type))
        else {
            return SagaStatus::NotStarted;
        };
        let st: SagaState = decode_json(&state.payload, self.state_type);
        let step = || {
            let i = st.pending.as_ref().map_or(0, |p| p.step);
            self.steps.get(i).copied().unwrap_or("?")
        };
        match st.status {
            Status::Running => SagaStatus::Running { step: step() },
            Status::Compensating => SagaStatus::Compensating { step: step() },
            Status::Completed => SagaStatus::Completed,
            Status::Failed => SagaStatus::Failed {
                reason: st.reason.unwrap_or_default(),
            },
        }
    }
}
