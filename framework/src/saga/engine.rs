//! Runs a saga: its listener on `private.reply`, the per-partition state restored from
//! `private.saga`, and the timers that turn deadlines into timeout records.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::resident::{Afterwards, Resident};
use super::state::{next_generation, parse_request_id, Match, Phase, SagaState, Status, StepInfo};
use super::{start_type, state_type, timeout_type, types, Saga, Step};
use crate::backoff::{sleep_unless, Backoff};
use crate::codec::DecodeError;
use crate::config::client::{Clients, Hooked};
use crate::contract::dead_letter::{DeadLetterKind, Failure};
use crate::contract::envelope::Outgoing;
use crate::contract::service::Service;
use crate::error::{Error, HandlerError};
use crate::handler::context::{json, Context, Meta, Record};
use crate::handler::hooks::{HookRuntime, PartitionHooks};
use crate::handler::listener::{handler_fn, CallError, HandlerResult, Listener};

/// The listener that runs saga `D`.
pub(crate) fn listener<D: Saga>(name: &'static str) -> Listener<D::Service> {
    let engine = Arc::new(Engine::<D>::new(name));
    let handler_engine = engine.clone();
    Listener::custom(
        name,
        types(&engine.steps),
        handler_fn(move |_svc, ctx, payload: &[u8]| {
            let engine = handler_engine.clone();
            Box::pin(async move { engine.handle(ctx, payload).await.map_err(CallError::from) })
        }),
        engine.clone(),
    )
    .with_settings(D::settings())
    .sending(
        engine
            .steps
            .iter()
            .flat_map(|s| s.commands().iter().copied())
            .collect(),
    )
}

struct Engine<D: Saga> {
    /// The saga's listener.
    name: &'static str,
    steps: Vec<Step<D>>,
    infos: Vec<StepInfo>,
    rt: OnceLock<HookRuntime>,
    parts: Mutex<HashMap<i32, Arc<Part>>>,
    /// The live sagas of the partitions this process owns (capped by `saga.max_live`).
    live: Arc<AtomicI64>,
}

/// One assigned partition: its sagas and their timers.
struct Part {
    partition: i32,
    restored: tokio::sync::OnceCell<()>,
    /// How far the restore got: a restore that ran out of time continues from here.
    progress: tokio::sync::Mutex<Progress>,
    states: tokio::sync::Mutex<HashMap<String, Resident>>,
    timers: Mutex<HashMap<String, CancellationToken>>,
    cancel: CancellationToken,
    /// This owner's generation, which its state records carry (set by the restore; see
    /// [`next_generation`]).
    generation: AtomicU64,
    live: LiveCount,
}

impl Part {
    /// Puts `saga` under `key` in `states` (this partition's), counting it if it is live.
    fn put(&self, states: &mut HashMap<String, Resident>, key: String, saga: Resident) {
        let added = i64::from(saga.is_live());
        let removed = states
            .insert(key, saga)
            .map_or(0, |old| i64::from(old.is_live()));
        self.live.add(added - removed);
    }
}

/// A partition's count of its live sagas, within the process's total for the saga (and its
/// gauge, `atoll_sagas_live`).
struct LiveCount {
    /// This partition's live sagas; `None` once revoked: its sagas no longer count, though a
    /// handler still running on it may put one.
    own: Mutex<Option<i64>>,
    total: Arc<AtomicI64>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl LiveCount {
    fn add(&self, delta: i64) {
        let mut own = self.own.lock();
        if let Some(n) = own.as_mut() {
            *n += delta;
            self.total.fetch_add(delta, Ordering::Relaxed);
            self.gauge.inc_by(delta);
        }
    }

    /// Takes this partition's sagas out of the total.
    fn detach(&self) {
        if let Some(n) = self.own.lock().take() {
            self.total.fetch_sub(n, Ordering::Relaxed);
            self.gauge.dec_by(n);
        }
    }
}

/// How the engine's writes (timeouts, states, dead letters) wait out a broker that refuses them.
const WRITES: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<D: Saga> PartitionHooks for Engine<D> {
    fn started(&self, rt: HookRuntime) {
        let _ = self.rt.set(rt);
    }

    fn assigned(&self, partitions: &[i32]) {
        let Some(rt) = self.rt.get() else { return };
        for &p in partitions {
            let part = self.part(p);
            let restore = self.restore_task(part.clone());
            let sweep = sweeper::<D>(rt.clone(), part.clone());
            rt.runtime.spawn(async move {
                // Until restored (a restore out of time continues where it stopped), or revoked.
                let restored = Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
                    .retry_until_cancelled(&part.cancel, &restore, |e, _| {
                        tracing::warn!(saga = D::NAME, partition = p, error = %e, "restoring saga state not finished; continuing");
                    })
                    .await;
                if restored.is_some() {
                    sweep.await;
                }
            });
        }
    }

    fn revoked(&self, partitions: &[i32]) {
        let mut parts = self.parts.lock();
        for p in partitions {
            if let Some(part) = parts.remove(p) {
                part.cancel.cancel();
                part.live.detach();
            }
        }
    }
}

impl<D: Saga> Engine<D> {
    fn new(name: &'static str) -> Self {
        let steps = D::steps();
        let infos = steps
            .iter()
            .map(|s| StepInfo {
                name: s.name,
                compensated: s.compensation.is_some(),
                timeout: s.timeout.unwrap_or(D::STEP_TIMEOUT),
            })
            .collect();
        Self {
            name,
            steps,
            infos,
            rt: OnceLock::new(),
            parts: Mutex::new(HashMap::new()),
            live: Arc::default(),
        }
    }

