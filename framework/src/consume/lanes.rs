//! Concurrent dispatch of one partition's records, for the `key` and `unordered` ordering
//! modes: the records of a key run one after another in their *lane*, lanes and keyless
//! records run concurrently, at most as many at a time as the listener's permits allow.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The lanes of one partition. `work` is called once per admitted item; it must end soon
/// after `cancel` fires (a cancelled item is still handed to it, without a permit, so that it
/// can give the item up).
pub(crate) struct Lanes<T, W> {
    work: Arc<W>,
    permits: Arc<Semaphore>,
    cancel: CancellationToken,
    /// Items waiting for their key's turn, by key; a key is present while its lane runs.
    waiting: Arc<Mutex<HashMap<Vec<u8>, VecDeque<T>>>>,
    tasks: JoinSet<()>,
}

impl<T, W, F> Lanes<T, W>
where
    T: Send + 'static,
    W: Fn(T) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// Lanes drawing on the listener-wide `permits`.
    pub(crate) fn new(work: W, permits: Arc<Semaphore>, cancel: CancellationToken) -> Self {
        Self {
            work: Arc::new(work),
            permits,
            cancel,
            waiting: Arc::default(),
            tasks: JoinSet::new(),
        }
    }

    /// Admits an item: a keyless one runs once a permit is free (this waits for it, which is
    /// the listener's back-pressure); a keyed one joins its key's lane and takes a permit when
    /// its turn comes, so items waiting behind a busy key hold none.
    pub(crate) async fn admit(&mut self, key: Option<Vec<u8>>, item: T) {
        self.reap();
        let Some(key) = key else {
            let permit = acquire(&self.permits, &self.cancel).await;
            let work = self.work.clone();
            self.tasks.spawn(async move {
                work(item).await;
                drop(permit);
            });
            return;
        };
        {
            let mut waiting = self.waiting.lock().expect("poisoned");
            if let Some(lane) = waiting.get_mut(&key) {
                lane.push_back(item);
                return;
            }
            waiting.insert(key.clone(), VecDeque::new());
        }
        let (work, waiting) = (self.work.clone(), self.waiting.clone());
        let (permits, cancel) = (self.permits.clone(), self.cancel.clone());
        self.tasks.spawn(async move {
            let mut next = Some(item);
            while let Some(item) = next {
                let permit = acquire(&permits, &cancel).await;
                // A panic must not end the lane: the items behind it would never be done.
                if std::panic::AssertUnwindSafe(work(item))
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    tracing::error!("a record's work panicked; its lane goes on");
                }
                drop(permit);
                let mut waiting = waiting.lock().expect("poisoned");
                next = waiting.get_mut(&key).and_then(VecDeque::pop_front);
                if next.is_none() {
                    waiting.remove(&key);
                }
            }
        });
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

    /// Waits until every admitted item's work ended.
    pub(crate) async fn finish(mut self) {
        while self.tasks.join_next().await.is_some() {}
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
                }
            },
            Arc::new(Semaphore::new(256)),
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
        let permits = Arc::new(Semaphore::new(4));
        let cancel = CancellationToken::new();
        let unblock = CancellationToken::new();
        let gate = unblock.clone();
        let mut hot = Lanes::new(
            move |()| {
                let gate = gate.clone();
                async move { gate.cancelled().await }
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
                }
            },
            permits.clone(),
            cancel.clone(),
        );
        let partition0 = tokio::spawn(async move {
            for _ in 0..10 {
                hot.admit(Some(b"hot".to_vec()), ()).await;
            }
            hot
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let partition1 = tokio::spawn(async move {
            for i in 0..100u32 {
                other.admit(Some(i.to_be_bytes().to_vec()), i).await;
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
}
