//! A consumed record as the poll thread hands it to a partition's worker, readable as a
//! [`RecordView`] like the `OwnedMessage`s of a saga's own consumer.
//!
//! librdkafka's `detach` copies each header into an allocation of its own (ten for a record
//! with atoll's eight CloudEvents headers) and the topic's name into another; [`Received`]
//! copies the headers into one buffer with an index, and shares the topic's name.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::message::{BorrowedMessage, Header, Headers};
use rdkafka::Message;

use crate::contract::envelope::{Envelope, RecordView};
use crate::handler::context::Meta;

/// A record copied off the consumer.
#[derive(Debug)]
pub(crate) struct Received {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<FlatHeaders>,
    /// When it was written (its timestamp, in ms since the Unix epoch), if the broker says.
    timestamp_ms: Option<i64>,
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
            timestamp_ms: msg.timestamp().to_millis(),
        }
    }

    /// When the record was written (ms since the Unix epoch), if the broker says.
    pub(crate) fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }

    /// Its headers, copied for a listener's layers.
    pub(crate) fn header_list(&self) -> crate::handler::layer::HeaderList {
        let Some(headers) = &self.headers else {
            return Vec::new();
        };
        (0..headers.count())
            .map(|i| {
                let h = headers.get(i);
                (h.key.to_owned(), h.value.map(<[u8]>::to_vec))
            })
            .collect()
    }

    /// A record with these parts (tests).
    #[cfg(test)]
    pub(crate) fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<&rdkafka::message::OwnedHeaders>,
    ) -> Self {
        Self {
            topic: topic.into(),
            partition,
            offset,
            key: key.map(<[u8]>::to_vec),
            payload: payload.map(<[u8]>::to_vec),
            headers: headers.map(FlatHeaders::copy),
            timestamp_ms: None,
        }
    }
}

impl Received {
    /// The metadata `listener`'s handler gets for this record, whose envelope is `inc` and
    /// which the poll thread received at `received`. A record without a `ce_id` (or with an
    /// empty one) is given one from where it was written, the same on every delivery: ids are
    /// never empty, so two such records are never taken for one (an inbox duplicate, a saga's
    /// redelivered input).
    pub(crate) fn meta(
        &self,
        listener: &'static str,
        inc: &Envelope<'_>,
        received: Instant,
    ) -> Meta {
        let id = inc.id.filter(|id| !id.is_empty()).map_or_else(
            || format!("{}/{}/{}", self.topic, self.partition, self.offset),
            str::to_owned,
        );
        let own = |v: Option<&str>| v.map(str::to_owned);
        Meta {
            listener,
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            key: self
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_owned),
            key_bytes: self.key.clone(),
            correlation_id: inc.correlation_id.map_or_else(|| id.clone(), str::to_owned),
            id,
            source: own(inc.source),
            ce_type: inc.ce_type.unwrap_or_default().to_owned(),
            reply_to: own(inc.reply_to),
            causation_id: own(inc.causation_id),
            // Checked before the record was handled.
            reply_partition: inc.reply_partition.and_then(|p| p.parse().ok()),
            content_type: own(inc.content_type),
            time: own(inc.time),
            received_at: Some(received),
        }
    }
}

impl RecordView for Received {
    type Headers = FlatHeaders;
    fn topic(&self) -> &str {
        &self.topic
    }
    fn partition(&self) -> i32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }
    fn headers(&self) -> Option<&FlatHeaders> {
        self.headers.as_ref()
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
    /// Copies `headers`. A header whose name is not UTF-8 (which rdkafka cannot read: it
    /// panics) is left out, with a warning, rather than taking the poll thread down.
    pub(crate) fn copy<H: Headers>(headers: &H) -> Self {
        let count = headers.count();
        // Room for CloudEvents headers of usual sizes: most records need no growth.
        let mut flat = Self {
            names: String::with_capacity(count * 16),
            values: Vec::with_capacity(count * 40),
            entries: Vec::with_capacity(count),
        };
        for i in 0..count {
            let h =
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| headers.try_get(i)))
                {
                    Ok(Some(h)) => h,
                    Ok(None) => continue,
                    Err(_) => {
                        tracing::warn!(index = i, "a record header's name is not UTF-8: left out");
                        continue;
                    }
                };
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
    use rdkafka::message::OwnedHeaders;

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
        assert_eq!(
            crate::contract::envelope::record_header(&r, "ce_type"),
            Some("a.b.c.d.v1")
        );
        assert_eq!(crate::contract::envelope::record_header(&r, "ce_id"), None);
        assert_eq!((r.topic(), r.partition(), r.offset()), ("t", 3, 42));
        assert_eq!((r.key(), r.payload()), (Some(&b"k"[..]), Some(&b"{}"[..])));
    }

    /// Headers whose reading panics at index 1, as rdkafka's do for a name that is not UTF-8.
    struct Unreadable;

    impl Headers for Unreadable {
        fn count(&self) -> usize {
            3
        }

        fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
            match idx {
                0 => Some(Header {
                    key: "ce_id",
                    value: Some(b"a"),
                }),
                1 => panic!("invalid utf-8 in a header name"),
                _ => Some(Header {
                    key: "ce_type",
                    value: Some(b"t"),
                }),
            }
        }
    }

    #[test]
    fn a_header_rdkafka_cannot_read_is_left_out_not_fatal() {
        let flat = FlatHeaders::copy(&Unreadable);
        let keys: Vec<&str> = flat.iter().map(|h| h.key).collect();
        assert_eq!(keys, ["ce_id", "ce_type"]);
    }
}
