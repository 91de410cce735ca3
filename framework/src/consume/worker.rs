//! One partition's worker: routes each record, runs the handler within its time budget,
//! retries transient failures in place or through the retry topic, and dead-letters bad input,
//! permanent failures and records whose retry budget is spent (see [`super::retry`]).
//!
//! Each attempt reads as begin → call → settle → [`retry::next`]: the listener's
//! [`Delivery`] gives the attempt its sink, the handler produces into it, and a success is
//! settled into a [`Settled`] (see [`crate::handler::delivery`]); a failure becomes an
//! [`Outcome`] ([`super::outcome`]) for the retry core to decide on.
//!
//! A record is *finished* (its offset may be committed) once its handler succeeded and all it
//! produced was acknowledged, or once it was skipped, or once its dead-letter write was
//! acknowledged. A record abandoned because its partition was revoked or the process is
//! stopping is not finished: it will be delivered again.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::env::{ListenerEnv, Mode};
use super::lanes::Lanes;
use super::outcome::{failure_label, outcome_kind, panic_message, Failed};
use super::received::Received;
use super::retry::{self, Attempt, Next, Outcome, Policy};
use super::routing::{route, route_retry, Route};
use super::watermark::Watermark;
use super::write::Written;
use crate::backoff::sleep_unless;
use crate::config::OrderingMode;
use crate::contract::dead_letter::{DeadLetterKind, Failure};
use crate::contract::envelope::{Envelope, RecordView};
use crate::contract::reply::ReplyTarget;
use crate::contract::retry_topic::{Origin, RetryState};
use crate::contract::service::Service;
use crate::handler::context::{Context, Meta};
use crate::handler::delivery::{Acking, Acks, Begun, Settled, Sink};
use crate::handler::listener::{CallError, Calls};
use crate::ops::metrics::ListenerMetrics;
use crate::ops::status::Then;
use crate::produce::transactional::Output;

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

/// A record as the poll thread hands it to a partition's worker.
#[derive(Debug)]
pub(crate) struct Delivered {
    /// The record, copied off the consumer.
    pub(crate) msg: Received,
    /// When the poll thread received it.
    pub(crate) at: Instant,
}

/// How a record's handling ended.
#[derive(Debug)]
pub(crate) enum Handled {
    /// Finished: its offset may be committed once it is settled.
    Finished(Settled),
    /// Not finished (revoked, stopping): it will be delivered again.
    Abandoned,
}

/// A handled record whose outputs are still to be acknowledged.
type Unacked = (Delivered, Acking);

/// Processes a partition's records until its channel closes, in the listener's
/// [`OrderingMode`].
pub(crate) async fn run_partition<S: Service>(
    env: Arc<ListenerEnv<S>>,
    part: Arc<PartitionShared>,
    rx: mpsc::UnboundedReceiver<Delivered>,
) {
    let batch = env.setup.config.batch_size;
    let batches = env.io.delivery.is_transactional() || env.listener.calls() == Calls::Batch;
    match env.setup.config.ordering {
        OrderingMode::Partition if batch > 1 && batches && env.setup.group.mode == Mode::Main => {
            sequential(env, part, rx, batch).await
        }
        OrderingMode::Partition => sequential(env, part, rx, 1).await,
        mode => concurrent(env, part, rx, mode).await,
    }
}

/// What awaits its acknowledgements in the background: the records it finishes.
type Acked = Vec<(Delivered, crate::error::Result<()>)>;

