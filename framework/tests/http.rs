//! The health and metrics endpoints (`http.addr`), on the mock cluster: readiness follows the
//! group join and the broker's reachability; `/metrics` parses and its figures move with
//! traffic, lag per partition included.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atoll::config::Config;
use atoll::{event_service, handlers, App, Context, Event, HandlerError, HandlerResult, Service};
use common::{eventually, get, mock_cluster, scrape};
use rdkafka::mocking::MockCluster;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "gate", partitions = 3)]
#[derive(Default, Clone)]
struct Gate {
    open: Arc<AtomicBool>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "job", version = 1, service = Gate)]
struct Job {
    #[event(key)]
    id: String,
    n: u32,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "job_done", version = 1, service = Gate)]
struct JobDone {
    #[event(key)]
    id: String,
}

#[handlers]
impl Gate {
    #[listener(name = "jobs")]
    async fn job(&self, ctx: Context<Self>, job: Job) -> HandlerResult {
        while !self.open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if job.n % 10 == 9 {
            return Err(HandlerError::permanent(format!("job {} is refused", job.n)));
        }
        ctx.emit(JobDone { id: job.id }).await?;
        Ok(())
    }
}

/// The labels of the listener's series for its commands topic (it also reads the service's
/// retry topic).
const CMDS: [(&str, &str); 3] = [
    ("service", "acme.test.gate"),
    ("listener", "jobs"),
    ("topic", "acme.test.gate.commands"),
];

