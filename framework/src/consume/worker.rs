//! One partition's worker: routes each record, runs the handler within its time budget,
//! retries transient failures in place or through the retry topic, and dead-letters bad input,
//! permanent failures and records whose retry budget is spent (see [`super::retry`]).
//!
//! A record is *finished* (its offset may be committed) once its handler succeeded and all it
//! produced was acknowledged, or once it was skipped, or once its dead-letter write was
//! acknowledged. A record abandoned because its partition was revoked or the process is
//! stopping is not finished: it will be delivered again.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::message::OwnedHeaders;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dead_letter::{self as dlq, Failure};
use super::lanes::{Lanes, Permits};
use super::received::Received;
use super::retry::{self, Attempt, Next, Outcome, Policy};
use super::retry_topic::{Origin, RetryState};
use super::routing::{route, Route, Routes};
use super::watermark::Watermark;
use crate::codec::Codec;
use crate::config::client::{Clients, Hooked};
use crate::config::{DeliveryMode, ListenerConfig, OrderingMode};
use crate::contract::dead_letter::DeadLetterKind;
use crate::contract::envelope::{Envelope, RecordView};
use crate::contract::reply::ReplyTarget;
use crate::contract::service::Service;
use crate::contract::topic::TopicName;
use crate::handler::context::{Context, Meta, Stage};
use crate::handler::listener::{CallError, Listener};
use crate::handler::transaction::{self, TxCell};
use crate::ops::health::ConsumerHealth;
use crate::ops::metrics::{ListenerMetrics, UNAVAILABLE};
use crate::produce::transactional::Output;
use crate::produce::{Pending, Producer};
use crate::store::{outbox, Store};

/// What every worker of one listener shares.
pub(crate) struct ListenerEnv<S> {
    pub(crate) svc: Arc<S>,
    pub(crate) listener: Listener<S>,
    pub(crate) routes: Arc<Routes>,
    pub(crate) producer: Producer,
    pub(crate) codec: Arc<Codec>,
    pub(crate) source: Arc<str>,
    pub(crate) config: ListenerConfig,
    pub(crate) stop: CancellationToken,
    /// The services' database, when a listener of the process is transactional.
    pub(crate) store: Option<Store>,
    /// Records finished since the last commit, across partitions.
    pub(crate) finished: AtomicU64,
    /// The topic consumed: the listener's, or the service's retry topic.
    pub(crate) topic: TopicName,
    /// Which of the two.
    pub(crate) mode: Mode,
    /// The listener's consumer group (without the retry suffix).
    pub(crate) group: String,
    /// The group this consumer joins: `group`, or `<group>.retry` for the retry topic.
    pub(crate) consumer_group: String,
    /// Shared by the listener's main and retry consumers.
    pub(crate) metrics: Arc<ListenerMetrics>,
    /// The listener's in-flight bounds (`max_in_flight` handlers, and as many records
    /// awaiting their acknowledgements), for concurrent ordering modes.
    pub(crate) permits: Permits,
    /// The consumer's health: partitions stopped behind a failing write show there.
    pub(crate) health: Arc<ConsumerHealth>,
    /// The process's Kafka clients, for looking up other groups' committed offsets and for
    /// an exactly-once listener's transactional producer.
    pub(crate) clients: Clients,
    /// The process name: with the consumer group, an exactly-once listener's
    /// `transactional.id` (stable across restarts when configured).
    pub(crate) process: String,
    /// On the retry topic, by listener that no longer reads it and partition: the offset its
    /// retry group had committed, and when it was read (kept for [`PASSED_FOR`]: during a
    /// rolling deploy, processes of the old version may still move it).
    pub(crate) passed: Mutex<HashMap<(String, i32), Passed>>,
}

/// Whether a consumer reads the listener's own topic or the retry topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Main,
    Retry,
}

/// A partition's state, shared by the poll thread and the worker.
#[derive(Debug)]
pub(crate) struct PartitionShared {
    pub(crate) watermark: Mutex<Watermark>,
    /// Records dispatched and not yet done with.
    pub(crate) queued: AtomicUsize,
    /// Records taken from the queue and not yet done with (being handled, or waiting for their
    /// key's turn).
    pub(crate) in_flight: AtomicUsize,
    /// Cancelled on revocation and on shutdown.
    pub(crate) cancel: CancellationToken,
}

impl PartitionShared {
    pub(crate) fn new(cancel: CancellationToken) -> Self {
        Self {
            watermark: Mutex::new(Watermark::new()),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            cancel,
        }
    }
}

/// Processes a partition's records until its channel closes, in the listener's
/// [`OrderingMode`].
pub(crate) async fn run_partition<S: Service>(
    env: Arc<ListenerEnv<S>>,
    part: Arc<PartitionShared>,
    rx: mpsc::UnboundedReceiver<Delivered>,
) {
    match env.config.ordering {
        OrderingMode::Partition => sequential(env, part, rx).await,
        mode => concurrent(env, part, rx, mode).await,
    }
}

