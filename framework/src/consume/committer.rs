//! Offset commits on a thread of their own, so that the poll thread never waits for the broker.
//!
//! rust-rdkafka 0.39 never reports the outcome of an asynchronous commit
//! (fede1024/rust-rdkafka#856): a failed one would go unnoticed and its round trip unmeasured.
//! So every commit here is synchronous, made by one committer thread per consumer, in the order
//! requested: a commit waiting for an unreachable coordinator holds up only later commits, which
//! it merges (the newest offset per partition wins), never the poll loop, its heartbeat-free
//! `max.poll.interval.ms` clock, or the liveness probe. Revocation and shutdown wait for their
//! commit ([`CommitQueue::commit_and_wait`]); being in the same queue, no earlier periodic commit
//! can land after theirs and move an offset back. A refused commit is tried again (with the
//! next one, or after a second) while its partitions stay assigned to this consumer.
//!
//! An exactly-once listener's committer holds its transactional producer instead: each commit
//! is one Kafka transaction with the outputs of the records it passes. A transaction that
//! fails is aborted and not tried again (its outputs are gone with it): the committer asks for
//! a [`Rewind`] and drops every commit queued before the poll thread carried it out, so that
//! nothing is committed past the records of the aborted transaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::backoff::Backoff;
use crate::config::client::Clients;
use crate::ops::metrics::ListenerMetrics;
use crate::produce::transactional::{Output, TxFailure, TxProducer};

/// A batch to commit: offsets by partition, and (exactly-once) the outputs of the records
/// below them, in order.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) offsets: Vec<(i32, i64)>,
    pub(crate) outputs: Vec<Output>,
}

enum Request {
    Commit {
        batch: Batch,
        /// The [`Rewind::epoch`] it was taken in.
        epoch: u64,
        /// Told whether the commit (merged with the others answered with it) landed.
        done: Option<mpsc::Sender<bool>>,
    },
    Stop,
}

/// How the committer asks the poll thread to hand the listener's partitions to their workers
/// again from the committed offsets, after a transaction failed.
#[derive(Debug, Default)]
pub(crate) struct Rewind {
    requested: AtomicBool,
    /// Why the listener must stop: its transactional producer was fenced by a newer instance
    /// ([`TxFailure::Fenced`]), or the broker has no transactions.
    stop: parking_lot::Mutex<Option<String>>,
    /// Whether `stop` is set.
    stopping: AtomicBool,
    /// Counts the rewinds carried out; a commit taken before the latest one is dropped.
    epoch: AtomicU64,
    /// Whether a transaction committed since the last rewind: failures since are not
    /// consecutive.
    committed: AtomicBool,
}

impl Rewind {
    /// Whether a rewind waits to be carried out.
    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Why the listener must stop, once its transactional producer was fenced or the broker
    /// turned out to have no transactions. Checked on every turn of the poll loop: an atomic
    /// load unless it is so.
    pub(crate) fn stop(&self) -> Option<String> {
        if !self.stopping.load(Ordering::SeqCst) {
            return None;
        }
        self.stop.lock().clone()
    }

    /// Whether a transaction committed since the last call.
    pub(crate) fn take_committed(&self) -> bool {
        self.committed.swap(false, Ordering::SeqCst)
    }

    /// Called by the poll thread once it dropped the partitions' work and sought them back to
    /// their committed offsets.
    pub(crate) fn done(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.requested.store(false, Ordering::SeqCst);
    }
}

/// The way to a consumer's committer thread; lives in the consumer's context, so the rebalance
/// callbacks reach it too.
#[derive(Debug)]
pub(crate) struct CommitQueue {
    tx: mpsc::Sender<Request>,
    rewind: Arc<Rewind>,
}

/// What the committer thread reads.
pub(crate) struct Requests {
    rx: mpsc::Receiver<Request>,
    rewind: Arc<Rewind>,
}

/// A new queue, before the consumer (and so the thread) exists.
pub(crate) fn queue() -> (CommitQueue, Requests) {
    let (tx, rx) = mpsc::channel();
    let rewind = Arc::new(Rewind::default());
    (
        CommitQueue {
            tx,
            rewind: rewind.clone(),
        },
        Requests { rx, rewind },
    )
}

/// How a listener's offsets are committed.
pub(crate) enum Commits {
    /// Offsets only, by the consumer.
    Plain,
    /// In Kafka transactions with the outputs, by a producer with this `transactional.id`
    /// created from the client configuration.
    Transactional {
        clients: Clients,
        transactional_id: String,
    },
}