    fn rt(&self) -> Result<&HookRuntime, Error> {
        self.rt
            .get()
            .ok_or_else(|| Error::Saga(format!("saga `{}` is not started", D::NAME)))
    }

    fn part(&self, p: i32) -> Arc<Part> {
        self.parts
            .lock()
            .entry(p)
            .or_insert_with(|| {
                let rt = self.rt.get();
                let cancel = rt.map(|rt| rt.stop.child_token());
                Arc::new(Part {
                    partition: p,
                    restored: tokio::sync::OnceCell::new(),
                    progress: Default::default(),
                    states: Default::default(),
                    timers: Default::default(),
                    cancel: cancel.unwrap_or_default(),
                    generation: AtomicU64::new(0),
                    live: LiveCount {
                        own: Mutex::new(Some(0)),
                        total: self.live.clone(),
                        gauge: rt.map(|rt| rt.sagas_live.clone()).unwrap_or_default(),
                    },
                })
            })
            .clone()
    }

    fn key(id: &str) -> String {
        format!("{}/{id}", D::NAME)
    }

    /// Restores `part` once (concurrent callers wait for the same restore; after a restore
    /// that ran out of time, the next call continues it).
    fn restore_task(
        &self,
        part: Arc<Part>,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>>
           + Send
           + 'static {
        let rt = self.rt.get().cloned();
        let listener = self.name;
        move || {
            let (rt, part) = (rt.clone(), part.clone());
            Box::pin(async move {
                let rt =
                    rt.ok_or_else(|| Error::Saga(format!("saga `{}` is not started", D::NAME)))?;
                // In a task of its own: a caller that gives up (a handler out of time) does
                // not cut the attempt short and lose what it read.
                let runtime = rt.runtime.clone();
                runtime
                    .spawn(async move {
                        part.restored
                            .get_or_try_init(|| restore::<D>(rt, part.clone(), listener))
                            .await
                            .map(|_| ())
                    })
                    .await
                    .map_err(|e| Error::Saga(format!("restore task failed: {e}")))?
            })
        }
    }

    /// Handles one input of the saga: a start, a reply or a timeout.
    async fn handle(self: Arc<Self>, ctx: Context<D::Service>, payload: &[u8]) -> HandlerResult {
        let meta = ctx.meta().clone();
        let part = self.part(meta.partition);
        // Restored once per assignment; later records skip the restore entirely.
        if !part.restored.initialized() {
            self.restore_task(part.clone())()
                .await
                .map_err(HandlerError::transient)?;
        }
        let now = now_ms();
        let mut states = part.states.lock().await;
        let input = if meta.ce_type == start_type::<D>() {
            self.on_start(&meta, payload, &states, now)?
        } else {
            self.on_reply(&ctx, payload, &states, now).await?
        };
        let next = match input {
            Moved::Ignored => return Ok(()),
            Moved::Again(st) => {
                drop(states);
                self.effects(&ctx, &part, &st).await?;
                self.reduce(&part, &st, now).await;
                return Ok(());
            }
            Moved::RedoEnd(at) => {
                drop(states);
                return self.redo_end(&ctx, &part, at).await;
            }
            Moved::To(next) => next,
        };
        let next = SagaState {
            generation: part.generation.load(Ordering::Relaxed),
            ..next
        };
        let payload = json(state_type::<D>(), &next);
        let at = ctx
            .produce_acked(Record {
                partition: Some(meta.partition),
                key: Some(next.key.clone().into_bytes()),
                ce_type: state_type::<D>(),
                payload,
                ..Record::default_for(<D::Service as Service>::ID.saga())
            })
            .await?;
        let held = Resident::Whole {
            state: Box::new(next.clone()),
            at,
        };
        part.put(&mut states, next.key.clone(), held);
        drop(states);
        self.effects(&ctx, &part, &next).await?;
        self.reduce(&part, &next, now).await;
        Ok(())
    }

    /// Once the effects of `st` are done: an ended saga is held reduced from here on, when its
    /// state record's offset is known (its ending input delivered again, as when an output of
    /// its end was not acknowledged, reads the state back from there).
    async fn reduce(&self, part: &Part, st: &SagaState, now: u64) {
        if !st.is_ended() {
            return;
        }
        let mut states = part.states.lock().await;
        if let Some(kept) = states.get_mut(&st.key) {
            if kept.rank() == st.rank() {
                if let Some(reduced) = kept.reduced(now) {
                    *kept = reduced;
                }
            }
        }
    }

    /// Redoes the end of a saga held reduced, whose ending input was delivered again: its
    /// state is read back from offset `at` of its partition of `private.saga`.
    async fn redo_end(
        &self,
        ctx: &Context<D::Service>,
        part: &Arc<Part>,
        at: i64,
    ) -> HandlerResult {
        let rt = self.rt()?;
        let Some(clients) = rt.clients.clone() else {
            return Ok(());
        };
        let (topic, p) = (
            <D::Service as Service>::ID.saga().to_string(),
            part.partition,
        );
        let read = tokio::task::spawn_blocking(move || {
            read_state_at(&clients, &topic, p, at, READ_BACK_WITHIN)
        })
        .await
        .map_err(|e| HandlerError::transient(format!("reading a saga state back: {e}")))?;
        let st = match read {
            Ok(Some(st)) => st,
            // The broker struggles: tried again (a saga's listener tries without limit).
            Err(e) => return Err(HandlerError::transient(e)),
            Ok(None) => {
                return Err(HandlerError::permanent(format!(
                    "the ended saga's state at offset {at} of `{}` partition {p} is gone: its end cannot be redone",
                    <D::Service as Service>::ID.saga()
                )))
            }
        };
        if st.input != ctx.meta().id {
            // Another input whose id hashes alike: not the saga's ending input.
            return Ok(());
        }
        self.effects(ctx, part, &st).await
    }

