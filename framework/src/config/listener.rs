//! Per-listener settings: time budget, commits, buffering and the retry policy.
//!
//! [`ListenerConfig`] holds resolved values; [`ListenerSettings`] the same fields as options,
//! for what a listener sets in code (`#[listener(name = "…", max_attempts = 5)]`) and what
//! configuration overrides per listener (`[listeners.charge]` / `ATOLL_LISTENERS__CHARGE__…`).
//! A listener's settings are, from weakest to strongest: `listener.*` defaults, its code, its
//! `listeners.<name>` configuration.
//!
//! # Retries and ordering
//!
//! A transient failure is retried **in place** up to `max_attempts` attempts in all (0: no
//! limit), with exponential backoff from `backoff_ms` to `max_backoff_ms` and ±20% jitter.
//! Meanwhile the partition waits: records behind the failing one are not handled, so per-key
//! (and per-partition) order holds. This is [`RetryMode::Strict`], the default.
//!
//! With [`RetryMode::NonBlocking`], once the in-place attempts are spent the record is
//! re-published to the service's `private.retry` topic with a not-before time and its attempt
//! count, and the partition moves on. The listener's retry consumer (group
//! `<service>-<listener>.retry`) delivers it to the same listener, and only to it, once its time
//! has come, up to `retry_topic_attempts` more times, `retry_topic_delay_ms` apart (doubling).
//! Order is given up: records behind the failing one, including those of the same key, are
//! handled before its retry. Records on the retry topic wait in publish order, so a long delay
//! at its head delays the ones behind it.
//!
//! Either way, when the budget is spent the record is dead-lettered.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a listener retries once its in-place attempts are spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryMode {
    /// In-place retries only: the partition waits, order holds, then the DLQ.
    #[default]
    Strict,
    /// Then the retry topic: the partition moves on, order is given up, then the DLQ.
    NonBlocking,
}

/// In which order a listener handles the records of a partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderingMode {
    /// One record at a time per partition (Kafka's own order).
    #[default]
    Partition,
    /// Records of different keys concurrently, records of one key in order.
    Key,
    /// Any record concurrently: no order at all.
    Unordered,
}

/// What a listener promises about the effects of each record on Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Offsets are committed after the record's outputs were acknowledged: a crash costs a
    /// redelivery, and the outputs of a redelivered record are written again.
    #[default]
    AtLeastOnce,
    /// A record's outputs and its offset commit in one Kafka transaction (EOS v2, KIP-447):
    /// a `read_committed` consumer sees each output once, however often the record is
    /// handled; a process that lost its partitions is fenced. Outputs become visible at the
    /// commit, every `commit_interval_ms` (or `commit_batch` records). Needs a broker with
    /// transactions (Kafka 2.5 or later).
    ExactlyOnce,
}

/// Where a listener's consumer group starts reading a partition it has no committed offset
/// for: a new group, a renamed listener (its group is `<service>-<listener>`), or a group
/// whose offsets the broker dropped after `offsets.retention.minutes` without commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The partition's oldest record: nothing is missed, and what is still retained is
    /// handled (again, for a group whose offsets were dropped; a transactional listener's inbox
    /// skips what it still remembers).
    #[default]
    Earliest,
    /// Records written from then on: nothing is handled again, and what came before is never
    /// handled.
    Latest,
}

impl StartFrom {
    /// librdkafka's `auto.offset.reset`.
    pub(crate) fn offset_reset(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

/// Which consumer group protocol a listener's consumer speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupProtocol {
    /// The original protocol: the members join, one of them assigns the partitions, every
    /// member stops while the group rebalances. Every Kafka broker has it.
    #[default]
    Classic,
    /// KIP-848's protocol: the broker assigns the partitions and hands them over one member
    /// at a time, so the members that keep theirs go on while the group changes. Needs a broker
    /// that has it (Apache Kafka 4.0 and later, or one that says so); librdkafka takes no
    /// `session.timeout.ms`, `heartbeat.interval.ms` or `partition.assignment.strategy` with
    /// it (the broker's group settings decide them), so atoll refuses those in
    /// `kafka.properties` for such a listener.
    Consumer,
}

impl GroupProtocol {
    /// librdkafka's `group.protocol`.
    pub(crate) fn property(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Consumer => "consumer",
        }
    }

    /// The client properties this protocol does not take.
    pub(crate) fn refuses(self) -> &'static [&'static str] {
        match self {
            Self::Classic => &[],
            Self::Consumer => &[
                "session.timeout.ms",
                "heartbeat.interval.ms",
                "partition.assignment.strategy",
                "group.protocol.type",
            ],
        }
    }
}

