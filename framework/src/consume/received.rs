//! A consumed record as the poll thread hands it to a partition's worker, and [`RecordView`],
//! what the consume layer reads of a record (this one, or an `OwnedMessage` of a saga's own
//! consumer).
//!
//! librdkafka's `detach` copies each header into an allocation of its own (ten for a record
//! with atoll's eight CloudEvents headers) and the topic's name into another; [`Received`]
//! copies the headers into one buffer with an index, and shares the topic's name.

use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::Message;

/// What the consume layer reads of a consumed record.
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

/// The value of header `key` of `msg` as UTF-8; `None` when missing, null or not UTF-8.
pub(crate) fn header_str<'a, M: RecordView>(msg: &'a M, key: &str) -> Option<&'a str> {
    msg.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// A record copied off the consumer.
#[derive(Debug)]
pub(crate) struct Received {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<FlatHeaders>,
}

impl Received {
    /// Copies `msg`, which was consumed from `topic`.
    pub(crate) fn copy(msg: &BorrowedMessage<'_>, topic: &Arc<str>) -> Self {
        debug_assert_eq!(Message::topic(msg), &**topic);
        Self {
            topic: topic.clone(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers: msg.headers().map(FlatHeaders::copy),
        }
    }

    /// A record with these parts (tests).
    #[cfg(test)]
    pub(crate) fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<&OwnedHeaders>,
    ) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            key: key.map(<[u8]>::to_vec),
            payload: payload.map(<[u8]>::to_vec),
            headers: headers.map(FlatHeaders::copy),
        }
    }

    /// Topic.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition.
    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }

    /// Offset.
    pub(crate) fn offset(&self) -> i64 {
        self.offset
    }

    /// Key, if any.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// Value, if any.
    pub(crate) fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }

    /// Headers, if any.
    pub(crate) fn headers(&self) -> Option<&FlatHeaders> {
        self.headers.as_ref()
    }
}

impl RecordView for Received {
    type Headers = FlatHeaders;
    fn topic(&self) -> &str {
        Received::topic(self)
    }
    fn partition(&self) -> i32 {
        Received::partition(self)
    }
    fn offset(&self) -> i64 {
        Received::offset(self)
    }
    fn key(&self) -> Option<&[u8]> {
        Received::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        Received::payload(self)
    }
    fn headers(&self) -> Option<&FlatHeaders> {
        Received::headers(self)
    }
}

/// A record's headers in two buffers: the names back to back, and the values back to back.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlatHeaders {
    names: String,
    values: Vec<u8>,
    entries: Vec<Entry>,
}

/// Where one header lies in [`FlatHeaders`]' buffers.
#[derive(Debug, Clone, Copy)]
struct Entry {
    name: (usize, usize),
    /// `None`: a null value.
    value: Option<(usize, usize)>,
}

impl FlatHeaders {
    /// Copies `headers`.
    pub(crate) fn copy<H: Headers>(headers: &H) -> Self {
        let (mut names_len, mut values_len) = (0, 0);
        for h in headers.iter() {
            names_len += h.key.len();
            values_len += h.value.map_or(0, <[u8]>::len);
        }
        let mut flat = Self {
            names: String::with_capacity(names_len),
            values: Vec::with_capacity(values_len),
            entries: Vec::with_capacity(headers.count()),
        };
        for h in headers.iter() {
            let name = (flat.names.len(), flat.names.len() + h.key.len());
            flat.names.push_str(h.key);
            let value = h.value.map(|v| {
                let at = flat.values.len();
                flat.values.extend_from_slice(v);
                (at, at + v.len())
            });
            flat.entries.push(Entry { name, value });
        }
        flat
    }
}

impl Headers for FlatHeaders {
    fn count(&self) -> usize {
        self.entries.len()
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        let e = self.entries.get(idx)?;
        Some(Header {
            key: &self.names[e.name.0..e.name.1],
            value: e.value.map(|(from, to)| &self.values[from..to]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_headers_read_back_every_header_in_order_with_null_and_empty_values() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some("abc"),
            })
            .insert(Header::<&str> {
                key: "nothing",
                value: None,
            })
            .insert(Header {
                key: "empty",
                value: Some(""),
            })
            .insert(Header {
                key: "ce_id",
                value: Some(&[0xff, 0x00][..]),
            });
        let flat = FlatHeaders::copy(&original);
        assert_eq!(flat.count(), 4);
        let read: Vec<(String, Option<Vec<u8>>)> = flat
            .iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            read,
            [
                ("ce_id".to_owned(), Some(b"abc".to_vec())),
                ("nothing".to_owned(), None),
                ("empty".to_owned(), Some(Vec::new())),
                ("ce_id".to_owned(), Some(vec![0xff, 0x00])),
            ]
        );
        assert!(flat.try_get(4).is_none());
        let none = FlatHeaders::copy(&OwnedHeaders::new());
        assert_eq!(none.count(), 0);
    }

    #[test]
    fn a_received_record_reads_like_the_message() {
        let h = OwnedHeaders::new().insert(Header {
            key: "ce_type",
            value: Some("a.b.c.d.v1"),
        });
        let r = Received::new("t", 3, 42, Some(b"k"), Some(b"{}"), Some(&h));
        assert_eq!(header_str(&r, "ce_type"), Some("a.b.c.d.v1"));
        assert_eq!(header_str(&r, "ce_id"), None);
        assert_eq!((r.topic(), r.partition(), r.offset()), ("t", 3, 42));
        assert_eq!((r.key(), r.payload()), (Some(&b"k"[..]), Some(&b"{}"[..])));
    }
}