/// One record at a time: a record's handler starts once the previous one returned. What a
/// handler produced is acknowledged in the background, for at most `max_in_flight` records at
/// a time; a record is finished (committable) once its outputs are acknowledged. A record whose
/// outputs are not acknowledged is handled again at once, waiting for its acknowledgements
/// this time (so its outputs may follow those of records after it).
async fn sequential<S: Service>(
    env: Arc<ListenerEnv<S>>,
    part: Arc<PartitionShared>,
    mut rx: mpsc::UnboundedReceiver<Delivered>,
) {
    let bound = env.config.max_in_flight.max(1);
    let mut acks = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some((msg, acked)) = acks.next() => {
                if let Some(msg) = settled(&env, &part, msg, acked) {
                    handle_one(&env, &part, msg, false).await;
                }
            }
            msg = rx.recv(), if acks.len() < bound => {
                let Some(msg) = msg else { break };
                take_up(&env, &part);
                if let Some((msg, deferred)) = handle_one(&env, &part, msg, true).await {
                    let store = env.store.clone();
                    acks.push(async move { (msg, deferred.acked(store).await) });
                }
            }
        }
    }
    while let Some((msg, acked)) = acks.next().await {
        if let Some(msg) = settled(&env, &part, msg, acked) {
            handle_one(&env, &part, msg, false).await;
        }
    }
}

/// Books a record whose outputs were being acknowledged; if they were not, says so and returns
/// it, to be handled again.
fn settled<S: Service>(
    env: &ListenerEnv<S>,
    part: &PartitionShared,
    msg: Delivered,
    acked: crate::error::Result<()>,
) -> Option<Delivered> {
    match acked {
        Ok(()) => {
            // Exactly-once records have no acknowledgements to wait for: never here.
            debug_assert!(!env.exactly_once());
            book(env, part, &msg.msg, true, Vec::new());
            None
        }
        Err(e) => {
            tracing::warn!(
                listener = env.listener.name(),
                partition = msg.msg.partition(),
                offset = msg.msg.offset(),
                error = %e,
                "output not acknowledged; handling the record again"
            );
            Some(msg)
        }
    }
}

/// Records of a key in order, keys concurrently (`Key`), or all concurrently (`Unordered`),
/// at most `max_in_flight` handlers per listener (see [`Lanes`]). A record without a key has
/// no order to keep. What a handler produced is acknowledged in the lane's tail, while the
/// key's next record is handled; a record whose outputs are not acknowledged is handled again
/// next in its key's lane (never beside the key's other records), waiting for its
/// acknowledgements this time.
async fn concurrent<S: Service>(
    env: Arc<ListenerEnv<S>>,
    part: Arc<PartitionShared>,
    mut rx: mpsc::UnboundedReceiver<Delivered>,
    mode: OrderingMode,
) {
    // An item is a record, and whether its outputs may be acknowledged in the background
    // (not when it is handled again because they were not).
    let work = {
        let (env, part) = (env.clone(), part.clone());
        move |(msg, defer): (Delivered, bool)| {
            let (env, part) = (env.clone(), part.clone());
            async move {
                // Its acknowledgements are awaited in the lane's tail, while the key's next
                // record is handled; not acknowledged, it is given back to its lane.
                let (msg, deferred) = handle_one(&env, &part, msg, defer).await?;
                Some(async move {
                    let acked = deferred.acked(env.store.clone()).await;
                    settled(&env, &part, msg, acked).map(|msg| (msg, false))
                })
            }
        }
    };
    let mut lanes = Lanes::new(work, env.permits.clone(), part.cancel.clone());
    loop {
        tokio::select! {
            () = lanes.reaped() => {}
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                take_up(&env, &part);
                let key = match mode {
                    OrderingMode::Key => msg.msg.key().map(Arc::from),
                    _ => None,
                };
                lanes.admit(key, (msg, true)).await;
            }
        }
    }
    lanes.finish().await;
}

/// A handled record whose outputs are still to be acknowledged.
type Unacked = (Delivered, Deferred);

/// A record as the poll thread hands it to a partition's worker.
#[derive(Debug)]
pub(crate) struct Delivered {
    /// The record, copied off the consumer.
    pub(crate) msg: Received,
    /// When the poll thread received it.
    pub(crate) at: Instant,
}

/// What a record handled with `defer` produced and awaits: the acknowledgements of its outputs
/// and, for a transactional listener, the outbox rows to delete once they are acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    pending: Vec<Pending>,
    outbox: Vec<i64>,
}

impl Deferred {
    /// Waits for the acknowledgements, then hands the outbox rows to the store's batched
    /// delete (not here: the partition's loop does not poll this future while it handles the
    /// next record, which may need the connection a delete would hold; SQLite has one).
    async fn acked(self, store: Option<Store>) -> crate::error::Result<()> {
        let acked = Pending::all(self.pending).await;
        if let Some(store) = store {
            match acked {
                Ok(()) => store.forget_published(self.outbox),
                // Left for the record's next delivery, or the relay.
                Err(_) => store.not_sending(&self.outbox),
            }
        }
        acked
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.outbox.is_empty()
    }
}

