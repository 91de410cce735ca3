//! The health and metrics endpoints, served on `http.addr` (`ATOLL_HTTP__ADDR`; off when
//! unset):
//!
//! | path | answers |
//! |---|---|
//! | `GET /health/live` | `200` unless a listener's poll loop stalled for `http.stalled_after_ms`, then `503` |
//! | `GET /health/ready` | `200` once every listener joined its group and got an assignment, while its brokers are reachable and until shutdown begins; else `503` |
//! | `GET /metrics` | the metrics below, in the OpenMetrics text format Prometheus scrapes |
//!
//! Reachability comes from librdkafka: its `AllBrokersDown` error, and the broker states in
//! its statistics (`statistics.interval.ms`, which atoll sets to 5 s unless configured; keep it
//! above 0, or a process that lost its brokers turns ready again only at its next assignment).
//!
//! Both probes answer with a JSON report: `status`, the `reasons` when failing, and every
//! consumer's `joined`, `broker_up` and `since_last_poll_ms`.
//!
//! Metrics (labels `service` and `listener` on every per-listener one):
//!
//! | metric | type | |
//! |---|---|---|
//! | `atoll_records_consumed_total` | counter | records received from the broker |
//! | `atoll_records_handled_total` | counter | records whose handler succeeded |
//! | `atoll_records_failed_total` | counter | failed attempts, label `kind` (`decode`, `unknown_type`, `handler`, `panic`, `timeout`) |
//! | `atoll_records_retried_total` | counter | retries in place and through the retry topic |
//! | `atoll_records_dead_lettered_total` | counter | records written to the DLQ |
//! | `atoll_records_deduplicated_total` | counter | records a transactional listener skipped: its inbox showed them handled |
//! | `atoll_handler_duration_seconds` | histogram | one handler attempt |
//! | `atoll_records_in_flight` | gauge | records taken up and not yet finished |
//! | `atoll_assigned_partitions` | gauge | partitions assigned now |
//! | `atoll_consumer_lag` | gauge | records behind the partition's end, labels `group`, `topic`, `partition` (librdkafka statistics, every `statistics.interval.ms`, default 5 s) |
//! | `atoll_consumer_lag_seconds` | gauge | how far behind in time: the age of the last record received from a lagging partition (0 when it does not lag), same labels |
//! | `atoll_records_produced_total` | counter | records the broker acknowledged (process-wide) |
//! | `atoll_produce_errors_total` | counter | records the broker did not take (process-wide) |
//! | `atoll_produce_latency_seconds` | histogram | from handing a record to the producer to its acknowledgement (process-wide) |
//! | `atoll_commit_duration_seconds` | histogram | offset commit round trip |
//! | `atoll_commits_failed_total` | counter | offset commits the broker refused |
//! | `atoll_producer_queue_depth` | gauge | records produced, not yet acknowledged (process-wide) |

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;
use crate::error::{Error, Result};
use crate::ops::health::{Health, Report};
use crate::ops::metrics::Metrics;
use crate::produce::Producer;

/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints read.
pub(crate) struct Endpoints {
    pub(crate) health: Arc<Health>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) producer: Producer,
}

/// A router served on a bound address until [`stop`](Server::stop)ped or dropped: the endpoints
/// here, and the development schema registry.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and serves `router`; `what` names it in the logs. A client gets
    /// `limits.header_read_timeout` to send a request's headers, and a route reads at most
    /// `limits.max_body_bytes` of a body.
    pub(crate) async fn bind(
        addr: SocketAddr,
        router: Router,
        limits: &HttpConfig,
        what: &'static str,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let router = router.layer(DefaultBodyLimit::max(limits.max_body_bytes));
        let task = tokio::spawn(serve(
            listener,
            router,
            limits.header_read_timeout(),
            stop.clone(),
            what,
        ));
        Ok(Self {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// Serves the health and metrics endpoints on `addr`, and the application's `routes`.
    pub(crate) async fn endpoints(
        addr: SocketAddr,
        limits: &HttpConfig,
        endpoints: Endpoints,
        routes: Option<Router>,
    ) -> Result<Self> {
        let ours = Router::new()
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .route("/metrics", get(metrics))
            .with_state(Arc::new(endpoints));
        // axum panics on a route registered twice: the application's overlapping one of ours
        // is a declaration error, not a crash.
        let routes = routes.unwrap_or_default();
        let router = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ours.merge(routes)))
            .map_err(|_| {
                Error::Declaration(
                    "App::routes: a route overlaps atoll's /health/live, /health/ready or /metrics"
                        .into(),
                )
            })?;
        let server = Self::bind(addr, router, limits, "the HTTP server")
            .await
            .map_err(|e| Error::Config(format!("http.addr `{addr}`: cannot listen: {e}")))?;
        tracing::info!(addr = %server.addr, "serving /health/live, /health/ready and /metrics");
        Ok(server)
    }

    /// The address bound (the port chosen, when asked for port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits until the server let go of what it reads (the producer among
    /// them), so that nothing outlives the broker connection.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How long connections may take to finish their requests once the server stops (a client
/// trickling a body, a streaming route): then they are dropped.
const GRACE: Duration = Duration::from_secs(5);

/// Accepts connections until `stop`, each served by HTTP/1 with a header read timeout; then
/// lets the connections finish their requests (graceful shutdown) for at most [`GRACE`].
async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
    what: &'static str,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait, rather than spin.
                    tracing::warn!(error = %e, "{what}: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(GRACE, finished).await.is_err() {
        tracing::debug!("{what}: connections still open after {GRACE:?} are dropped");
        connections.abort_all();
    }
}

fn probe(report: Report) -> Response {
    let code = if report.ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report)).into_response()
}

async fn live(State(e): State<Arc<Endpoints>>) -> Response {
    probe(e.health.live())
}

async fn ready(State(e): State<Arc<Endpoints>>) -> Response {
    probe(e.health.ready())
}

async fn metrics(State(e): State<Arc<Endpoints>>) -> Response {
    let queue = i64::from(e.producer.in_flight());
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        e.metrics.encode(queue),
    )
        .into_response()
}