/// One record at a time: a record's handler starts once the previous one returned. What a
/// handler produced is acknowledged in the background, for at most `max_in_flight` records at
/// a time; a record is finished (committable) once its outputs are acknowledged. A record whose
/// outputs are not acknowledged is handled again at once, waiting for its acknowledgements
/// this time (so its outputs may follow those of records after it). With `batch` above 1 (a
/// transactional listener, or a handler that takes a `Batch`), the records already waiting,
/// up to `batch` (and those that come within `batch_wait_ms`), are handled together: in one
/// database transaction, or one call (see [`super::batch`]). While a batch gathers, finished
/// records' acknowledgements wait; while a record or batch runs, they land.
async fn sequential<S: Service>(
    env: Arc<ListenerEnv<S>>,
    part: Arc<PartitionShared>,
    mut rx: mpsc::UnboundedReceiver<Delivered>,
    batch: usize,
) {
    let bound = env.setup.config.max_in_flight.max(1);
    let mut acks = FuturesUnordered::<futures::future::BoxFuture<'static, Acked>>::new();
    // Records whose acknowledgements are awaited (a batch's are awaited together).
    let mut awaited = 0;
    loop {
        tokio::select! {
            biased;
            Some(acked) = acks.next() => {
                awaited -= acked.len();
                for (msg, acked) in acked {
                    if let Some(msg) = settled(&env, &part, msg, acked) {
                        handle_one(&env, &part, msg, Acks::Wait).await;
                    }
                }
            }
            msg = rx.recv(), if awaited < bound => {
                let Some(msg) = msg else { break };
                take_up(&env, &part);
                let mut waiting = vec![msg];
                gather(&env, &part, &mut rx, &mut waiting, batch).await;
                let work = async {
                    if waiting.len() == 1 {
                        let msg = waiting.pop().expect("one record");
                        handle_one(&env, &part, msg, Acks::Background)
                            .await
                            .map(|(msg, acking)| (vec![msg], acking))
                            .into_iter()
                            .collect()
                    } else {
                        super::batch::run(&env, &part, waiting).await
                    }
                };
                // The records before these finish as their acknowledgements land, while
                // these run (their retries may take long): their offsets are committed
                // meanwhile. One whose outputs were not acknowledged is handled again after.
                let mut again = Vec::new();
                tokio::pin!(work);
                let unacked = loop {
                    tokio::select! {
                        biased;
                        unacked = &mut work => break unacked,
                        Some(acked) = acks.next() => {
                            awaited -= acked.len();
                            again.extend(
                                acked
                                    .into_iter()
                                    .filter_map(|(msg, acked)| settled(&env, &part, msg, acked)),
                            );
                        }
                    }
                };
                for msg in again {
                    handle_one(&env, &part, msg, Acks::Wait).await;
                }
                for (msgs, acking) in unacked {
                    awaited += msgs.len();
                    acks.push(Box::pin(async move {
                        let acked = acking.acked().await;
                        acked_each(msgs, acked)
                    }));
                }
            }
        }
    }
    while let Some(acked) = acks.next().await {
        for (msg, acked) in acked {
            if let Some(msg) = settled(&env, &part, msg, acked) {
                handle_one(&env, &part, msg, Acks::Wait).await;
            }
        }
    }
}

/// Adds to `waiting` (a batch's first record) the partition's records already waiting, up to
/// `batch`; with `batch_wait_ms`, waits that long from the first record's receipt for more.
async fn gather<S: Service>(
    env: &ListenerEnv<S>,
    part: &PartitionShared,
    rx: &mut mpsc::UnboundedReceiver<Delivered>,
    waiting: &mut Vec<Delivered>,
    batch: usize,
) {
    let until = waiting[0].at + env.setup.config.batch_wait();
    while waiting.len() < batch {
        let next = match rx.try_recv() {
            Ok(msg) => Some(msg),
            Err(_) if Instant::now() >= until => None,
            Err(_) => tokio::select! {
                msg = rx.recv() => msg,
                () = tokio::time::sleep_until(until.into()) => None,
                () = part.cancel.cancelled() => None,
            },
        };
        let Some(msg) = next else { break };
        take_up(env, part);
        waiting.push(msg);
    }
}

