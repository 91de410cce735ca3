//! Logs and traces: [`init`] installs the process's `tracing` subscriber from
//! [`TelemetryConfig`].
//!
//! - Logs go to standard error as text or, with `telemetry.log_format = "json"`, one JSON object
//!   per line carrying the fields of the spans they happened in (listener, topic, partition,
//!   offset, …).
//! - With `telemetry.otlp_endpoint` set (or, when it is not, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//!   or `OTEL_EXPORTER_OTLP_ENDPOINT`, as every OpenTelemetry SDK reads them), spans are
//!   exported over OTLP/HTTP (protobuf; https with `telemetry.otlp_ca_file` for a private CA,
//!   and `telemetry.otlp_headers` or `OTEL_EXPORTER_OTLP_HEADERS` for a login) to an
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
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{redact_url, LogFormat, TelemetryConfig};
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
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let endpoint = traces_endpoint(
        config.otlp_endpoint.as_deref(),
        env(TRACES_ENDPOINT).as_deref(),
        env(ENDPOINT).as_deref(),
    )?;
    let provider = endpoint
        .map(|url| otlp_provider(&url, config, service_name))
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

/// The OpenTelemetry variable naming where traces go, as it is.
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The OpenTelemetry variable naming the collector; traces go to its `/v1/traces`.
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Where traces go: `telemetry.otlp_endpoint` + `/v1/traces`, else the traces variable as it
/// is, else the generic variable + `/v1/traces` (the OpenTelemetry specification's order);
/// `None` when none is set. `Err` names the setting that is not an http(s) URL.
fn traces_endpoint(
    configured: Option<&str>,
    traces_env: Option<&str>,
    generic_env: Option<&str>,
) -> Result<Option<String>> {
    let traces = |base: &str| format!("{}/v1/traces", base.trim_end_matches('/'));
    let (from, url) = match (configured, traces_env, generic_env) {
        (Some(base), _, _) => ("telemetry.otlp_endpoint", traces(base)),
        (None, Some(url), _) => (TRACES_ENDPOINT, url.to_owned()),
        (None, None, Some(base)) => (ENDPOINT, traces(base)),
        (None, None, None) => return Ok(None),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::Config(format!(
            "{from} `{}` must be an http:// or https:// URL (OTLP over HTTP, e.g. http://collector:4318)",
            redact_url(&url)
        )));
    }
    Ok(Some(url))
}

/// A tracer provider exporting batches over OTLP/HTTP to `url`, trusting
/// `telemetry.otlp_ca_file` and sending `telemetry.otlp_headers`.
fn otlp_provider(
    url: &str,
    config: &TelemetryConfig,
    service_name: &str,
) -> Result<SdkTracerProvider> {
    let fail = |e: String| {
        Error::Config(format!(
            "OTLP endpoint `{}`: cannot build the exporter: {e}",
            redact_url(url)
        ))
    };
    let mut builder =
        reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(10));
    if let Some(ca) = &config.otlp_ca_file {
        let cert = crate::config::registry::pem_certificate("telemetry.otlp_ca_file", ca)
            .map_err(Error::Config)?;
        builder = builder.add_root_certificate(cert);
    }
    // The blocking client runs a runtime of its own, which may not be made on a thread of
    // the application's.
    let client = std::thread::spawn(move || builder.build())
        .join()
        .map_err(|_| fail("building the HTTP client panicked".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let headers = config
        .otlp_headers
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v.expose().to_owned()))
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_headers(headers)
        .with_endpoint(url)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_comes_from_the_config_then_the_opentelemetry_variables() {
        /// The configured endpoint, the two variables, and where traces go.
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: &[Case<'_>] = &[
            (None, None, None, None),
            (
                Some("https://c:4318/"),
                Some("http://t/x"),
                Some("http://g"),
                Some("https://c:4318/v1/traces"),
            ),
            (
                None,
                Some("https://t:4318/custom"),
                Some("http://g"),
                Some("https://t:4318/custom"),
            ),
            (
                None,
                None,
                Some("https://g:4318"),
                Some("https://g:4318/v1/traces"),
            ),
        ];
        for (configured, traces, generic, want) in cases {
            let got = traces_endpoint(*configured, *traces, *generic).unwrap();
            assert_eq!(
                got.as_deref(),
                *want,
                "{configured:?} {traces:?} {generic:?}"
            );
        }
        let e = traces_endpoint(None, None, Some("collector:4318"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
        let e = traces_endpoint(None, Some("u:p@collector"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "{e}");
    }
}