    /// What a start does: a new saga, unless one of its id exists.
    fn on_start(
        &self,
        meta: &Meta,
        payload: &[u8],
        states: &HashMap<String, Resident>,
        now: u64,
    ) -> HandlerResult<Moved> {
        let data: D = serde_json::from_slice(payload).map_err(|e| {
            HandlerError::permanent(format!("saga start does not decode as `{}`: {e}", D::NAME))
        })?;
        let key = Self::key(&data.id());
        Ok(match states.get(&key) {
            Some(Resident::Whole { state, .. }) if state.input == meta.id => {
                Moved::Again((**state).clone())
            }
            Some(Resident::Ended(ended)) if ended.input(&meta.id) != Afterwards::Ignore => {
                Moved::from(ended.input(&meta.id))
            }
            Some(_) => {
                tracing::info!(saga = D::NAME, key, "saga already started; start ignored");
                Moved::Ignored
            }
            None => {
                let live = self.live.load(Ordering::Relaxed);
                let cap = self.rt().map_or(usize::MAX, |rt| rt.saga.max_live);
                if usize::try_from(live).is_ok_and(|live| live >= cap) {
                    return Err(HandlerError::permanent(format!(
                        "saga `{}` has {live} live sagas in this process, its cap (saga.max_live): not started; replay this start from the DLQ once sagas have ended or the cap was raised",
                        D::NAME
                    )));
                }
                let data = serde_json::to_value(&data).map_err(HandlerError::permanent)?;
                Moved::To(SagaState::start(
                    key,
                    data,
                    meta.id.clone(),
                    meta.correlation_id.clone(),
                    now,
                    &self.infos,
                ))
            }
        })
    }

    /// What a reply (or a step's timeout) does to the saga whose request it answers.
    async fn on_reply(
        &self,
        ctx: &Context<D::Service>,
        payload: &[u8],
        states: &HashMap<String, Resident>,
        now: u64,
    ) -> HandlerResult<Moved> {
        let meta = ctx.meta();
        let timeout = meta.ce_type == timeout_type::<D>();
        let Some(causation) = meta.causation_id.as_deref() else {
            tracing::warn!(
                saga = D::NAME,
                ce_type = meta.ce_type,
                "reply without ce_causationid ignored: it answers no request"
            );
            return Ok(Moved::Ignored);
        };
        let Some((key, _)) = parse_request_id(causation).filter(|(k, _)| is_ours::<D>(k)) else {
            tracing::debug!(saga = D::NAME, causation, "not a reply to this saga");
            return Ok(Moved::Ignored);
        };
        let st = match states.get(key) {
            Some(Resident::Whole { state, .. }) => state,
            Some(Resident::Ended(ended)) => {
                let then = Moved::from(ended.input(&meta.id));
                if matches!(then, Moved::Ignored) && !timeout {
                    tracing::warn!(
                        saga = D::NAME,
                        key,
                        causation,
                        "late reply ignored: its saga has ended (or a duplicate)"
                    );
                }
                return Ok(then);
            }
            None => {
                tracing::warn!(
                saga = D::NAME,
                key,
                causation,
                partition = meta.partition,
                "reply for an unknown saga ignored (did the replier drop atoll_reply_partition?)"
            );
                return Ok(Moved::Ignored);
            }
        };
        if st.input == meta.id {
            return Ok(Moved::Again((**st).clone()));
        }
        Ok(match st.classify(causation) {
            Match::Pending(_, _) if timeout => {
                tracing::warn!(saga = D::NAME, key, causation, "saga step timed out");
                Moved::To(st.timed_out(meta.id.clone(), now, &self.infos))
            }
            Match::Pending(Phase::Action, i) => {
                Moved::To(self.action_replied(ctx, payload, st, i, now).await?)
            }
            Match::Pending(Phase::Compensation, i) => {
                let step = &self.steps[i];
                let expected = step.compensation.as_ref().map_or("", |c| c.1);
                self.expect_type(expected, &meta.ce_type, step.name)?;
                Moved::To(st.compensation_replied(meta.id.clone(), now, &self.infos))
            }
            Match::Replied | Match::TimedOut | Match::Unknown if timeout => {
                tracing::debug!(saga = D::NAME, key, causation, "stale timeout ignored");
                Moved::Ignored
            }
            ignored => {
                let why = match ignored {
                    Match::Replied => "duplicate reply ignored: its request was already answered",
                    Match::TimedOut => "late reply ignored: its step had timed out",
                    _ => "reply to an unknown request ignored",
                };
                tracing::warn!(saga = D::NAME, key, causation, "{why}");
                Moved::Ignored
            }
        })
    }

