//! A listener's consumer: one consumer group, one poll thread, one worker task per assigned
//! partition.
//!
//! The poll thread never runs handlers, so a slow handler cannot make the consumer exceed
//! `max.poll.interval.ms`: records are handed to per-partition workers, a partition whose
//! buffer is full is paused (and resumed when it drained to half), a retry topic's partition
//! is paused while its head waits to be due ([`due`]), and finished offsets are
//! committed from the per-partition [`Watermark`] every
//! `listener.commit_interval_ms` or every `listener.commit_batch` finished records, whichever
//! comes first, through the consumer's [`committer`] thread. On revocation and on shutdown the
//! poll thread stops dispatching, lets in-flight records finish (up to
//! `listener.drain_timeout_ms`) and waits for their commit; a partition whose progress that
//! commit missed is [`parked`] until it comes back.

use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::config::client::connected;
use crate::config::kafka::set_default;
use crate::config::{DeliveryMode, RetryMode, StartFrom};
use crate::consume::close;
use crate::consume::committer;
use crate::consume::committer::{Batch, CommitQueue, Commits};
use crate::consume::due::{Admit, Due};
use crate::consume::env::{ListenerEnv, Mode};
use crate::consume::holds;
use crate::consume::parked::{self, Parked};
use crate::consume::received::Received;
use crate::consume::watermark::Watermark;
use crate::consume::worker::{run_partition, Delivered, PartitionShared};
use crate::contract::envelope::RecordView;
use crate::contract::retry_topic::RetryState;
use crate::contract::service::Service;
use crate::contract::status::PartitionStatus;
use crate::error::{Error, Result};
use crate::ops::health::ConsumerHealth;
use crate::ops::metrics::ListenerMetrics;
use crate::ops::stats::ListenerStats;

struct Slot {
    shared: Arc<PartitionShared>,
    tx: mpsc::UnboundedSender<Delivered>,
    /// Whether the consumer paused it (for a full buffer or records held until due).
    paused: bool,
    /// Whether its buffer is full: it stays paused until it drains to half.
    full: bool,
    /// On a retry topic: records polled before they are due (see [`due`]).
    waiting: Due<Delivered>,
    /// The timestamp of the last record received (ms since the Unix epoch): how far behind
    /// in time the partition is, while it lags.
    received_ms: Option<i64>,
}

impl Slot {
    /// How soon the partition wants looking at, when it is paused or holds records: a full
    /// buffer drains any time; held records fall due, and a partition resumes, when
    /// [`Due::next_change`] says.
    fn watch(&self, now: SystemTime) -> Option<Duration> {
        if self.full {
            return Some(DRAINING);
        }
        if !self.paused && !self.waiting.holds_any() {
            return None;
        }
        // Nothing to wait for, yet paused: a pause or resume failed, tried again soon.
        let wait = match self.waiting.next_change().map(|at| at.duration_since(now)) {
            Some(Ok(wait)) if !wait.is_zero() => wait,
            _ => DRAINING,
        };
        Some(wait.min(IDLE))
    }
}

/// The poll timeout while no partition needs looking at.
const IDLE: Duration = Duration::from_millis(100);

/// The poll timeout while a partition's full buffer drains (or a failed pause or resume is
/// tried again).
const DRAINING: Duration = Duration::from_millis(10);

/// The sooner of two waits, either absent.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

type Slots = Mutex<HashMap<i32, Slot>>;

/// The consumer's callbacks: commit and drain on revocation; health and metrics.
struct ListenerContext<S> {
    env: Arc<ListenerEnv<S>>,
    slots: Arc<Slots>,
    state: Arc<Mutex<Assignment>>,
    health: Arc<ConsumerHealth>,
    commits: CommitQueue,
    /// Partitions taken away before their progress was committed.
    parked: Parked,
    /// Partitions it paused for an operator's hold (see [`holds`]).
    held: Mutex<BTreeSet<i32>>,
}

/// A listener's current assignment, as seen by its rebalance callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Assignment {
    /// The service.
    pub service: crate::contract::topic::ServiceId,
    /// The listener.
    pub listener: &'static str,
    /// The partitions assigned now.
    pub partitions: Vec<i32>,
    /// How many times partitions were revoked from it.
    pub revocations: u64,
}