/// The answer for `msgs` that one acknowledgement settles: each finished once it landed; a
/// failure fails the first (a record's own outputs are never shared: a batch's are outbox
/// rows, which never fail their records).
fn acked_each(msgs: Vec<Delivered>, acked: crate::error::Result<()>) -> Acked {
    let mut acked = Some(acked);
    msgs.into_iter()
        .map(|msg| (msg, acked.take().unwrap_or(Ok(()))))
        .collect()
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
    // An item is a record, and whether its acknowledgements may be awaited in the background
    // (not when it is handled again because they were not).
    let work = {
        let (env, part) = (env.clone(), part.clone());
        move |(msg, acks): (Delivered, Acks)| {
            let (env, part) = (env.clone(), part.clone());
            async move {
                // Its acknowledgements are awaited in the lane's tail, while the key's next
                // record is handled; not acknowledged, it is given back to its lane.
                let (msg, acking) = handle_one(&env, &part, msg, acks).await?;
                Some(async move {
                    let acked = acking.acked().await;
                    settled(&env, &part, msg, acked).map(|msg| (msg, Acks::Wait))
                })
            }
        }
    };
    let mut lanes = Lanes::new(work, env.counters.permits.clone(), part.cancel.clone());
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
                lanes.admit(key, (msg, Acks::Background)).await;
            }
        }
    }
    lanes.finish().await;
}