    /// The saga after step `i`'s action was answered: the step's judge reads the reply into the
    /// saga's data and says whether the step succeeded.
    async fn action_replied(
        &self,
        ctx: &Context<D::Service>,
        payload: &[u8],
        st: &SagaState,
        i: usize,
        now: u64,
    ) -> HandlerResult<SagaState> {
        let meta = ctx.meta();
        let step = &self.steps[i];
        self.expect_type(step.reply_type, &meta.ce_type, step.name)?;
        let mut data: D =
            serde_json::from_value(st.data.clone()).map_err(HandlerError::permanent)?;
        let content_type = meta.content_type.as_deref();
        let verdict = match (step.judge)(ctx.codec(), content_type, payload).await {
            Ok(verdict) => verdict,
            Err(DecodeError::Bad(why)) => {
                return Err(HandlerError::permanent(format!(
                    "reply does not decode as `{}`: {why}",
                    step.reply_type
                )))
            }
            Err(DecodeError::Unavailable(why)) => {
                return Err(HandlerError::transient(Error::Registry(why)))
            }
        };
        let outcome = verdict(&mut data);
        if let Err(reason) = &outcome {
            let key = &st.key;
            tracing::info!(
                saga = D::NAME,
                key,
                step = step.name,
                reason,
                "saga step failed"
            );
        }
        let data = serde_json::to_value(&data).map_err(HandlerError::permanent)?;
        Ok(st.action_replied(outcome, data, meta.id.clone(), now, &self.infos))
    }

    fn expect_type(&self, expected: &str, got: &str, step: &str) -> HandlerResult {
        if expected == got {
            return Ok(());
        }
        Err(HandlerError::permanent(format!(
            "`{got}` does not answer step `{step}` of saga `{}`, which expects `{expected}`",
            D::NAME
        )))
    }

    /// Sends the state's pending request and arms its timeout, or runs the end hook.
    async fn effects(
        &self,
        ctx: &Context<D::Service>,
        part: &Arc<Part>,
        st: &SagaState,
    ) -> HandlerResult {
        let data: D = serde_json::from_value(st.data.clone()).map_err(HandlerError::permanent)?;
        if let Some(p) = &st.pending {
            let step = &self.steps[p.step];
            let out = match (p.phase, &step.compensation) {
                (Phase::Action, _) => (step.action)(&data),
                (Phase::Compensation, Some((make, _))) => make(&data),
                (Phase::Compensation, None) => {
                    unreachable!("only compensated steps are compensated")
                }
            };
            let reply_to = <D::Service as Service>::ID.reply();
            let (topic, key, ce_type, payload) = out.record(ctx.codec()).await;
            ctx.produce(Record {
                topic,
                partition: None,
                key: key.map(String::into_bytes),
                ce_type,
                payload,
                reply_to: Some(reply_to.as_str()),
                reply_partition: Some(part.partition),
                id: Some(&p.request_id),
            })
            .await?;
            self.arm(part, st, &p.request_id, p.deadline_ms);
            return Ok(());
        }
        if let Some(t) = part.timers.lock().remove(&st.key) {
            t.cancel();
        }
        match st.status {
            Status::Completed => {
                tracing::info!(saga = D::NAME, key = st.key, "saga completed");
                data.completed(ctx.clone()).await
            }
            Status::Failed => {
                let reason = st.reason.clone().unwrap_or_default();
                tracing::info!(
                    saga = D::NAME,
                    key = st.key,
                    reason,
                    "saga failed; compensations done"
                );
                data.failed(ctx.clone(), reason).await
            }
            Status::Running | Status::Compensating => Ok(()),
        }
    }

