//! A partition's batches: with `partition` ordering, the records of a partition already
//! waiting when the worker takes one (up to `listener.batch_size`, and those that come within
//! `listener.batch_wait_ms`) are handled together: a transactional listener's in one database
//! transaction, a set-based handler's (it takes a `Batch`) in one call.
//!
//! Why: a record of a transactional listener costs its transaction's `BEGIN`, its inbox row,
//! its outbox rows and a `COMMIT` besides its handler's own SQL, and the `COMMIT` waits for
//! the database's log to reach the disk. Databases amortise that wait by committing many
//! transactions in one flush (PostgreSQL's `commit_delay`, "group commit"); Kafka Streams
//! commits its state stores once per `commit.interval.ms`, not per record. Here a batch's
//! transaction claims its records' inbox rows in one statement, runs the handlers of those not
//! handled before one after another, in offset order, writes their outbox rows, and one
//! `COMMIT` ends it. A batch forms only of what is already waiting (a trickle gives batches of
//! one, which take the per-record path unchanged; a backlog grows them), and it takes no
//! further record once open for `listener.store_batch_ms`.
//!
//! One failing record must not fail its neighbours, nor change its own fate: [`after`] (a pure
//! core) splits the batch. The records before it are redone as a batch, it alone takes the
//! per-record path (its retry budget, backoff and dead letter as ever), the records after it
//! form the next batch: the partition's order holds. (So a failing record is called once more
//! than its budget says: in the batch, then its own attempts; the batch's failure is counted
//! in `atoll_records_failed_total`.) Records handled before (their inbox rows exist: a
//! redelivery after a crash) are skipped without a call. A store that fails
//! (unreachable, a lost conflict) sends every record of the batch to the per-record path,
//! which waits the outage out. Records the batch path does not take (on the retry topic,
//! replayed dead letters, those the listener does not handle, bad input) go alone too.
//!
//! A set-based handler (it takes a `Batch`) is called once with the batch's records not
//! handled before. Which record made a failed call fail is not known: the batch is split in
//! halves ([`Ran::CallFailed`]), each called again, until the failing record is alone and
//! takes the per-record path (a failing record thus costs about log₂ n calls more).
//!
//! A handler may therefore run more than once for one delivery (its batch redone after a
//! neighbour failed): its SQL rolls back each time, its outputs are in the outbox, so only
//! effects outside the database repeat, as with any at-least-once redelivery.
//!
//! A set-based handler outside a store transaction (at least once, or exactly once) is
//! batched the same way, with no transaction: one call of the batch's records, each with a
//! sink of its own (`ListenerEnv::attempt_set`). After a call that succeeded, each record
//! the handler marked failed (`BatchRecord::fail`) goes alone, and the others are done: each
//! finished once its own outputs are acknowledged (or with its own staged outputs, exactly
//! once), as a record handled alone is. So a marked record's retry comes after its batch's
//! later records: the one change of order a batch makes, the price of not running its
//! neighbours again. A call that fails is split in halves as above, and its outputs, never
//! acknowledged, are dropped with their sinks (at least once: those already sent are sent
//! again with the halves). With `listener.batch_wait_ms`, a batch also waits that long from
//! its first record's receipt for more records, up to `listener.batch_size`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::env::{ListenerEnv, Mode};
use super::outcome::Failed;
use super::received::Received;
use super::routing::Route;
use super::worker::{done_with, finish, handle_one, Delivered, PartitionShared};
use crate::contract::envelope::{Envelope, RecordView};
use crate::contract::service::Service;
use crate::error::Error;
use crate::handler::context::{Context, Meta};
use crate::handler::delivery::{Acking, Acks, Begun, Delivery, Outboxed, Settled, Sink};
use crate::handler::listener::{CallError, Calls};
use crate::handler::transaction::{BatchTx, TxCell};
use crate::store::inbox::EventId;

