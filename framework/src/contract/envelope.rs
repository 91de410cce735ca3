//! The CloudEvents 1.0 Kafka binding, binary content mode: the header names, what an outgoing
//! record carries ([`Outgoing`]) and what is read from a consumed one ([`Incoming`]). See
//! `docs/architecture.md#events-and-the-envelope`.
//!
//! Every record atoll produces carries these headers; every record it consumes is read
//! through [`Incoming`].

use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::Message;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::codec::JSON;

/// `ce_specversion`.
pub const SPECVERSION: &str = "ce_specversion";
/// `ce_id`.
pub const ID: &str = "ce_id";
/// `ce_type`.
pub const TYPE: &str = "ce_type";
/// `ce_source`.
pub const SOURCE: &str = "ce_source";
/// `ce_time`.
pub const TIME: &str = "ce_time";
/// `content-type`.
pub const CONTENT_TYPE: &str = "content-type";
/// `ce_correlationid`.
pub const CORRELATION_ID: &str = "ce_correlationid";
/// `ce_causationid`.
pub const CAUSATION_ID: &str = "ce_causationid";
/// `ce_replyto`.
pub const REPLY_TO: &str = "ce_replyto";
/// `traceparent`: W3C trace context, when tracing is on.
pub const TRACEPARENT: &str = "traceparent";
/// `tracestate`: W3C trace context vendor data, with `traceparent`, when there is any.
pub const TRACESTATE: &str = "tracestate";
/// `atoll_replayed_from`: `<dlq-topic>/<partition>/<offset>` of a replayed dead letter.
pub const REPLAYED_FROM: &str = "atoll_replayed_from";
/// `atoll_replay_group`: the only consumer group that handles a replayed dead letter (the one
/// whose listener dead-lettered it); every other group skips it.
pub const REPLAY_GROUP: &str = "atoll_replay_group";
/// `atoll_reply_partition`: on a command that expects a reply, the partition of the reply topic
/// the reply must go to (a saga's partition); atoll repliers honour it.
pub const REPLY_PARTITION: &str = "atoll_reply_partition";

/// The CloudEvents attributes of an outgoing record.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// `ce_type`.
    pub ce_type: &'a str,
    /// `ce_source`.
    pub source: &'a str,
    /// `ce_correlationid`; `None` starts a new flow (correlation id = this record's id).
    pub correlation_id: Option<&'a str>,
    /// `ce_causationid`: the `ce_id` of the record that caused this one.
    pub causation_id: Option<&'a str>,
    /// `ce_replyto`.
    pub reply_to: Option<&'a str>,
    /// `atoll_reply_partition`, with `reply_to`.
    pub reply_partition: Option<i32>,
    /// `ce_id`; `None` draws a fresh UUID v7. A record sent again (a saga's request after a
    /// crash) keeps its id.
    pub id: Option<&'a str>,
    /// `content-type`; `None` is JSON.
    pub content_type: Option<&'a str>,
}

impl<'a> Outgoing<'a> {
    /// A record that starts a new flow: no correlation, causation or reply topic.
    pub fn new(ce_type: &'a str, source: &'a str) -> Self {
        Self {
            ce_type,
            source,
            correlation_id: None,
            causation_id: None,
            reply_to: None,
            reply_partition: None,
            id: None,
            content_type: None,
        }
    }

    /// The headers, with the current time and `id` or else a fresh UUID v7 `ce_id`. Returns
    /// the headers and the id. Trace context (`traceparent`) is added by whoever produces the
    /// record, from its current span.
    pub fn headers(&self) -> (OwnedHeaders, String) {
        let id = self
            .id
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        let now = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let mut h = OwnedHeaders::new_with_capacity(9)
            .insert(header(SPECVERSION, "1.0"))
            .insert(header(ID, &id))
            .insert(header(TYPE, self.ce_type))
            .insert(header(SOURCE, self.source))
            .insert(header(TIME, &now))
            .insert(header(CONTENT_TYPE, self.content_type.unwrap_or(JSON)))
            .insert(header(CORRELATION_ID, self.correlation_id.unwrap_or(&id)));
        if let Some(c) = self.causation_id {
            h = h.insert(header(CAUSATION_ID, c));
        }
        if let Some(r) = self.reply_to {
            h = h.insert(header(REPLY_TO, r));
        }
        if let Some(p) = self.reply_partition {
            h = h.insert(header(REPLY_PARTITION, &p.to_string()));
        }
        (h, id)
    }
}