    /// Arms the timeout of `request_id`, replacing the saga's previous timer.
    fn arm(&self, part: &Arc<Part>, st: &SagaState, request_id: &str, deadline_ms: u64) {
        if let Ok(rt) = self.rt() {
            arm::<D>(rt, part, st, request_id, deadline_ms);
        }
    }
}

/// Whether a state key or request id belongs to saga `D` (`<NAME>/…`).
fn is_ours<D: Saga>(key: &str) -> bool {
    key.strip_prefix(D::NAME)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Arms a timer that, at `deadline_ms`, writes a timeout record for `request_id` to the saga's
/// partition of `private.reply`, where it is handled in order with the replies.
fn arm<D: Saga>(
    rt: &HookRuntime,
    part: &Arc<Part>,
    st: &SagaState,
    request_id: &str,
    deadline_ms: u64,
) {
    let token = part.cancel.child_token();
    if let Some(old) = part.timers.lock().insert(st.key.clone(), token.clone()) {
        old.cancel();
    }
    let (rt, p) = (rt.clone(), part.partition);
    let (key, request_id, correlation) = (
        st.key.clone(),
        request_id.to_owned(),
        st.correlation_id.clone(),
    );
    rt.runtime.clone().spawn(async move {
        let wait = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
        if !sleep_unless(&token, wait).await {
            return;
        }
        let topic = <D::Service as Service>::ID.reply();
        let write = || async {
            let (headers, _) = Outgoing {
                correlation_id: Some(&correlation),
                causation_id: Some(&request_id),
                ..Outgoing::new(timeout_type::<D>(), &rt.source)
            }
            .headers();
            rt.producer
                .send_to(topic.as_str(), Some(p), Some(key.as_bytes()), b"{}", headers)
                .await?
                .acked()
                .await
        };
        WRITES
            .retry_until_cancelled(&token, write, |e, _| {
                tracing::warn!(saga = D::NAME, key, error = %e, "cannot write a saga timeout; retrying");
            })
            .await;
    });
}

/// What a restore has read so far.
#[derive(Default)]
struct Progress {
    /// The next offset to read; `None` before the first read.
    next: Option<i64>,
    /// The latest state of each saga read so far, as the partition will hold it (see
    /// [`Resident`]), but those ended longer ago than the retention.
    sagas: HashMap<String, Resident>,
    /// Those: ended longer ago than the retention. Only their rank is remembered, until they
    /// are tombstoned (the tombstone ends the key, whatever was written before it).
    expired: HashMap<String, (u64, u64)>,
    /// Sagas of `sagas` after whose state an earlier owner's late write was read: it is the
    /// key's last record (which compaction would keep) until the state is written again.
    overtaken: HashSet<String>,
    /// The newest generation read.
    newest: u64,
    /// State records that do not decode and are their saga's latest record, to dead-letter.
    unreadable: HashMap<String, rdkafka::message::OwnedMessage>,
    /// The reading consumer, kept between attempts: it goes on fetching meanwhile.
    reader: Option<Reader>,
}

impl Progress {
    /// Forgets what was read of saga `key`.
    fn forget(&mut self, key: &str) {
        self.sagas.remove(key);
        self.expired.remove(key);
        self.overtaken.remove(key);
    }
}

/// Loads partition `part` of `private.saga` (every saga of type `D` in it) and re-arms the
/// timeouts of those still waiting. Reads for at most `saga.restore_timeout_ms`, then fails,
/// keeping what it read: the next call continues from there. Ended sagas past the retention
/// are not kept: they are tombstoned in the background. A state record that does not decode
/// is dead-lettered (in the name of `listener`, the saga's) and its saga forgotten.
async fn restore<D: Saga>(
    rt: HookRuntime,
    part: Arc<Part>,
    listener: &'static str,
) -> Result<(), Error> {
    let topic = <D::Service as Service>::ID.saga();
    let Some(clients) = rt.clients.clone() else {
        // No broker: the state is what this process wrote (unit tests).
        return Ok(());
    };
    let p = part.partition;
    let mut progress = part.progress.lock().await;
    let (timeout, retention) = (
        Duration::from_millis(rt.saga.restore_timeout_ms),
        rt.saga.retention_ms,
    );
    // Each record is taken into what was read as it arrives, never buffered: memory holds one
    // entry per saga, however many records the partition has.
    let (name, mut read) = (topic.to_string(), std::mem::take(&mut *progress));
    let (mut read, result) = tokio::task::spawn_blocking(move || {
        let (from, reader) = (read.next, read.reader.take());
        let now = now_ms();
        let result = read_partition(&clients, reader, &name, p, from, timeout, |m| {
            take_record::<D>(&mut read, m, now, retention)
        });
        (read, result)
    })
    .await
    .map_err(|e| Error::Saga(format!("restore task failed: {e}")))?;
    // What was read is kept though the read failed: the next attempt continues from it.
    let (next, reader) = match result {
        Ok(at) => at,
        Err(e) => {
            *progress = read;
            return Err(e);
        }
    };
    read.reader = reader;
    let done = read.reader.is_none();
    let now = now_ms();
    read.next = Some(next);
    *progress = read;
    if !done {
        return Err(Error::Saga(format!(
            "restoring `{topic}` partition {p}: not at its end within saga.restore_timeout_ms ({} ms); read up to offset {next}, continuing from there",
            timeout.as_millis()
        )));
    }
    if part.cancel.is_cancelled() {
        // Revoked meanwhile (or rewound): whoever owns the partition now restores it, and a
        // handler still waiting here must not run on this one's empty states.
        return Err(Error::Saga(format!(
            "saga state of partition {p}: revoked while restoring"
        )));
    }
    install::<D>(&rt, &part, &mut progress, listener, now).await?;
    Ok(())
}

/// Takes one record read from `private.saga` into what the restore has read: the latest
/// state of its saga, unless an earlier owner wrote it late; an expired end; a tombstone; or
/// an unreadable record, to dead-letter.
fn take_record<D: Saga>(
    progress: &mut Progress,
    m: &rdkafka::message::BorrowedMessage<'_>,
    now: u64,
    retention: u64,
) {
    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
    if !is_ours::<D>(&key) {
        return;
    }
    // A later record of the saga supersedes an unreadable one.
    progress.unreadable.remove(&key);
    let Some(value) = m.payload() else {
        progress.forget(&key);
        return;
    };
    match serde_json::from_slice::<SagaState>(value) {
        Ok(mut st) => {
            if st.is_ended() && st.ended_ms.is_none() {
                // Written before states carried it: it ended when its record was written.
                let written = m
                    .timestamp()
                    .to_millis()
                    .and_then(|t| u64::try_from(t).ok());
                st.ended_ms = Some(written.unwrap_or(now));
            }
            progress.newest = progress.newest.max(st.generation);
            let current = match progress.sagas.get(&key) {
                Some(saga) => Some(saga.rank()),
                None => progress.expired.get(&key).copied(),
            };
            if current.is_none_or(|c| st.supersedes(c)) {
                progress.forget(&key);
                if st.expired(now, retention) {
                    progress.expired.insert(key, st.rank());
                } else {
                    let saga = Resident::restored(st, m.offset(), now);
                    progress.sagas.insert(key, saga);
                }
            } else {
                tracing::warn!(
                    saga = D::NAME,
                    key,
                    offset = m.offset(),
                    generation = st.generation,
                    version = st.version,
                    "a state written late by an earlier owner is passed over"
                );
                if progress.sagas.contains_key(&key) {
                    progress.overtaken.insert(key);
                }
            }
        }
        Err(e) => {
            tracing::error!(saga = D::NAME, key, offset = m.offset(), error = %e, "saga state does not decode: dead-lettered, the saga forgotten");
            progress.forget(&key);
            progress.unreadable.insert(key, m.detach());
        }
    }
}

/// Installs what a restore read as the partition's states: tombstones the expired sagas,
/// writes overtaken states again, re-arms the timeouts of those waiting, and dead-letters the
/// unreadable records (in the name of `listener`).
async fn install<D: Saga>(
    rt: &HookRuntime,
    part: &Arc<Part>,
    progress: &mut Progress,
    listener: &'static str,
    now: u64,
) -> Result<(), Error> {
    let p = part.partition;
    let overtaken = overtaken_whole::<D>(rt, p, progress).await?;
    let generation = next_generation(progress.newest, now);
    part.generation.store(generation, Ordering::Relaxed);
    let mut states = part.states.lock().await;
    let restored = std::mem::take(&mut progress.sagas);
    if states.is_empty() {
        // Taken over as it is: a partition with many sagas is not held twice meanwhile.
        let live = restored.values().filter(|s| s.is_live()).count();
        part.live.add(i64::try_from(live).unwrap_or(i64::MAX));
        *states = restored;
    } else {
        for (key, saga) in restored {
            if !states.contains_key(&key) {
                part.put(&mut states, key, saga);
            }
        }
    }
    let expired: Vec<String> = std::mem::take(&mut progress.expired).into_keys().collect();
    let unreadable: Vec<_> = std::mem::take(&mut progress.unreadable)
        .into_values()
        .collect();
    // Written before the states are released: a saga started again with an expired one's id,
    // or the next state of an overtaken one, may be written by another producer (an
    // exactly-once listener's), which must not overtake these.
    let rewritten = overtaken.len();
    let writes = expired.iter().cloned().map(Write::Tombstone);
    let writes = writes
        .chain(overtaken.into_iter().map(|st| Write::State(Box::new(st))))
        .collect();
    let written = send_writes::<D>(rt, part, writes).await;
    await_writes::<D>(part, written).await;
    let mut waiting = 0;
    for saga in states.values() {
        let Resident::Whole { state: st, .. } = saga else {
            continue;
        };
        if let Some(pending) = &st.pending {
            waiting += 1;
            arm::<D>(rt, part, st, &pending.request_id, pending.deadline_ms);
        }
    }
    tracing::info!(
        saga = D::NAME,
        partition = p,
        sagas = states.len(),
        live = states.values().filter(|s| s.is_live()).count(),
        waiting,
        expired = expired.len(),
        overtaken = rewritten,
        unreadable = unreadable.len(),
        generation,
        "saga state restored"
    );
    drop(states);
    let (rt2, part2) = (rt.clone(), part.clone());
    rt.runtime.spawn(async move {
        dead_letter_states::<D>(&rt2, &part2, unreadable, listener).await;
    });
    Ok(())
}

/// What an input does to its saga.
enum Moved {
    /// Nothing: a stale, duplicate or foreign input.
    Ignored,
    /// This input moved the saga here before (it is delivered again): its effects again.
    Again(SagaState),
    /// To this state.
    To(SagaState),
    /// This input ended the saga, held reduced, before: its end again, from the state record
    /// at this offset of `private.saga`.
    RedoEnd(i64),
}

impl From<Afterwards> for Moved {
    fn from(then: Afterwards) -> Self {
        match then {
            Afterwards::Redo(at) => Self::RedoEnd(at),
            Afterwards::Ignore => Self::Ignored,
        }
    }
}

/// What a restore writes to the partition's `private.saga`.
enum Write {
    /// An expired saga's end.
    Tombstone(String),
    /// A state again, as it is: it had been overtaken by a late, stale record.
    State(Box<SagaState>),
}

/// Queues `writes` on the partition's `private.saga` (until revoked): call it, and
/// [`await_writes`], while holding the partition's states, so that no newer state of a key is
/// written first.
async fn send_writes<D: Saga>(
    rt: &HookRuntime,
    part: &Part,
    writes: Vec<Write>,
) -> Vec<crate::produce::Pending> {
    let topic = <D::Service as Service>::ID.saga();
    let mut pending = Vec::new();
    for write in writes {
        let send = || async {
            match &write {
                Write::Tombstone(key) => {
                    rt.producer
                        .tombstone(topic.as_str(), part.partition, key.as_bytes())
                        .await
                }
                Write::State(st) => {
                    let (payload, content_type) = json(state_type::<D>(), &**st)?;
                    let (headers, _) = Outgoing {
                        correlation_id: Some(&st.correlation_id),
                        content_type: Some(content_type),
                        ..Outgoing::new(state_type::<D>(), &rt.source)
                    }
                    .headers();
                    rt.producer
                        .send_to(
                            topic.as_str(),
                            Some(part.partition),
                            Some(st.key.as_bytes()),
                            &payload,
                            headers,
                        )
                        .await
                }
            }
        };
        let sent = WRITES
            .retry_until_cancelled(&part.cancel, send, |e, _| {
                tracing::warn!(saga = D::NAME, error = %e, "cannot write to the saga state topic; retrying");
            })
            .await;
        match sent {
            Some(p) => pending.push(p),
            None => break,
        }
    }
    pending
}

/// Waits for queued writes (tombstones of expired sagas, overtaken states written again),
/// and says how it went.
async fn await_writes<D: Saga>(part: &Part, pending: Vec<crate::produce::Pending>) {
    let n = pending.len();
    let acked = tokio::select! {
        biased;
        () = part.cancel.cancelled() => return,
        acked = crate::produce::Pending::all(pending) => acked,
    };
    if let Err(e) = acked {
        // Left as they are: the next restore finds them again.
        tracing::warn!(saga = D::NAME, error = %e, "some writes of the saga state restore (tombstones, overtaken states) were not written");
    } else if n > 0 {
        tracing::info!(
            saga = D::NAME,
            partition = part.partition,
            records = n,
            "expired sagas tombstoned, overtaken states written again"
        );
    }
}

/// Dead-letters state records that do not decode, with their key (until revoked).
async fn dead_letter_states<D: Saga>(
    rt: &HookRuntime,
    part: &Part,
    unreadable: Vec<rdkafka::message::OwnedMessage>,
    listener: &'static str,
) {
    let dlq = <D::Service as Service>::ID.dlq();
    for m in unreadable {
        let error = format!(
            "saga `{}` state does not decode: the saga is forgotten",
            D::NAME
        );
        let failure = Failure {
            kind: DeadLetterKind::Decode,
            error,
            attempts: 1,
        };
        let write = || async {
            let headers = failure.headers(&m, listener);
            rt.producer
                .send(
                    dlq.as_str(),
                    m.key(),
                    m.payload().unwrap_or_default(),
                    headers,
                )
                .await?
                .acked()
                .await
        };
        let written = WRITES
            .retry_until_cancelled(&part.cancel, write, |e, _| {
                tracing::warn!(saga = D::NAME, error = %e, "cannot dead-letter an unreadable saga state; retrying");
            })
            .await;
        if written.is_none() {
            return;
        }
    }
}

/// Once restored, tombstones the partition's ended sagas as their retention passes, checking
/// every quarter of the retention (between 1 s and 1 h), until revoked.
async fn sweeper<D: Saga>(rt: HookRuntime, part: Arc<Part>) {
    let retention = rt.saga.retention_ms;
    let every = Duration::from_millis((retention / 4).clamp(1_000, 3_600_000));
    loop {
        if !sleep_unless(&part.cancel, every).await {
            return;
        }
        let now = now_ms();
        {
            let mut states = part.states.lock().await;
            let keys: Vec<String> = states
                .iter()
                .filter(|(_, saga)| saga.expired(now, retention))
                .map(|(k, _)| k.clone())
                .collect();
            for k in &keys {
                if states.remove(k).is_some_and(|saga| saga.is_live()) {
                    part.live.add(-1);
                }
            }
            // Written before the states are released (see `restore`).
            let writes = keys.into_iter().map(Write::Tombstone).collect();
            let pending = send_writes::<D>(&rt, &part, writes).await;
            await_writes::<D>(&part, pending).await;
        }
    }
}

/// A consumer reading a partition of saga state.
type Reader = BaseConsumer<Hooked>;

/// A consumer of saga state: assigned, not subscribed, so the group is never joined and
/// nothing is committed.
/// `isolation` is its `isolation.level`.
fn new_reader(
    clients: &Clients,
    topic: &str,
    isolation: &str,
) -> Result<Reader, rdkafka::error::KafkaError> {
    let reader: Reader = clients
        .with(|c| {
            c.set("group.id", format!("{topic}.restore"))
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("isolation.level", isolation)
                .set("enable.partition.eof", "true")
                // Records are taken as they arrive: a small read-ahead is enough, and it bounds
                // what a restore of a large partition holds (librdkafka's default is 64 MiB).
                .set("queued.max.messages.kbytes", "8192");
        })
        .create("saga restore")?;
    // Serves the request for a first OAUTHBEARER token, before the blocking calls that follow.
    let _ = reader.poll(Duration::ZERO);
    Ok(reader)
}

/// How long reading a saga state back may take before it fails (a transient failure: the
/// read is tried again).
const READ_BACK_WITHIN: Duration = Duration::from_secs(10);

/// The saga state at offset `at` of partition `p` of `topic` (blocking): an ended saga's
/// whole state, read back; `None` when it is not there (or does not decode); `Err` when it
/// could not be read `within` that time.
fn read_state_at(
    clients: &Clients,
    topic: &str,
    p: i32,
    at: i64,
    within: Duration,
) -> Result<Option<SagaState>, Error> {
    let what = || format!("reading back the saga state at `{topic}` partition {p} offset {at}");
    // The record at `at` was written (or read) already: an open transaction of another saga
    // of the service, before it on the partition, must not hide it.
    let reader =
        new_reader(clients, topic, "read_uncommitted").map_err(|e| Error::kafka(what(), e))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(at))
        .and_then(|()| reader.assign(&tpl))
        .map_err(|e| Error::kafka(what(), e))?;
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.offset() == at => {
                let state = serde_json::from_slice(m.payload().unwrap_or_default());
                if let Err(e) = &state {
                    tracing::error!(error = %e, "{}: it does not decode", what());
                }
                return Ok(state.ok());
            }
            Some(Ok(_)) | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {
                return Ok(None);
            }
            Some(Err(e)) => tracing::debug!(error = %e, "{}", what()),
            None => {}
        }
    }
    Err(Error::Saga(format!("{}: timed out", what())))
}