/// What an attempt at a batch came to.
#[derive(Debug)]
pub(crate) enum Ran {
    /// Its first `taken` records committed, or were skipped as handled before (all of them,
    /// unless the batch's time ran out or a record the batch path does not take came).
    Committed(usize),
    /// The handler of record `i` failed (or the record is not for the batch path).
    FailedAt(usize),
    /// A set-based handler's call of the whole batch failed: which record made it fail is
    /// not known.
    CallFailed,
    /// The store failed (beginning, claiming or committing), or cannot take batches yet (rows
    /// from before the inbox knew sources are left).
    Store,
    /// A set-based call of its first `taken` records, outside a store transaction, succeeded:
    /// those not in `failed` are done; those in `failed` (marked by the handler, or whose
    /// outputs could not be handed over) go alone, in offset order.
    Kept {
        /// How many records the call took.
        taken: usize,
        /// Which of them failed, in offset order.
        failed: Vec<usize>,
    },
}

/// How the records an attempt at a batch finished are settled.
#[derive(Debug)]
pub(crate) enum Settlement {
    /// None finished.
    Nothing,
    /// A store batch's: one settlement of its published outbox rows for all of them.
    Together(Settled),
    /// A set-based call's: each record's own, by index (`None`: not finished).
    Each(Vec<Option<Settled>>),
}

/// What becomes of a batch's records after an attempt, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Attempted again as a batch.
    Batch(Vec<usize>),
    /// Handled alone, through the per-record path.
    Alone(usize),
}

/// The steps that follow an attempt at a batch of `n` records that came to `ran` (the
/// committed records are done with and take none).
pub(crate) fn after(n: usize, ran: &Ran) -> Vec<Step> {
    let batch = |from: usize, to: usize| -> Option<Step> {
        match to.saturating_sub(from) {
            0 => None,
            1 => Some(Step::Alone(from)),
            _ => Some(Step::Batch((from..to).collect())),
        }
    };
    match ran {
        Ran::Committed(taken) => batch(*taken, n).into_iter().collect(),
        Ran::FailedAt(i) => [batch(0, *i), Some(Step::Alone(*i)), batch(i + 1, n)]
            .into_iter()
            .flatten()
            .collect(),
        // Halves, until the failing record is alone: its neighbours commit in batches.
        Ran::CallFailed => [batch(0, n / 2), batch(n / 2, n)]
            .into_iter()
            .flatten()
            .collect(),
        Ran::Store => (0..n).map(Step::Alone).collect(),
        // The failed ones alone, then the records the call did not take.
        Ran::Kept { taken, failed } => failed
            .iter()
            .map(|i| Step::Alone(*i))
            .chain(batch(*taken, n))
            .collect(),
    }
}

/// A piece of a partition's records on their way through [`run`].
enum Piece {
    Batch(Vec<Delivered>),
    Alone(Delivered),
}

/// Handles `records` (a partition's, in offset order) in batches, splitting them as [`after`]
/// says. What awaits acknowledgement is returned, in order: each with the records it finishes.
pub(crate) async fn run<S: Service>(
    env: &ListenerEnv<S>,
    part: &PartitionShared,
    records: Vec<Delivered>,
) -> Vec<(Vec<Delivered>, Acking)> {
    let mut unacked = Vec::new();
    let mut pieces = VecDeque::from([Piece::Batch(records)]);
    while let Some(piece) = pieces.pop_front() {
        let batch = match piece {
            Piece::Alone(msg) => {
                if let Some((msg, acking)) = handle_one(env, part, msg, Acks::Background).await {
                    unacked.push((vec![msg], acking));
                }
                continue;
            }
            Piece::Batch(batch) if batch.len() < 2 => {
                for msg in batch.into_iter().rev() {
                    pieces.push_front(Piece::Alone(msg));
                }
                continue;
            }
            Piece::Batch(batch) => batch,
        };
        if part.cancel.is_cancelled() {
            // Revoked or stopping: given up, delivered again.
            for _ in &batch {
                done_with(env, part);
            }
            continue;
        }
        let (ran, settlement) = if env.io.delivery.is_transactional() {
            env.attempt_batch(&batch, &part.cancel).await
        } else {
            env.attempt_set(&batch).await
        };
        let mut batch = batch.into_iter().map(Some).collect::<Vec<_>>();
        match (&ran, settlement) {
            (Ran::Committed(taken), Settlement::Together(settled)) => {
                let done: Vec<Delivered> = batch[..*taken]
                    .iter_mut()
                    .filter_map(Option::take)
                    .collect();
                settle(env, part, done, settled, &mut unacked);
            }
            (_, Settlement::Each(each)) => {
                for (i, settled) in each.into_iter().enumerate() {
                    if let Some(settled) = settled {
                        let msg = batch[i].take().expect("a record settles once");
                        settle(env, part, vec![msg], settled, &mut unacked);
                    }
                }
            }
            _ => {}
        }
        let steps = after(batch.len(), &ran);
        let mut take = |i: usize| batch[i].take().expect("a record takes one step");
        let next: Vec<Piece> = steps
            .into_iter()
            .map(|step| match step {
                Step::Batch(ids) => Piece::Batch(ids.into_iter().map(&mut take).collect()),
                Step::Alone(i) => Piece::Alone(take(i)),
            })
            .collect();
        for piece in next.into_iter().rev() {
            pieces.push_front(piece);
        }
    }
    unacked
}

