//! What a listener shows on its service's status topic beyond its counters: the percentiles of
//! its handling times, its last failures, and the partitions its consumers hold; and the
//! assembly of a [`ListenerStatus`] from them and the counters (the record's format is
//! [`crate::contract::status`]; the app publishes it).

pub(crate) mod latency;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;

use crate::contract::dead_letter::DeadLetterKind;
use crate::contract::status::{ErrorSeen, Handling, ListenerStatus, PartitionStatus, LAST_ERRORS};
use crate::ops::metrics::{ListenerMetrics, UNAVAILABLE};

use latency::Latency;

/// The longest cause an [`ErrorSeen`] keeps, in characters.
const CAUSE_CHARS: usize = 500;

/// A listener's status beyond its counters, written by its consumers and workers.
#[derive(Debug)]
pub(crate) struct Observed {
    group: String,
    latency: Latency,
    errors: Mutex<VecDeque<ErrorSeen>>,
    /// The partitions held, by topic (the listener's own, the retry topic), as the consumer's
    /// last statistics showed them.
    partitions: Mutex<BTreeMap<String, Vec<PartitionStatus>>>,
}

/// What happened to a record after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// It is tried again in place.
    Retrying,
    /// It went to the retry topic.
    RetryTopic,
    /// It went to the DLQ.
    DeadLettered,
}

impl Then {
    fn as_str(self) -> &'static str {
        match self {
            Self::Retrying => "retrying",
            Self::RetryTopic => "retry-topic",
            Self::DeadLettered => "dead-lettered",
        }
    }
}

/// Where a failed record lies: topic, partition, offset.
pub(crate) type At<'a> = (&'a str, i32, i64);

impl Observed {
    /// Nothing observed yet, of a listener consuming in group `group`.
    pub(crate) fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            latency: Latency::default(),
            errors: Mutex::default(),
            partitions: Mutex::default(),
        }
    }

    /// Counts one handler attempt's time.
    pub(crate) fn handled_in(&self, took: Duration) {
        self.latency.observe(took);
    }

    /// Keeps a failure, dropping the oldest beyond [`LAST_ERRORS`].
    pub(crate) fn failed(&self, kind: &str, cause: &str, then: Then, at: At<'_>) {
        let (topic, partition, offset) = at;
        let seen = ErrorSeen {
            at_ms: now_ms(),
            kind: kind.to_owned(),
            then: then.as_str().to_owned(),
            cause: cause.chars().take(CAUSE_CHARS).collect(),
            topic: topic.to_owned(),
            partition,
            offset,
        };
        let mut errors = self.errors.lock();
        errors.push_front(seen);
        errors.truncate(LAST_ERRORS);
    }

    /// The partitions of `topic` the consumer holds now (replacing what it held before).
    pub(crate) fn holds(&self, topic: &str, partitions: Vec<PartitionStatus>) {
        self.partitions.lock().insert(topic.to_owned(), partitions);
    }
}

/// The status of the listener `m` counts for; `sagas_live` when it runs sagas. Reading it
/// starts the next window of handling times.
pub(crate) fn listener_status(m: &ListenerMetrics, sagas_live: Option<i64>) -> ListenerStatus {
    let o = &m.observed;
    let mut failed: BTreeMap<String, u64> = m
        .failed
        .counts()
        .map(|(kind, n): (DeadLetterKind, u64)| (kind.as_str().to_owned(), n))
        .collect();
    failed.insert(UNAVAILABLE.to_owned(), m.unavailable.get());
    failed.retain(|_, n| *n > 0);
    let window = o.latency.read();
    ListenerStatus {
        name: m.listener.to_owned(),
        group: o.group.clone(),
        partitions: o.partitions.lock().values().flatten().cloned().collect(),
        consumed: m.consumed.get(),
        handled: m.handled.get(),
        retried: m.retried.get(),
        dead_lettered: m.dead_lettered.get(),
        deduplicated: m.deduplicated.get(),
        failed,
        in_flight: m.in_flight.get(),
        handling: Handling {
            count: window.count,
            p50_ms: window.p50_ms,
            p99_ms: window.p99_ms,
        },
        sagas_live,
        last_errors: o.errors.lock().iter().cloned().collect(),
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::contract::topic::ServiceId;
    use crate::ops::metrics::Metrics;

    #[test]
    fn a_listeners_status_holds_its_counters_failures_partitions_and_window() {
        let m = Metrics::default();
        let id = ServiceId::new("acme", "shop", "orders").unwrap();
        let l = m.listener(id, "place", "acme.shop.orders-place");
        assert!(Arc::ptr_eq(&l, &m.listener(id, "place", "ignored")));
        l.consumed.inc();
        l.handled.inc();
        l.failed(DeadLetterKind::Handler);
        l.unavailable.inc();
        l.observed.handled_in(Duration::from_millis(4));
        for n in 0..12 {
            let cause = format!("failure {n} {}", "x".repeat(600));
            l.observed
                .failed("handler", &cause, Then::Retrying, ("t", 0, n));
        }
        let part = PartitionStatus {
            topic: "t".into(),
            partition: 2,
            committed: Some(5),
            end: Some(9),
            lag: Some(4),
            lag_seconds: Some(1.5),
            paused: false,
            blocked: None,
            held: None,
        };
        l.observed.holds("t", vec![part.clone()]);
        l.observed.holds("retry", Vec::new());
        let s = listener_status(&l, Some(3));
        assert_eq!(
            (s.name.as_str(), s.group.as_str()),
            ("place", "acme.shop.orders-place")
        );
        assert_eq!((s.consumed, s.handled, s.sagas_live), (1, 1, Some(3)));
        assert_eq!(
            s.failed,
            BTreeMap::from([("handler".to_owned(), 1), ("unavailable".to_owned(), 1)])
        );
        assert_eq!(s.partitions, vec![part]);
        assert_eq!(s.handling.count, 1);
        assert_eq!(s.last_errors.len(), LAST_ERRORS);
        assert_eq!(s.last_errors[0].offset, 11, "newest first");
        assert_eq!(s.last_errors[0].cause.chars().count(), CAUSE_CHARS);
        assert_eq!(s.last_errors[0].then, "retrying");
        assert_eq!(listener_status(&l, None).handling.count, 0, "a new window");
        assert_eq!(m.listeners_of(id).len(), 1);
    }
}
