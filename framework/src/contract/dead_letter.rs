//! The dead-letter contract: a dead-lettered record goes to `<service>.private.dlq` with its key,
//! value and headers preserved, plus the `atoll_dlq_*` headers named here, which say where it
//! came from and why it failed (see `docs/architecture.md#failure-handling-and-dead-letters`).

use std::fmt;

use rdkafka::message::{Header, OwnedHeaders};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::envelope::RecordView;
use super::retry_topic::{original_headers, Origin};

/// `atoll_dlq_original_topic`.
pub const ORIGINAL_TOPIC: &str = "atoll_dlq_original_topic";
/// `atoll_dlq_original_partition`.
pub const ORIGINAL_PARTITION: &str = "atoll_dlq_original_partition";
/// `atoll_dlq_original_offset`.
pub const ORIGINAL_OFFSET: &str = "atoll_dlq_original_offset";
/// `atoll_dlq_listener`.
pub const LISTENER: &str = "atoll_dlq_listener";
/// `atoll_dlq_attempts`.
pub const ATTEMPTS: &str = "atoll_dlq_attempts";
/// `atoll_dlq_error_kind`.
pub const ERROR_KIND: &str = "atoll_dlq_error_kind";
/// `atoll_dlq_error`.
pub const ERROR: &str = "atoll_dlq_error";
/// `atoll_dlq_failed_at`.
pub const FAILED_AT: &str = "atoll_dlq_failed_at";
/// `atoll_dlq_payload_omitted`: present when the record was too large for the DLQ. Its value
/// is the original payload's size in bytes; the dead letter's payload is then a JSON pointer
/// to the original record, `{"topic": …, "partition": …, "offset": …}`, and its original
/// headers are left out.
pub const PAYLOAD_OMITTED: &str = "atoll_dlq_payload_omitted";

/// Why a record was dead-lettered: the value of `atoll_dlq_error_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterKind {
    /// The payload did not decode into the event type.
    Decode,
    /// `ce_type` is missing, or no type this listener knows.
    UnknownType,
    /// The handler failed.
    Handler,
    /// The handler panicked.
    Panic,
    /// The handler exceeded its time budget.
    Timeout,
    /// An output of a transactional handler could not be published from the store's outbox
    /// (larger than the broker takes, a partition its topic lacks, or refused for minutes).
    Publish,
}

impl DeadLetterKind {
    /// The kinds of a listener's failed attempts (every kind but [`Publish`](Self::Publish),
    /// which is the outbox's).
    pub const ALL: [Self; 5] = [
        Self::Decode,
        Self::UnknownType,
        Self::Handler,
        Self::Panic,
        Self::Timeout,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::UnknownType => "unknown_type",
            Self::Handler => "handler",
            Self::Panic => "panic",
            Self::Timeout => "timeout",
            Self::Publish => "publish",
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record is dead-lettered, and after how many attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) kind: DeadLetterKind,
    pub(crate) error: String,
    pub(crate) attempts: u32,
}

impl Failure {
    /// The headers of the record's dead letter, written in the name of `listener`: the
    /// original ones first, then the `atoll_dlq_*` ones.
    pub(crate) fn headers<M: RecordView>(&self, msg: &M, listener: &str) -> OwnedHeaders {
        contract(original_headers(msg, 8), msg, listener, self)
    }

    /// [`pointer`] for this failure.
    pub(crate) fn pointer<M: RecordView>(
        &self,
        msg: &M,
        listener: &str,
    ) -> (Vec<u8>, OwnedHeaders) {
        pointer(msg, listener, self)
    }
}

/// A dead letter for a record too large for the DLQ: a JSON pointer to the original record as
/// its payload, and the `atoll_dlq_*` headers alone, with [`PAYLOAD_OMITTED`].
fn pointer<M: RecordView>(msg: &M, listener: &str, failure: &Failure) -> (Vec<u8>, OwnedHeaders) {
    let origin = Origin::of(msg);
    let payload = serde_json::json!({
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
    });
    let size = msg.payload().map_or(0, <[u8]>::len).to_string();
    // The error is the one part of a pointer that can be large (a handler's message).
    let mut failure = failure.clone();
    if failure.error.len() > POINTER_ERROR_MAX {
        let mut end = POINTER_ERROR_MAX;
        while !failure.error.is_char_boundary(end) {
            end -= 1;
        }
        failure.error.truncate(end);
        failure.error.push_str("… (truncated)");
    }
    let failure = &failure;
    let headers =
        contract(OwnedHeaders::new_with_capacity(9), msg, listener, failure).insert(Header {
            key: PAYLOAD_OMITTED,
            value: Some(size.as_str()),
        });
    (payload.to_string().into_bytes(), headers)
}

/// The longest `atoll_dlq_error` of a pointer dead letter, in bytes.
const POINTER_ERROR_MAX: usize = 16 * 1024;

/// `out` with the `atoll_dlq_*` headers added.
fn contract<M: RecordView>(
    mut out: OwnedHeaders,
    msg: &M,
    listener: &str,
    failure: &Failure,
) -> OwnedHeaders {
    let origin = Origin::of(msg);
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let fields: [(&str, String); 8] = [
        (ORIGINAL_TOPIC, origin.topic),
        (ORIGINAL_PARTITION, origin.partition.to_string()),
        (ORIGINAL_OFFSET, origin.offset.to_string()),
        (LISTENER, listener.to_owned()),
        (ATTEMPTS, failure.attempts.to_string()),
        (ERROR_KIND, failure.kind.as_str().to_owned()),
        (ERROR, failure.error.clone()),
        (FAILED_AT, now),
    ];
    for (key, value) in &fields {
        out = out.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Headers, OwnedMessage};
    use rdkafka::Timestamp;

    #[test]
    fn preserves_original_headers_and_adds_the_contract() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "ce_type",
                value: Some("x.y.z.w.v1"),
            })
            .insert(Header {
                key: "binary",
                value: Some(&[0u8, 159][..]),
            });
        let msg = OwnedMessage::new(
            Some(b"payload".to_vec()),
            Some(b"key".to_vec()),
            "acme.shop.orders.commands".into(),
            Timestamp::NotAvailable,
            3,
            42,
            Some(original),
        );
        let failure = Failure {
            kind: DeadLetterKind::Decode,
            error: "bad json".into(),
            attempts: 1,
        };
        let h = failure.headers(&msg, "place-order");
        let get = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value)
                .map(|v| v.to_vec())
        };
        assert_eq!(get("ce_type").unwrap(), b"x.y.z.w.v1");
        assert_eq!(get("binary").unwrap(), vec![0u8, 159]);
        assert_eq!(get(ORIGINAL_TOPIC).unwrap(), b"acme.shop.orders.commands");
        assert_eq!(get(ORIGINAL_PARTITION).unwrap(), b"3");
        assert_eq!(get(ORIGINAL_OFFSET).unwrap(), b"42");
        assert_eq!(get(LISTENER).unwrap(), b"place-order");
        assert_eq!(get(ATTEMPTS).unwrap(), b"1");
        assert_eq!(get(ERROR_KIND).unwrap(), b"decode");
        assert_eq!(get(ERROR).unwrap(), b"bad json");
        let at = String::from_utf8(get(FAILED_AT).unwrap()).unwrap();
        assert!(OffsetDateTime::parse(&at, &Rfc3339).is_ok());
    }
}