/// Finishes `done` as `settled` says: at once (with a record's staged outputs, exactly once),
/// or once its acknowledgements land (`unacked`).
fn settle<S>(
    env: &ListenerEnv<S>,
    part: &PartitionShared,
    done: Vec<Delivered>,
    settled: Settled,
    unacked: &mut Vec<(Vec<Delivered>, Acking)>,
) {
    let mut outputs = match settled {
        Settled::Acking(acking) => return unacked.push((done, acking)),
        Settled::Done => Vec::new(),
        Settled::Staged(outputs) => outputs,
    };
    for msg in done {
        finish(env, part, &msg.msg, std::mem::take(&mut outputs));
        done_with(env, part);
    }
}

impl<S: Service> ListenerEnv<S> {
    /// Whether a record may be handled in a batch: a first delivery from the listener's own
    /// topic, of a type it handles, with a value and a good reply address.
    async fn batchable(&self, msg: &Delivered) -> bool {
        if self.setup.group.mode != Mode::Main {
            return false;
        }
        let incoming = Envelope::read(msg.msg.headers());
        self.route_of(&msg.msg, &incoming) == Route::Handle
            && self.acceptable(&msg.msg, &incoming).await.is_ok()
    }

    /// How many of `batch`'s records come before the first the batch path does not take.
    async fn batchable_prefix(&self, batch: &[Delivered]) -> usize {
        let mut limit = 0;
        while limit < batch.len() && self.batchable(&batch[limit]).await {
            limit += 1;
        }
        limit
    }

    /// Calls a set-based handler, outside a store transaction, once with the records of
    /// `batch` the batch path takes, each with a context and sink of its own (see the module's
    /// doc): what the call came to, and the settlement of each record it did not fail.
    async fn attempt_set(&self, batch: &[Delivered]) -> (Ran, Settlement) {
        let limit = self.batchable_prefix(batch).await;
        if limit == 0 {
            return (Ran::FailedAt(0), Settlement::Nothing);
        }
        let mut members = Vec::with_capacity(limit);
        let mut sinks = Vec::with_capacity(limit);
        for d in &batch[..limit] {
            let incoming = Envelope::read(d.msg.headers());
            let meta = Arc::new(d.msg.meta(self.listener.name(), &incoming, d.at));
            // Outside a store, every record is fresh: only an inbox knows repeats.
            let Ok(Begun::Fresh(sink)) = self.io.delivery.begin(&meta).await else {
                return (Ran::FailedAt(0), Settlement::Nothing);
            };
            let payload = d.msg.payload().unwrap_or_default().to_vec();
            members.push((self.context(&meta, sink.clone()), payload));
            sinks.push(sink);
        }
        let contexts: Vec<Context<S>> = members.iter().map(|(ctx, _)| ctx.clone()).collect();
        let call = contexts[0].with_members(members);
        if self.call_in_batch(call, &batch[0].msg).await.is_err() {
            return (Ran::CallFailed, Settlement::Nothing);
        }
        let metrics = &self.counters.metrics;
        metrics.batch.observe(limit as f64);
        let (mut failed, mut each) = (Vec::new(), Vec::with_capacity(limit));
        for (i, (ctx, sink)) in contexts.iter().zip(sinks).enumerate() {
            let settled = match ctx.take_mark() {
                Some(mark) => Err(Failed::Call(CallError::Handler(mark))),
                None => sink
                    .settle(Acks::Background)
                    .await
                    .map_err(Failed::Unsettled),
            };
            match settled {
                Ok(settled) => {
                    metrics.handled.inc();
                    each.push(Some(settled));
                }
                Err(why) => {
                    let (outcome, error) = why.outcome();
                    self.count_failure(outcome);
                    tracing::info!(
                        offset = batch[i].msg.offset(),
                        error,
                        "a record failed in its batch's call: it is handled alone next"
                    );
                    failed.push(i);
                    each.push(None);
                }
            }
        }
        (
            Ran::Kept {
                taken: limit,
                failed,
            },
            Settlement::Each(each),
        )
    }