/// Handles one record (unless its partition was revoked) and books it; with `defer`, a
/// record that succeeded is returned with its unacknowledged outputs instead, to be booked
/// once they are.
async fn handle_one<S: Service>(
    env: &ListenerEnv<S>,
    part: &PartitionShared,
    msg: Delivered,
    defer: bool,
) -> Option<Unacked> {
    let mut finished = false;
    let mut deferred = Deferred::default();
    let stage = env.exactly_once().then(Arc::<Stage>::default);
    if !part.cancel.is_cancelled() {
        let span = crate::ops::telemetry::spans::process(
            &msg.msg,
            env.listener.name(),
            &env.consumer_group,
        );
        let sink = defer.then_some(&mut deferred);
        finished = env
            .process(&msg, &part.cancel, sink, stage.as_ref())
            .instrument(span)
            .await;
    }
    if finished && !deferred.is_empty() {
        return Some((msg, deferred));
    }
    let outputs = stage
        .map(|s| std::mem::take(&mut *s.lock().expect("poisoned")))
        .unwrap_or_default();
    book(env, part, &msg.msg, finished, outputs);
    None
}

/// A worker takes a record up: it is in flight until [`book`]ed.
fn take_up<S>(env: &ListenerEnv<S>, part: &PartitionShared) {
    part.in_flight.fetch_add(1, Ordering::SeqCst);
    env.metrics.in_flight.inc();
}

/// Done with a record: its offset may be committed when `finished`, with its staged `outputs`
/// (exactly-once listeners).
fn book<S: Service>(
    env: &ListenerEnv<S>,
    part: &PartitionShared,
    msg: &Received,
    finished: bool,
    outputs: Vec<Output>,
) {
    if finished {
        part.watermark
            .lock()
            .expect("poisoned")
            .finish_with(msg.offset(), outputs);
        env.finished.fetch_add(1, Ordering::Relaxed);
    }
    part.queued.fetch_sub(1, Ordering::SeqCst);
    part.in_flight.fetch_sub(1, Ordering::SeqCst);
    env.metrics.in_flight.dec();
}

impl<S: Service> ListenerEnv<S> {
    /// Whether the listener commits its outputs and offsets in Kafka transactions.
    fn exactly_once(&self) -> bool {
        self.config.delivery == DeliveryMode::ExactlyOnce
    }

    /// Processes one record; `true` when it is finished. With `defer`, a handler's outputs are
    /// not awaited but added to it: the record is finished once they are acknowledged. With a
    /// `stage` (exactly-once), the successful attempt's outputs are left there instead.
    async fn process(
        &self,
        delivered: &Delivered,
        cancel: &CancellationToken,
        defer: Option<&mut Deferred>,
        stage: Option<&Arc<Stage>>,
    ) -> bool {
        let msg = &delivered.msg;
        let incoming = Envelope::read(msg.headers());
        if let Some(t) = incoming.ce_type {
            tracing::Span::current().record("ce_type", t);
        }
        let name = self.listener.name();
        let replayed_for_another = incoming.replay_group.is_some_and(|g| g != self.group);
        // Records on the retry topic carry their retry state; read it once.
        let state = match self.mode {
            Mode::Main => None,
            Mode::Retry => RetryState::read(msg),
        };
        let route = match (self.mode, &state) {
            // A replayed dead letter is for the listener that dead-lettered it.
            _ if replayed_for_another => Route::Skip,
            (Mode::Main, _) => route(
                self.routes.inboxes.get(&self.topic),
                &self.topic,
                (name, self.listener.ce_types()),
                incoming.ce_type,
            ),
            (Mode::Retry, Some(st)) if self.routes.retry_readers.contains(st.listener.as_str()) => {
                if st.listener == name {
                    Route::Handle
                } else {
                    Route::Skip
                }
            }
            (Mode::Retry, Some(st)) if self.routes.retry_designated == Some(name) => {
                match S::ID.group_id(&st.listener) {
                    Ok(_) => Route::Orphan,
                    Err(e) => Route::Reject(format!(
                        "record on the retry topic names listener `{}`, which cannot be: {e}",
                        st.listener
                    )),
                }
            }
            (Mode::Retry, Some(_)) => Route::Skip,
            (Mode::Retry, None) if self.routes.retry_designated == Some(name) => {
                Route::Reject("record on the retry topic has no valid atoll_retry_* headers".into())
            }
            (Mode::Retry, None) => Route::Skip,
        };
        match route {
            Route::Skip => true,
            Route::Reject(error) => {
                self.bad_input(msg, DeadLetterKind::UnknownType, error, cancel)
                    .await
            }
            Route::Handle => {
                self.handle(delivered, incoming, state, cancel, defer, stage)
                    .await
            }
            Route::Orphan => {
                let st = state.expect("an orphan has its retry state");
                self.orphan(msg, st, cancel).await
            }
        }
    }