impl<S: Service> ClientContext for ListenerContext<S> {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let hooks = self.env.io.clients.hooks();
        hooks.log(self.env.listener.name(), level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => self.health.broker_up(false),
            // E.g. a static member fenced by another with its `group.instance.id`: the
            // consumer does nothing from now on, and only a restart mends it.
            Some(RDKafkaErrorCode::Fatal) => self.health.fatal(format!("{error}: {reason}")),
            _ => {}
        }
        let hooks = self.env.io.clients.hooks();
        hooks.error(self.env.listener.name(), &error, reason);
    }

    fn generate_oauth_token(
        &self,
        _: Option<&str>,
    ) -> std::result::Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.env.io.clients.hooks().token()
    }

    fn stats(&self, statistics: Statistics) {
        let up = connected(&statistics);
        self.health.broker_up(up);
        if up {
            self.env.io.clients.hooks().connected();
        }
        let Some(topic) = statistics.topics.get(self.env.setup.topic.as_str()) else {
            // It holds none of the topic's partitions.
            let metrics = &self.env.counters.metrics;
            metrics
                .observed
                .holds(self.env.setup.topic.as_str(), Vec::new());
            return;
        };
        let group = &self.env.setup.group.joined;
        let holds = self.holds_now();
        let slots = self.slots.lock();
        let now_ms = crate::ops::status::now_ms();
        let metrics = &self.env.counters.metrics;
        let blocked = self.health.blocked_now();
        let mut held = Vec::new();
        for (p, part) in &topic.partitions {
            if *p < 0 || !part.desired {
                continue;
            }
            let lag = lag(part);
            let received = slots.get(p).and_then(|s| s.received_ms);
            let seconds = lag.and_then(|lag| lag_seconds(lag, received, now_ms));
            if let Some(lag) = lag {
                metrics.set_lag(&topic.topic, group, *p, lag, seconds);
            }
            held.push(PartitionStatus {
                topic: topic.topic.clone(),
                partition: *p,
                committed: (part.committed_offset >= 0).then_some(part.committed_offset),
                end: (part.hi_offset >= 0).then_some(part.hi_offset),
                lag,
                lag_seconds: seconds,
                paused: slots.get(p).is_some_and(|s| s.paused),
                blocked: blocked.iter().find(|b| b.0 == *p).map(|b| b.1.clone()),
                held: holds.get(p).cloned(),
            });
        }
        held.sort_by_key(|p| p.partition);
        metrics.observed.holds(&topic.topic, held);
    }
}

/// How far behind in time a partition is: none when it does not lag; else the age of the last
/// record received from it (the consumer reads about there), when known.
fn lag_seconds(lag: i64, received_ms: Option<i64>, now_ms: i64) -> Option<f64> {
    if lag <= 0 {
        return Some(0.0);
    }
    received_ms.map(|at| (now_ms - at).max(0) as f64 / 1000.0)
}

/// A partition's lag: from the committed offset, or before the first commit from the start of
/// the partition (where `auto.offset.reset = earliest` begins); `None` while unknown.
fn lag(part: &rdkafka::statistics::Partition) -> Option<i64> {
    if part.consumer_lag >= 0 {
        Some(part.consumer_lag)
    } else if part.committed_offset < 0 && part.hi_offset >= 0 && part.lo_offset >= 0 {
        Some(part.hi_offset - part.lo_offset)
    } else {
        None
    }
}

impl<S: Service> ConsumerContext for ListenerContext<S> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(
                    listener = self.env.listener.name(),
                    topic = self.env.setup.topic.as_str(),
                    ?revoked,
                    "partitions revoked"
                );
                {
                    let mut st = self.state.lock();
                    st.partitions.retain(|p| !revoked.contains(p));
                    st.revocations += 1;
                }
                // Not paused for whoever owns them next here: a hold is obeyed anew then.
                self.obey_holds(consumer);
                self.env
                    .counters
                    .metrics
                    .assigned
                    .dec_by(revoked.len() as i64);
                let (topic, group) = (self.env.setup.topic.as_str(), &self.env.setup.group.joined);
                self.env.counters.metrics.forget_lag(topic, group, &revoked);
                let taken = {
                    let mut slots = self.slots.lock();
                    revoked
                        .iter()
                        .filter_map(|p| slots.remove(p).map(|s| (*p, s)))
                        .collect()
                };
                for (p, part) in release(consumer, &self.env, taken) {
                    tracing::info!(
                        listener = self.env.listener.name(),
                        partition = p,
                        "partition taken before its progress was committed; kept in case it comes back"
                    );
                    self.parked.park(p, part);
                }
                if let (Some(hooks), Mode::Main) =
                    (self.env.listener.hooks(), self.env.setup.group.mode)
                {
                    hooks.revoked(&revoked);
                }
            }
            Rebalance::Assign(tpl) => {
                let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(
                    listener = self.env.listener.name(),
                    topic = self.env.setup.topic.as_str(),
                    ?assigned,
                    "partitions assigned"
                );
                self.catch_up(consumer, &assigned);
                if let (Some(hooks), Mode::Main) =
                    (self.env.listener.hooks(), self.env.setup.group.mode)
                {
                    hooks.assigned(&assigned);
                }
                self.env
                    .counters
                    .metrics
                    .assigned
                    .inc_by(assigned.len() as i64);
                self.health.joined();
                // An assignment comes from the group coordinator: a broker answered.
                self.health.broker_up(true);
                let mut st = self.state.lock();
                st.partitions.extend(assigned);
                st.partitions.sort_unstable();
                st.partitions.dedup();
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance failed"),
        }
    }

    /// Once the partitions are assigned (pausing one only works then), before any of their
    /// records is fetched: the held ones are paused.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.obey_holds(consumer);
        }
    }
}

