//! The one exponential backoff atoll waits with: in-place retries, dead-letter and retry-topic
//! writes, refused commits, saga timeout writes and a full producer queue.

use std::time::Duration;

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
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
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

    #[test]
    fn max_below_first_is_first() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).with_jitter(exact);
        assert_eq!(b.delay(3), Duration::from_secs(2));
    }
}
