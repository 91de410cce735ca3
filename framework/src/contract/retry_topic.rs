//! The non-blocking retry topics (see [`crate::config::listener`]): the tiers
//! `<service>.private.retry-<ms>`, one per delay of a listener's ladder, and the legacy
//! `<service>.private.retry`, which versions before the tiers wrote and which is still read.
//!
//! A record on it is the original record (key, value, headers) plus `atoll_retry_*` headers
//! that say which listener it is for, when it may be delivered, how many attempts were made,
//! and where it came from, so that a later dead-lettering names the original record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::contract::envelope::{record_header, RecordView};
use crate::contract::topic::{PrivateTopic, ServiceId, TopicName};

/// `atoll_retry_listener`: the only listener the record is for.
pub const LISTENER: &str = "atoll_retry_listener";
/// `atoll_retry_attempts`: attempts made so far, in place and through the topic.
pub const ATTEMPTS: &str = "atoll_retry_attempts";
/// `atoll_retry_delivery`: which delivery through the retry topic this is, from 1.
pub const DELIVERY: &str = "atoll_retry_delivery";
/// `atoll_retry_not_before`: milliseconds since the Unix epoch.
pub const NOT_BEFORE: &str = "atoll_retry_not_before";
/// `atoll_retry_original_topic`.
pub const ORIGINAL_TOPIC: &str = "atoll_retry_original_topic";
/// `atoll_retry_original_partition`.
pub const ORIGINAL_PARTITION: &str = "atoll_retry_original_partition";
/// `atoll_retry_original_offset`.
pub const ORIGINAL_OFFSET: &str = "atoll_retry_original_offset";
/// `atoll_retry_error`: the last failure.
pub const ERROR: &str = "atoll_retry_error";

const PREFIX: &str = "atoll_retry_";

/// Which retry topic a consumer reads: the legacy `private.retry` (deliveries of any delay,
/// written by versions before the tiers) or the tier `private.retry-<ms>`, whose records all
/// wait `ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Tier {
    Legacy,
    Ms(u64),
}

impl Tier {
    /// The tier's topic of service `id`.
    pub(crate) fn topic(self, id: ServiceId) -> TopicName {
        match self {
            Self::Legacy => id.retry(),
            Self::Ms(ms) => id.retry_tier(ms),
        }
    }

    /// Its name after `private.`: `retry`, or `retry-<ms>`.
    pub(crate) fn name(self) -> String {
        match self {
            Self::Legacy => PrivateTopic::Retry.name().to_owned(),
            Self::Ms(ms) => atoll_naming::retry_tier_name(ms),
        }
    }

    /// The group that listener group `listener` reads the tier in: `<listener>.retry`, or
    /// `<listener>.retry-<ms>`.
    pub(crate) fn group(self, listener: &str) -> String {
        format!("{listener}.{}", self.name())
    }

    /// How long a partition stays paused after its head was handed on, so that the records
    /// written just after it are due by the next fetch (a tenth of the delay, at most a
    /// second; 100 ms on the legacy topic).
    pub(crate) fn slack(self) -> Duration {
        match self {
            Self::Legacy => Duration::from_millis(100),
            Self::Ms(ms) => Duration::from_millis((ms / 10).min(1_000)),
        }
    }

    /// When a record whose state says `not_before` is due, read at `now`: on a tier, no later
    /// than one delay from now, so that a writer whose clock runs ahead holds a partition up
    /// for one delay at most; on the legacy topic, no later than the longest tier's delay
    /// (an hour) from now.
    pub(crate) fn due(self, not_before: SystemTime, now: SystemTime) -> SystemTime {
        let bound = match self {
            Self::Legacy => *atoll_naming::RETRY_TIER_MS.end(),
            Self::Ms(ms) => ms,
        };
        not_before.min(now + Duration::from_millis(bound))
    }
}

/// Where a record originally came from, and the retry state it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetryState {
    pub(crate) listener: String,
    pub(crate) attempts: u32,
    pub(crate) delivery: u32,
    pub(crate) not_before: SystemTime,
    pub(crate) origin: Origin,
}

/// The original topic, partition and offset of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

impl Origin {
    /// The record's origin: its `atoll_retry_original_*` headers, or the record itself.
    pub(crate) fn of<M: RecordView>(msg: &M) -> Self {
        RetryState::read(msg)
            .map(|s| s.origin)
            .unwrap_or_else(|| Self {
                topic: msg.topic().to_owned(),
                partition: msg.partition(),
                offset: msg.offset(),
            })
    }
}

impl RetryState {
    /// The retry state of a record from the retry topic; `None` when it has none or it is
    /// malformed.
    pub(crate) fn read<M: RecordView>(msg: &M) -> Option<Self> {
        let millis: u64 = record_header(msg, NOT_BEFORE)?.parse().ok()?;
        Some(Self {
            listener: record_header(msg, LISTENER)?.to_owned(),
            attempts: record_header(msg, ATTEMPTS)?.parse().ok()?,
            // Deliveries through the retry topic count from 1; 0 would read as the listener's own.
            delivery: record_header(msg, DELIVERY)?
                .parse()
                .ok()
                .filter(|d| *d > 0)?,
            not_before: UNIX_EPOCH + Duration::from_millis(millis),
            origin: Origin {
                topic: record_header(msg, ORIGINAL_TOPIC)?.to_owned(),
                partition: record_header(msg, ORIGINAL_PARTITION)?.parse().ok()?,
                offset: record_header(msg, ORIGINAL_OFFSET)?.parse().ok()?,
            },
        })
    }

