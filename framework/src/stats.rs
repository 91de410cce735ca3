//! Per-listener counters, read with [`Running::stats`](crate::Running::stats).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::topic::ServiceId;

/// What one listener did since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// The service.
    pub service: ServiceId,
    /// The listener.
    pub listener: &'static str,
    /// Records whose handler succeeded.
    pub handled: u64,
    /// Retries: in-place attempts after the first, and records sent to the retry topic.
    pub retries: u64,
    /// Records written to the DLQ.
    pub dead_lettered: u64,
}

/// The live counters behind [`ListenerStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) handled: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, service: ServiceId, listener: &'static str) -> ListenerStats {
        ListenerStats {
            service,
            listener,
            handled: self.handled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}
