//! Telemetry from configuration alone, in a service process on a real broker (tansu): JSON log
//! lines, and spans exported over OTLP/HTTP to a collector.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_testkit::probe::Work;
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::Tansu;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;

const PROBE: &str = env!("CARGO_BIN_EXE_probe");

/// What the fake collector received: content type and body of each export.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn collect(State(rx): State<Received>, headers: HeaderMap, body: Bytes) -> &'static str {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    rx.lock().unwrap().push((ct, body.to_vec()));
    ""
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_spans_exported_to_the_configured_collector() {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let broker = Tansu::start();
    let mut env = broker.env();
    env.extend([
        (
            "ATOLL_TELEMETRY__OTLP_ENDPOINT".to_owned(),
            format!("http://{collector}"),
        ),
        ("ATOLL_TELEMETRY__LOG_FORMAT".to_owned(), "json".to_owned()),
    ]);
    let running = broker.driver().await;
    let client = running.client("test-driver");
    for i in 0..3 {
        client
            .send(&Work {
                id: format!("t-{i}"),
            })
            .await
            .unwrap();
    }
    running.shutdown().await;
    let mut probe = Proc::start(PROBE, &[], &env);
    assert!(
        wait_until(Duration::from_secs(60), || probe.ids("work").len() == 3),
        "{}",
        probe.log()
    );
    // Stopping flushes the spans not yet exported.
    assert!(probe.terminate().success(), "{}", probe.log());

    let log = probe.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "partitions assigned" && l["listener"] == "work"),
        "{log}"
    );
    let exports = received.lock().unwrap().clone();
    assert!(!exports.is_empty(), "nothing exported");
    assert!(
        exports.iter().all(|(ct, _)| ct == "application/x-protobuf"),
        "OTLP/HTTP protobuf: {:?}",
        exports.iter().map(|(ct, _)| ct).collect::<Vec<_>>()
    );
    let all: Vec<u8> = exports.into_iter().flat_map(|(_, b)| b).collect();
    for expected in [
        "acme.test.probe",
        "process acme.test.probe.commands",
        "messaging.system",
        "acme.test.probe.commands",
        "acme.test.probe-work",
        "t-2",
    ] {
        assert!(
            contains(&all, expected),
            "no {expected:?} in the exported spans"
        );
    }
}