    /// A record on the retry topic of a listener that no longer reads it (set to `strict`,
    /// or renamed): skipped when that listener's retry group had passed it, else
    /// dead-lettered in that listener's name, so that a replay takes it to its main path.
    async fn orphan(&self, msg: &Received, st: RetryState, cancel: &CancellationToken) -> bool {
        let mut backoff = Policy::of(&self.config).backoff.iter();
        let mut blocked = false;
        let passed = loop {
            match self.passed_by(&st.listener, msg.partition()).await {
                Ok(passed) => break passed,
                Err(e) => {
                    tracing::warn!(error = %e, listener = st.listener, "cannot read the committed offsets of a listener's retry group; retrying");
                    let why = format!(
                        "reading the retry group offsets of listener `{}` failed: {e}",
                        st.listener
                    );
                    if self.health.blocked(msg.partition(), why, !blocked) {
                        self.metrics.blocked.inc();
                    }
                    blocked = true;
                }
            }
            if !sleep_unless(cancel, backoff.next_delay()).await {
                break None;
            }
        };
        if blocked && self.health.unblocked(msg.partition()) {
            self.metrics.blocked.dec();
        }
        if cancel.is_cancelled() {
            return false;
        }
        if passed.is_some_and(|o| o > msg.offset()) {
            return true;
        }
        let failure = Failure {
            kind: DeadLetterKind::Handler,
            error: format!(
                "listener `{}` no longer takes records from the retry topic (its retry mode is `strict`, or it was renamed); `atoll dlq replay` hands it to that listener's main path (a renamed listener's record must be sent to it again by hand)",
                st.listener
            ),
            attempts: st.attempts,
        };
        self.dead_letter_as(msg, &st.listener, failure, cancel)
            .await
    }

    /// The offset `listener`'s retry group committed on the retry topic's `partition`.
    async fn passed_by(&self, listener: &str, partition: i32) -> crate::error::Result<Option<i64>> {
        let key = (listener.to_owned(), partition);
        if let Some((o, at)) = self.passed.lock().expect("poisoned").get(&key) {
            if at.elapsed() < PASSED_FOR {
                return Ok(*o);
            }
        }
        let group = format!("{}.retry", S::ID.group_id(listener)?);
        let (clients, topic) = (self.clients.clone(), self.topic.to_string());
        let offset = tokio::task::spawn_blocking(move || {
            committed_offset(&clients, &group, &topic, partition)
        })
        .await
        .map_err(|e| crate::error::Error::Config(format!("offset lookup panicked: {e}")))??;
        self.passed
            .lock()
            .expect("poisoned")
            .insert(key, (offset, std::time::Instant::now()));
        Ok(offset)
    }

    /// Handles a record routed to this listener; `state` is its retry state on the retry topic.
    /// Each attempt's outcome goes to the retry core ([`retry::next`]), whose decision this
    /// carries out.
    async fn handle(
        &self,
        delivered: &Delivered,
        inc: Envelope<'_>,
        state: Option<RetryState>,
        cancel: &CancellationToken,
        mut defer: Option<&mut Deferred>,
        stage: Option<&Arc<Stage>>,
    ) -> bool {
        let msg = &delivered.msg;
        if let Some(st) = &state {
            let wait = st
                .not_before
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            if !sleep_unless(cancel, wait).await {
                return false;
            }
        }
        if let Err(error) = self.reply_target(&inc).await {
            return self
                .bad_input(msg, DeadLetterKind::Decode, error, cancel)
                .await;
        }
        if msg.payload().is_none() {
            let error = "record has no value".to_owned();
            return self
                .bad_input(msg, DeadLetterKind::Decode, error, cancel)
                .await;
        }
        let (before, delivery) = state
            .as_ref()
            .map_or((0, 0), |st| (st.attempts, st.delivery));
        // One copy of the metadata for every attempt's context.
        let meta = Arc::new(self.meta(msg, inc, delivered.at));
        let policy = Policy::of(&self.config);
        let mut in_place = 0;
        for tries in 1.. {
            let (outcome, error) = self.attempt(msg, &meta, &mut defer, stage, cancel).await;
            // An unreachable registry is no fault of the record: it does not spend the budget.
            if outcome != Outcome::Unavailable {
                in_place += 1;
            }
            let attempts = before + tries;
            let at = Attempt {
                in_place,
                tries,
                delivery,
            };
            match retry::next(outcome, at, &policy) {
                Next::Done => {
                    self.metrics.handled.inc();
                    return true;
                }
                Next::RetryIn(delay) => {
                    let kind = failure_label(outcome);
                    tracing::warn!(
                        kind,
                        error,
                        attempt = attempts,
                        ?delay,
                        "handler failed; retrying in place"
                    );
                    self.metrics.retried.inc();
                    if !sleep_unless(cancel, delay).await {
                        return false;
                    }
                }
                Next::ToRetryTopic => {
                    let kind = outcome_kind(outcome);
                    let delivery = delivery + 1;
                    let st = RetryState {
                        listener: self.listener.name().to_owned(),
                        attempts,
                        delivery,
                        not_before: SystemTime::now() + self.config.retry_topic_delay(delivery),
                        origin: Origin::of(msg),
                    };
                    let topic = S::ID.retry();
                    tracing::warn!(kind = %kind, error, attempts, delivery, "handler failed; sent to the retry topic");
                    crate::ops::telemetry::spans::failed(kind.as_str(), &error);
                    self.metrics.retried.inc();
                    let payload = msg.payload().unwrap_or_default();
                    let headers = || st.headers(msg, &error);
                    return match self
                        .write(&topic, msg, payload, headers, cancel, true)
                        .await
                    {
                        Written::Yes => true,
                        Written::Abandoned => false,
                        Written::TooLarge(why) => {
                            let failure = Failure {
                                kind,
                                error: format!("{error}; not sent to the retry topic: {why}"),
                                attempts,
                            };
                            self.dead_letter(msg, failure, cancel).await
                        }
                    };
                }
                Next::DeadLetter(kind) => {
                    let failure = Failure {
                        kind,
                        error,
                        attempts,
                    };
                    return self.dead_letter(msg, failure, cancel).await;
                }
            }
        }
        unreachable!("the attempt loop only ends by returning")
    }

