//! Topic names: `<company>.<namespace>.<service>.<kind>` (see
//! `docs/architecture.md#topic-naming`); the segment rules come from `atoll-naming`, which the
//! macros share.
//!
//! A [`ServiceId`] names a service; a [`TopicName`] is a validated topic of one service, with
//! its [`TopicKind`]. Invalid names are `Err` values, never panics.

use std::fmt;
use std::str::FromStr;

pub use atoll_naming::PrivateTopic;
use atoll_naming::{check_segment, SegmentError, MAX_TOPIC_LEN};

/// Why a name is not a valid segment, service id or topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicNameError {
    /// A segment is empty.
    #[error("{what} is empty; use lowercase letters, digits, `_` or `-`")]
    EmptySegment {
        /// Which segment (company, namespace, service, …).
        what: &'static str,
    },
    /// A segment holds a character outside `[a-z0-9_-]`.
    #[error("{what} `{segment}` has the character {ch:?}; use only lowercase letters, digits, `_` or `-`")]
    InvalidChar {
        /// Which segment.
        what: &'static str,
        /// The offending segment.
        segment: String,
        /// The first offending character.
        ch: char,
    },
    /// The whole name is longer than Kafka allows.
    #[error("topic name `{name}` is {len} characters long; Kafka allows at most {MAX_TOPIC_LEN}")]
    TooLong {
        /// The name.
        name: String,
        /// Its length.
        len: usize,
    },
    /// The name does not have the `<company>.<namespace>.<service>.<kind>` shape.
    #[error("topic name `{name}` does not follow `<company>.<namespace>.<service>.<kind>` where kind is events, commands, results or private.<name>")]
    Shape {
        /// The name.
        name: String,
    },
}

/// The full error for a segment that failed [`check_segment`], quoting the segment.
fn segment_error(e: SegmentError, segment: &str) -> TopicNameError {
    match e.offending_char(segment) {
        None => TopicNameError::EmptySegment { what: e.what() },
        Some(ch) => TopicNameError::InvalidChar {
            what: e.what(),
            segment: segment.to_owned(),
            ch,
        },
    }
}

fn segment(what: &'static str, s: &str) -> Result<(), TopicNameError> {
    check_segment(what, s).map_err(|e| segment_error(e, s))
}

/// The identity of a service: company, namespace and name.
///
/// `#[event_service]` builds it at compile time after checking every segment; at run time use
/// [`ServiceId::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId {
    company: &'static str,
    namespace: &'static str,
    name: &'static str,
}

impl ServiceId {
    /// A checked service id.
    ///
    /// ```
    /// let id = atoll::ServiceId::new("acme", "shop", "orders").unwrap();
    /// assert_eq!(id.to_string(), "acme.shop.orders");
    /// assert!(atoll::ServiceId::new("Acme", "shop", "orders").is_err());
    /// ```
    pub fn new(
        company: &'static str,
        namespace: &'static str,
        name: &'static str,
    ) -> Result<Self, TopicNameError> {
        segment("company", company)?;
        segment("namespace", namespace)?;
        segment("service name", name)?;
        Ok(Self {
            company,
            namespace,
            name,
        })
    }

    /// Builds an id the macro has already checked.
    #[doc(hidden)]
    pub const fn new_unchecked(
        company: &'static str,
        namespace: &'static str,
        name: &'static str,
    ) -> Self {
        Self {
            company,
            namespace,
            name,
        }
    }

    /// The company segment.
    pub const fn company(&self) -> &'static str {
        self.company
    }

    /// The namespace segment.
    pub const fn namespace(&self) -> &'static str {
        self.namespace
    }

    /// The service name segment.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The service's fact topic, `<id>.events`.
    pub fn events(&self) -> TopicName {
        TopicName::build(*self, TopicKind::Events)
    }

    /// The service's command topic, `<id>.commands`.
    pub fn commands(&self) -> TopicName {
        TopicName::build(*self, TopicKind::Commands)
    }

    /// The service's pipeline result topic, `<id>.results`.
    pub fn results(&self) -> TopicName {
        TopicName::build(*self, TopicKind::Results)
    }

    /// A private topic of the service, `<id>.private.<name>`.
    pub fn private(&self, name: &str) -> Result<TopicName, TopicNameError> {
        segment("private topic name", name)?;
        let topic = TopicName::build(*self, TopicKind::Private(name.to_owned()));
        topic.check_len()?;
        Ok(topic)
    }

    /// One of the private topics atoll creates, `<id>.private.<name>`.
    pub fn private_topic(&self, which: PrivateTopic) -> TopicName {
        TopicName::build(*self, TopicKind::Private(which.name().to_owned()))
    }

    /// The dead-letter topic, `<id>.private.dlq`.
    pub fn dlq(&self) -> TopicName {
        self.private_topic(PrivateTopic::Dlq)
    }

    /// The reply topic, `<id>.private.reply`: replies to the commands it sends arrive here.
    pub fn reply(&self) -> TopicName {
        self.private_topic(PrivateTopic::Reply)
    }

    /// The saga state topic, `<id>.private.saga` (compacted, keyed by saga).
    pub fn saga(&self) -> TopicName {
        self.private_topic(PrivateTopic::Saga)
    }

    /// The non-blocking retry topic, `<id>.private.retry`.
    pub fn retry(&self) -> TopicName {
        self.private_topic(PrivateTopic::Retry)
    }

    /// The retry tier of `ms` milliseconds, `<id>.private.retry-<ms>`: records waiting that
    /// long for their next delivery (`ms` in [`atoll_naming::RETRY_TIER_MS`]).
    pub fn retry_tier(&self, ms: u64) -> TopicName {
        debug_assert!(atoll_naming::RETRY_TIER_MS.contains(&ms), "{ms} ms");
        TopicName::build(*self, TopicKind::Private(atoll_naming::retry_tier_name(ms)))
    }

    /// The consumer group of one of the service's listeners, `<id>-<listener>`.
    pub fn group_id(&self, listener: &str) -> Result<String, TopicNameError> {
        segment("listener name", listener)?;
        Ok(format!("{self}-{listener}"))
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.company, self.namespace, self.name)
    }
}