/// Finishes a record whose outputs were being acknowledged; if they were not, says so and
/// returns it, to be handled again.
pub(super) fn settled<S: Service>(
    env: &ListenerEnv<S>,
    part: &PartitionShared,
    msg: Delivered,
    acked: crate::error::Result<()>,
) -> Option<Delivered> {
    match acked {
        Ok(()) => {
            finish(env, part, &msg.msg, Vec::new());
            done_with(env, part);
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

/// Handles one record (unless its partition was revoked): a record whose outputs are still to
/// be acknowledged is returned with them (with [`Acks::Background`]); any other is done with.
pub(super) async fn handle_one<S: Service>(
    env: &ListenerEnv<S>,
    part: &PartitionShared,
    msg: Delivered,
    acks: Acks,
) -> Option<Unacked> {
    let handled = if part.cancel.is_cancelled() {
        Handled::Abandoned
    } else {
        let group = &env.setup.group.joined;
        let span = crate::ops::telemetry::spans::process(&msg.msg, env.listener.name(), group);
        env.process(&msg, &part.cancel, acks).instrument(span).await
    };
    match handled {
        Handled::Finished(Settled::Acking(acking)) => return Some((msg, acking)),
        Handled::Finished(Settled::Done) => finish(env, part, &msg.msg, Vec::new()),
        Handled::Finished(Settled::Staged(outputs)) => finish(env, part, &msg.msg, outputs),
        Handled::Abandoned => {}
    }
    done_with(env, part);
    None
}

/// A worker takes a record up: it is in flight until [`done_with`].
pub(super) fn take_up<S>(env: &ListenerEnv<S>, part: &PartitionShared) {
    part.in_flight.fetch_add(1, Ordering::SeqCst);
    env.counters.metrics.in_flight.inc();
}

/// A record is finished: its offset may be committed, with its staged `outputs` (exactly-once
/// listeners).
pub(super) fn finish<S>(
    env: &ListenerEnv<S>,
    part: &PartitionShared,
    msg: &Received,
    outputs: Vec<Output>,
) {
    part.watermark.lock().finish_with(msg.offset(), outputs);
    env.counters.finished.fetch_add(1, Ordering::Relaxed);
}

/// Done with a record, finished or not.
pub(super) fn done_with<S>(env: &ListenerEnv<S>, part: &PartitionShared) {
    part.queued.fetch_sub(1, Ordering::SeqCst);
    part.in_flight.fetch_sub(1, Ordering::SeqCst);
    env.counters.metrics.in_flight.dec();
}

impl<S: Service> ListenerEnv<S> {
    /// Where a record goes (see [`route`]).
    pub(super) fn route_of(&self, msg: &Received, incoming: &Envelope<'_>) -> Route {
        let (name, setup) = (self.listener.name(), &self.setup);
        if incoming
            .replay_group
            .is_some_and(|g| g != setup.group.listener)
        {
            // A replayed dead letter is for the listener that dead-lettered it.
            return Route::Skip;
        }
        match setup.group.mode {
            Mode::Main => route(
                setup.routes.inboxes.get(&setup.topic),
                &setup.topic,
                (name, self.listener.ce_types()),
                incoming.ce_type,
            ),
            // Records on the retry topic carry their retry state.
            Mode::Retry(_) => route_retry(&setup.routes, name, RetryState::read(msg), |l| {
                S::ID.group_id(l).map(drop).map_err(|e| e.to_string())
            }),
        }
    }

    /// Routes one record and carries the route out.
    async fn process(
        &self,
        delivered: &Delivered,
        cancel: &CancellationToken,
        acks: Acks,
    ) -> Handled {
        let msg = &delivered.msg;
        let incoming = Envelope::read(msg.headers());
        if let Some(t) = incoming.ce_type {
            tracing::Span::current().record("ce_type", t);
        }
        let route = self.route_of(msg, &incoming);
        match route {
            Route::Skip => Handled::Finished(Settled::Done),
            Route::Reject(error) => {
                self.bad_input(msg, DeadLetterKind::UnknownType, error, cancel)
                    .await
            }
            Route::Handle => self.handle(delivered, incoming, None, cancel, acks).await,
            // Its time has come: the poll thread held it until then.
            Route::HandleRetry(st) => {
                self.handle(delivered, incoming, Some(st), cancel, acks)
                    .await
            }
            Route::Orphan(st) => self.orphan(msg, st, cancel).await,
        }
    }

    /// Handles a record routed to this listener; `state` is its retry state on the retry topic
    /// (its time has come).
    /// Each attempt's outcome goes to the retry core ([`retry::next`]), whose decision this
    /// carries out.
    async fn handle(
        &self,
        delivered: &Delivered,
        inc: Envelope<'_>,
        state: Option<RetryState>,
        cancel: &CancellationToken,
        acks: Acks,
    ) -> Handled {
        let msg = &delivered.msg;
        if let Err(error) = self.acceptable(msg, &inc).await {
            return self
                .bad_input(msg, DeadLetterKind::Decode, error, cancel)
                .await;
        }
        let (before, delivery) = state
            .as_ref()
            .map_or((0, 0), |st| (st.attempts, st.delivery));
        // One copy of the metadata for every attempt's context.
        let meta = Arc::new(msg.meta(self.listener.name(), &inc, delivered.at));
        let policy = Policy::of(&self.setup.config);
        let (mut tries, mut in_place) = (0, 0);
        loop {
            tries += 1;
            let (outcome, error) = match self.attempt(msg, &meta, acks).await {
                Ok(settled) => {
                    self.counters.metrics.handled.inc();
                    return Handled::Finished(settled);
                }
                Err(failed) => failed.outcome(),
            };
            self.count_failure(outcome);
            // An unreachable dependency is no fault of the record: it does not spend the budget.
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
                Next::RetryIn(delay) => {
                    let kind = failure_label(outcome);
                    tracing::warn!(
                        kind,
                        error,
                        attempt = attempts,
                        ?delay,
                        "handler failed; retrying in place"
                    );
                    let metrics = &self.counters.metrics;
                    metrics.retried.inc();
                    let at = (msg.topic(), msg.partition(), msg.offset());
                    (metrics.observed).failed(kind, &error, Then::Retrying, at);
                    if !sleep_unless(cancel, delay).await {
                        return Handled::Abandoned;
                    }
                }
                Next::ToRetryTopic => {
                    let failure = Failure {
                        kind: outcome_kind(outcome),
                        error,
                        attempts,
                    };
                    return self
                        .to_retry_topic(msg, failure, delivery + 1, cancel)
                        .await;
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
    }

    /// One attempt: begins it with the listener's delivery, calls the handler, and settles
    /// what it produced.
    async fn attempt(
        &self,
        msg: &Received,
        meta: &Arc<Meta>,
        acks: Acks,
    ) -> Result<Settled, Failed> {
        let sink = match self.io.delivery.begin(meta).await.map_err(Failed::Store)? {
            Begun::Fresh(sink) => sink,
            Begun::Duplicate => {
                self.counters.metrics.deduplicated.inc();
                tracing::info!(ce_id = meta.id, "handled before (inbox): skipped");
                return Ok(Settled::Done);
            }
        };
        let ctx = self.context(meta, sink.clone());
        self.call(ctx.clone(), msg).await?;
        // A set-based handler's call of this record alone marked it failed (only a `Batch`
        // handler can: other listeners take no lock for it).
        if self.listener.calls() == Calls::Batch {
            if let Some(marked) = ctx.take_mark() {
                return Err(Failed::Call(CallError::Handler(marked)));
            }
        }
        sink.settle(acks).await.map_err(Failed::Unsettled)
    }

    /// The context of an attempt at the record `meta` describes, producing into `sink`.
    pub(super) fn context(&self, meta: &Arc<Meta>, sink: Arc<Sink>) -> Context<S> {
        let io = &self.io;
        let (producer, codec) = (io.producer.clone(), io.codec.clone());
        Context::new(
            producer,
            codec,
            self.setup.source.clone(),
            meta.clone(),
            sink,
        )
    }

    /// Runs the handler on `msg` within its time budget, catching its panic.
    pub(super) async fn call(&self, ctx: Context<S>, msg: &Received) -> Result<(), Failed> {
        let budget = self.setup.config.handler_timeout();
        let payload = msg.payload().unwrap_or_default();
        let fut = self
            .listener
            .call(self.svc.clone(), ctx, payload, || msg.header_list());
        let started = Instant::now();
        let ended = tokio::time::timeout(budget, AssertUnwindSafe(fut).catch_unwind()).await;
        let metrics = &self.counters.metrics;
        let took = started.elapsed();
        ListenerMetrics::observe(&metrics.handler_duration, took);
        metrics.observed.handled_in(took);
        match ended {
            Err(_) => Err(Failed::TimedOut(budget)),
            Ok(Err(panic)) => Err(Failed::Panicked(panic_message(&*panic))),
            Ok(Ok(returned)) => returned.map_err(Failed::Call),
        }
    }

    /// Sends a failed record to the retry tier of its next `delivery` (the listener's ladder
    /// says which); a record too large for it is dead-lettered.
    async fn to_retry_topic(
        &self,
        msg: &Received,
        failure: Failure,
        delivery: u32,
        cancel: &CancellationToken,
    ) -> Handled {
        let tier = self.setup.config.retry_tier(delivery);
        let st = RetryState {
            listener: self.listener.name().to_owned(),
            attempts: failure.attempts,
            delivery,
            not_before: SystemTime::now() + Duration::from_millis(tier),
            origin: Origin::of(msg),
        };
        let (kind, error, attempts) = (failure.kind, &failure.error, failure.attempts);
        tracing::warn!(kind = %kind, error, attempts, delivery, "handler failed; sent to the retry topic");
        crate::ops::telemetry::spans::failed(kind.as_str(), error);
        let metrics = &self.counters.metrics;
        metrics.retried.inc();
        let at = (msg.topic(), msg.partition(), msg.offset());
        (metrics.observed).failed(kind.as_str(), error, Then::RetryTopic, at);
        let payload = msg.payload().unwrap_or_default();
        let headers = || st.headers(msg, error);
        let topic = S::ID.retry_tier(tier);
        match self
            .write(&topic, msg, payload, headers, cancel, true)
            .await
        {
            Written::Yes => Handled::Finished(Settled::Done),
            Written::Abandoned => Handled::Abandoned,
            Written::TooLarge(why) => {
                let failure = Failure {
                    error: format!("{error}; not sent to the retry topic: {why}"),
                    ..failure
                };
                self.dead_letter(msg, failure, cancel).await
            }
        }
    }

    /// `Err` saying why the record is bad input before any attempt: a bad reply address, or
    /// no value.
    pub(super) async fn acceptable(
        &self,
        msg: &Received,
        inc: &Envelope<'_>,
    ) -> Result<(), String> {
        self.reply_target(inc).await?;
        match msg.payload() {
            Some(_) => Ok(()),
            None => Err("record has no value".to_owned()),
        }
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
            match self.io.producer.partitions(target.topic, fresh).await {
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

    /// Counts a failed attempt under its [`failure_label`].
    pub(super) fn count_failure(&self, outcome: Outcome) {
        let metrics = &self.counters.metrics;
        match outcome {
            Outcome::Unavailable => {
                metrics.unavailable.inc();
            }
            other => metrics.failed(outcome_kind(other)),
        }
    }
}