/// The overtaken sagas of what a restore read, to be written again whole: those held reduced
/// are read back first, before anything is installed (a read that fails leaves the restore to
/// be tried again). They are held whole from here on: the offset of their record will be the
/// rewrite's.
async fn overtaken_whole<D: Saga>(
    rt: &HookRuntime,
    p: i32,
    progress: &mut Progress,
) -> Result<Vec<SagaState>, Error> {
    let overtaken: Vec<Resident> = progress
        .overtaken
        .iter()
        .filter_map(|key| progress.sagas.get(key).cloned())
        .collect();
    let overtaken = whole_states::<D>(rt, p, overtaken).await?;
    for st in &overtaken {
        let held = Resident::Whole {
            state: Box::new(st.clone()),
            at: None,
        };
        progress.sagas.insert(st.key.clone(), held);
    }
    progress.overtaken.clear();
    Ok(overtaken)
}

/// The whole states of `sagas`, reading back those held reduced; fails when one cannot be
/// read back.
async fn whole_states<D: Saga>(
    rt: &HookRuntime,
    p: i32,
    sagas: Vec<Resident>,
) -> Result<Vec<SagaState>, Error> {
    let mut whole = Vec::with_capacity(sagas.len());
    for saga in sagas {
        match saga {
            Resident::Whole { state, .. } => whole.push(*state),
            Resident::Ended(ended) => {
                let Some(clients) = rt.clients.clone() else {
                    continue;
                };
                let topic = <D::Service as Service>::ID.saga().to_string();
                let read = tokio::task::spawn_blocking(move || {
                    read_state_at(&clients, &topic, p, ended.at, READ_BACK_WITHIN)
                })
                .await
                .map_err(|e| Error::Saga(format!("reading a saga state back: {e}")))??;
                let state = read.ok_or_else(|| {
                    Error::Saga(format!(
                        "an overtaken saga's state at offset {} of partition {p} is gone",
                        ended.at
                    ))
                })?;
                whole.push(state);
            }
        }
    }
    Ok(whole)
}