/// What a topic holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TopicKind {
    /// Fact events; the owning service is the sole publisher.
    Events,
    /// Commands addressed to the service; it is the sole subscriber.
    Commands,
    /// Pipeline results.
    Results,
    /// A private topic of the service (`dlq`, `retry`, `reply`, `saga`, …).
    Private(String),
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Events => f.write_str("events"),
            Self::Commands => f.write_str("commands"),
            Self::Results => f.write_str("results"),
            Self::Private(name) => write!(f, "private.{name}"),
        }
    }
}

/// A validated topic name of one service.
///
/// ```
/// use atoll::{TopicKind, TopicName};
/// let t: TopicName = "acme.shop.orders.private.dlq".parse().unwrap();
/// assert_eq!(t.kind(), &TopicKind::Private("dlq".into()));
/// assert_eq!(t.service(), ("acme", "shop", "orders"));
/// assert!("acme.shop.orders.inbox".parse::<TopicName>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName {
    name: String,
    kind: TopicKind,
    // Byte ends of company, namespace and service within `name`.
    ends: [usize; 3],
}

impl TopicName {
    fn build(id: ServiceId, kind: TopicKind) -> Self {
        let name = format!("{id}.{kind}");
        let c = id.company.len();
        let n = c + 1 + id.namespace.len();
        let s = n + 1 + id.name.len();
        Self {
            name,
            kind,
            ends: [c, n, s],
        }
    }

    fn check_len(&self) -> Result<(), TopicNameError> {
        if self.name.len() > MAX_TOPIC_LEN {
            return Err(TopicNameError::TooLong {
                name: self.name.clone(),
                len: self.name.len(),
            });
        }
        Ok(())
    }

    /// The full name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// What the topic holds.
    pub fn kind(&self) -> &TopicKind {
        &self.kind
    }

    /// The owning service as `(company, namespace, service)`.
    pub fn service(&self) -> (&str, &str, &str) {
        let [c, n, s] = self.ends;
        (&self.name[..c], &self.name[c + 1..n], &self.name[n + 1..s])
    }

    /// The delay of the retry tier this is (`<service>.private.retry-<ms>`), if it is one.
    pub fn retry_tier_ms(&self) -> Option<u64> {
        match &self.kind {
            TopicKind::Private(name) => atoll_naming::retry_tier_of(name),
            _ => None,
        }
    }

    /// Which of atoll's private topics this is, if it is one.
    pub fn private_kind(&self) -> Option<PrivateTopic> {
        match &self.kind {
            TopicKind::Private(name) => PrivateTopic::from_name(name),
            _ => None,
        }
    }

    /// The owning service's private topic `which`, e.g. the `private.replayed` topic beside a
    /// `private.dlq`; `Err` when that name would be too long for Kafka.
    pub fn private_sibling(&self, which: PrivateTopic) -> Result<TopicName, TopicNameError> {
        let kind = TopicKind::Private(which.name().to_owned());
        let topic = Self {
            name: format!("{}.{kind}", self.service_prefix()),
            kind,
            ends: self.ends,
        };
        topic.check_len()?;
        Ok(topic)
    }

    /// The owning service's prefix, `<company>.<namespace>.<service>`.
    pub fn service_prefix(&self) -> &str {
        &self.name[..self.ends[2]]
    }
}

impl FromStr for TopicName {
    type Err = TopicNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let shape = || TopicNameError::Shape {
            name: name.to_owned(),
        };
        let parts: Vec<&str> = name.split('.').collect();
        let kind = match parts.as_slice() {
            [_, _, _, "events"] => TopicKind::Events,
            [_, _, _, "commands"] => TopicKind::Commands,
            [_, _, _, "results"] => TopicKind::Results,
            [_, _, _, "private", private] => {
                segment("private topic name", private)?;
                TopicKind::Private((*private).to_owned())
            }
            _ => return Err(shape()),
        };
        segment("company", parts[0])?;
        segment("namespace", parts[1])?;
        segment("service name", parts[2])?;
        let c = parts[0].len();
        let n = c + 1 + parts[1].len();
        let s = n + 1 + parts[2].len();
        let topic = Self {
            name: name.to_owned(),
            kind,
            ends: [c, n, s],
        };
        topic.check_len()?;
        Ok(topic)
    }
}