    /// `Err` saying why a record's reply address is bad input (see [`ReplyTarget`]): its form,
    /// or, from the cluster's metadata, a topic or partition that does not exist. When the
    /// cluster cannot say, the record is handled (its reply is retried as any output).
    async fn reply_target(&self, inc: &Envelope<'_>) -> std::result::Result<(), String> {
        let Some(target) = ReplyTarget::parse(inc.reply_to, inc.reply_partition)? else {
            return Ok(());
        };
        // What was read a while ago may be out of date (a topic created or grown since): a
        // record is refused only on a fresh read.
        for fresh in [false, true] {
            match self.producer.partitions(target.topic, fresh).await {
                Ok(partitions) if target.fits(partitions).is_ok() => return Ok(()),
                Ok(partitions) if fresh => return target.fits(partitions),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "cannot check a reply address now");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The handled record's metadata. A record without a `ce_id` (or with an empty one) is
    /// given one from where it was written, the same on every delivery: ids are never empty,
    /// so two such records are never taken for one (an inbox duplicate, a saga's redelivered
    /// input).
    fn meta(&self, msg: &Received, inc: Envelope<'_>, received: Instant) -> Meta {
        let id = inc.id.filter(|id| !id.is_empty()).map_or_else(
            || format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset()),
            str::to_owned,
        );
        let own = |v: Option<&str>| v.map(str::to_owned);
        Meta {
            listener: self.listener.name(),
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_owned),
            key_bytes: msg.key().map(<[u8]>::to_vec),
            correlation_id: inc.correlation_id.map_or_else(|| id.clone(), str::to_owned),
            id,
            ce_type: inc.ce_type.unwrap_or_default().to_owned(),
            reply_to: own(inc.reply_to),
            causation_id: own(inc.causation_id),
            // Checked before the record was handled.
            reply_partition: inc.reply_partition.and_then(|p| p.parse().ok()),
            content_type: own(inc.content_type),
            time: own(inc.time),
            received_at: Some(received),
        }
    }

    /// Runs the handler once within its time budget: the outcome, and the error when it
    /// failed (counted in the metrics). With `defer`, a success hands its unacknowledged
    /// outputs over instead of waiting for them; only a success does, so the sink is empty
    /// until then.
    async fn attempt(
        &self,
        msg: &Received,
        meta: &Arc<Meta>,
        defer: &mut Option<&mut Deferred>,
        stage: Option<&Arc<Stage>>,
        cancel: &CancellationToken,
    ) -> (Outcome, String) {
        let (outcome, error) = self.attempt_once(msg, meta, defer, stage, cancel).await;
        if let (Some(stage), false) = (stage, outcome == Outcome::Succeeded) {
            // A failed attempt's outputs are never committed.
            stage.lock().expect("poisoned").clear();
        }
        (outcome, error)
    }