impl<S: Service> ListenerContext<S> {
    /// The holds on the partitions it paused for them, by partition.
    fn holds_now(&self) -> std::collections::BTreeMap<i32, crate::contract::control::Hold> {
        let held = self.held.lock().clone();
        let mut holds = self.holds();
        holds.retain(|p, _| held.contains(p));
        holds
    }

    /// The holds on its listener: none on the retry topic's consumer (a hold names a
    /// partition of the listener's topic).
    fn holds(&self) -> std::collections::BTreeMap<i32, crate::contract::control::Hold> {
        match self.env.setup.group.mode {
            Mode::Main => {
                let service = S::ID.to_string();
                self.env.io.holds.of(&service, self.env.listener.name())
            }
            Mode::Retry(_) => Default::default(),
        }
    }

    /// Pauses the held partitions it owns and resumes those it paused for a hold that was
    /// lifted or that it no longer owns (unless a full buffer keeps one paused).
    fn obey_holds(&self, consumer: &BaseConsumer<Self>) {
        let holds = self.holds();
        let assigned = self.state.lock().partitions.clone();
        let full: BTreeSet<i32> = self
            .slots
            .lock()
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(p, _)| *p)
            .collect();
        let mut held = self.held.lock();
        let plan = holds::plan(&assigned, &holds, &held);
        let (listener, topic) = (self.env.listener.name(), self.env.setup.topic.as_str());
        for p in plan.pause {
            let hold = &holds[&p];
            match consumer.pause(&partition_list(topic, p)) {
                Ok(()) => {
                    tracing::info!(
                        listener,
                        partition = p,
                        by = hold.by,
                        reason = hold.reason,
                        "partition held by an operator: paused"
                    );
                    held.insert(p);
                }
                Err(e) => {
                    tracing::warn!(listener, partition = p, error = %e, "cannot pause a held partition; tried again on the next change")
                }
            }
        }
        for p in plan.release {
            held.remove(&p);
            if full.contains(&p) {
                continue;
            }
            let lifted = assigned.contains(&p);
            match consumer.resume(&partition_list(topic, p)) {
                Ok(()) if lifted => {
                    tracing::info!(listener, partition = p, "partition no longer held: resumed")
                }
                // Taken away while held: whoever owns it next obeys the hold.
                Ok(()) => tracing::debug!(listener, partition = p, "a held partition was revoked"),
                Err(e) => {
                    tracing::warn!(listener, partition = p, error = %e, "cannot resume a partition let go")
                }
            }
        }
    }

    /// Commits what partitions given back to this consumer progressed while they were parked
    /// (see [`parked`]), before their fetch starts from the committed offset: waits for their
    /// records still in flight, then commits their watermarks where [`parked::catch_up`] says
    /// so. Each step waits at most the drain timeout (10 s for the committed offsets): the
    /// poll thread is held meanwhile. Whatever fails, the records are handled again (at least
    /// once).
    fn catch_up(&self, consumer: &BaseConsumer<Self>, assigned: &[i32]) {
        let back = self.parked.take(assigned);
        if back.is_empty() {
            return;
        }
        let (listener, topic) = (self.env.listener.name(), self.env.setup.topic.as_str());
        wait_drained(&self.env, back.iter().map(|(_, part)| part.as_ref()));
        let mut tpl = TopicPartitionList::new();
        for (p, _) in &back {
            tpl.add_partition(topic, *p);
        }
        let committed = match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(listener, %error, "cannot read the committed offsets of partitions given back; records handled here before may be handled again");
                return;
            }
        };
        let batch = parked::catch_up_batch(topic, &back, &committed);
        if batch.offsets.is_empty() {
            return;
        }
        let offsets = batch.offsets.clone();
        if self
            .commits
            .commit_within(batch, self.env.setup.config.drain_timeout())
        {
            tracing::info!(
                listener,
                ?offsets,
                "partitions given back: their progress here committed"
            );
        } else {
            tracing::warn!(listener, ?offsets, "partitions given back: their progress here is not known to be committed; records handled here before may be handled again");
        }
    }
}