/// The value of header `key` of `msg` as UTF-8; `None` when missing, null or not UTF-8.
///
/// ```
/// use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
/// use rdkafka::Timestamp;
/// let h = OwnedHeaders::new().insert(Header { key: "ce_type", value: Some("a.b.c.d.v1") });
/// let msg = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, Some(h));
/// assert_eq!(atoll::envelope::header_str(&msg, "ce_type"), Some("a.b.c.d.v1"));
/// assert_eq!(atoll::envelope::header_str(&msg, "ce_id"), None);
/// ```
pub fn header_str<'a, M: Message>(msg: &'a M, key: &str) -> Option<&'a str> {
    utf8_header(msg.headers()?, key)
}

/// The first header named `key` in `headers`, as UTF-8 text.
fn utf8_header<'a, H: Headers>(headers: &'a H, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// What the runtime reads of a consumed record: a listener's copy of it, or an `OwnedMessage`.
pub(crate) trait RecordView {
    /// The record's headers.
    type Headers: Headers;
    /// Topic.
    fn topic(&self) -> &str;
    /// Partition.
    fn partition(&self) -> i32;
    /// Offset.
    fn offset(&self) -> i64;
    /// Key, if any.
    fn key(&self) -> Option<&[u8]>;
    /// Value, if any (none: a tombstone).
    fn payload(&self) -> Option<&[u8]>;
    /// Headers, if any.
    fn headers(&self) -> Option<&Self::Headers>;
}

impl RecordView for OwnedMessage {
    type Headers = OwnedHeaders;
    fn topic(&self) -> &str {
        Message::topic(self)
    }
    fn partition(&self) -> i32 {
        Message::partition(self)
    }
    fn offset(&self) -> i64 {
        Message::offset(self)
    }
    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        Message::payload(self)
    }
    fn headers(&self) -> Option<&OwnedHeaders> {
        Message::headers(self)
    }
}

/// [`header_str`] of a [`RecordView`].
pub(crate) fn record_header<'a, M: RecordView>(msg: &'a M, key: &str) -> Option<&'a str> {
    utf8_header(msg.headers()?, key)
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// The CloudEvents attributes read from a consumed record. Missing or non-UTF-8 headers are
/// `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incoming {
    /// `ce_id`.
    pub id: Option<String>,
    /// `ce_type`.
    pub ce_type: Option<String>,
    /// `ce_source`.
    pub source: Option<String>,
    /// `ce_correlationid`.
    pub correlation_id: Option<String>,
    /// `ce_replyto`.
    pub reply_to: Option<String>,
    /// `ce_causationid`.
    pub causation_id: Option<String>,
    /// `atoll_replay_group`, on replayed dead letters.
    pub replay_group: Option<String>,
    /// `atoll_reply_partition`, on commands whose reply must go to one partition.
    pub reply_partition: Option<String>,
    /// `content-type`.
    pub content_type: Option<String>,
    /// `ce_time`: when the record was produced (RFC 3339).
    pub time: Option<String>,
}

impl Incoming {
    /// Reads the attributes from a record's headers.
    pub fn read<H: Headers>(headers: Option<&H>) -> Self {
        let env = Envelope::read(headers);
        let own = |v: Option<&str>| v.map(str::to_owned);
        Self {
            id: own(env.id),
            ce_type: own(env.ce_type),
            source: own(env.source),
            correlation_id: own(env.correlation_id),
            reply_to: own(env.reply_to),
            causation_id: own(env.causation_id),
            replay_group: own(env.replay_group),
            reply_partition: own(env.reply_partition),
            content_type: own(env.content_type),
            time: own(env.time),
        }
    }
}

