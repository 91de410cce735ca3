//! The spans atoll opens: `process <topic>` around each handled record (kind consumer) and
//! `send <topic>` around each command a [`Client`](crate::Client) sends (kind producer), named
//! and attributed as OpenTelemetry's messaging semantic conventions say (`<operation name>
//! <destination name>`) when an OpenTelemetry layer records them; logs show them as `process`
//! and `send`, with the topic as a field.

use crate::contract::envelope::{record_header, RecordView};
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::KeyValue;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation;

/// The span of one record handled by `listener` of consumer group `group`, child of the
/// trace context the record carries.
pub(crate) fn process<M: RecordView>(
    msg: &M,
    listener: &'static str,
    group: &str,
) -> tracing::Span {
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {}", msg.topic()),
        otel.kind = "consumer",
        listener,
        topic = msg.topic(),
        partition = msg.partition(),
        offset = msg.offset(),
        ce_type = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    propagation::adopt(&span, msg.headers());
    if traced(&span) {
        let mut attributes = vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", msg.topic().to_owned()),
            KeyValue::new(
                "messaging.destination.partition.id",
                msg.partition().to_string(),
            ),
            KeyValue::new("messaging.consumer.group.name", group.to_owned()),
            KeyValue::new("messaging.kafka.offset", msg.offset()),
            KeyValue::new(
                "messaging.message.body.size",
                msg.payload().map_or(0, <[u8]>::len) as i64,
            ),
        ];
        if let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) {
            attributes.push(KeyValue::new("messaging.kafka.message.key", key.to_owned()));
        }
        if let Some(id) = record_header(msg, crate::contract::envelope::ID) {
            attributes.push(KeyValue::new("messaging.message.id", id.to_owned()));
        }
        if let Some(t) = record_header(msg, crate::contract::envelope::TYPE) {
            attributes.push(KeyValue::new("cloudevents.event_type", t.to_owned()));
        }
        for kv in attributes {
            span.set_attribute(kv.key, kv.value);
        }
    }
    span
}

/// The span of a command sent to `topic` from outside a handler: the start of a trace.
pub(crate) fn send(topic: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        topic
    );
    if traced(&span) {
        span.set_attribute("messaging.system", "kafka");
        span.set_attribute("messaging.operation.type", "send");
        span.set_attribute("messaging.operation.name", "send");
        span.set_attribute("messaging.destination.name", topic.to_owned());
    }
    span
}

/// Marks the current span failed: `error.type` (a [`DeadLetterKind`](crate::contract::dead_letter::DeadLetterKind)
/// name) and an error status.
pub(crate) fn failed(kind: &str, error: &str) {
    let span = tracing::Span::current();
    if traced(&span) {
        span.set_attribute("error.type", kind.to_owned());
        span.set_status(Status::error(error.to_owned()));
    }
}

/// Whether an OpenTelemetry layer records `span`.
fn traced(span: &tracing::Span) -> bool {
    !span.is_disabled() && span.context().span().span_context().is_valid()
}
