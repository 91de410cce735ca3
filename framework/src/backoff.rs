//! The one exponential backoff atoll waits with: in-place retries, dead-letter and retry-topic
//! writes, refused commits, saga timeout writes and a full producer queue.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A jitter factor source: returns a factor in `[0.8, 1.2)` by default; tests inject a
/// constant to make delays exact.
pub(crate) type Jitter = fn() -> f64;

fn random_jitter() -> f64 {
    rand::random_range(0.8..1.2)
}

/// Exponential backoff with ±20% jitter: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// Backoff from `first`, doubling up to `max` (at least `first`), with random jitter.
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: if max.as_nanos() < first.as_nanos() {
                first
            } else {
                max
            },
            jitter: random_jitter,
        }
    }

    /// The same backoff with `jitter` as the source of its jitter factor.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_jitter(self, jitter: Jitter) -> Self {
        Self { jitter, ..self }
    }

    /// The delay after failure number `n` (from 1): `first · 2^(n-1)`, at most `max`, jittered.
    pub(crate) fn delay(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        let base = self.first.saturating_mul(factor).min(self.max);
        base.mul_f64((self.jitter)())
    }

    /// A sequence of delays from failure 1 on.
    pub(crate) fn iter(self) -> Delays {
        Delays {
            backoff: self,
            n: 0,
        }
    }
}

impl Backoff {
    /// Runs `attempt` until it succeeds, and returns what it gave; each failure goes to
    /// `failed` (with its number, from 1), then this backoff is waited out before the next
    /// attempt. `None` when `cancel` fires first, during an attempt or a wait: the one way to
    /// wait out an outage (a broker, the store) that only a revocation or a shutdown ends.
    pub(crate) async fn retry_until_cancelled<T, E, Fut>(
        self,
        cancel: &CancellationToken,
        mut attempt: impl FnMut() -> Fut,
        mut failed: impl FnMut(E, u32),
    ) -> Option<T>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delays = self.iter();
        loop {
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => return None,
                result = attempt() => result,
            };
            match result {
                Ok(done) => return Some(done),
                Err(e) => failed(e, delays.n + 1),
            }
            if !sleep_unless(cancel, delays.next_delay()).await {
                return None;
            }
        }
    }
}

/// Sleeps for `delay`; `false` when `cancel` fires first.
pub(crate) async fn sleep_unless(cancel: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// The successive delays of a [`Backoff`].
#[derive(Debug, Clone)]
pub(crate) struct Delays {
    backoff: Backoff,
    n: u32,
}

impl Delays {
    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.n = self.n.saturating_add(1);
        self.backoff.delay(self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact() -> f64 {
        1.0
    }

    #[test]
    fn doubles_from_first_and_caps_at_max() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(exact);
        let ms: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
        let mut d = b.iter();
        assert_eq!(d.next_delay(), Duration::from_millis(100));
        assert_eq!(d.next_delay(), Duration::from_millis(200));
    }

    #[test]
    fn random_jitter_stays_within_twenty_percent() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..100 {
            let d = b.delay(1);
            assert!(
                d >= Duration::from_millis(80) && d < Duration::from_millis(120),
                "{d:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_waiting_out_each_failure() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(exact);
        let cancel = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let mut tries = 0;
        let mut failures = Vec::new();
        let got = b
            .retry_until_cancelled(
                &cancel,
                || {
                    tries += 1;
                    let n = tries;
                    async move {
                        if n < 4 {
                            Err(n)
                        } else {
                            Ok("done")
                        }
                    }
                },
                |e, n| failures.push((e, n)),
            )
            .await;
        assert_eq!(got, Some("done"));
        assert_eq!(failures, [(1, 1), (2, 2), (3, 3)]);
        // 100 + 200 + 400 ms of waiting.
        assert_eq!(start.elapsed(), Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancellation_ends_the_wait_and_the_attempt() {
        let b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).with_jitter(exact);
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(15)).await;
            c.cancel();
        });
        let start = tokio::time::Instant::now();
        let mut tries = 0;
        // Fails at once, then hangs in its second attempt: the cancellation ends it.
        let got: Option<()> = b
            .retry_until_cancelled(
                &cancel,
                || {
                    tries += 1;
                    let n = tries;
                    async move {
                        if n == 1 {
                            Err(())
                        } else {
                            std::future::pending().await
                        }
                    }
                },
                |(), _| {},
            )
            .await;
        assert_eq!(got, None);
        assert_eq!(tries, 2);
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        // Already cancelled: no attempt at all.
        let got: Option<()> = b
            .retry_until_cancelled(&cancel, || async { Ok::<_, ()>(()) }, |(), _| {})
            .await;
        assert_eq!(got, None);
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_unless_says_whether_it_slept() {
        let cancel = CancellationToken::new();
        assert!(sleep_unless(&cancel, Duration::from_secs(1)).await);
        cancel.cancel();
        assert!(!sleep_unless(&cancel, Duration::from_secs(1)).await);
    }

    #[test]
    fn max_below_first_is_first() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).with_jitter(exact);
        assert_eq!(b.delay(3), Duration::from_secs(2));
    }
}
