//! Logs and traces: [`init`] installs the process's `tracing` subscriber from
//! [`TelemetryConfig`].
//!
//! - Logs go to standard error as text or, with `telemetry.log_format = "json"`, one JSON object
//!   per line carrying the fields of the spans they happened in (listener, topic, partition,
//!   offset, …).
//! - With `telemetry.otlp_endpoint` set, spans are exported over OTLP/HTTP (protobuf) to an
//!   OpenTelemetry collector, and trace context travels with the records: every handled record
//!   gets a span `process <topic>` (kind consumer) with the OpenTelemetry messaging attributes,
//!   whose parent is the `traceparent` the record carries; every record produced within it
//!   carries the span's own `traceparent`. [`Client::send`](crate::Client::send) starts a trace
//!   with a `send <topic>` span (kind producer).
//!
//! An application that builds its own subscriber gets the same propagation by adding a
//! [`tracing_opentelemetry`] layer to it.
//!
//! ```no_run
//! # fn main() -> atoll::Result<()> {
//! let config = atoll::config::Config::load()?;
//! let _telemetry = atoll::telemetry::init(&config.telemetry, "acme.shop.orders", "info")?;
//! # Ok(()) }
//! ```

pub(crate) mod propagation;
pub(crate) mod spans;

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};
use crate::error::{Error, Result};

/// The installed telemetry; dropping it flushes the spans not yet exported.
#[must_use = "dropping it stops the trace exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("flushing traces at exit failed: {e}");
            }
        }
    }
}

/// Installs the global `tracing` subscriber: the log filter (`RUST_LOG`, else
/// `telemetry.log_filter`, else `default_filter`), the log format, and the OTLP trace exporter
/// when `telemetry.otlp_endpoint` is set, naming this process `service_name` (the
/// OpenTelemetry `service.name`).
///
/// # Errors
/// [`Error::Config`] for a filter that does not parse, an exporter that cannot be built, or
/// a subscriber already installed.
pub fn init(
    config: &TelemetryConfig,
    service_name: &str,
    default_filter: &str,
) -> Result<Telemetry> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(&f)
            .map_err(|e| Error::Config(format!("RUST_LOG `{f}` does not parse: {e}")))?,
        _ => {
            let f = config.log_filter.as_deref().unwrap_or(default_filter);
            EnvFilter::try_new(f).map_err(|e| {
                Error::Config(format!("telemetry.log_filter `{f}` does not parse: {e}"))
            })?
        }
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| otlp_provider(endpoint, service_name))
        .transpose()?;
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("atoll"))
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.is_span() && *m.level() <= tracing::Level::INFO
            }))
    });
    tracing_subscriber::registry()
        .with(traces)
        .with(logs.with_filter(filter))
        .try_init()
        .map_err(|e| Error::Config(format!("cannot install the tracing subscriber: {e}")))?;
    Ok(Telemetry { provider })
}

/// A tracer provider exporting batches over OTLP/HTTP to `endpoint` (`/v1/traces` appended).
fn otlp_provider(endpoint: &str, service_name: &str) -> Result<SdkTracerProvider> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|e| {
            Error::Config(format!(
                "telemetry.otlp_endpoint `{endpoint}`: cannot build the exporter: {e}"
            ))
        })?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