    /// Runs `batch`'s handlers in one transaction and commits it (see the module's doc): what
    /// it came to, and once committed, the published outputs' settlement.
    async fn attempt_batch(
        &self,
        batch: &[Delivered],
        cancel: &CancellationToken,
    ) -> (Ran, Settlement) {
        let Delivery::Transactional { group, outbox } = &self.io.delivery else {
            unreachable!("only transactional listeners run batches")
        };
        if outbox.store.legacy_inbox_before() != 0 {
            // Inbox rows from before the inbox knew sources are looked up record by record
            // (see `store::inbox::claim`) until they are pruned.
            return (Ran::Store, Settlement::Nothing);
        }
        let limit = self.batchable_prefix(batch).await;
        if limit == 0 {
            return (Ran::FailedAt(0), Settlement::Nothing);
        }
        let metas: Vec<Arc<Meta>> = batch[..limit]
            .iter()
            .map(|d| {
                let incoming = Envelope::read(d.msg.headers());
                Arc::new(d.msg.meta(self.listener.name(), &incoming, d.at))
            })
            .collect();
        let events: Vec<EventId<'_>> = metas
            .iter()
            .map(|meta| EventId {
                source: meta.source.as_deref().unwrap_or_default(),
                id: &meta.id,
            })
            .collect();
        let store = &outbox.store;
        let mut laps = Laps::start(batch[0].at);
        let tx = match BatchTx::begin(store, outbox.driver).await {
            Ok(tx) => tx,
            Err(e) => return (self.store_failed(&e), Settlement::Nothing),
        };
        let fresh = match tx.claim(store, group, &events).await {
            Ok(fresh) => fresh,
            Err(e) => return (self.store_failed(&e), Settlement::Nothing),
        };
        laps.lap();
        let run = self.run_calls(&tx, (group, outbox), batch, (&metas, &fresh), cancel);
        let (taken, handled) = match run.await {
            Ok(ran) => ran,
            Err(ran) => return (ran, Settlement::Nothing),
        };
        if taken < limit {
            let left: Vec<_> = (taken..limit)
                .filter(|i| fresh[*i])
                .map(|i| events[i])
                .collect();
            if let Err(e) = tx.unclaim(store, group, &left).await {
                return (self.store_failed(&e), Settlement::Nothing);
            }
        }
        laps.lap();
        let committed = match tx.commit(outbox, &handled).await {
            Ok(committed) => committed,
            Err(e) => return (self.store_failed(&e), Settlement::Nothing),
        };
        laps.lap();
        let metrics = &self.counters.metrics;
        metrics.handled.inc_by(handled.len() as u64);
        metrics.batch.observe(taken as f64);
        for (meta, _) in metas[..taken].iter().zip(&fresh).filter(|(_, f)| !**f) {
            metrics.deduplicated.inc();
            tracing::info!(ce_id = meta.id, "handled before (inbox): skipped");
        }
        let settled = outbox.publish(committed, Acks::Background).await;
        laps.lap();
        laps.log(taken);
        (Ran::Committed(taken), Settlement::Together(settled))
    }

    /// Runs the handlers of `batch`'s records (`metas` of them, claimed: `fresh` says which
    /// were not handled before) in `tx`, one after another, until the batch's time is out: how
    /// many records it took (run, or skipped as handled before), and the cells of those run;
    /// `Err` once one fails.
    async fn run_handlers(
        &self,
        tx: &BatchTx,
        (group, outbox): (&str, &Arc<Outboxed>),
        batch: &[Delivered],
        (metas, fresh): (&[Arc<Meta>], &[bool]),
        cancel: &CancellationToken,
    ) -> Result<(usize, Vec<Arc<TxCell>>), Ran> {
        let started = Instant::now();
        let budget = self.setup.config.store_batch_time();
        let mut handled = Vec::with_capacity(metas.len());
        for (i, meta) in metas.iter().enumerate() {
            if i > 0 && started.elapsed() >= budget {
                return Ok((i, handled));
            }
            if cancel.is_cancelled() {
                return Err(Ran::FailedAt(i));
            }
            if !fresh[i] {
                continue;
            }
            let msg = &batch[i].msg;
            let (ctx, cell) = self.record_context(tx, (group, outbox), meta);
            if self.call_in_batch(ctx, msg).await.is_err() {
                return Err(Ran::FailedAt(i));
            }
            tx.idle().await;
            handled.push(cell);
        }
        Ok((metas.len(), handled))
    }