    /// [`Self::attempt`], but a failure leaves its staged outputs.
    async fn attempt_once(
        &self,
        msg: &Received,
        meta: &Arc<Meta>,
        defer: &mut Option<&mut Deferred>,
        stage: Option<&Arc<Stage>>,
        cancel: &CancellationToken,
    ) -> (Outcome, String) {
        let budget = self.config.handler_timeout();
        let tx = match self.begin(meta).await {
            Ok(Begun::Plain) => None,
            Ok(Begun::Tx(cell)) => Some(cell),
            Ok(Begun::Duplicate) => {
                self.metrics.deduplicated.inc();
                tracing::info!(ce_id = meta.id, "handled before (inbox): skipped");
                // A crash may have come between its commit and its publish: what it produced
                // goes out now, before the records after it.
                return match self.publish_left(meta).await {
                    Ok(()) => (Outcome::Succeeded, String::new()),
                    Err(e) => self.store_failed(&e),
                };
            }
            Err(e) => return self.store_failed(&e),
        };
        let ctx = match stage {
            Some(stage) => Context::<S>::staged(
                self.producer.clone(),
                self.codec.clone(),
                self.source.clone(),
                meta.clone(),
                stage.clone(),
            ),
            None => Context::<S>::new(
                self.producer.clone(),
                self.codec.clone(),
                self.source.clone(),
                meta.clone(),
                tx.clone(),
            ),
        };
        let payload = msg.payload().unwrap_or_default();
        let fut = self.listener.call(self.svc.clone(), ctx.clone(), payload);
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(budget, AssertUnwindSafe(fut).catch_unwind()).await;
        ListenerMetrics::observe(&self.metrics.handler_duration, started.elapsed());
        let failed = |kind, permanent| Outcome::Failed { kind, permanent };
        let (outcome, error) = match result {
            Ok(Ok(Ok(()))) if tx.is_some() => {
                let cell = tx.expect("checked");
                return match self.commit(&cell, defer, cancel).await {
                    Ok(true) => (Outcome::Succeeded, String::new()),
                    // Revoked first: not finished (the retry's sleep sees the cancellation).
                    Ok(false) => (
                        Outcome::Unavailable,
                        "revoked before its outputs were published".into(),
                    ),
                    Err(e) => self.store_failed(&e),
                };
            }
            Ok(Ok(Ok(()))) => match defer.take() {
                Some(sink) => {
                    sink.pending = ctx.take_produced();
                    return (Outcome::Succeeded, String::new());
                }
                None => match ctx.acked().await {
                    Ok(()) => return (Outcome::Succeeded, String::new()),
                    Err(e) => (
                        failed(DeadLetterKind::Handler, false),
                        format!("produced record not acknowledged: {e}"),
                    ),
                },
            },
            Ok(Ok(Err(CallError::Decode(error)))) => (Outcome::BadInput, error),
            // A transaction that lost a conflict, or a database out of reach, is no fault of
            // the record: retried without spending the budget.
            Ok(Ok(Err(CallError::Handler(e))))
                if e.sql_error().is_some_and(crate::error::sql_is_transient) =>
            {
                (Outcome::Unavailable, e.to_string())
            }
            Ok(Ok(Err(CallError::Handler(e)))) => (
                failed(DeadLetterKind::Handler, e.is_permanent()),
                e.to_string(),
            ),
            Ok(Ok(Err(CallError::Unavailable(e)))) => (Outcome::Unavailable, e),
            Ok(Err(panic)) => (failed(DeadLetterKind::Panic, true), panic_message(&*panic)),
            Err(_) => (
                failed(DeadLetterKind::Timeout, false),
                format!("handler exceeded its time budget of {budget:?}"),
            ),
        };
        self.count_failure(outcome);
        (outcome, error)
    }

    /// Opens the record's transaction and claims its inbox row, for a transactional listener.
    async fn begin(&self, meta: &Meta) -> crate::error::Result<Begun> {
        if !self.listener.is_transactional() {
            return Ok(Begun::Plain);
        }
        let store = self
            .store
            .as_ref()
            .expect("a transactional listener has a store");
        Ok(
            match transaction::begin(store, &self.group, &meta.id).await? {
                Some(cell) => Begun::Tx(cell),
                None => Begun::Duplicate,
            },
        )
    }

    /// Publishes what the handling of a record delivered again left in the outbox.
    async fn publish_left(&self, meta: &Meta) -> crate::error::Result<()> {
        let store = self
            .store
            .as_ref()
            .expect("a transactional listener has a store");
        let source = transaction::source(&self.group, &meta.id);
        let n = outbox::publish_left_by(store, &self.producer, &source).await?;
        if n > 0 {
            tracing::info!(
                rows = n,
                "published what the record's first handling left behind"
            );
        }
        Ok(())
    }