/// Stops the given partitions' workers, waits for their in-flight record, commits. Returns
/// the partitions whose progress this commit may not hold (a record still in flight, or a
/// commit the broker did not take) of an at-least-once listener. An exactly-once listener
/// keeps none: the outputs of its records are written with their commit or not at all, so
/// handling them again duplicates nothing, and a failed commit took their outputs with it.
fn release<S: Service>(
    consumer: &BaseConsumer<ListenerContext<S>>,
    env: &ListenerEnv<S>,
    taken: Vec<(i32, Slot)>,
) -> Vec<(i32, Arc<PartitionShared>)> {
    stop_slots(consumer, env, &taken);
    // Before the batch is taken: one finishing in between is counted as unsettled.
    let unsettled: Vec<bool> = taken
        .iter()
        .map(|(_, s)| s.shared.in_flight.load(Ordering::SeqCst) > 0)
        .collect();
    // The current watermark, even if an earlier commit already sent it: that one may have
    // failed.
    let batch = batch(taken.iter().map(|(p, s)| (p, s)), |w| w.committable());
    let landed = consumer.context().commits.commit_and_wait(batch);
    if env.setup.config.delivery == DeliveryMode::ExactlyOnce {
        return Vec::new();
    }
    taken
        .into_iter()
        .zip(unsettled)
        .filter(|(_, unsettled)| *unsettled || !landed)
        .map(|((p, slot), _)| (p, slot.shared))
        .collect()
}

/// Cancels `taken`'s slots, resumes their paused partitions (not to leave one paused for
/// whoever handles it next in this process) unless a hold keeps them paused, and waits up to the drain timeout for their
/// records in flight to finish.
fn stop_slots<S: Service>(
    consumer: &BaseConsumer<ListenerContext<S>>,
    env: &ListenerEnv<S>,
    taken: &[(i32, Slot)],
) {
    // A partition still held stays paused (a rewind keeps its partitions): a revoked one was
    // let go by `obey_holds` first.
    let held = consumer.context().held.lock().clone();
    for (p, slot) in taken {
        slot.shared.cancel.cancel();
        if slot.paused && !held.contains(p) {
            let _ = consumer.resume(&partition_list(env.setup.topic.as_str(), *p));
        }
    }
    wait_drained(env, taken.iter().map(|(_, s)| s.shared.as_ref()));
}

