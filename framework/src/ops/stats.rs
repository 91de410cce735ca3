//! Per-listener counters, read with [`Running::stats`](crate::Running::stats).

use crate::contract::topic::ServiceId;

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
    /// Times a retry topic's partition was paused until its head record was due: records
    /// waited for their delay without holding a handler.
    pub retry_pauses: u64,
    /// Records written to the DLQ.
    pub dead_lettered: u64,
}