fn cluster() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Config,
) {
    let (cluster, mut config) = mock_cluster(atoll::contract::owned_topics::<Gate>());
    config
        .kafka
        .properties
        .insert("statistics.interval.ms".into(), "200".into());
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    (cluster, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_the_join_and_not_while_the_broker_is_unreachable() {
    let (cluster, config) = cluster();
    // No broker yet: the listener cannot join.
    cluster.broker_down(1).unwrap();
    let gate = Gate::default();
    gate.open.store(true, Ordering::SeqCst);
    let running = App::new(config).service(gate).start().await.unwrap();
    let addr = running.http_addr().expect("http.addr is set");
    let (status, body) = get(addr, "/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("has not joined its group yet"), "{body}");
    let (status, body) = get(addr, "/health/live").await;
    assert_eq!(status, 200, "live while waiting for the broker: {body}");

    cluster.broker_up(1).unwrap();
    assert!(
        eventually(60, || async { get(addr, "/health/ready").await.0 == 200 }).await,
        "never ready: {}",
        get(addr, "/health/ready").await.1
    );
    let (_, body) = get(addr, "/health/ready").await;
    assert!(body.contains(r#""status":"ready""#), "{body}");

    cluster.broker_down(1).unwrap();
    assert!(
        eventually(60, || async {
            let (status, body) = get(addr, "/health/ready").await;
            status == 503 && body.contains("brokers unreachable")
        })
        .await,
        "still ready with the broker down: {}",
        get(addr, "/health/ready").await.1
    );
    assert_eq!(
        get(addr, "/health/live").await.0,
        200,
        "a broker outage is not a stall"
    );

    cluster.broker_up(1).unwrap();
    assert!(
        eventually(60, || async { get(addr, "/health/ready").await.0 == 200 }).await,
        "not ready again after the broker came back: {}",
        get(addr, "/health/ready").await.1
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_report_lag_per_partition() {
    const N: u32 = 30;
    let (_cluster, config) = cluster();
    let driver = App::new(config.clone()).start().await.unwrap();
    let client = driver.client("test");
    for n in 0..N {
        client
            .send(&Job {
                id: format!("job-{n}"),
                n,
            })
            .await
            .unwrap();
    }
    let gate = Gate::default();
    let running = App::new(config)
        .service(gate.clone())
        .start()
        .await
        .unwrap();
    let addr = running.http_addr().unwrap();
    let svc = [("service", "acme.test.gate"), ("listener", "jobs")];

    // Closed gate: one record per partition waits in its handler; the backlog is the lag.
    assert!(
        eventually(60, || async {
            let m = scrape(addr).await;
            let lag = m.values("atoll_consumer_lag", &CMDS);
            lag.len() == 3 && m.sum("atoll_consumer_lag", &svc) == f64::from(N)
        })
        .await,
        "no lag of {N} over 3 partitions: {:?}",
        scrape(addr).await.values("atoll_consumer_lag", &CMDS)
    );
    let m = scrape(addr).await;
    let mut partitions: Vec<String> = m
        .values("atoll_consumer_lag", &CMDS)
        .into_iter()
        .map(|(labels, _)| {
            let get = |k: &str| labels.iter().find(|(lk, _)| lk == k).unwrap().1.clone();
            assert_eq!(get("topic"), "acme.test.gate.commands");
            assert_eq!(get("group"), "acme.test.gate-jobs");
            get("partition")
        })
        .collect();
    partitions.sort();
    assert_eq!(partitions, ["0", "1", "2"]);
    // Behind in time too: the age of what the consumer reads (it waits behind the gate).
    let seconds = m.values("atoll_consumer_lag_seconds", &CMDS);
    assert_eq!(seconds.len(), 3, "{seconds:?}");
    assert!(seconds.iter().all(|(_, s)| *s >= 0.0), "{seconds:?}");
    assert!(m.sum("atoll_records_in_flight", &svc) >= 1.0, "{m:?}");
    assert!(m.sum("atoll_records_consumed_total", &svc) >= 1.0);
    assert_eq!(m.sum("atoll_records_handled_total", &svc), 0.0);
    assert_eq!(
        m.sum("atoll_assigned_partitions", &svc),
        6.0,
        "3 of its commands topic, 3 of the service's retry topic (its first listener reads it)"
    );

    gate.open.store(true, Ordering::SeqCst);
    let refused = f64::from(N / 10);
    assert!(
        eventually(60, || async {
            let m = scrape(addr).await;
            m.sum("atoll_records_handled_total", &svc) == f64::from(N) - refused
                && m.sum("atoll_records_dead_lettered_total", &svc) == refused
                && m.sum("atoll_consumer_lag", &svc) == 0.0
        })
        .await,
        "figures did not settle: {:?}",
        scrape(addr).await
    );
    let m = scrape(addr).await;
    assert_eq!(m.sum("atoll_records_consumed_total", &svc), f64::from(N));
    // The dead letters were produced, and their acknowledgements timed.
    assert!(
        m.sum("atoll_records_produced_total", &[]) >= refused,
        "{m:?}"
    );
    assert!(
        m.sum("atoll_produce_latency_seconds_count", &[]) >= refused,
        "{m:?}"
    );
    assert_eq!(m.sum("atoll_produce_errors_total", &[]), 0.0);
    assert_eq!(
        m.sum(
            "atoll_records_failed_total",
            &[svc[0], svc[1], ("kind", "handler")]
        ),
        refused
    );
    assert_eq!(
        m.sum("atoll_records_retried_total", &svc),
        0.0,
        "permanent: no retry"
    );
    assert_eq!(m.sum("atoll_records_in_flight", &svc), 0.0);
    assert_eq!(
        m.sum("atoll_handler_duration_seconds_count", &svc),
        f64::from(N)
    );
    assert!(m.sum("atoll_commit_duration_seconds_count", &svc) >= 1.0);
    assert_eq!(m.sum("atoll_commits_failed_total", &svc), 0.0);
    assert_eq!(m.values("atoll_producer_queue_depth", &[]).len(), 1);
    let stats = &running.stats()[0];
    assert_eq!(
        (stats.handled, stats.dead_lettered),
        (u64::from(N) - N as u64 / 10, N as u64 / 10),
        "the same figures as Running::stats"
    );
    running.shutdown().await;
    driver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (_cluster, mut config) = cluster();
    config.http.addr = Some(taken.local_addr().unwrap());
    let e = App::new(config)
        .service(Gate::default())
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("http.addr") && e.contains("cannot listen"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_is_counted_and_a_later_one_lands() {
    const N: u32 = 20;
    let (cluster, mut config) = cluster();
    config.listener.commit_batch = 1;
    let gate = Gate::default();
    gate.open.store(true, Ordering::SeqCst);
    // The broker refuses the group's first offset commit for good.
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::OffsetCommit,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED],
    );
    let running = App::new(config).service(gate).start().await.unwrap();
    let addr = running.http_addr().unwrap();
    let client = running.client("test");
    for n in 0..N {
        let id = format!("job-{n}");
        // Never 9, 19: nothing refused, every record commits.
        client.send(&Job { id, n: n % 9 }).await.unwrap();
    }
    let svc = [("service", "acme.test.gate"), ("listener", "jobs")];
    assert!(
        eventually(60, || async {
            let m = scrape(addr).await;
            m.sum("atoll_records_handled_total", &svc) == f64::from(N)
                && m.sum("atoll_commits_failed_total", &svc) == 1.0
                && m.values("atoll_consumer_lag", &CMDS).len() == 3
                && m.sum("atoll_consumer_lag", &svc) == 0.0
        })
        .await,
        "{:?}",
        scrape(addr).await
    );
    running.shutdown().await;
}

/// A dead letter that cannot be written (the DLQ topic is missing) keeps its partition
/// stopped, nothing skipped, and says so: `/health/ready` gives the reason and
/// `atoll_partitions_blocked` counts the partition, until the topic exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_stopped_behind_a_failing_dead_letter_write_shows_until_it_moves() {
    let dlq = Gate::ID.dlq();
    let topics = atoll::contract::owned_topics::<Gate>();
    let (cluster, mut config) = mock_cluster(topics.into_iter().filter(|t| t.name != dlq));
    config.listener.backoff_ms = 50;
    config
        .kafka
        .properties
        .insert("topic.metadata.propagation.max.ms".into(), "500".into());
    config
        .kafka
        .properties
        .insert("allow.auto.create.topics".into(), "false".into());
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    let gate = Gate::default();
    gate.open.store(true, Ordering::SeqCst);
    let running = App::new(config).service(gate).start().await.unwrap();
    let addr = running.http_addr().expect("http.addr is set");
    let client = running.client("test");
    // Refused (dead-lettered), then a record behind it on the same partition.
    for n in [9, 1] {
        let id = "same".to_owned();
        client.send(&Job { id, n }).await.unwrap();
    }
    let svc = [("service", "acme.test.gate")];
    assert!(
        eventually(60, || async {
            let (status, body) = get(addr, "/health/ready").await;
            status == 503 && body.contains("stopped") && body.contains(dlq.as_str())
        })
        .await,
        "not shown: {}",
        get(addr, "/health/ready").await.1
    );
    let m = scrape(addr).await;
    assert_eq!(m.sum("atoll_partitions_blocked", &svc), 1.0, "{m:?}");
    assert_eq!(
        m.sum("atoll_records_handled_total", &svc),
        0.0,
        "nothing passed the stopped record"
    );

    cluster.create_topic(dlq.as_str(), 1, 1).unwrap();
    assert!(
        eventually(60, || async {
            let m = scrape(addr).await;
            m.sum("atoll_records_handled_total", &svc) == 1.0
                && m.sum("atoll_partitions_blocked", &svc) == 0.0
        })
        .await,
        "the partition did not move again: {:?}",
        scrape(addr).await
    );
    assert_eq!(get(addr, "/health/ready").await.0, 200);
    assert_eq!(
        scrape(addr)
            .await
            .sum("atoll_records_dead_lettered_total", &svc),
        1.0
    );
    running.shutdown().await;
}

/// A client that never finishes its request headers (slowloris) is cut off after
/// `http.header_read_timeout_ms`; a body over `http.max_body_bytes` is refused with 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_large_bodies_refused() {
    use std::io::{Read, Write};
    let mut config = Config::default();
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    let config = Config::from_figment(
        Config::figment(std::path::Path::new("/nonexistent/atoll.toml"))
            .merge(figment::providers::Serialized::defaults(&config))
            .merge(figment::providers::Serialized::default(
                "http.header_read_timeout_ms",
                1000,
            ))
            .merge(figment::providers::Serialized::default(
                "http.max_body_bytes",
                1024,
            )),
    )
    .expect("http.header_read_timeout_ms and http.max_body_bytes are settings");
    let echo = axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: String| async move { body.len().to_string() }),
    );
    let running = App::new(config).routes(echo).start().await.unwrap();
    let addr = running.http_addr().unwrap();
    let cut_off = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: atoll\r\nX-Slow: ")
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
        // The server answers 408 or closes: either way the read ends before its timeout.
        let closed = s.read(&mut buf).is_ok();
        (closed, started.elapsed())
    })
    .await
    .unwrap();
    assert!(
        cut_off.0 && cut_off.1 < Duration::from_secs(4),
        "a request whose headers never end is cut off: {cut_off:?}"
    );
    let client = reqwest::Client::new();
    let small = client
        .post(format!("http://{addr}/echo"))
        .body("x".repeat(100))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status().as_u16(), 200);
    let large = client
        .post(format!("http://{addr}/echo"))
        .body("x".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(large.status().as_u16(), 413);
    running.shutdown().await;
}
