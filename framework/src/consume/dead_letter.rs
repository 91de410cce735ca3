//! Writing a dead letter: the original record's key, value and headers, then the
//! [`atoll_dlq_*`](crate::dead_letter) headers.

use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::retry_topic::{original_headers, Origin};
use crate::contract::dead_letter::{
    DeadLetterKind, ATTEMPTS, ERROR, ERROR_KIND, FAILED_AT, LISTENER, ORIGINAL_OFFSET,
    ORIGINAL_PARTITION, ORIGINAL_TOPIC, PAYLOAD_OMITTED,
};
use crate::contract::envelope::RecordView;

/// Why a record is dead-lettered, and after how many attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) kind: DeadLetterKind,
    pub(crate) error: String,
    pub(crate) attempts: u32,
}

/// The DLQ headers: the original ones first, then the `atoll_dlq_*` ones.
pub(crate) fn headers<M: RecordView>(msg: &M, listener: &str, failure: &Failure) -> OwnedHeaders {
    contract(original_headers(msg, 8), msg, listener, failure)
}

/// [`headers`] from the failure's parts (see [`DeadLetterHeaders`](crate::handler::hooks::DeadLetterHeaders)).
pub(crate) fn headers_of(
    msg: &OwnedMessage,
    listener: &str,
    kind: DeadLetterKind,
    error: &str,
    attempts: u32,
) -> OwnedHeaders {
    let failure = Failure {
        kind,
        error: error.to_owned(),
        attempts,
    };
    headers(msg, listener, &failure)
}

/// A dead letter for a record too large for the DLQ: a JSON pointer to the original record as
/// its payload, and the `atoll_dlq_*` headers alone, with [`PAYLOAD_OMITTED`].
pub(crate) fn pointer<M: RecordView>(
    msg: &M,
    listener: &str,
    failure: &Failure,
) -> (Vec<u8>, OwnedHeaders) {
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
    use rdkafka::message::Headers;
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
        let h = headers(&msg, "place-order", &failure);
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
