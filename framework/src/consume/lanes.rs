//! Concurrent dispatch of one partition's records, for the `key` and `unordered` ordering
//! modes: the records of a key run one after another in their *lane*, lanes and keyless
//! records run concurrently, at most as many at a time as the listener's permits allow.
//!
//! An item's work may leave a *tail* (waiting for the acknowledgements of what its handler
//! produced): the tail runs on its own, holding one of the listener's acknowledgement permits
//! instead of a handler permit, while the lane goes on with its key's next item. So a key's
//! records are pipelined behind their acknowledgements, as in `partition` mode, and the
//! handlers in flight are bounded apart from the records awaiting acknowledgement. A tail may
//! give its item back (its outputs were not acknowledged): it then runs again first in its
//! key's lane, never beside the key's later items.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The permits of a listener: handlers running, and records awaiting their acknowledgements.
#[derive(Debug, Clone)]
pub(crate) struct Permits {
    pub(crate) handlers: Arc<Semaphore>,
    pub(crate) acks: Arc<Semaphore>,
}

impl Permits {
    /// `n` of each.
    pub(crate) fn new(n: usize) -> Self {
        Self {
            handlers: Arc::new(Semaphore::new(n)),
            acks: Arc::new(Semaphore::new(n)),
        }
    }
}

/// The lanes of one partition. `work` is called once per admitted item and may return a tail
/// to run after it; a tail that gives its item back has it run again, first in its key's
/// lane (or, keyless, with a handler permit of its own). Work and tails must end soon after
/// `cancel` fires (a cancelled item is still handed to the work, without a permit, so that it
/// can give the item up).
pub(crate) struct Lanes<T, W> {
    shared: Arc<Shared<T, W>>,
    tasks: JoinSet<()>,
    /// The admission number of the next item: a key's items are handled in its order.
    next: u64,
}

/// A key's items waiting for their turn, with their admission numbers.
type Lane<T> = VecDeque<(u64, T)>;

/// What the lanes of a partition and their tails share.
struct Shared<T, W> {
    work: W,
    permits: Permits,
    cancel: CancellationToken,
    /// Items waiting for their key's turn, by key, in admission order (with their admission
    /// numbers); a key is present while its lane runs.
    waiting: Mutex<HashMap<Arc<[u8]>, Lane<T>>>,
    /// The tails, and the lanes and runs that items given back start.
    tails: TaskTracker,
}

impl<T, W, F, G> Lanes<T, W>
where
    T: Send + 'static,
    W: Fn(T) -> F + Send + Sync + 'static,
    F: Future<Output = Option<G>> + Send + 'static,
    G: Future<Output = Option<T>> + Send + 'static,
{
    /// Lanes drawing on the listener-wide `permits`.
    pub(crate) fn new(work: W, permits: Permits, cancel: CancellationToken) -> Self {
        Self {
            shared: Arc::new(Shared {
                work,
                permits,
                cancel,
                waiting: Mutex::default(),
                tails: TaskTracker::new(),
            }),
            tasks: JoinSet::new(),
            next: 0,
        }
    }

    /// Admits an item: a keyless one runs once a permit is free (this waits for it, which is
    /// the listener's back-pressure); a keyed one joins its key's lane and takes a permit when
    /// its turn comes, so items waiting behind a busy key hold none.
    pub(crate) async fn admit(&mut self, key: Option<Arc<[u8]>>, item: T) {
        self.reap();
        let seq = self.next;
        self.next += 1;
        let Some(key) = key else {
            let shared = self.shared.clone();
            let permit = acquire(&shared.permits.handlers, &shared.cancel).await;
            self.tasks
                .spawn(async move { shared.run(None, seq, item, permit).await });
            return;
        };
        if let Some(item) = self.shared.enqueue(&key, seq, item) {
            self.tasks.spawn(self.shared.clone().lane(key, item));
        }
    }

    /// Waits until a task ends and forgets it; pending while there is none.
    pub(crate) async fn reaped(&mut self) {
        match self.tasks.join_next().await {
            Some(Err(e)) if e.is_panic() => tracing::error!("a record's work panicked"),
            Some(_) => {}
            None => std::future::pending::<()>().await,
        }
    }

    /// Forgets the tasks that ended.
    fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }

    /// Tasks started and not yet reaped.
    #[cfg(test)]
    pub(crate) fn tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Waits until every admitted item's work, and its tail, ended.
    pub(crate) async fn finish(mut self) {
        while self.tasks.join_next().await.is_some() {}
        // Tails may start lanes again (for items given back), which may start tails: the
        // tracker is empty only once all of them ended.
        self.shared.tails.close();
        self.shared.tails.wait().await;
    }
}

