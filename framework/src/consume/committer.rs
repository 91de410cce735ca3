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

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::backoff::Backoff;
use crate::ops::metrics::ListenerMetrics;

enum Request {
    Commit {
        offsets: Vec<(i32, i64)>,
        done: Option<mpsc::Sender<()>>,
    },
    Stop,
}

/// The way to a consumer's committer thread; lives in the consumer's context, so the rebalance
/// callbacks reach it too.
#[derive(Debug)]
pub(crate) struct CommitQueue(mpsc::Sender<Request>);

/// What the committer thread reads.
pub(crate) struct Requests(mpsc::Receiver<Request>);

/// A new queue, before the consumer (and so the thread) exists.
pub(crate) fn queue() -> (CommitQueue, Requests) {
    let (tx, rx) = mpsc::channel();
    (CommitQueue(tx), Requests(rx))
}

/// Starts committing `topic`'s offsets for `consumer` from `requests`. The thread holds the
/// consumer until [`CommitQueue::stop`]; join it then, so that the last reference (whose drop
/// closes the consumer) is the caller's.
pub(crate) fn spawn<C: ConsumerContext + 'static>(
    consumer: Arc<BaseConsumer<C>>,
    requests: Requests,
    topic: String,
    metrics: Arc<ListenerMetrics>,
    name: String,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(name)
        .spawn(move || run(&consumer, &topic, &metrics, &requests.0))
}

impl CommitQueue {
    fn send(&self, request: Request) {
        // Fails only once the thread ended (after `stop`): nothing left to commit then.
        let _ = self.0.send(request);
    }

    /// Queues a commit of `(partition, offset)` pairs; returns at once.
    pub(crate) fn commit(&self, offsets: Vec<(i32, i64)>) {
        if !offsets.is_empty() {
            self.send(Request::Commit {
                offsets,
                done: None,
            });
        }
    }

    /// Queues a commit and waits until it (and every one before it) was answered.
    pub(crate) fn commit_and_wait(&self, offsets: Vec<(i32, i64)>) {
        if offsets.is_empty() {
            return;
        }
        let (done, wait) = mpsc::channel();
        self.send(Request::Commit {
            offsets,
            done: Some(done),
        });
        // Also returns when the thread is gone (the request, and `done` with it, dropped).
        let _ = wait.recv();
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
                Request::Commit { offsets: o, done } => {
                    offsets.extend(o);
                    waiting.extend(done);
                }
                Request::Stop => stopping = true,
            }
        }
        if !offsets.is_empty() && !commit(consumer, topic, metrics, &offsets) {
            refused = offsets;
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
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