    /// Runs the handlers of `batch`'s records in `tx` as the listener takes them: a call per
    /// record ([`run_handlers`](Self::run_handlers)) or one for them all
    /// ([`call_set`](Self::call_set)).
    async fn run_calls(
        &self,
        tx: &BatchTx,
        to: (&str, &Arc<Outboxed>),
        batch: &[Delivered],
        claimed: (&[Arc<Meta>], &[bool]),
        cancel: &CancellationToken,
    ) -> Result<(usize, Vec<Arc<TxCell>>), Ran> {
        match self.listener.calls() {
            Calls::Each => self.run_handlers(tx, to, batch, claimed, cancel).await,
            Calls::Batch => self.call_set(tx, to, batch, claimed, cancel).await,
        }
    }

    /// Calls a set-based handler once with the records of `batch` not handled before (`metas`
    /// of them, claimed: `fresh` says which), each with a cell of its own in `tx`: the records
    /// it took (all of them) and the cells of those in the call; `Err` when it fails.
    async fn call_set(
        &self,
        tx: &BatchTx,
        (group, outbox): (&str, &Arc<Outboxed>),
        batch: &[Delivered],
        (metas, fresh): (&[Arc<Meta>], &[bool]),
        cancel: &CancellationToken,
    ) -> Result<(usize, Vec<Arc<TxCell>>), Ran> {
        let mut cells = Vec::with_capacity(metas.len());
        let mut members = Vec::with_capacity(metas.len());
        let mut contexts = Vec::with_capacity(metas.len());
        for (i, meta) in metas.iter().enumerate().filter(|(i, _)| fresh[*i]) {
            let (ctx, cell) = self.record_context(tx, (group, outbox), meta);
            contexts.push((i, ctx.clone()));
            members.push((ctx, batch[i].msg.payload().unwrap_or_default().to_vec()));
            cells.push(cell);
        }
        if cancel.is_cancelled() {
            return Err(Ran::FailedAt(0));
        }
        let Some((first, _)) = members.first().cloned() else {
            return Ok((metas.len(), cells));
        };
        let first_msg = &batch[fresh.iter().position(|f| *f).unwrap_or_default()].msg;
        let ctx = first.with_members(members);
        if self.call_in_batch(ctx, first_msg).await.is_err() {
            return Err(Ran::CallFailed);
        }
        // A record the call marked failed: the transaction rolls back (one statement may hold
        // its rows), the records before it are redone without it, and it goes alone.
        // (Each further marked record costs its batch's later records another run: mark
        // rarely, or take no `Tx`.)
        let marked = contexts
            .iter()
            .find_map(|(i, ctx)| ctx.take_mark().map(|mark| (*i, mark)));
        if let Some((i, mark)) = marked {
            let (outcome, error) = Failed::Call(CallError::Handler(mark)).outcome();
            self.count_failure(outcome);
            tracing::info!(
                offset = batch[i].msg.offset(),
                error,
                "a record was marked failed in its batch's call: it is handled alone next"
            );
            return Err(Ran::FailedAt(i));
        }
        tx.idle().await;
        Ok((metas.len(), cells))
    }

    /// The context of the record `meta` describes in batch transaction `tx`, and its cell (its
    /// outbox rows, its source).
    fn record_context(
        &self,
        tx: &BatchTx,
        (group, outbox): (&str, &Arc<Outboxed>),
        meta: &Arc<Meta>,
    ) -> (Context<S>, Arc<TxCell>) {
        let cell = tx.cell(group, meta);
        let sink = Arc::new(Sink::Outbox(cell.clone(), outbox.clone()));
        (self.context(meta, sink), cell)
    }

