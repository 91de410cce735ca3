//! The naming rules of atoll's topics, shared by the runtime (`atoll`) and the compile-time
//! checks of its macros (`atoll-macros`), so the two can never disagree.
//!
//! A topic is `<company>.<namespace>.<service>.<kind>`; every segment is non-empty and made of
//! `[a-z0-9_-]`; the whole name fits Kafka's [`MAX_TOPIC_LEN`]. The private topics atoll
//! creates for a service are the [`PrivateTopic`]s.

/// Kafka's limit on the length of a topic name.
pub const MAX_TOPIC_LEN: usize = 249;

/// Checks one segment: non-empty, only `[a-z0-9_-]`. `what` names the segment in the error
/// ("company", "listener name", …).
pub const fn check_segment(what: &'static str, segment: &str) -> Result<(), SegmentError> {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return Err(SegmentError { what, at: None });
    }
    let mut i = 0;
    while i < bytes.len() {
        if !is_segment_byte(bytes[i]) {
            return Err(SegmentError { what, at: Some(i) });
        }
        i += 1;
    }
    Ok(())
}

const fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

/// A segment that failed [`check_segment`]: which one, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentError {
    what: &'static str,
    at: Option<usize>,
}

impl SegmentError {
    /// Which segment failed ("company", "listener name", …).
    pub const fn what(&self) -> &'static str {
        self.what
    }

    /// The byte offset of the first character outside `[a-z0-9_-]`; `None` when the segment
    /// is empty.
    pub const fn at(&self) -> Option<usize> {
        self.at
    }

    /// The first offending character of `segment`, when it is not empty.
    pub fn offending_char(&self, segment: &str) -> Option<char> {
        self.at
            .and_then(|i| segment.get(i..))
            .and_then(|s| s.chars().next())
    }

    /// A valid segment close to `segment`: lowercased, other characters replaced by `_`.
    pub fn suggestion(segment: &str) -> String {
        segment
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii() && is_segment_byte(c as u8) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// Checks the name of a view's table (`#[listener(view = "…")]`): the operator tool names it
/// in SQL to empty it, so only a plain identifier is accepted — ASCII letters, digits and
/// `_`, not starting with a digit. `Err` says why not.
pub fn check_table(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a plain table name: use ASCII letters, digits and `_`, not starting with a digit"
        ))
    }
}

/// The private topics atoll creates and reads for a service, `<service>.private.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrivateTopic {
    /// `private.dlq`: dead letters, with the `atoll_dlq_*` headers.
    Dlq,
    /// `private.retry`: records waiting for their next delivery (non-blocking retry).
    Retry,
    /// `private.reply`: replies to the commands the service sent, and its sagas' inputs.
    Reply,
    /// `private.saga`: the service's saga states (compacted, keyed by saga).
    Saga,
    /// `private.replayed`: which dead letters were replayed (compacted, written by the
    /// operator tool).
    Replayed,
    /// `private.status`: what each process of the service is doing, published every few
    /// seconds (compacted, keyed by process; read by the operator console).
    Status,
    /// `private.control`: the operator's holds on the service's partitions, written by the
    /// operator console and read by every process of the service (compacted, keyed by
    /// `<listener>/<partition>`).
    Control,
}

impl PrivateTopic {
    /// Every private topic atoll knows.
    pub const ALL: [Self; 7] = [
        Self::Dlq,
        Self::Retry,
        Self::Reply,
        Self::Saga,
        Self::Replayed,
        Self::Status,
        Self::Control,
    ];

    /// The name after `private.`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Dlq => "dlq",
            Self::Retry => "retry",
            Self::Reply => "reply",
            Self::Saga => "saga",
            Self::Replayed => "replayed",
            Self::Status => "status",
            Self::Control => "control",
        }
    }

    /// The private topic named `name` (after `private.`), if atoll knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the topic is compacted (keeps the last record per key).
    pub const fn compacted(self) -> bool {
        matches!(
            self,
            Self::Saga | Self::Replayed | Self::Status | Self::Control
        )
    }

    /// The topic configuration atoll creates it with: `cleanup.policy=compact` for a compacted
    /// one; the status topic also rolls a segment every hour (compaction never touches the
    /// segment being written, so a process's many status records shrink to one an hour later)
    /// and drops a record after a day (a process that died without its tombstone leaves no
    /// record behind for longer than that).
    pub const fn config(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Status => &[
                ("cleanup.policy", "compact,delete"),
                ("segment.ms", "3600000"),
                ("retention.ms", "86400000"),
                ("delete.retention.ms", "3600000"),
            ],
            Self::Saga | Self::Replayed | Self::Control => &[("cleanup.policy", "compact")],
            Self::Dlq | Self::Retry | Self::Reply => &[],
        }
    }

    /// The length of the longest `.private.<name>` suffix atoll appends to a service id,
    /// a retry tier's included (`.private.retry-3600000`): a service id longer than
    /// [`MAX_TOPIC_LEN`] minus this cannot own all its topics.
    pub const fn longest_suffix() -> usize {
        let mut longest = ".private.".len() + RETRY_TIER_LONGEST;
        let mut i = 0;
        while i < Self::ALL.len() {
            let len = ".private.".len() + Self::ALL[i].name().len();
            if len > longest {
                longest = len;
            }
            i += 1;
        }
        longest
    }
}