impl<T, W, F, G> Shared<T, W>
where
    T: Send + 'static,
    W: Fn(T) -> F + Send + Sync + 'static,
    F: Future<Output = Option<G>> + Send + 'static,
    G: Future<Output = Option<T>> + Send + 'static,
{
    /// Queues item number `seq` in its key's running lane, in admission order (a new item
    /// goes last; one given back goes before the later ones still waiting); gives it back when
    /// the key had no lane, which the caller then starts (the key now counts as running).
    fn enqueue(&self, key: &Arc<[u8]>, seq: u64, item: T) -> Option<(u64, T)> {
        let mut waiting = self.waiting.lock();
        if let Some(lane) = waiting.get_mut(&**key) {
            let at = lane.partition_point(|(s, _)| *s < seq);
            lane.insert(at, (seq, item));
            return None;
        }
        waiting.insert(key.clone(), VecDeque::new());
        Some((seq, item))
    }

    /// A key's lane: its items one after another, each with a handler permit.
    fn lane(self: Arc<Self>, key: Arc<[u8]>, first: (u64, T)) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut next = Some(first);
            while let Some((seq, item)) = next {
                let permit = acquire(&self.permits.handlers, &self.cancel).await;
                self.run(Some(&key), seq, item, permit).await;
                let mut waiting = self.waiting.lock();
                next = waiting.get_mut(&*key).and_then(VecDeque::pop_front);
                if next.is_none() {
                    waiting.remove(&*key);
                }
            }
        })
    }

    /// Runs `item`'s work holding `permit`; its tail, if any, runs on with an acknowledgement
    /// permit, taken before the handler permit is given back (the back-pressure of records
    /// awaiting acknowledgement).
    async fn run(
        self: &Arc<Self>,
        key: Option<&Arc<[u8]>>,
        seq: u64,
        item: T,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        // A panic must not end a lane: the items behind it would never be done.
        let tail = match std::panic::AssertUnwindSafe((self.work)(item))
            .catch_unwind()
            .await
        {
            Ok(Some(tail)) => tail,
            Ok(None) => return,
            Err(_) => {
                tracing::error!("a record's work panicked; its lane goes on");
                return;
            }
        };
        let ack = acquire(&self.permits.acks, &self.cancel).await;
        drop(permit);
        let (shared, key) = (self.clone(), key.cloned());
        self.tails.spawn(async move {
            let back = std::panic::AssertUnwindSafe(tail).catch_unwind().await;
            drop(ack);
            match back {
                Ok(Some(item)) => shared.again(key, seq, item),
                Ok(None) => {}
                Err(_) => tracing::error!("a record's acknowledgement work panicked"),
            }
        });
    }

    /// Runs item number `seq`, which a tail gave back, again: in its key's lane before the
    /// key's later items still waiting (never beside any of them; after those already
    /// handled), or keyless with a handler permit of its own.
    fn again(self: Arc<Self>, key: Option<Arc<[u8]>>, seq: u64, item: T) {
        match key {
            Some(key) => {
                if let Some(item) = self.enqueue(&key, seq, item) {
                    self.tails.spawn(self.clone().lane(key, item));
                }
            }
            None => {
                let shared = self.clone();
                self.tails.spawn(async move {
                    let permit = acquire(&shared.permits.handlers, &shared.cancel).await;
                    shared.run(None, seq, item, permit).await;
                });
            }
        }
    }
}