macro_rules! listener_settings {
    ($($(#[doc = $doc:literal])+ $field:ident: $ty:ty = $default:expr,)+) => {
        /// `listener.*`: the resolved settings of a listener (defaults for every listener in
        /// configuration).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        #[non_exhaustive]
        pub struct ListenerConfig {
            $($(#[doc = $doc])+ pub $field: $ty,)+
        }

        impl Default for ListenerConfig {
            fn default() -> Self {
                Self { $($field: $default,)+ }
            }
        }

        /// Settings a listener overrides, in code or in `listeners.<name>`; unset fields
        /// inherit. Build it with `..Default::default()`: fields will be added.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct ListenerSettings {
            $($(#[doc = $doc])+ pub $field: Option<$ty>,)+
        }

        impl ListenerConfig {
            /// These settings with `over`'s set fields replacing them.
            pub fn merged(&self, over: &ListenerSettings) -> Self {
                Self { $($field: over.$field.clone().unwrap_or_else(|| self.$field.clone()),)+ }
            }
        }
    };
}

listener_settings! {
    /// A handler's time budget in ms; exceeding it is a transient failure.
    handler_timeout_ms: u64 = 30_000,
    /// How often finished offsets are committed, in ms.
    commit_interval_ms: u64 = 500,
    /// Commit sooner, once this many records finished since the last commit.
    commit_batch: u64 = 1_000,
    /// Records buffered per partition before the partition is paused. Pausing discards what
    /// librdkafka prefetched for the partition (fetched again on resume), so it must be rare:
    /// 1,000 cost atoll 90% of its throughput draining a backlog on tansu.
    max_buffered: usize = 10_000,
    /// How long shutdown and revocation wait for in-flight records, in ms; it also bounds the
    /// consumer's close (leaving its group) at shutdown.
    drain_timeout_ms: u64 = 10_000,
    /// Attempts in place, the first included; 0 retries without limit.
    max_attempts: u32 = 3,
    /// The first in-place backoff, in ms; it doubles up to `max_backoff_ms`.
    backoff_ms: u64 = 100,
    /// The longest in-place backoff, in ms.
    max_backoff_ms: u64 = 10_000,
    /// What happens once the in-place attempts are spent.
    retry: RetryMode = RetryMode::Strict,
    /// Deliveries through the retry topic ([`RetryMode::NonBlocking`]).
    retry_topic_attempts: u32 = 3,
    /// The delay before the first delivery through the retry topic, in ms; it doubles.
    retry_topic_delay_ms: u64 = 1_000,
    /// The delays of the deliveries through the retry topic, in ms, one per delivery: each a
    /// retry tier of its own (`<service>.private.retry-<ms>`), from 100 ms to an hour, at most
    /// 8; deliveries past the ladder take its last, delays past `retry_topic_attempts` are not
    /// used. Empty: `retry_topic_delay_ms` doubling, one per `retry_topic_attempts`.
    retry_topic_delays_ms: Vec<u64> = Vec::new(),
    /// Order within a partition: `partition` (sequential), `key` (concurrent across keys,
    /// sequential per key) or `unordered`.
    ordering: OrderingMode = OrderingMode::Partition,
    /// With `key` and `unordered` ordering, the records a listener handles at once across its
    /// partitions (more wait, and their partitions pause once `max_buffered` are waiting); with
    /// `partition` ordering, the handled records per partition still awaiting acknowledgement.
    max_in_flight: usize = 256,
    /// `at_least_once`, or `exactly_once`: outputs and offsets in one Kafka transaction.
    delivery: DeliveryMode = DeliveryMode::AtLeastOnce,
    /// Where a partition without a committed offset starts: `earliest` or `latest`
    /// (librdkafka's `auto.offset.reset`, which `kafka.properties` may not set).
    start_from: StartFrom = StartFrom::Earliest,
    /// With `partition` ordering, up to this many of a partition's records are handled
    /// together: in one database transaction (one `COMMIT`) for a transactional listener, in
    /// one call for a handler that takes a `Batch`; 1 handles each alone.
    batch_size: usize = 100,
    /// How long a batch waits for more records, from its first record's receipt, in ms (at
    /// most a minute); 0 takes only the records already waiting.
    batch_wait_ms: u64 = 0,
    /// A batch's transaction takes no further record once it has been open this long, in ms.
    store_batch_ms: u64 = 100,
    /// The consumer group protocol: `classic`, or `consumer` (KIP-848; librdkafka's
    /// `group.protocol`, which `kafka.properties` may not set).
    group_protocol: GroupProtocol = GroupProtocol::Classic,
}

impl ListenerConfig {
    /// The handler time budget.
    pub fn handler_timeout(&self) -> Duration {
        Duration::from_millis(self.handler_timeout_ms)
    }

    /// The commit interval.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    /// How long a batch waits for more records (`batch_wait_ms`).
    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_wait_ms)
    }

    /// How long a batch's transaction takes further records (`store_batch_ms`).
    pub fn store_batch_time(&self) -> Duration {
        Duration::from_millis(self.store_batch_ms)
    }

    /// The drain deadline.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// The delay before delivery number `n` (from 1) through the retry topic: its tier's.
    pub fn retry_topic_delay(&self, n: u32) -> Duration {
        Duration::from_millis(self.retry_tier(n))
    }

    /// The retry tiers' delays, in ms, one per delivery through the retry topic (at most
    /// `retry_topic_attempts`, and at most `MAX_RETRY_TIERS` (8)): `retry_topic_delays_ms`, or
    /// else `retry_topic_delay_ms` doubling, each kept within a tier's range.
    pub fn retry_ladder(&self) -> Vec<u64> {
        let steps = (self.retry_topic_attempts as usize).clamp(1, MAX_RETRY_TIERS);
        if !self.retry_topic_delays_ms.is_empty() {
            // Delays past the deliveries made would be tiers nobody writes.
            return self
                .retry_topic_delays_ms
                .iter()
                .take(steps)
                .copied()
                .collect();
        }
        let (low, high) = (
            *atoll_naming::RETRY_TIER_MS.start(),
            *atoll_naming::RETRY_TIER_MS.end(),
        );
        (0..steps)
            .map(|i| {
                let ms = self.retry_topic_delay_ms.saturating_mul(1 << i);
                ms.clamp(low, high)
            })
            .collect()
    }

    /// The delay, in ms, of delivery number `n` (from 1) through the retry topic: its rung of
    /// the ladder, or the last rung past it.
    pub fn retry_tier(&self, n: u32) -> u64 {
        let ladder = self.retry_ladder();
        let rung = (n.max(1) as usize).min(ladder.len()) - 1;
        ladder[rung]
    }

    /// `Err` naming the key when a value cannot work; `prefix` is where it was set.
    pub(crate) fn check(&self, prefix: &str) -> Result<(), String> {
        for (key, v) in [
            ("handler_timeout_ms", self.handler_timeout_ms),
            ("commit_interval_ms", self.commit_interval_ms),
            ("commit_batch", self.commit_batch),
            ("max_buffered", self.max_buffered as u64),
            ("max_in_flight", self.max_in_flight as u64),
            ("batch_size", self.batch_size as u64),
            ("store_batch_ms", self.store_batch_ms),
            ("backoff_ms", self.backoff_ms),
        ] {
            if v == 0 {
                return Err(format!("{prefix}.{key} must be greater than 0"));
            }
        }
        if self.max_backoff_ms < self.backoff_ms {
            return Err(format!(
                "{prefix}.max_backoff_ms must be at least {prefix}.backoff_ms"
            ));
        }
        let tiers = &self.retry_topic_delays_ms;
        if let Some(bad) = tiers
            .iter()
            .find(|ms| !atoll_naming::RETRY_TIER_MS.contains(ms))
        {
            return Err(format!(
                "{prefix}.retry_topic_delays_ms: {bad} is out of 100..=3600000 (100 ms to an hour; \
                 longer delays: ctx.schedule)"
            ));
        }
        if tiers.len() > MAX_RETRY_TIERS {
            return Err(format!(
                "{prefix}.retry_topic_delays_ms has {} delays; at most {MAX_RETRY_TIERS} (each is a topic and a consumer)",
                tiers.len()
            ));
        }
        if self.batch_wait_ms > MAX_BATCH_WAIT_MS {
            return Err(format!(
                "{prefix}.batch_wait_ms must be at most {MAX_BATCH_WAIT_MS} (a minute): a batch's first record waits that long"
            ));
        }
        Ok(())
    }
}

/// The most retry tiers a listener's ladder has.
pub(crate) const MAX_RETRY_TIERS: usize = 8;

/// The longest `batch_wait_ms`: a batch's first record waits that long unhandled, and its
/// partition's finished records uncommitted.
const MAX_BATCH_WAIT_MS: u64 = 60_000;

/// Whether the `listeners.<key>` override applies to listener `name` (environment variable
/// names cannot hold `-`, so `place_order` also names `place-order`).
pub(crate) fn names_listener(key: &str, name: &str) -> bool {
    key.replace('_', "-") == name.replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_is_given_or_derived_from_the_first_delay() {
        let config = |delay: u64, attempts: u32, delays: Vec<u64>| ListenerConfig {
            retry_topic_delay_ms: delay,
            retry_topic_attempts: attempts,
            retry_topic_delays_ms: delays,
            ..ListenerConfig::default()
        };
        let cases: [(ListenerConfig, &[u64]); 8] = [
            // Today's delays, from the defaults.
            (ListenerConfig::default(), &[1_000, 2_000, 4_000]),
            (config(3_000, 2, vec![]), &[3_000, 6_000]),
            (config(1_000, 0, vec![]), &[1_000]),
            (
                config(100, 12, vec![]),
                &[100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800],
            ),
            (config(50, 3, vec![]), &[100, 100, 200]),
            (
                config(2_000_000, 3, vec![]),
                &[2_000_000, 3_600_000, 3_600_000],
            ),
            (config(1_000, 3, vec![500, 60_000]), &[500, 60_000]),
            // Delays past the deliveries made are no tiers.
            (config(1_000, 2, vec![500, 2_000, 60_000]), &[500, 2_000]),
        ];
        for (c, ladder) in cases {
            assert_eq!(c.retry_ladder(), ladder, "{c:?}");
        }
        // Past the ladder, its last rung.
        let c = config(1_000, 5, vec![500, 2_000]);
        let tiers: Vec<u64> = (1..=5).map(|n| c.retry_tier(n)).collect();
        assert_eq!(tiers, [500, 2_000, 2_000, 2_000, 2_000]);
        assert_eq!(c.retry_topic_delay(1), Duration::from_millis(500));
    }

    #[test]
    fn a_ladder_out_of_range_or_too_long_is_refused() {
        for (delays, says) in [
            (vec![99], "out of 100..=3600000"),
            (vec![1_000, 3_600_001], "ctx.schedule"),
            ((1..=9).map(|i| i * 1_000).collect(), "at most 8"),
        ] {
            let c = ListenerConfig {
                retry_topic_delays_ms: delays,
                ..ListenerConfig::default()
            };
            let e = c.check("listeners.charge").unwrap_err();
            assert!(
                e.contains("listeners.charge.retry_topic_delays_ms") && e.contains(says),
                "{e}"
            );
        }
        let fine = ListenerConfig {
            retry_topic_delays_ms: vec![100, 3_600_000],
            ..ListenerConfig::default()
        };
        assert_eq!(fine.check("listener"), Ok(()));
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = ListenerConfig::default();
        let over = ListenerSettings {
            max_attempts: Some(7),
            retry: Some(RetryMode::NonBlocking),
            ..Default::default()
        };
        let m = base.merged(&over);
        assert_eq!(m.max_attempts, 7);
        assert_eq!(m.retry, RetryMode::NonBlocking);
        assert_eq!(m.backoff_ms, base.backoff_ms);
        assert_eq!(m.retry_topic_attempts, base.retry_topic_attempts);
    }

    #[test]
    fn retry_topic_delays_double() {
        let c = ListenerConfig::default();
        assert_eq!(c.retry_topic_delay(1), Duration::from_secs(1));
        assert_eq!(c.retry_topic_delay(2), Duration::from_secs(2));
        assert_eq!(c.retry_topic_delay(3), Duration::from_secs(4));
    }

    #[test]
    fn checks_name_the_key() {
        let bad = ListenerConfig {
            backoff_ms: 500,
            max_backoff_ms: 100,
            ..Default::default()
        };
        assert!(bad
            .check("listeners.charge")
            .unwrap_err()
            .contains("listeners.charge.max_backoff_ms"));
        let bad = ListenerConfig {
            commit_batch: 0,
            ..Default::default()
        };
        assert!(bad
            .check("listener")
            .unwrap_err()
            .contains("listener.commit_batch"));
        let bad = ListenerConfig {
            batch_wait_ms: 3_600_000,
            ..Default::default()
        };
        assert!(bad
            .check("listeners.tally")
            .unwrap_err()
            .contains("listeners.tally.batch_wait_ms must be at most 60000"));
    }

    #[test]
    fn env_names_match_dashed_listeners() {
        assert!(names_listener("place_order", "place-order"));
        assert!(names_listener("charge", "charge"));
        assert!(!names_listener("charge", "charges"));
    }
}