impl serde::Serialize for TopicName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> serde::Deserialize<'de> for TopicName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: ServiceId = ServiceId::new_unchecked("acme", "shop", "orders");

    #[test]
    fn builds_every_kind() {
        assert_eq!(ORDERS.events().as_str(), "acme.shop.orders.events");
        assert_eq!(ORDERS.commands().as_str(), "acme.shop.orders.commands");
        assert_eq!(ORDERS.results().as_str(), "acme.shop.orders.results");
        assert_eq!(ORDERS.dlq().as_str(), "acme.shop.orders.private.dlq");
        let reply = ORDERS.private("reply").unwrap();
        assert_eq!(reply.kind(), &TopicKind::Private("reply".into()));
        assert_eq!(reply.service(), ("acme", "shop", "orders"));
        assert_eq!(reply.service_prefix(), "acme.shop.orders");
        assert_eq!(reply.private_kind(), Some(PrivateTopic::Reply));
        assert_eq!(ORDERS.events().private_kind(), None);
        assert_eq!(ORDERS.private("inbox").unwrap().private_kind(), None);
    }

    #[test]
    fn a_private_sibling_belongs_to_the_same_service() {
        let dlq: TopicName = "acme.shop.orders.private.dlq".parse().unwrap();
        let replayed = dlq.private_sibling(PrivateTopic::Replayed).unwrap();
        assert_eq!(replayed.as_str(), "acme.shop.orders.private.replayed");
        assert_eq!(replayed.service(), ("acme", "shop", "orders"));
        assert_eq!(replayed, replayed.as_str().parse().unwrap());
        // A service id that fits `private.dlq` but not `private.replayed`.
        let long = "a".repeat(MAX_TOPIC_LEN - "x.y..private.dlq".len());
        let dlq: TopicName = format!("x.y.{long}.private.dlq").parse().unwrap();
        assert!(matches!(
            dlq.private_sibling(PrivateTopic::Replayed),
            Err(TopicNameError::TooLong { .. })
        ));
    }

    #[test]
    fn a_retry_tier_is_a_private_topic_named_by_its_delay() {
        let tier = ORDERS.retry_tier(10_000);
        assert_eq!(tier.as_str(), "acme.shop.orders.private.retry-10000");
        assert_eq!(tier.retry_tier_ms(), Some(10_000));
        assert_eq!(tier.as_str().parse::<TopicName>().unwrap(), tier);
        assert_eq!(
            tier.private_kind(),
            None,
            "not one of the fixed private topics"
        );
        assert_eq!(ORDERS.retry().retry_tier_ms(), None);
        assert_eq!(ORDERS.events().retry_tier_ms(), None);
    }

    #[test]
    fn parse_round_trips() {
        for t in [
            ORDERS.events(),
            ORDERS.commands(),
            ORDERS.results(),
            ORDERS.dlq(),
        ] {
            assert_eq!(t.as_str().parse::<TopicName>().unwrap(), t);
        }
    }

    #[test]
    fn rejects_bad_segments() {
        let err = ServiceId::new("acme", "Shop", "orders").unwrap_err();
        assert_eq!(
            err,
            TopicNameError::InvalidChar {
                what: "namespace",
                segment: "Shop".into(),
                ch: 'S'
            }
        );
        assert!(err.to_string().contains("lowercase"));
        assert_eq!(
            ServiceId::new("", "shop", "orders").unwrap_err(),
            TopicNameError::EmptySegment { what: "company" }
        );
        assert!(ORDERS.private("Reply").is_err());
        assert!(ORDERS.private("a.b").is_err());
        assert!(ORDERS.group_id("place order").is_err());
        assert_eq!(
            ORDERS.group_id("place-order").unwrap(),
            "acme.shop.orders-place-order"
        );
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in [
            "",
            "acme.shop.orders",
            "acme.shop.orders.inbox",
            "acme.shop.orders.private",
            "acme.shop.orders.private.dlq.x",
            "acme..orders.events",
            "acme.shop.Orders.events",
            "acme.shop.orders.events.",
        ] {
            assert!(
                bad.parse::<TopicName>().is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn rejects_overlong_names() {
        let long = "x".repeat(240);
        let err = ORDERS.private(&long).unwrap_err();
        assert!(matches!(err, TopicNameError::TooLong { .. }), "{err}");
        let name = format!("acme.shop.orders.private.{long}");
        assert!(matches!(
            name.parse::<TopicName>(),
            Err(TopicNameError::TooLong { .. })
        ));
    }
}