/// A permit, or none once `cancel` fired.
async fn acquire(
    permits: &Arc<Semaphore>,
    cancel: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        permit = permits.clone().acquire_owned() => Some(permit.expect("the semaphore is never closed")),
        () = cancel.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    /// 200k keyless records (`unordered` mode) through the lanes: once they are done, no finished task is kept
    /// while the partition stays assigned.
    #[tokio::test]
    async fn finished_keyless_tasks_are_not_kept() {
        let done = Arc::new(AtomicUsize::new(0));
        let counter = done.clone();
        let mut lanes = Lanes::new(
            move |()| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    None::<std::future::Ready<Option<_>>>
                }
            },
            Permits::new(256),
            CancellationToken::new(),
        );
        let mut peak = 0;
        for i in 0..200_000u32 {
            lanes.admit(None, ()).await;
            peak = peak.max(lanes.tasks());
            if i % 1000 == 0 {
                tokio::task::yield_now().await;
            }
        }
        while done.load(Ordering::Relaxed) < 200_000 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        lanes.reap();
        assert_eq!(lanes.tasks(), 0, "finished tasks are forgotten");
        assert!(
            peak < 5_000,
            "at most a few thousand tasks at once, saw {peak}"
        );
        lanes.finish().await;
    }

    /// A partition's records of one blocked key do not take the permits the other partitions
    /// need: `max_in_flight = 4`, partition 0 has 10 records of a key whose handler blocks,
    /// partition 1 distinct keys, and partition 1 keeps moving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_key_does_not_starve_other_partitions() {
        let permits = Permits::new(4);
        let cancel = CancellationToken::new();
        let unblock = CancellationToken::new();
        let gate = unblock.clone();
        let mut hot = Lanes::new(
            move |()| {
                let gate = gate.clone();
                async move {
                    gate.cancelled().await;
                    None::<std::future::Ready<Option<_>>>
                }
            },
            permits.clone(),
            cancel.clone(),
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut other = Lanes::new(
            move |i: u32| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(i);
                    None::<std::future::Ready<Option<_>>>
                }
            },
            permits.clone(),
            cancel.clone(),
        );
        let partition0 = tokio::spawn(async move {
            for _ in 0..10 {
                hot.admit(Some(Arc::from(&b"hot"[..])), ()).await;
            }
            hot
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let partition1 = tokio::spawn(async move {
            for i in 0..100u32 {
                other.admit(Some(Arc::from(&i.to_be_bytes()[..])), i).await;
            }
            other
        });
        let mut seen = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen < 100 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(_)) => seen += 1,
                _ => break,
            }
        }
        assert_eq!(
            seen, 100,
            "partition 1 stalled behind partition 0's blocked key"
        );
        assert!(
            partition0.is_finished(),
            "the blocked key's records were all admitted"
        );
        unblock.cancel();
        partition1.await.unwrap().finish().await;
        partition0.await.unwrap().finish().await;
    }

    /// A key's next record starts while its previous one awaits its acknowledgement (the
    /// tail), which holds an acknowledgement permit, not a handler permit: with one handler
    /// permit and two acknowledgement permits, three records of one key get handled while
    /// the first two tails are blocked, and the third handler waits for a tail to end before
    /// the fourth record may start. `finish` waits for the tails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_keys_records_pipeline_behind_their_acknowledgements() {
        let handled = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(AtomicUsize::new(0));
        let release = CancellationToken::new();
        let (h, a, r) = (handled.clone(), acked.clone(), release.clone());
        let permits = Permits {
            handlers: Arc::new(Semaphore::new(1)),
            acks: Arc::new(Semaphore::new(2)),
        };
        let mut lanes = Lanes::new(
            move |()| {
                let (h, a, r) = (h.clone(), a.clone(), r.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    Some(async move {
                        r.cancelled().await;
                        a.fetch_add(1, Ordering::SeqCst);
                        None
                    })
                }
            },
            permits.clone(),
            CancellationToken::new(),
        );
        for _ in 0..4 {
            lanes.admit(Some(Arc::from(&b"k"[..])), ()).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while handled.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            handled.load(Ordering::SeqCst),
            3,
            "two tails pending, the third record's handler done and waiting for an ack permit"
        );
        assert_eq!(acked.load(Ordering::SeqCst), 0);
        assert_eq!(
            permits.handlers.available_permits(),
            0,
            "the third record holds the handler permit while it waits for an ack permit"
        );
        release.cancel();
        lanes.finish().await;
        assert_eq!(handled.load(Ordering::SeqCst), 4);
        assert_eq!(
            acked.load(Ordering::SeqCst),
            4,
            "finish waits for every tail"
        );
        assert_eq!(permits.handlers.available_permits(), 1);
        assert_eq!(permits.acks.available_permits(), 2);
    }

    /// An item its tail gives back (its outputs were not acknowledged) runs again in its
    /// key's lane, never beside the key's other items, and before the items still waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_item_given_back_runs_again_in_its_lane_alone() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (r, m, o) = (running.clone(), most.clone(), order.clone());
        let mut lanes = Lanes::new(
            move |(i, again): (u32, bool)| {
                let (r, m, o) = (r.clone(), m.clone(), o.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    o.lock().push((i, again));
                    r.fetch_sub(1, Ordering::SeqCst);
                    Some(async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        // The first item's outputs fail once.
                        (i == 0 && !again).then_some((0, true))
                    })
                }
            },
            Permits::new(8),
            CancellationToken::new(),
        );
        for i in 0..20 {
            lanes.admit(Some(Arc::from(&b"k"[..])), (i, false)).await;
        }
        lanes.finish().await;
        let order = order.lock().clone();
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "one item of the key at a time"
        );
        assert_eq!(
            order.len(),
            21,
            "every item, and the first one twice: {order:?}"
        );
        let again = order.iter().position(|&x| x == (0, true)).unwrap();
        let firsts: Vec<u32> = order[..again].iter().map(|x| x.0).collect();
        assert_eq!(
            firsts,
            (0..again as u32).collect::<Vec<_>>(),
            "in order until it comes back"
        );
        let rest: Vec<u32> = order[again + 1..].iter().map(|x| x.0).collect();
        assert_eq!(
            rest,
            (again as u32..20).collect::<Vec<_>>(),
            "then the items still waiting, in order"
        );
    }

    /// Items given back keep their key's order among themselves, whatever order their tails
    /// end in: the first two items' outputs fail once, the second's tail ends first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn items_given_back_keep_their_order() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let o = order.clone();
        // Item 2 takes long: both are given back while it runs, and wait behind it.
        let mut lanes = Lanes::new(
            move |(i, again): (u32, bool)| {
                let o = o.clone();
                async move {
                    o.lock().push((i, again));
                    let work = if i == 2 { 100 } else { 5 };
                    tokio::time::sleep(Duration::from_millis(work)).await;
                    Some(async move {
                        // Item 1's tail ends before item 0's.
                        let wait = if i == 0 { 30 } else { 10 };
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        (i < 2 && !again).then_some((i, true))
                    })
                }
            },
            Permits::new(8),
            CancellationToken::new(),
        );
        for i in 0..30 {
            lanes.admit(Some(Arc::from(&b"k"[..])), (i, false)).await;
        }
        lanes.finish().await;
        let order = order.lock().clone();
        let again: Vec<u32> = order.iter().filter(|x| x.1).map(|x| x.0).collect();
        assert_eq!(
            again,
            [0, 1],
            "given back in their admission order: {order:?}"
        );
        assert_eq!(order.len(), 32);
    }
}