/// Starts committing `topic`'s offsets for `consumer` from `requests`. The thread holds the
/// consumer until [`CommitQueue::stop`]; join it then, so that the last reference (whose drop
/// closes the consumer) is the caller's. A transactional producer is created first (on this
/// thread, blocking); its failure fails the start.
pub(crate) fn spawn<C: ConsumerContext + 'static>(
    consumer: Arc<BaseConsumer<C>>,
    requests: Requests,
    topic: String,
    metrics: Arc<ListenerMetrics>,
    name: String,
    commits: Commits,
) -> crate::error::Result<thread::JoinHandle<()>> {
    let producer = match &commits {
        Commits::Plain => None,
        Commits::Transactional {
            clients,
            transactional_id,
        } => Some(TxProducer::new(clients, transactional_id).map_err(crate::error::Error::Config)?),
    };
    thread::Builder::new()
        .name(name)
        .spawn(move || match (producer, commits) {
            (
                Some(producer),
                Commits::Transactional {
                    clients,
                    transactional_id,
                },
            ) => {
                let tx = Transactions {
                    producer: Some(producer),
                    clients,
                    transactional_id,
                };
                run_transactional(&consumer, &topic, &metrics, &requests, tx);
            }
            _ => run(&consumer, &topic, &metrics, &requests.rx),
        })
        .map_err(|source| crate::error::Error::Spawn {
            what: "a committer thread".into(),
            source,
        })
}

impl CommitQueue {
    fn send(&self, request: Request) {
        // Fails only once the thread ended (after `stop`): nothing left to commit then.
        let _ = self.tx.send(request);
    }

    /// The rewind state shared with the committer thread.
    pub(crate) fn rewind(&self) -> &Rewind {
        &self.rewind
    }

    fn request(&self, batch: Batch, done: Option<mpsc::Sender<bool>>) -> Request {
        Request::Commit {
            batch,
            epoch: self.rewind.epoch.load(Ordering::SeqCst),
            done,
        }
    }

    /// Queues a commit; returns at once.
    pub(crate) fn commit(&self, batch: Batch) {
        if !batch.offsets.is_empty() {
            self.send(self.request(batch, None));
        }
    }

    /// Queues a commit and waits until it (and every one before it) was answered; whether the
    /// broker took it (`true` for nothing to commit).
    pub(crate) fn commit_and_wait(&self, batch: Batch) -> bool {
        self.commit_within(batch, Duration::MAX)
    }

    /// [`CommitQueue::commit_and_wait`], waiting at most `timeout`: `false` once it passed (the
    /// commit stays queued, and may land later).
    pub(crate) fn commit_within(&self, batch: Batch, timeout: Duration) -> bool {
        if batch.offsets.is_empty() {
            return true;
        }
        let (done, wait) = mpsc::channel();
        self.send(self.request(batch, Some(done)));
        // Also returns when the thread is gone (the request, and `done` with it, dropped).
        wait.recv_timeout(timeout).unwrap_or(false)
    }

    /// Asks the thread to commit what is queued and end.
    pub(crate) fn stop(&self) {
        self.send(Request::Stop);
    }
}

/// How long a refused commit waits to be tried again when no newer one comes: from 1 s,
/// doubling to 10 s while the broker keeps refusing.
fn retry_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(10))
}

fn run<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    metrics: &ListenerMetrics,
    rx: &mpsc::Receiver<Request>,
) {
    // Offsets of a refused commit, tried again with the next one (or after a backoff) as long
    // as their partitions stay assigned here: another owner's progress must not be overwritten.
    let mut refused: BTreeMap<i32, i64> = BTreeMap::new();
    let mut retries = retry_backoff().iter();
    let mut stopping = false;
    while !stopping {
        let wait = if refused.is_empty() {
            retries = retry_backoff().iter();
            Duration::MAX
        } else {
            retries.next_delay()
        };
        let first = match rx.recv_timeout(wait) {
            Ok(request) => Some(request),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut offsets = still_assigned(consumer, topic, std::mem::take(&mut refused));
        // Everything queued meanwhile goes into one commit: the newest offset per partition.
        let mut waiting = Vec::new();
        for request in first.into_iter().chain(rx.try_iter()) {
            match request {
                Request::Commit { batch, done, .. } => {
                    offsets.extend(batch.offsets);
                    waiting.extend(done);
                }
                Request::Stop => stopping = true,
            }
        }
        let landed = offsets.is_empty() || commit(consumer, topic, metrics, &offsets);
        if !landed {
            refused = offsets;
        }
        for done in waiting {
            let _ = done.send(landed);
        }
    }
}

/// An exactly-once listener's transactional producer, and how to make a new one.
struct Transactions {
    /// `None` after a fatal error, until the next batch makes a new one.
    producer: Option<TxProducer>,
    clients: Clients,
    transactional_id: String,
}

/// The committer loop of an exactly-once listener: every batch queued meanwhile goes into one
/// transaction with its outputs. A failed transaction is not tried again: a rewind is asked
/// for, and every batch taken before it is carried out is dropped.
fn run_transactional<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    metrics: &ListenerMetrics,
    requests: &Requests,
    mut tx: Transactions,
) {
    // Batches of epochs up to this one belong to an aborted transaction's work.
    let mut drop_through: Option<u64> = None;
    let mut stopping = false;
    while !stopping {
        let Ok(first) = requests.rx.recv() else {
            return;
        };
        let mut batch = Batch::default();
        let mut last_epoch = None;
        let mut waiting = Vec::new();
        for request in std::iter::once(first).chain(requests.rx.try_iter()) {
            match request {
                Request::Commit {
                    batch: b,
                    epoch,
                    done,
                } => {
                    // A batch of an aborted transaction's work is dropped: not committed.
                    // (What its waiter is told; no exactly-once caller acts on it today: their
                    // revoked partitions are never parked.)
                    let dropped = drop_through.is_some_and(|d| epoch <= d);
                    waiting.extend(done.map(|done| (done, dropped)));
                    if dropped {
                        continue;
                    }
                    batch.offsets.extend(b.offsets);
                    batch.outputs.extend(b.outputs);
                    last_epoch = Some(epoch);
                }
                Request::Stop => stopping = true,
            }
        }
        let mut landed = true;
        if let (Some(epoch), false) = (last_epoch, batch.offsets.is_empty()) {
            let committed = commit_transaction(consumer, topic, metrics, &mut tx, batch);
            landed = committed.is_ok();
            if landed {
                requests.rewind.committed.store(true, Ordering::SeqCst);
            }
            if let Err(failure) = committed {
                metrics.commits_failed.inc();
                tracing::error!(error = %failure, topic, "transaction failed; the partitions are handled again from their committed offsets");
                drop_through = Some(epoch);
                match failure {
                    // Made again for the next batch.
                    TxFailure::Fatal(_) => tx.producer = None,
                    // Nothing more is committed: the newer instance owns the work.
                    failure @ (TxFailure::Fenced(_) | TxFailure::Unsupported(_)) => {
                        drop_through = Some(u64::MAX);
                        *requests.rewind.stop.lock() = Some(failure.to_string());
                        requests.rewind.stopping.store(true, Ordering::SeqCst);
                    }
                    TxFailure::Aborted(_) => {}
                }
                // After `stop`, so that a stopping listener does not rewind first.
                requests.rewind.requested.store(true, Ordering::SeqCst);
            }
        }
        for (done, dropped) in waiting {
            let _ = done.send(landed && !dropped);
        }
    }
}