    /// Calls the handler in a batch with `ctx` (for record `msg`, or a set-based call's first),
    /// in the record's span: a failure is counted and logged (the batch is split after it).
    async fn call_in_batch(&self, ctx: Context<S>, msg: &Received) -> Result<(), ()> {
        let span = crate::ops::telemetry::spans::process(
            msg,
            self.listener.name(),
            &self.setup.group.joined,
        );
        let Err(failed) = self.call(ctx, msg).instrument(span).await else {
            return Ok(());
        };
        let (outcome, error) = failed.outcome();
        self.count_failure(outcome);
        tracing::info!(
            offset = msg.offset(),
            error,
            "a call failed in a batch: its record is handled alone, or its set's halves again"
        );
        Err(())
    }

    /// A batch's store failed: its records go alone, and wait the failure out there.
    fn store_failed(&self, e: &Error) -> Ran {
        self.counters.metrics.unavailable.inc();
        tracing::warn!(error = %e, "a batch's transaction failed; its records are handled one by one");
        Ran::Store
    }
}

/// How long a batch's phases took, for its debug line: what a record waits for and where a
/// batch's time goes (the breakdown in docs/performance.md comes from them).
struct Laps {
    /// When the poll thread received the batch's first record.
    received: Instant,
    started: Instant,
    /// The end of each phase so far: claimed, ran, committed, published.
    ends: Vec<Instant>,
}

impl Laps {
    fn start(received: Instant) -> Self {
        Self {
            received,
            started: Instant::now(),
            ends: Vec::with_capacity(4),
        }
    }

    /// Ends the current phase.
    fn lap(&mut self) {
        self.ends.push(Instant::now());
    }

    /// Logs the phases of a batch of `records`, at debug.
    fn log(&self, records: usize) {
        let us = |d: std::time::Duration| d.as_micros() as u64;
        let mut from = self.started;
        let mut took = [0; 4];
        for (t, end) in took.iter_mut().zip(&self.ends) {
            *t = us(end.duration_since(from));
            from = *end;
        }
        let [claimed_us, ran_us, committed_us, published_us] = took;
        tracing::debug!(
            records,
            waited_us = us(self.started.duration_since(self.received)),
            claimed_us,
            ran_us,
            committed_us,
            published_us,
            "store batch"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_follows_a_batch() {
        use Step::{Alone, Batch};
        #[rustfmt::skip]
        let cases: Vec<(&str, usize, Ran, Vec<Step>)> = vec![
            ("all committed: nothing",                   4, Ran::Committed(4), vec![]),
            ("out of time: the rest, as a batch",        5, Ran::Committed(2), vec![Batch(vec![2, 3, 4])]),
            ("out of time, one left: alone",             3, Ran::Committed(2), vec![Alone(2)]),
            ("the first fails: it alone, then the rest", 4, Ran::FailedAt(0), vec![Alone(0), Batch(vec![1, 2, 3])]),
            ("one in the middle fails",                  5, Ran::FailedAt(2), vec![Batch(vec![0, 1]), Alone(2), Batch(vec![3, 4])]),
            ("the second fails: each side alone",        3, Ran::FailedAt(1), vec![Alone(0), Alone(1), Alone(2)]),
            ("the last fails",                           3, Ran::FailedAt(2), vec![Batch(vec![0, 1]), Alone(2)]),
            ("the store failed: every record alone",     3, Ran::Store, vec![Alone(0), Alone(1), Alone(2)]),
            ("a set's call failed: its halves",          5, Ran::CallFailed, vec![Batch(vec![0, 1]), Batch(vec![2, 3, 4])]),
            ("a set of two failed: each alone",          2, Ran::CallFailed, vec![Alone(0), Alone(1)]),
            ("a set of three failed",                    3, Ran::CallFailed, vec![Alone(0), Batch(vec![1, 2])]),
            ("a set's call kept all",                    4, Ran::Kept { taken: 4, failed: vec![] }, vec![]),
            ("kept but two marked: each alone, in order", 5, Ran::Kept { taken: 5, failed: vec![1, 3] }, vec![Alone(1), Alone(3)]),
            ("marked, then the records it did not take", 6, Ran::Kept { taken: 3, failed: vec![0] }, vec![Alone(0), Batch(vec![3, 4, 5])]),
            ("one left untaken: alone, after the marked", 4, Ran::Kept { taken: 3, failed: vec![2] }, vec![Alone(2), Alone(3)]),
        ];
        for (what, n, ran, steps) in cases {
            assert_eq!(after(n, &ran), steps, "{what}");
        }
    }
}
