//! Trace context across services: a command sent by a client, handled by `alpha`, whose fact
//! `beta` handles, which sends a command `gamma` handles, is one trace; each hop's `process`
//! span is the child of the `traceparent` the record carried, and the span in `gamma` (two
//! hops after `alpha`) descends from the `traceparent` `alpha` produced.

mod common;

use atoll::config::Config;
use atoll::{event_service, handlers, App, Context, Event, HandlerResult};
use common::{eventually, header};
use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[event_service(company = "acme", namespace = "test", name = "alpha", partitions = 1)]
struct Alpha;
#[event_service(company = "acme", namespace = "test", name = "beta", partitions = 1)]
struct Beta;
#[event_service(company = "acme", namespace = "test", name = "gamma", partitions = 1)]
struct Gamma;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "start", version = 1, service = Alpha)]
struct Start {
    #[event(key)]
    id: String,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "started", version = 1, service = Alpha)]
struct Started {
    #[event(key)]
    id: String,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "finish", version = 1, service = Gamma)]
struct Finish {
    #[event(key)]
    id: String,
}

#[handlers]
impl Alpha {
    #[listener(name = "start")]
    async fn start(&self, ctx: Context<Self>, cmd: Start) -> HandlerResult {
        ctx.emit(Started { id: cmd.id }).await?;
        Ok(())
    }
}

#[handlers]
impl Beta {
    #[listener(name = "on-started")]
    async fn started(&self, ctx: Context<Self>, fact: Started) -> HandlerResult {
        ctx.send(Finish { id: fact.id }).await?;
        Ok(())
    }
}

#[handlers]
impl Gamma {
    #[listener(name = "finish")]
    async fn finish(&self, _cmd: Finish) -> HandlerResult {
        Ok(())
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_across_three_services_is_one_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .init();

    let running = App::new(Config::default())
        .service(Alpha)
        .service(Beta)
        .service(Gamma)
        .start()
        .await
        .unwrap();
    running
        .client("test")
        .send(&Start {
            id: "flow-1".into(),
        })
        .await
        .unwrap();
    let finished = |spans: &[SpanData]| {
        spans.iter().any(|s| {
            attribute(s, "messaging.destination.name").as_deref()
                == Some("acme.test.gamma.commands")
        })
    };
    assert!(
        eventually(60, || {
            let spans = exporter.get_finished_spans().unwrap();
            async move { finished(&spans) }
        })
        .await,
        "gamma never handled the command"
    );
    let spans = exporter.get_finished_spans().unwrap();
    let process = |topic: &str| {
        spans
            .iter()
            .find(|s| {
                // OpenTelemetry's messaging conventions: `<operation> <destination>`.
                s.name == format!("process {topic}")
                    && attribute(s, "messaging.destination.name").as_deref() == Some(topic)
            })
            .unwrap_or_else(|| panic!("no process span of {topic}: {spans:#?}"))
    };
    let send = spans
        .iter()
        .find(|s| s.name == "send acme.test.alpha.commands")
        .expect("the client's send span");
    let alpha = process("acme.test.alpha.commands");
    let beta = process("acme.test.alpha.events");
    let gamma = process("acme.test.gamma.commands");
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(alpha.span_kind, SpanKind::Consumer);
    assert_eq!(alpha.parent_span_id, send.span_context.span_id());
    assert_eq!(beta.parent_span_id, alpha.span_context.span_id());
    assert_eq!(gamma.parent_span_id, beta.span_context.span_id());
    let trace = send.span_context.trace_id();
    for s in [alpha, beta, gamma] {
        assert_eq!(s.span_context.trace_id(), trace, "one trace");
        assert_eq!(attribute(s, "messaging.system").as_deref(), Some("kafka"));
        assert_eq!(
            attribute(s, "messaging.operation.type").as_deref(),
            Some("process")
        );
        assert_eq!(
            attribute(s, "messaging.message.id").map(|id| id.is_empty()),
            Some(false)
        );
    }
    assert_eq!(
        attribute(gamma, "messaging.consumer.group.name").as_deref(),
        Some("acme.test.gamma-finish")
    );
    assert_eq!(
        attribute(beta, "messaging.kafka.message.key").as_deref(),
        Some("flow-1")
    );

    // The traceparent alpha wrote on its fact names alpha's span; gamma's span, two hops
    // later, descends from it.
    let bootstrap = running.bootstrap_servers().to_owned();
    let facts = tokio::task::spawn_blocking(move || {
        common::read_topic(&bootstrap, "acme.test.alpha.events", 1, 1)
    })
    .await
    .unwrap();
    let traceparent = header(&facts[0], "traceparent").expect("the fact carries a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], trace.to_string());
    let written = SpanId::from_hex(parts[2]).unwrap();
    assert_eq!(written, alpha.span_context.span_id());
    let mut ancestor = gamma.parent_span_id;
    let mut hops = 1;
    while ancestor != written {
        let up = spans
            .iter()
            .find(|s| s.span_context.span_id() == ancestor)
            .unwrap_or_else(|| panic!("the chain from gamma breaks at {ancestor}"));
        ancestor = up.parent_span_id;
        hops += 1;
    }
    assert_eq!(
        hops, 2,
        "gamma's span is two hops after alpha's traceparent"
    );
    running.shutdown().await;
}