/// Reads one partition from `from` (or its start) towards the high watermark, for at most
/// `timeout`, handing each record to `take` as it arrives, with `reader` if an earlier call left
/// one: the next offset to read, and the reader to continue with, `None` once the end was
/// reached.
fn read_partition(
    clients: &Clients,
    reader: Option<Reader>,
    topic: &str,
    p: i32,
    from: Option<i64>,
    timeout: Duration,
    mut take: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<(i64, Option<Reader>), Error> {
    let what = || format!("reading saga state `{topic}` partition {p}");
    let deadline = std::time::Instant::now() + timeout;
    let consumer = match reader {
        Some(c) => c,
        // Only what was committed: an aborted transaction's states never were. Its end is the
        // last stable offset, which the end-of-partition event marks (the high watermark may
        // lie past a commit marker no poll returns).
        None => {
            new_reader(clients, topic, "read_committed").map_err(|e| Error::kafka(what(), e))?
        }
    };
    let (low, high) = consumer
        .fetch_watermarks(topic, p, Duration::from_secs(10))
        .map_err(|e| Error::kafka(what(), e))?;
    let start = from.unwrap_or(low).max(low);
    if high <= start {
        return Ok((start, None));
    }
    if consumer.assignment().map_or(true, |a| a.count() == 0) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(start))
            .map_err(|e| Error::kafka(what(), e))?;
        consumer.assign(&tpl).map_err(|e| Error::kafka(what(), e))?;
    }
    let mut next = start;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                take(&m);
                if next >= high {
                    return Ok((next, None));
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {
                if next + 1 < high {
                    // Past one commit marker: an open transaction (its records, and those
                    // after it, are read once it ends) or an aborted one.
                    tracing::info!(
                        next,
                        high,
                        "{}: ends at the last stable offset, below the high watermark",
                        what()
                    );
                }
                return Ok((next, None));
            }
            // Errors here are reported by the client and retried by it until the deadline.
            Some(Err(e)) => tracing::debug!(error = %e, "{}", what()),
            None => {}
        }
    }
    Ok((next, Some(consumer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::client::ClientHooks;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    use rdkafka::ClientConfig;

    fn clients_of(bootstrap: &str) -> Clients {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        Clients::new(
            config,
            ClientHooks::detached("test".into(), bootstrap.into()),
        )
    }

    /// An ended saga's state is read back from its offset; a record there that is not a state,
    /// or an offset no longer there (compacted away, past the end), is "gone" (`None`: its
    /// end cannot be redone, the input is dead-lettered); a broker that does not answer is a
    /// failure to try again (`Err`).
    #[test]
    fn a_state_is_read_back_from_its_offset_or_is_gone_or_the_read_fails() {
        let cluster = MockCluster::new(1).unwrap();
        let topic = "acme.test.s.private.saga";
        cluster.create_topic(topic, 1, 1).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        let state = SagaState::start(
            "order/o1".into(),
            serde_json::json!({"n": 1}),
            "in-1".into(),
            "flow".into(),
            1_000,
            &[],
        );
        let json = serde_json::to_vec(&state).unwrap();
        for payload in [json.as_slice(), b"not a state"] {
            producer
                .send(BaseRecord::to(topic).key("order/o1").payload(payload))
                .unwrap();
        }
        producer.flush(Duration::from_secs(5)).unwrap();
        let clients = clients_of(&cluster.bootstrap_servers());
        let within = Duration::from_secs(5);
        #[rustfmt::skip]
        let cases = [
            ("the state at its offset", 0, Some(state)),
            ("a record there that is no state", 1, None),
            ("an offset past the end", 7, None),
        ];
        for (what, at, want) in cases {
            let got = read_state_at(&clients, topic, 0, at, within).unwrap();
            assert_eq!(got, want, "{what}");
        }
        let dead = clients_of("127.0.0.1:1");
        let err = read_state_at(&dead, topic, 0, 0, Duration::from_millis(500)).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}