    /// Commits a handled record's transaction with its outbox rows, then publishes them from
    /// memory before the partition's (or the key's) next record, so each key's outputs keep
    /// their order. With `defer` their acknowledgements, and the delete of their rows, are
    /// awaited in the background like a plain listener's outputs; otherwise here. A publish that
    /// cannot finish before the partition is revoked (`Ok(false)`) leaves the record
    /// unfinished: the rows are committed, and whoever handles the record next finds its inbox
    /// row and publishes them before the records after it (or the relay does).
    async fn commit(
        &self,
        cell: &TxCell,
        defer: &mut Option<&mut Deferred>,
        cancel: &CancellationToken,
    ) -> crate::error::Result<bool> {
        let store = self
            .store
            .as_ref()
            .expect("a transactional listener has a store");
        let committed = transaction::commit(cell).await?;
        let mut backoff = Policy::of(&self.config).backoff.iter();
        loop {
            let published = match defer.take() {
                Some(sink) => {
                    store.sending(&committed.ids);
                    let sent = tokio::select! {
                        sent = outbox::send(&self.producer, &committed.records) => sent,
                        // Revoked while the producer's queue is full.
                        () = cancel.cancelled() => {
                            store.not_sending(&committed.ids);
                            return Ok(false);
                        }
                    };
                    match sent {
                        Ok(pending) => {
                            *sink = Deferred {
                                pending,
                                outbox: committed.ids,
                            };
                            return Ok(true);
                        }
                        Err(e) => {
                            store.not_sending(&committed.ids);
                            *defer = Some(sink);
                            Err(e)
                        }
                    }
                }
                None => tokio::select! {
                    published = outbox::publish(store, &self.producer, &committed) => published,
                    () = cancel.cancelled() => return Ok(false),
                },
            };
            match published {
                Ok(()) => return Ok(true),
                Err(e) => tracing::warn!(
                    error = %e,
                    rows = committed.ids.len(),
                    "publishing the outbox failed; retrying"
                ),
            }
            if !sleep_unless(cancel, backoff.next_delay()).await {
                return Ok(false);
            }
        }
    }

    /// The outcome of a failure of the store itself: unreachable or a lost conflict is retried
    /// without spending the budget; anything else is the listener's transient failure.
    fn store_failed(&self, e: &crate::error::Error) -> (Outcome, String) {
        let outcome = if e.is_transient() {
            Outcome::Unavailable
        } else {
            Outcome::Failed {
                kind: DeadLetterKind::Handler,
                permanent: false,
            }
        };
        self.count_failure(outcome);
        (outcome, e.to_string())
    }

    /// Dead-letters bad input after its one and only attempt.
    async fn bad_input(
        &self,
        msg: &Received,
        kind: DeadLetterKind,
        error: String,
        cancel: &CancellationToken,
    ) -> bool {
        self.metrics.failed(kind);
        self.dead_letter(
            msg,
            Failure {
                kind,
                error,
                attempts: 1,
            },
            cancel,
        )
        .await
    }

    /// Writes the record to the service's DLQ and waits for the ack; `false` if abandoned.
    async fn dead_letter(
        &self,
        msg: &Received,
        failure: Failure,
        cancel: &CancellationToken,
    ) -> bool {
        self.dead_letter_as(msg, self.listener.name(), failure, cancel)
            .await
    }

    /// [`Self::dead_letter`] in the name of `listener`, whose record it is. A record too large
    /// for the DLQ is dead-lettered as a pointer to itself (see
    /// [`PAYLOAD_OMITTED`](crate::dead_letter::PAYLOAD_OMITTED)).
    async fn dead_letter_as(
        &self,
        msg: &Received,
        listener: &str,
        mut failure: Failure,
        cancel: &CancellationToken,
    ) -> bool {
        let topic = S::ID.dlq();
        let payload = msg.payload().unwrap_or_default();
        let headers = || dlq::headers(msg, listener, &failure);
        let written = match self
            .write(&topic, msg, payload, headers, cancel, true)
            .await
        {
            Written::TooLarge(why) => {
                failure.error = format!(
                    "{}; the record ({} bytes) is too large for the DLQ ({why}): its payload is a pointer to the original record",
                    failure.error,
                    payload.len()
                );
                let (pointer, headers) = dlq::pointer(msg, listener, &failure);
                let headers = || headers.clone();
                self.write(&topic, msg, &pointer, headers, cancel, false)
                    .await
            }
            written => written,
        };
        let written = matches!(written, Written::Yes);
        if written {
            self.metrics.dead_lettered.inc();
            crate::ops::telemetry::spans::failed(failure.kind.as_str(), &failure.error);
            tracing::warn!(kind = %failure.kind, error = failure.error, attempts = failure.attempts, dlq = topic.as_str(), "record dead-lettered");
        }
        written
    }