/// Waits up to the drain timeout for `parts`' records in flight to finish.
fn wait_drained<'a, S>(env: &ListenerEnv<S>, parts: impl Iterator<Item = &'a PartitionShared>) {
    let parts: Vec<&PartitionShared> = parts.collect();
    let deadline = Instant::now() + env.setup.config.drain_timeout();
    while parts
        .iter()
        .any(|part| part.in_flight.load(Ordering::SeqCst) > 0)
    {
        if Instant::now() >= deadline {
            tracing::warn!("in-flight records did not finish before the drain deadline");
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// `(partition, offset)` for each slot whose watermark `pick` gives an offset, with the staged
/// outputs of the records below it (exactly-once listeners).
fn batch<'a>(
    slots: impl Iterator<Item = (&'a i32, &'a Slot)>,
    pick: impl Fn(&mut Watermark) -> Option<i64>,
) -> Batch {
    let mut batch = Batch::default();
    for (p, slot) in slots {
        let mut watermark = slot.shared.watermark.lock();
        if let Some(o) = pick(&mut watermark) {
            batch.offsets.push((*p, o));
            batch.outputs.extend(watermark.take_staged(o));
        }
    }
    batch
}

/// One partition of `topic`.
fn partition_list(topic: &str, p: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, p);
    tpl
}

/// A running listener: its poll thread.
#[derive(Debug)]
pub(crate) struct ListenerThread {
    handle: thread::JoinHandle<()>,
    state: Arc<Mutex<Assignment>>,
    metrics: Arc<ListenerMetrics>,
    mode: Mode,
}

impl ListenerThread {
    /// Whether it consumes the listener's own topic (not the retry topic).
    pub(crate) fn is_main(&self) -> bool {
        self.mode == Mode::Main
    }

    /// The listener's counters.
    pub(crate) fn stats(&self) -> ListenerStats {
        self.metrics.snapshot()
    }

    /// The listener's assignment now.
    pub(crate) fn assignment(&self) -> Assignment {
        self.state.lock().clone()
    }

    /// Waits for the thread to end (after the stop token was cancelled).
    pub(crate) fn join(self) {
        if self.handle.join().is_err() {
            tracing::error!("a listener thread panicked");
        }
    }
}

/// The listener consumer's settings, and where a partition without a committed offset starts.
fn consumer_config<S>(env: &ListenerEnv<S>) -> (ClientConfig, Offset) {
    let mut config = env.io.clients.config().clone();
    let start_from = env.setup.config.start_from;
    config.set("auto.offset.reset", start_from.offset_reset());
    config.set("group.protocol", env.setup.config.group_protocol.property());
    // Outputs of aborted transactions (exactly-once listeners, here or upstream) are never
    // handled; committed ones once their transaction commits.
    set_default(&mut config, "isolation.level", "read_committed");
    if env.setup.config.delivery == DeliveryMode::ExactlyOnce {
        // Its rewinds read committed offsets, which are stable only so.
        config.set("isolation.level", "read_committed");
    }
    let reset_to = match start_from {
        StartFrom::Earliest => Offset::Beginning,
        StartFrom::Latest => Offset::End,
    };
    // Lag per partition and broker reachability come from the statistics.
    set_default(&mut config, "statistics.interval.ms", "5000");
    config
        .set("group.id", &env.setup.group.joined)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    (config, reset_to)
}

/// How the listener's committer commits: offsets alone, or in Kafka transactions with the
/// outputs (exactly once, under `<group>.<process name>`).
fn commits_of<S>(env: &ListenerEnv<S>) -> Commits {
    match env.setup.config.delivery {
        DeliveryMode::AtLeastOnce => Commits::Plain,
        DeliveryMode::ExactlyOnce => Commits::Transactional {
            clients: env.io.clients.clone(),
            transactional_id: format!("{}.{}", env.setup.group.joined, env.setup.process),
        },
    }
}

/// Creates the listener's consumer, subscribes, and starts its poll thread.
pub(crate) fn spawn<S: Service>(
    env: Arc<ListenerEnv<S>>,
    runtime: tokio::runtime::Handle,
    health: Arc<ConsumerHealth>,
) -> Result<ListenerThread> {
    let (metrics, mode) = (env.counters.metrics.clone(), env.setup.group.mode);
    let group = env.setup.group.joined.clone();
    let (config, reset_to) = consumer_config(&env);
    let slots = Arc::new(Slots::default());
    let state = Arc::new(Mutex::new(Assignment {
        service: S::ID,
        listener: env.listener.name(),
        partitions: Vec::new(),
        revocations: 0,
    }));
    let (commits, requests) = committer::queue();
    let context = ListenerContext {
        env: env.clone(),
        slots: slots.clone(),
        state: state.clone(),
        health,
        commits,
        parked: Parked::default(),
        held: Mutex::default(),
    };
    let consumer: Arc<BaseConsumer<ListenerContext<S>>> = Arc::new(
        config
            .create_with_context(context)
            .map_err(|e| Error::kafka(format!("creating the consumer of group `{group}`"), e))?,
    );
    let committer = committer::spawn(
        consumer.clone(),
        requests,
        env.setup.topic.as_str().to_owned(),
        env.counters.metrics.clone(),
        format!("atoll-commit-{}", env.listener.name()),
        commits_of(&env),
    )?;
    if let Err(e) = consumer.subscribe(&[env.setup.topic.as_str()]) {
        // The committer ends once asked, not when the consumer is dropped (it holds the
        // consumer, whose context holds its queue).
        consumer.context().commits.stop();
        let _ = committer.join();
        return Err(Error::kafka(format!("subscribing `{group}`"), e));
    }
    let poll = PollLoop {
        consumer: consumer.clone(),
        topic: env.setup.topic.as_str().into(),
        env,
        slots,
        runtime,
        committer,
        reset_to,
        rewinds: rewind_backoff().iter(),
        consecutive: 0,
    };
    let handle = thread::Builder::new()
        .name(format!("atoll-{}", poll.env.listener.name()))
        .spawn(move || poll.run());
    let handle = match handle {
        Ok(handle) => handle,
        Err(source) => {
            // The closure (and the committer's handle in it) is gone: stop it by its queue.
            consumer.context().commits.stop();
            return Err(Error::Spawn {
                what: "a listener thread".into(),
                source,
            });
        }
    };
    Ok(ListenerThread {
        handle,
        state,
        metrics,
        mode,
    })
}

struct PollLoop<S: Service> {
    /// Shared with the committer thread until it stops.
    consumer: Arc<BaseConsumer<ListenerContext<S>>>,
    /// The topic consumed, shared by every record received.
    topic: Arc<str>,
    env: Arc<ListenerEnv<S>>,
    slots: Arc<Slots>,
    runtime: tokio::runtime::Handle,
    committer: thread::JoinHandle<()>,
    /// Where a partition without a committed offset starts (`auto.offset.reset`).
    reset_to: Offset,
    /// The waits before rewinds after failed transactions (see [`PollLoop::rewind`]).
    rewinds: crate::backoff::Delays,
    /// Failed transactions with no commit between them, up to this rewind.
    consecutive: u32,
}

/// The waits before rewinds after failed transactions with no commit between them.
fn rewind_backoff() -> crate::backoff::Backoff {
    crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
}

impl<S: Service> PollLoop<S> {
    fn run(mut self) {
        let interval = self.env.setup.config.commit_interval();
        let batch = self.env.setup.config.commit_batch;
        let mut last_commit = Instant::now();
        // How soon a paused or waiting partition wants looking at, if any does.
        let mut watching = None;
        let mut holds_seen = 0;
        while !self.env.io.stop.is_cancelled() {
            self.consumer.context().health.polled();
            let holds_now = self.env.io.holds.generation();
            if holds_now != holds_seen {
                self.consumer.context().obey_holds(&self.consumer);
                holds_seen = holds_now;
            }
            let timeout = watching.unwrap_or(IDLE);
            match self.consumer.poll(timeout) {
                Some(Ok(msg)) => {
                    let wait = self.dispatch(Delivered {
                        at: Instant::now(),
                        msg: Received::copy(&msg, &self.topic),
                    });
                    watching = sooner(watching, wait);
                }
                Some(Err(e)) => {
                    tracing::warn!(listener = self.env.listener.name(), error = %e, "consumer error")
                }
                None => {}
            }
            // Only a paused or waiting partition is looked at: most turns have none.
            if watching.is_some() {
                watching = self.release();
            }
            if self.fatal_or_rewound() {
                break;
            }
            if self.env.counters.finished.load(Ordering::Relaxed) >= batch
                || last_commit.elapsed() >= interval
            {
                // Records finishing from here on count towards the next batch.
                self.env.counters.finished.swap(0, Ordering::Relaxed);
                self.commit();
                last_commit = Instant::now();
            }
        }
        self.close();
    }

    /// Stops when the committer says the listener cannot go on (`true`); rewinds when it asks.
    fn fatal_or_rewound(&mut self) -> bool {
        let (stop, rewind) = {
            let rewind = self.consumer.context().commits.rewind();
            (rewind.stop(), rewind.requested())
        };
        if let Some(why) = stop {
            // Fenced (another process with this process name owns the work), or no
            // transactions at all: stop at once, commit nothing, leave the group. A restart
            // does not mend it until the configuration (or the broker) changes.
            let name = self.env.listener.name();
            tracing::error!(listener = name, why, "the listener stops");
            let health = &self.consumer.context().health;
            health.fatal(format!("listener `{name}` stopped: {why}"));
            return true;
        }
        if rewind {
            self.rewind();
        }
        false
    }

    /// Releases every partition, stops the committer and closes the consumer.
    fn close(self) {
        let taken: Vec<(i32, Slot)> = self.slots.lock().drain().collect();
        let partitions: Vec<i32> = taken.iter().map(|(p, _)| *p).collect();
        release(&self.consumer, &self.env, taken);
        if let (Some(hooks), Mode::Main) = (self.env.listener.hooks(), self.env.setup.group.mode) {
            hooks.revoked(&partitions);
        }
        let context = self.consumer.context();
        context.commits.stop();
        if self.committer.join().is_err() {
            tracing::error!("a committer thread panicked");
        }
        context.health.stopped();
        // Dropping the consumer (the last reference, the committer's gone) closes it: it leaves
        // the group unless membership is static. Bounded, since librdkafka's close is not.
        let name = self.env.listener.name();
        let deadline = self.env.setup.config.drain_timeout();
        if !close::drop_within(self.consumer, deadline, format!("atoll-close-{name}")) {
            tracing::warn!(
                listener = name,
                ?deadline,
                "the consumer did not close in time; it is left to close in the background"
            );
        }
        tracing::info!(listener = name, "listener stopped");
    }

    /// Hands a record to its partition's worker, or holds it until it is due; how soon the
    /// partition wants looking at, when it is paused or holds records.
    fn dispatch(&self, delivered: Delivered) -> Option<Duration> {
        self.env.counters.metrics.consumed.inc();
        let p = delivered.msg.partition();
        let now = SystemTime::now();
        let due = self.due_of(&delivered.msg, now);
        let mut slots = self.slots.lock();
        let slot = slots.entry(p).or_insert_with(|| {
            let shared = Arc::new(PartitionShared::new(self.env.io.stop.child_token()));
            let (tx, rx) = mpsc::unbounded_channel();
            self.runtime
                .spawn(run_partition(self.env.clone(), shared.clone(), rx));
            Slot {
                shared,
                tx,
                paused: false,
                full: false,
                waiting: Due::default(),
                received_ms: None,
            }
        });
        slot.received_ms = delivered.msg.timestamp_ms().or(slot.received_ms);
        if let Admit::Now(delivered) = slot.waiting.admit(delivered, due, now) {
            self.send(p, slot, delivered);
        }
        self.settle(p, slot, now, None);
        slot.watch(now)
    }

    /// When `msg` is due: only a record on a retry topic for this listener, while it takes
    /// its records from there, waits for a time of its own (one it no longer takes is
    /// dead-lettered at once, see [`super::orphan`]).
    fn due_of(&self, msg: &Received, now: SystemTime) -> Option<SystemTime> {
        let (Mode::Retry(tier), RetryMode::NonBlocking) =
            (self.env.setup.group.mode, self.env.setup.config.retry)
        else {
            return None;
        };
        RetryState::read(msg)
            .filter(|st| st.listener == self.env.listener.name())
            .map(|st| tier.due(st.not_before, now))
    }

    /// Starts `delivered` in its partition's watermark and hands it to the partition's worker.
    fn send(&self, p: i32, slot: &mut Slot, delivered: Delivered) {
        slot.shared.watermark.lock().start(delivered.msg.offset());
        let queued = slot.shared.queued.fetch_add(1, Ordering::SeqCst) + 1;
        if slot.tx.send(delivered).is_err() {
            tracing::error!(partition = p, "partition worker is gone");
        }
        if queued >= self.env.setup.config.max_buffered {
            slot.full = true;
        }
    }

    /// Pauses partition `p` while its buffer is full or it holds records until due, and
    /// resumes it once neither is so, given the partitions an operator's hold keeps paused
    /// (`held`; without them, it only pauses).
    fn settle(&self, p: i32, slot: &mut Slot, now: SystemTime, held: Option<&BTreeSet<i32>>) {
        let want = slot.full || !slot.waiting.may_resume(now);
        if want && !slot.paused {
            match self.consumer.pause(&self.partition(p)) {
                Ok(()) => {
                    tracing::debug!(partition = p, full = slot.full, "partition paused");
                    if !slot.full {
                        self.env.counters.metrics.retry_pauses.inc();
                    }
                    slot.paused = true;
                }
                Err(e) => tracing::warn!(partition = p, error = %e, "cannot pause partition"),
            }
        } else if !want && slot.paused {
            let Some(held) = held else { return };
            if held.contains(&p) {
                // Its hold keeps it paused: the consumer no longer does.
                slot.paused = false;
                return;
            }
            match self.consumer.resume(&self.partition(p)) {
                Ok(()) => {
                    tracing::debug!(partition = p, "partition resumed");
                    slot.paused = false;
                }
                Err(e) => tracing::warn!(partition = p, error = %e, "cannot resume partition"),
            }
        }
    }

    /// Hands on the held records that fell due and resumes the partitions that drained to
    /// half their buffer and hold nothing; how soon one that stays paused or holds records
    /// wants looking at.
    /// librdkafka fetches a resumed partition again from after the last record it delivered.
    fn release(&self) -> Option<Duration> {
        let low = self.env.setup.config.max_buffered / 2;
        let slack = match self.env.setup.group.mode {
            Mode::Retry(tier) => tier.slack(),
            Mode::Main => Duration::ZERO,
        };
        let held = self.consumer.context().held.lock().clone();
        let now = SystemTime::now();
        let mut any = None;
        for (p, slot) in self.slots.lock().iter_mut() {
            for delivered in slot.waiting.take_due(now, slack) {
                self.send(*p, slot, delivered);
            }
            if slot.full && slot.shared.queued.load(Ordering::SeqCst) <= low {
                slot.full = false;
            }
            self.settle(*p, slot, now, Some(&held));
            any = sooner(any, slot.watch(now));
        }
        any
    }

    /// Commits every watermark that moved since the last commit.
    fn commit(&self) {
        let batch = batch(self.slots.lock().iter(), Watermark::take_commit);
        self.consumer.context().commits.commit(batch);
    }

    /// After a failed transaction: drops the work of every partition (its workers stop, their
    /// staged outputs are gone) and seeks each assigned partition back to its committed offset,
    /// so its records are handled again and their outputs go into a new transaction. Done
    /// only once every partition was sought back; until then it is tried again on every turn
    /// of the loop (commits taken meanwhile are dropped). A failure right after a commit is
    /// rewound at once; failures with no commit between them wait longer and longer (1 s
    /// doubling to 30 s) before their rewind, so a transaction that can never commit does not
    /// spin.
    fn rewind(&mut self) {
        let taken: Vec<(i32, Slot)> = self.slots.lock().drain().collect();
        // Their handlers finish (or time out; up to the drain timeout): none may still be
        // running when the hooks start again below, or it would write into their fresh state.
        stop_slots(&self.consumer, &self.env, &taken);
        if self.consumer.context().commits.rewind().take_committed() {
            // The failures so far were not consecutive: no wait for this one.
            self.rewinds = rewind_backoff().iter();
            self.consecutive = 0;
        }
        self.consecutive += 1;
        let delay = if self.consecutive == 1 {
            Duration::ZERO
        } else {
            self.rewinds.next_delay()
        };
        tracing::warn!(
            listener = self.env.listener.name(),
            ?delay,
            "a transaction failed: the partitions are handled again from their committed offsets"
        );
        std::thread::sleep(delay);
        let topic = self.env.setup.topic.as_str();
        let committed = self.consumer.assignment().and_then(|assigned| {
            self.consumer
                .committed_offsets(assigned, Duration::from_secs(10))
        });
        let committed = match committed {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the committed offsets to rewind to; retrying");
                return;
            }
        };
        for e in committed.elements_for_topic(topic) {
            let to = match (e.error(), e.offset()) {
                (Err(err), _) => {
                    tracing::error!(partition = e.partition(), error = %err, "cannot read the committed offset to rewind to; retrying");
                    return;
                }
                (Ok(()), Offset::Offset(o)) => Offset::Offset(o),
                // No commit yet: from where `auto.offset.reset` starts.
                (Ok(()), _) => self.reset_to,
            };
            if let Err(err) = self
                .consumer
                .seek(topic, e.partition(), to, Duration::from_secs(10))
            {
                tracing::error!(partition = e.partition(), error = %err, "cannot seek back to the committed offset; retrying");
                return;
            }
        }
        if let (Some(hooks), Mode::Main) = (self.env.listener.hooks(), self.env.setup.group.mode) {
            // What they keep in memory (a saga's states) may include the aborted work: they
            // start again from what was committed, as on a new assignment.
            let partitions: Vec<i32> = committed
                .elements_for_topic(topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            hooks.revoked(&partitions);
            hooks.assigned(&partitions);
        }
        self.consumer.context().commits.rewind().done();
    }

    fn partition(&self, p: i32) -> TopicPartitionList {
        partition_list(self.env.setup.topic.as_str(), p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_in_seconds_is_the_age_of_what_the_consumer_reads() {
        // (records behind, last received at, now) → seconds
        let cases = [
            (0, Some(1_000), 9_000, Some(0.0)),
            (0, None, 9_000, Some(0.0)),
            (5, Some(1_000), 9_500, Some(8.5)),
            (5, None, 9_000, None),
            // A clock behind the record's timestamp: not negative.
            (5, Some(10_000), 9_000, Some(0.0)),
        ];
        for (lag, received, now, want) in cases {
            assert_eq!(
                lag_seconds(lag, received, now),
                want,
                "{lag} {received:?} {now}"
            );
        }
    }
}