/// The delays a retry tier may have, in milliseconds: from 100 ms to an hour. Longer delays
/// are scheduled commands' (`ctx.schedule`).
pub const RETRY_TIER_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

/// The length of the longest retry tier's name, `retry-3600000`.
const RETRY_TIER_LONGEST: usize = "retry-3600000".len();

/// The name after `private.` of the retry tier of `ms` milliseconds: `retry-<ms>`.
pub fn retry_tier_name(ms: u64) -> String {
    format!("retry-{ms}")
}

/// The delay of the retry tier named `name` (after `private.`): `Some(ms)` for `retry-<ms>`
/// with `ms` in [`RETRY_TIER_MS`], written without leading zeros (one topic per delay).
pub fn retry_tier_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("retry-")?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: u64 = digits.parse().ok()?;
    RETRY_TIER_MS.contains(&ms).then_some(ms)
}

/// Whether `topic` is a service's retry topic: its `private.retry`, or one of its retry tiers.
pub fn is_retry_topic(topic: &str) -> bool {
    topic
        .rsplit_once(".private.")
        .is_some_and(|(_, kind)| kind == "retry" || retry_tier_of(kind).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_topics_are_the_legacy_one_and_the_tiers() {
        for (topic, want) in [
            ("acme.shop.orders.private.retry", true),
            ("acme.shop.orders.private.retry-500", true),
            ("acme.shop.orders.private.retry-50", false),
            ("acme.shop.orders.private.dlq", false),
            ("acme.shop.orders.events", false),
        ] {
            assert_eq!(is_retry_topic(topic), want, "{topic}");
        }
    }

    #[test]
    fn retry_tiers_are_named_by_their_delay() {
        for (name, ms) in [
            ("retry-100", Some(100)),
            ("retry-1000", Some(1_000)),
            ("retry-3600000", Some(3_600_000)),
            // Out of range, not one name per delay, or not a tier.
            ("retry-99", None),
            ("retry-3600001", None),
            ("retry-0100", None),
            ("retry-", None),
            ("retry-1e3", None),
            ("retry", None),
            ("dlq", None),
        ] {
            assert_eq!(retry_tier_of(name), ms, "{name}");
            if let Some(ms) = ms {
                assert_eq!(retry_tier_name(ms), name);
            }
        }
        assert_eq!(
            PrivateTopic::longest_suffix(),
            ".private.retry-3600000".len()
        );
        // Every tier's name is a valid segment.
        assert!(check_segment("private topic name", &retry_tier_name(3_600_000)).is_ok());
    }

    #[test]
    fn segments() {
        assert_eq!(check_segment("company", "acme-1_x"), Ok(()));
        let e = check_segment("company", "").unwrap_err();
        assert_eq!((e.what(), e.at()), ("company", None));
        let e = check_segment("namespace", "My Shop").unwrap_err();
        assert_eq!(e.at(), Some(0));
        assert_eq!(e.offending_char("My Shop"), Some('M'));
        assert_eq!(SegmentError::suggestion("My Shop"), "my_shop");
    }

    #[test]
    fn private_topics_round_trip() {
        for p in PrivateTopic::ALL {
            assert_eq!(PrivateTopic::from_name(p.name()), Some(p));
        }
        assert_eq!(PrivateTopic::from_name("inbox"), None);
        // A retry tier is no fixed private topic (its suffix is the longest: see
        // `retry_tiers_are_named_by_their_delay`).
        assert_eq!(PrivateTopic::from_name("retry-1000"), None);
        assert!(PrivateTopic::Saga.compacted() && !PrivateTopic::Dlq.compacted());
        for p in PrivateTopic::ALL {
            let compact = p.config().iter().any(|(k, v)| {
                *k == "cleanup.policy" && v.split(',').any(|policy| policy == "compact")
            });
            assert_eq!(compact, p.compacted(), "{p:?}");
        }
    }
}