    /// Writes `payload` with the record's key and `headers()` to `topic` until the broker
    /// acknowledged it. A record too large to send is [`Written::TooLarge`] when `may_shrink`
    /// (the caller sends something smaller instead). Any other failure is retried after a
    /// back-off, one log line each, the partition stopped behind it and shown so (health and
    /// `atoll_partitions_blocked`) until the write succeeds or is abandoned (revocation,
    /// shutdown).
    async fn write(
        &self,
        topic: &TopicName,
        msg: &Received,
        payload: &[u8],
        headers: impl Fn() -> OwnedHeaders,
        cancel: &CancellationToken,
        may_shrink: bool,
    ) -> Written {
        let mut backoff = Policy::of(&self.config).backoff.iter();
        let mut blocked = false;
        let written = loop {
            let sent = async {
                let pending = self
                    .producer
                    .send(topic.as_str(), msg.key(), payload, headers())
                    .await?;
                pending.acked().await
            };
            let result = tokio::select! {
                result = sent => result,
                () = cancel.cancelled() => break Written::Abandoned,
            };
            let e = match result {
                Ok(()) => break Written::Yes,
                Err(e) if may_shrink && e.is_too_large() => break Written::TooLarge(e.to_string()),
                Err(e) => e,
            };
            let why = format!("writing to `{topic}` failed: {e}");
            tracing::error!(error = %e, topic = topic.as_str(), partition = msg.partition(), offset = msg.offset(), "write failed; the partition waits for it, retrying");
            if self.health.blocked(msg.partition(), why, !blocked) {
                self.metrics.blocked.inc();
            }
            blocked = true;
            if !sleep_unless(cancel, backoff.next_delay()).await {
                break Written::Abandoned;
            }
        };
        if blocked && self.health.unblocked(msg.partition()) {
            self.metrics.blocked.dec();
        }
        written
    }
}

/// How a [`ListenerEnv::write`] ended.
enum Written {
    /// Acknowledged by the broker.
    Yes,
    /// Given up: the partition was revoked or the process is stopping.
    Abandoned,
    /// The record is too large to be sent (why).
    TooLarge(String),
}

/// A retry group's committed offset on a partition (if any), and when it was read.
pub(crate) type Passed = (Option<i64>, std::time::Instant);

/// How long a retry group's committed offset, once read, is trusted.
const PASSED_FOR: Duration = Duration::from_secs(10);

/// The offset `group` committed on `topic`'s `partition`, if any (blocking).
fn committed_offset(
    clients: &Clients,
    group: &str,
    topic: &str,
    partition: i32,
) -> crate::error::Result<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer<Hooked> = clients
        .with(|c| {
            c.remove("group.instance.id");
            c.set("group.id", group);
        })
        .create("offset lookup")
        .map_err(|e| crate::error::Error::kafka("creating a consumer", e))?;
    // Serves the request for a first OAUTHBEARER token, before the blocking call below.
    let _ = consumer.poll(Duration::ZERO);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| {
            crate::error::Error::kafka(format!("reading `{group}`'s committed offsets"), e)
        })?;
    let Some(entry) = got.elements().into_iter().next() else {
        return Ok(None);
    };
    if let Err(e) = entry.error() {
        return Err(crate::error::Error::kafka(
            format!("reading `{group}`'s committed offset of {topic} partition {partition}"),
            e,
        ));
    }
    Ok(match entry.offset() {
        rdkafka::Offset::Offset(o) => Some(o),
        _ => None,
    })
}

/// Sleeps; `false` when cancelled first.
async fn sleep_unless(cancel: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = cancel.cancelled() => false,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)");
    format!("handler panicked: {text}")
}

/// How a record's handling begins.
enum Begun {
    /// Not transactional.
    Plain,
    /// In this transaction, its inbox row claimed.
    Tx(Arc<TxCell>),
    /// Handled before: its inbox row exists.
    Duplicate,
}

/// The dead-letter kind of a failed outcome (bad input is `decode`).
fn outcome_kind(outcome: Outcome) -> DeadLetterKind {
    match outcome {
        Outcome::Failed { kind, .. } => kind,
        Outcome::Succeeded | Outcome::BadInput | Outcome::Unavailable => DeadLetterKind::Decode,
    }
}

/// The `kind` a failed attempt is counted (`atoll_records_failed_total`) and logged as: its
/// dead-letter kind, or `unavailable` for a dependency out of reach (the registry, the store),
/// which is no fault of the record.
fn failure_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Unavailable => UNAVAILABLE,
        other => outcome_kind(other).as_str(),
    }
}

impl<S: Service> ListenerEnv<S> {
    /// Counts a failed attempt under its [`failure_label`].
    fn count_failure(&self, outcome: Outcome) {
        match outcome {
            Outcome::Unavailable => {
                self.metrics.unavailable.inc();
            }
            other => self.metrics.failed(outcome_kind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_under_their_cause() {
        let failed = |kind| Outcome::Failed {
            kind,
            permanent: false,
        };
        let cases = [
            (Outcome::Unavailable, "unavailable"),
            (Outcome::BadInput, "decode"),
            (failed(DeadLetterKind::Timeout), "timeout"),
            (failed(DeadLetterKind::Handler), "handler"),
            (failed(DeadLetterKind::Panic), "panic"),
        ];
        for (outcome, label) in cases {
            assert_eq!(failure_label(outcome), label, "{outcome:?}");
        }
    }

    #[test]
    fn panic_messages_are_readable() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*p), "handler panicked: boom 1");
        let p = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*p), "handler panicked: static");
    }
}