/// One transaction: the batch's outputs and offsets, timed into
/// `atoll_commit_duration_seconds`.
fn commit_transaction<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    metrics: &ListenerMetrics,
    tx: &mut Transactions,
    batch: Batch,
) -> Result<(), TxFailure> {
    if tx.producer.is_none() {
        let made = TxProducer::new(&tx.clients, &tx.transactional_id)
            .map_err(|why| TxFailure::Fatal(format!("renewing the producer: {why}")))?;
        tx.producer = Some(made);
    }
    let producer = tx.producer.as_ref().expect("made above");
    let offsets: BTreeMap<i32, i64> = batch.offsets.into_iter().collect();
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &offsets {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    let group = consumer.group_metadata().ok_or_else(|| {
        TxFailure::Aborted("the consumer has no group metadata (not in its group)".into())
    })?;
    let at = Instant::now();
    let result = producer.commit(&batch.outputs, &tpl, &group);
    ListenerMetrics::observe(&metrics.commit_duration, at.elapsed());
    result
}

/// The entries of `offsets` whose partitions are still assigned to `consumer`.
fn still_assigned<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    mut offsets: BTreeMap<i32, i64>,
) -> BTreeMap<i32, i64> {
    if offsets.is_empty() {
        return offsets;
    }
    match consumer.assignment() {
        Ok(tpl) => offsets.retain(|p, _| tpl.find_partition(topic, *p).is_some()),
        Err(_) => offsets.clear(),
    }
    offsets
}

/// One synchronous commit, timed into `atoll_commit_duration_seconds`; a failure is logged and
/// counted (until a later commit lands, the records would come again: at least once). Whether
/// the broker accepted it.
fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    metrics: &ListenerMetrics,
    offsets: &BTreeMap<i32, i64>,
) -> bool {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    let at = Instant::now();
    let result = consumer.commit(&tpl, CommitMode::Sync);
    ListenerMetrics::observe(&metrics.commit_duration, at.elapsed());
    match result {
        Ok(()) => true,
        Err(e) => {
            metrics.commits_failed.inc();
            tracing::warn!(error = %e, ?offsets, topic, "offset commit failed; trying again");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        Batch {
            offsets: vec![(0, 5)],
            outputs: Vec::new(),
        }
    }

    #[test]
    fn a_commit_not_answered_in_time_or_at_all_is_not_known_to_have_landed() {
        let (queue, requests) = queue();
        assert!(
            !queue.commit_within(batch(), Duration::from_millis(20)),
            "no answer within the timeout"
        );
        drop(requests);
        assert!(!queue.commit_and_wait(batch()), "the thread is gone");
        assert!(
            queue.commit_and_wait(Batch::default()),
            "nothing to commit is no failure"
        );
    }

    #[test]
    fn the_committers_answer_is_what_the_waiter_gets() {
        for landed in [true, false] {
            let (queue, requests) = queue();
            let answer = thread::spawn(move || {
                if let Ok(Request::Commit { done, .. }) = requests.rx.recv() {
                    done.expect("a waiter").send(landed).unwrap();
                }
            });
            assert_eq!(queue.commit_and_wait(batch()), landed);
            answer.join().unwrap();
        }
    }
}
