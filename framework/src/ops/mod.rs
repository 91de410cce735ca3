//! The operations layer: the HTTP server for health and metrics, readiness and liveness, the
//! Prometheus metrics and per-listener counters, what each listener shows on the status topic,
//! and telemetry (logs, spans, trace context).

pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod stats;
pub(crate) mod status;
pub(crate) mod telemetry;