    /// The headers of the retry record: the original headers, then the retry state.
    pub(crate) fn headers<M: RecordView>(&self, msg: &M, error: &str) -> OwnedHeaders {
        let millis = self
            .not_before
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let fields: [(&str, String); 8] = [
            (LISTENER, self.listener.clone()),
            (ATTEMPTS, self.attempts.to_string()),
            (DELIVERY, self.delivery.to_string()),
            (NOT_BEFORE, millis.to_string()),
            (ORIGINAL_TOPIC, self.origin.topic.clone()),
            (ORIGINAL_PARTITION, self.origin.partition.to_string()),
            (ORIGINAL_OFFSET, self.origin.offset.to_string()),
            (ERROR, error.to_owned()),
        ];
        let mut out = original_headers(msg, fields.len());
        for (key, value) in &fields {
            out = out.insert(Header {
                key,
                value: Some(value.as_str()),
            });
        }
        out
    }
}

/// The record's headers without any `atoll_retry_*` ones, with room for `extra` more.
pub(crate) fn original_headers<M: RecordView>(msg: &M, extra: usize) -> OwnedHeaders {
    let original = msg.headers();
    let mut out = OwnedHeaders::new_with_capacity(original.map_or(0, |h| h.count()) + extra);
    if let Some(h) = original {
        for header in h.iter().filter(|h| !h.key.starts_with(PREFIX)) {
            out = out.insert(header);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;

    fn record(topic: &str, headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"k".to_vec()),
            topic.into(),
            Timestamp::NotAvailable,
            2,
            40,
            Some(headers),
        )
    }

    #[test]
    fn round_trips_and_keeps_the_original_headers() {
        let original = record(
            "acme.shop.payments.events",
            OwnedHeaders::new().insert(Header {
                key: "ce_type",
                value: Some("a.b.c.d.v1"),
            }),
        );
        assert_eq!(RetryState::read(&original), None);
        let origin = Origin::of(&original);
        assert_eq!(
            origin,
            Origin {
                topic: "acme.shop.payments.events".into(),
                partition: 2,
                offset: 40
            }
        );
        let not_before = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let state = RetryState {
            listener: "charge".into(),
            attempts: 3,
            delivery: 1,
            not_before,
            origin,
        };
        let h = state.headers(&original, "timeout");
        // As it comes back from the retry topic, at another partition and offset.
        let retried = record("acme.shop.payments.private.retry", h);
        assert_eq!(RetryState::read(&retried), Some(state.clone()));
        assert_eq!(Origin::of(&retried), state.origin);
        assert_eq!(record_header(&retried, ERROR), Some("timeout"));
        assert_eq!(record_header(&retried, "ce_type"), Some("a.b.c.d.v1"));
        // Re-publishing again replaces the retry headers instead of piling them up.
        let again = RetryState {
            attempts: 4,
            delivery: 2,
            ..state
        };
        let h = again.headers(&retried, "still failing");
        assert_eq!(h.iter().filter(|x| x.key == ATTEMPTS).count(), 1);
        let stripped = original_headers(&record("t", h), 0);
        assert_eq!(stripped.count(), 1, "only ce_type is original");
    }

    #[test]
    fn a_tier_names_its_topic_and_group_and_bounds_a_record_s_wait() {
        let id = ServiceId::new_unchecked("acme", "shop", "payments");
        assert_eq!(
            Tier::Legacy.topic(id).as_str(),
            "acme.shop.payments.private.retry"
        );
        assert_eq!(
            Tier::Ms(500).topic(id).as_str(),
            "acme.shop.payments.private.retry-500"
        );
        assert_eq!(Tier::Legacy.group("g"), "g.retry");
        assert_eq!(Tier::Ms(500).group("g"), "g.retry-500");
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let hour = now + Duration::from_secs(3_600);
        // (tier, not_before, now) → due, slack
        let cases = [
            (Tier::Legacy, hour, hour, 100),
            (Tier::Legacy, hour + Duration::from_secs(1), hour, 100),
            (Tier::Ms(500), now, now, 50),
            (Tier::Ms(500), hour, now + Duration::from_millis(500), 50),
            (
                Tier::Ms(60_000),
                now + Duration::from_secs(1),
                now + Duration::from_secs(1),
                1_000,
            ),
        ];
        for (tier, not_before, want, slack) in cases {
            assert_eq!(tier.due(not_before, now), want, "{tier:?}");
            assert_eq!(tier.slack(), Duration::from_millis(slack), "{tier:?}");
        }
    }

    #[test]
    fn malformed_state_reads_as_none() {
        let h = OwnedHeaders::new()
            .insert(Header {
                key: LISTENER,
                value: Some("charge"),
            })
            .insert(Header {
                key: ATTEMPTS,
                value: Some("many"),
            });
        assert_eq!(RetryState::read(&record("t", h)), None);
    }

    #[test]
    fn a_delivery_of_zero_is_malformed() {
        let state = RetryState {
            listener: "charge".into(),
            attempts: 3,
            delivery: 1,
            not_before: UNIX_EPOCH,
            origin: Origin {
                topic: "t".into(),
                partition: 0,
                offset: 0,
            },
        };
        let plain = record("t", OwnedHeaders::new());
        assert!(RetryState::read(&record("r", state.headers(&plain, "e"))).is_some());
        let zero = RetryState {
            delivery: 0,
            ..state
        };
        assert_eq!(
            RetryState::read(&record("r", zero.headers(&plain, "e"))),
            None
        );
    }
}
