//! W3C trace context on records: `traceparent` (and `tracestate`) written from the current
//! span when producing, read into the record's span when consuming, so that a flow across
//! services is one trace.
//!
//! Both need an OpenTelemetry layer in the subscriber (see [`init`](super::init)): without one,
//! spans carry no trace context, nothing is written, and what is read is ignored.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::contract::envelope::{TRACEPARENT, TRACESTATE};

/// The trace context headers of `span` (`traceparent`, and `tracestate` when not empty), or
/// none when the span has no valid trace context (tracing off).
pub(crate) fn headers_of(span: &tracing::Span) -> Vec<(&'static str, String)> {
    if span.is_disabled() {
        return Vec::new();
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut fields);
    [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|k| fields.remove(k).filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect()
}

/// Makes the trace context carried by `headers` the parent of `span` (a span not yet
/// entered); does nothing when the span is disabled or the headers carry none.
pub(crate) fn adopt<H: Headers>(span: &tracing::Span, headers: Option<&H>) {
    let Some(headers) = headers else { return };
    if span.is_disabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderView(headers));
    if cx.span().span_context().is_valid() {
        // Fails only once the span was entered; it was not.
        let _ = span.set_parent(cx);
    }
}

/// Adds the current span's trace context to `headers`.
pub(crate) fn inject_current(headers: OwnedHeaders) -> OwnedHeaders {
    headers_of(&tracing::Span::current())
        .into_iter()
        .fold(headers, |h, (key, value)| {
            h.insert(rdkafka::message::Header {
                key,
                value: Some(value.as_str()),
            })
        })
}

/// Record headers as an OpenTelemetry [`Extractor`].
struct HeaderView<'a, H>(&'a H);

impl<H: Headers> Extractor for HeaderView<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::layer::SubscriberExt;

    /// Runs `f` under an OpenTelemetry layer; what it returned, and the spans it finished.
    fn traced<T>(f: impl FnOnce() -> T) -> (T, Vec<SpanData>) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let out = tracing::subscriber::with_default(subscriber, f);
        provider.force_flush().unwrap();
        // Read them before the provider's shutdown (on drop) empties the exporter.
        let spans = exporter.get_finished_spans().unwrap();
        (out, spans)
    }

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_written() {
        let span = tracing::info_span!("plain");
        assert!(headers_of(&span).is_empty());
        let h = span.in_scope(|| inject_current(OwnedHeaders::new()));
        assert_eq!(h.count(), 0);
    }

    #[test]
    fn a_written_context_becomes_the_parent_of_the_reading_span() {
        let (ids, spans) = traced(|| {
            let sender = tracing::info_span!("send");
            let headers = sender.in_scope(|| inject_current(OwnedHeaders::new()));
            let receiver = tracing::info_span!("process");
            adopt(&receiver, Some(&headers));
            let ids = (sender.context(), receiver.context());
            drop((sender, receiver));
            (
                ids.0.span().span_context().clone(),
                ids.1.span().span_context().clone(),
            )
        });
        let (sent, received) = ids;
        assert_eq!(sent.trace_id(), received.trace_id());
        let process = spans.iter().find(|s| s.name == "process").unwrap();
        assert_eq!(process.parent_span_id, sent.span_id());
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        let ((), spans) = traced(|| {
            let h = OwnedHeaders::new().insert(rdkafka::message::Header {
                key: TRACEPARENT,
                value: Some("00-not-a-trace-01"),
            });
            let span = tracing::info_span!("process");
            adopt(&span, Some(&h));
            drop(span);
        });
        assert_eq!(spans.len(), 1);
        assert_eq!(
            spans[0].parent_span_id,
            opentelemetry::trace::SpanId::INVALID,
            "a bad header starts a new trace rather than failing the record"
        );
    }
}