/// [`Incoming`] borrowed from the record's headers: what the runtime reads from every record
/// it handles, without copying a header it does not keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub(crate) id: Option<&'a str>,
    pub(crate) ce_type: Option<&'a str>,
    pub(crate) source: Option<&'a str>,
    pub(crate) correlation_id: Option<&'a str>,
    pub(crate) reply_to: Option<&'a str>,
    pub(crate) causation_id: Option<&'a str>,
    pub(crate) replay_group: Option<&'a str>,
    pub(crate) reply_partition: Option<&'a str>,
    pub(crate) content_type: Option<&'a str>,
    pub(crate) time: Option<&'a str>,
}

impl<'a> Envelope<'a> {
    /// Reads the attributes from a record's headers. Missing or non-UTF-8 headers are `None`.
    pub(crate) fn read<H: Headers>(headers: Option<&'a H>) -> Self {
        let mut env = Self::default();
        let Some(headers) = headers else { return env };
        for h in headers.iter() {
            let slot = match h.key {
                ID => &mut env.id,
                TYPE => &mut env.ce_type,
                SOURCE => &mut env.source,
                CORRELATION_ID => &mut env.correlation_id,
                REPLY_TO => &mut env.reply_to,
                CAUSATION_ID => &mut env.causation_id,
                REPLAY_GROUP => &mut env.replay_group,
                REPLY_PARTITION => &mut env.reply_partition,
                CONTENT_TYPE => &mut env.content_type,
                TIME => &mut env.time,
                _ => continue,
            };
            *slot = h.value.and_then(|v| std::str::from_utf8(v).ok());
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(h: &'a OwnedHeaders, key: &str) -> Option<&'a str> {
        h.iter()
            .find(|x| x.key == key)
            .and_then(|x| x.value)
            .map(|v| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn a_new_flow_correlates_to_itself() {
        let out = Outgoing::new("acme.shop.orders.place_order.v1", "acme.shop.driver/ab12");
        let (h, id) = out.headers();
        assert_eq!(get(&h, SPECVERSION), Some("1.0"));
        assert_eq!(get(&h, ID), Some(id.as_str()));
        assert_eq!(get(&h, CORRELATION_ID), Some(id.as_str()));
        assert_eq!(get(&h, CONTENT_TYPE), Some(JSON));
        assert_eq!(get(&h, CAUSATION_ID), None);
        let t = get(&h, TIME).unwrap();
        assert!(
            OffsetDateTime::parse(t, &Rfc3339).is_ok(),
            "{t} is RFC 3339"
        );
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    }

    #[test]
    fn a_caused_record_carries_the_flow() {
        let out = Outgoing {
            ce_type: "acme.shop.orders.order_placed.v1",
            source: "acme.shop.orders/ab12",
            correlation_id: Some("flow-1"),
            causation_id: Some("cause-1"),
            reply_to: Some("acme.shop.orders.private.reply"),
            reply_partition: Some(2),
            id: Some("saga-1@3"),
            content_type: Some("application/avro"),
        };
        let (h, _) = out.headers();
        let inc = Incoming::read(Some(&h));
        assert_eq!(inc.correlation_id.as_deref(), Some("flow-1"));
        assert_eq!(
            inc.ce_type.as_deref(),
            Some("acme.shop.orders.order_placed.v1")
        );
        assert_eq!(
            inc.reply_to.as_deref(),
            Some("acme.shop.orders.private.reply")
        );
        assert_eq!(get(&h, CAUSATION_ID), Some("cause-1"));
        assert_eq!(inc.id.as_deref(), Some("saga-1@3"));
        assert_eq!(inc.reply_partition.as_deref(), Some("2"));
        assert_eq!(inc.content_type.as_deref(), Some("application/avro"));
    }

    #[test]
    fn missing_and_binary_headers_read_as_none() {
        let h = OwnedHeaders::new().insert(Header {
            key: TYPE,
            value: Some(&[0xff, 0xfe][..]),
        });
        assert_eq!(Incoming::read(Some(&h)), Incoming::default());
        assert_eq!(Incoming::read::<OwnedHeaders>(None), Incoming::default());
    }
}
