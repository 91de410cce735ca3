//! The status record: what one process of a service is doing, as it publishes it every
//! `status.interval_ms` on the service's compacted `<service>.private.status` topic, keyed by
//! its process name. The operator console (`atoll console`) reads these records; so can any
//! tool: the record is JSON, and this module is its schema.
//!
//! A record holds counters since the process started, not rates: a reader derives rates and
//! trends from two records of one process (their `at_ms` apart). Handling times are the
//! percentiles of the attempts since the previous record. A process that stops gracefully
//! publishes a tombstone (a record without a value) under its key, so that the topic keeps one
//! record per running process.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version of the record's format: a reader skips a record whose `format` it does not know.
pub const STATUS_FORMAT: u32 = 1;

/// One process's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProcessStatus {
    /// [`STATUS_FORMAT`] when written.
    pub format: u32,
    /// The service, `<company>.<namespace>.<service>`.
    pub service: String,
    /// The process name (the record's key): `service.process_name`, or `<host>-<pid>`.
    pub process: String,
    /// The version of atoll the process runs.
    pub atoll_version: String,
    /// The application's build, `service.build` (e.g. its version or commit), when set.
    pub build: Option<String>,
    /// When the process started, in Unix milliseconds.
    pub started_ms: i64,
    /// When this record was taken, in Unix milliseconds.
    pub at_ms: i64,
    /// How often the process publishes: a reader may call a process stale when its last record
    /// is a few intervals old.
    pub interval_ms: u64,
    /// The service's listeners in this process.
    pub listeners: Vec<ListenerStatus>,
    /// The outbox of the process's store, when it has one (the store is shared by the services
    /// of a process; every service's record shows it).
    pub outbox: Option<OutboxStatus>,
    /// The inbox of the process's store, when it has one.
    pub inbox: Option<InboxStatus>,
    /// Records the process's producer transmitted to each topic since it started (librdkafka's
    /// statistics, every `statistics.interval.ms`; a batch sent again after a failure counts
    /// again): facts, results, commands, replies, relayed outbox rows, dead letters. The
    /// producer is shared by the services of a process: every service's record shows all of
    /// it. Exactly-once listeners' outputs (sent by their own transactional producers) are not
    /// counted.
    #[serde(default)]
    pub produced: BTreeMap<String, u64>,
}

/// One listener of the process (its consumers of the listener's topic and of the retry topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ListenerStatus {
    /// The listener's name.
    pub name: String,
    /// Its consumer group, `<service>-<listener>`.
    pub group: String,
    /// The partitions the process holds now, of the listener's topic and of the retry topic.
    pub partitions: Vec<PartitionStatus>,
    /// Records received from the broker since the process started.
    pub consumed: u64,
    /// Records whose handler succeeded.
    pub handled: u64,
    /// Retries: in place and through the retry topic.
    pub retried: u64,
    /// Records written to the DLQ.
    pub dead_lettered: u64,
    /// Records a transactional listener skipped because its inbox showed them handled.
    pub deduplicated: u64,
    /// Failed attempts by kind (`decode`, `unknown_type`, `handler`, `panic`, `timeout`,
    /// `unavailable`); kinds that never failed are left out.
    pub failed: BTreeMap<String, u64>,
    /// Records taken up and not yet finished, now.
    pub in_flight: i64,
    /// Handling times of the attempts since the previous record.
    pub handling: Handling,
    /// The live sagas of a saga listener, running or compensating.
    pub sagas_live: Option<i64>,
    /// The last failures, newest first (at most [`LAST_ERRORS`]).
    pub last_errors: Vec<ErrorSeen>,
}

/// How many failures a [`ListenerStatus`] keeps.
pub const LAST_ERRORS: usize = 10;

/// One partition a listener's consumer holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PartitionStatus {
    /// The topic: the listener's, or the service's retry topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset, when it committed one.
    pub committed: Option<i64>,
    /// The partition's end (high watermark), when known.
    pub end: Option<i64>,
    /// Records behind the end, when known.
    pub lag: Option<i64>,
    /// How far behind in time: the age of the last record received, when it lags.
    pub lag_seconds: Option<f64>,
    /// Fetching is paused: its worker holds as many records as it may buffer.
    pub paused: bool,
    /// Stopped behind a write that keeps failing: why.
    pub blocked: Option<String>,
    /// Paused by an operator's hold (see [`crate::contract::control`]): who, why and when.
    #[serde(default)]
    pub held: Option<crate::contract::control::Hold>,
}

/// Percentiles of handling times, in milliseconds, over the attempts since the previous record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Handling {
    /// Attempts in the window.
    pub count: u64,
    /// The median, when any attempt ended.
    pub p50_ms: Option<f64>,
    /// The 99th percentile, when any attempt ended.
    pub p99_ms: Option<f64>,
}

/// A failed attempt, as the listener saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorSeen {
    /// When, in Unix milliseconds.
    pub at_ms: i64,
    /// The failure's kind (`handler`, `decode`, …).
    pub kind: String,
    /// What happened to the record: `retrying`, `retry-topic` or `dead-lettered`.
    pub then: String,
    /// The error, as the handler or the decoder said it (cut at 500 characters).
    pub cause: String,
    /// The record's topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// The outbox: rows written with their transactions and not yet published.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutboxStatus {
    /// Rows waiting.
    pub rows: i64,
    /// The age of the oldest, in seconds.
    pub oldest_seconds: Option<f64>,
    /// Rows the relay published since the process started.
    pub relayed: u64,
    /// Failed tries at publishing a row.
    pub failed: u64,
    /// Rows that could never be published, dead-lettered.
    pub dead_lettered: u64,
}

/// The inbox: which records transactional listeners handled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InboxStatus {
    /// Rows (PostgreSQL: the planner's estimate, which costs nothing to read).
    pub rows: i64,
}

impl ProcessStatus {
    /// Reads a record's value; `None` for a record of another format, which a reader skips.
    ///
    /// # Errors
    /// The value is not a status record.
    pub fn from_json(value: &[u8]) -> Result<Option<Self>, serde_json::Error> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        if serde_json::from_slice::<Format>(value)?.format != STATUS_FORMAT {
            return Ok(None);
        }
        serde_json::from_slice(value).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_another_format_is_skipped_and_a_broken_one_is_an_error() {
        assert_eq!(
            ProcessStatus::from_json(br#"{"format": 2, "anything": true}"#).unwrap(),
            None
        );
        assert!(ProcessStatus::from_json(b"{").is_err());
        assert!(ProcessStatus::from_json(br#"{"format": 1}"#).is_err());
        let record = ProcessStatus {
            format: STATUS_FORMAT,
            service: "acme.shop.orders".into(),
            process: "host-1".into(),
            atoll_version: "0.1.0".into(),
            build: None,
            started_ms: 1,
            at_ms: 2,
            interval_ms: 5000,
            listeners: Vec::new(),
            outbox: None,
            inbox: Some(InboxStatus { rows: 3 }),
            produced: [("acme.shop.orders.events".to_owned(), 7)].into(),
        };
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(ProcessStatus::from_json(&json).unwrap(), Some(record));
    }
}
