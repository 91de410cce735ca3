//! Handling times for the status record: a histogram of atomic counters in log-linear buckets
//! (four per doubling, so a percentile read from it is within 19% of the true value), cheap
//! enough to observe on every attempt, and read as percentiles of the attempts between two
//! reads.
//!
//! The Prometheus histogram (`atoll_handler_duration_seconds`) keeps its coarse doubling
//! buckets for the scrapers, and its client library does not expose its counts; the status
//! record wants finer percentiles of a recent window, which this one gives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Buckets per doubling.
const PER_DOUBLING: usize = 4;
/// Doublings from 1 µs: the last bucket holds everything from 2^40 µs (about 12 days) up.
const DOUBLINGS: usize = 41;
/// How many buckets.
const BUCKETS: usize = PER_DOUBLING * DOUBLINGS;

/// The bucket of a time of `micros` µs: bucket `4k + s` holds `[2^k (1 + s/4), 2^k (1 + (s+1)/4))`
/// µs; bucket 0 also holds 0.
fn bucket(micros: u64) -> usize {
    if micros < 2 {
        return 0;
    }
    let k = 63 - micros.leading_zeros() as usize;
    // The two bits after the leading one (of 2 and 3, the one bit there is, in the upper place).
    let s = if k >= 2 {
        (micros >> (k - 2)) & 0b11
    } else {
        (micros & 1) << 1
    };
    (k * PER_DOUBLING + s as usize).min(BUCKETS - 1)
}

/// The upper bound of bucket `i`, in milliseconds: what a percentile falling into it reports.
fn upper_ms(i: usize) -> f64 {
    let (k, s) = (i / PER_DOUBLING, i % PER_DOUBLING);
    let micros = (1u64 << k) as f64 * (1.0 + (s + 1) as f64 / PER_DOUBLING as f64);
    micros / 1000.0
}

/// The `q` quantile (0 < q ≤ 1) of the times counted in `counts`, in milliseconds; `None`
/// when nothing was counted.
fn quantile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the sample wanted, 1-based: the smallest with at least q of the samples at
    // or below it (less a hair, so that 0.99 of 200, which floats as a bit over 198, is 198).
    let rank = ((q * total as f64 - 1e-9).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(upper_ms(i));
        }
    }
    None
}

/// A histogram of handling times, and the counts it had at its last [`read`](Self::read).
#[derive(Debug)]
pub(crate) struct Latency {
    counts: Box<[AtomicU64]>,
    last: Mutex<Vec<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            last: Mutex::new(vec![0; BUCKETS]),
        }
    }
}

/// Percentiles of the times observed between two reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    pub(crate) count: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

impl Latency {
    /// Counts one attempt that took `took`.
    pub(crate) fn observe(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The percentiles of the attempts observed since the previous read.
    pub(crate) fn read(&self) -> Window {
        let mut last = self.last.lock();
        let window: Vec<u64> = self
            .counts
            .iter()
            .zip(last.iter_mut())
            .map(|(now, before)| {
                let now = now.load(Ordering::Relaxed);
                let delta = now.saturating_sub(*before);
                *before = now;
                delta
            })
            .collect();
        Window {
            count: window.iter().sum(),
            p50_ms: quantile(&window, 0.5),
            p99_ms: quantile(&window, 0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_four_per_doubling_and_each_bound_lies_above_what_it_holds() {
        for (micros, want) in [
            (0, 0),
            (1, 0),
            (2, 4),
            (3, 6),
            (4, 8),
            (5, 9),
            (7, 11),
            (8, 12),
            (1_000, 39),
            (u64::MAX, BUCKETS - 1),
        ] {
            assert_eq!(bucket(micros), want, "{micros} µs");
        }
        for micros in (1..100_000).step_by(7) {
            let i = bucket(micros);
            let upper = upper_ms(i) * 1000.0;
            assert!(
                micros as f64 <= upper,
                "{micros} µs above its bucket's bound {upper}"
            );
            assert!(
                upper <= micros as f64 * 2.0,
                "{micros} µs: bound {upper} too far above"
            );
        }
    }

    #[test]
    fn quantiles_pick_the_bucket_holding_their_rank() {
        let at = |micros: u64| {
            let mut c = vec![0; BUCKETS];
            c[bucket(micros)] = 1;
            c
        };
        let mut ninety_nine_fast_one_slow = vec![0; BUCKETS];
        ninety_nine_fast_one_slow[bucket(1_000)] = 99;
        ninety_nine_fast_one_slow[bucket(500_000)] = 1;
        let mut two_hundred = ninety_nine_fast_one_slow.clone();
        two_hundred[bucket(1_000)] += 99;
        two_hundred[bucket(500_000)] += 1;
        for (counts, q, want) in [
            (vec![0; BUCKETS], 0.5, None),
            (at(1_000), 0.5, Some(upper_ms(bucket(1_000)))),
            (at(1_000), 0.99, Some(upper_ms(bucket(1_000)))),
            (
                ninety_nine_fast_one_slow.clone(),
                0.5,
                Some(upper_ms(bucket(1_000))),
            ),
            (
                ninety_nine_fast_one_slow.clone(),
                0.99,
                Some(upper_ms(bucket(1_000))),
            ),
            (
                ninety_nine_fast_one_slow,
                1.0,
                Some(upper_ms(bucket(500_000))),
            ),
            // 2 of 200 are slow: the 99th percentile (rank 198) is still fast.
            (two_hundred.clone(), 0.99, Some(upper_ms(bucket(1_000)))),
            (two_hundred, 0.995, Some(upper_ms(bucket(500_000)))),
        ] {
            assert_eq!(quantile(&counts, q), want, "q {q}");
        }
    }

    #[test]
    fn a_read_covers_the_attempts_since_the_previous_one() {
        let l = Latency::default();
        assert_eq!(l.read().count, 0);
        for _ in 0..100 {
            l.observe(Duration::from_millis(2));
        }
        let first = l.read();
        assert_eq!(first.count, 100);
        let p50 = first.p50_ms.unwrap();
        assert!((2.0..2.5).contains(&p50), "{p50}");
        l.observe(Duration::from_secs(3));
        let second = l.read();
        assert_eq!(second.count, 1);
        let p99 = second.p99_ms.unwrap();
        assert!((3000.0..3750.0).contains(&p99), "{p99}");
        assert_eq!(l.read().count, 0);
    }
}
