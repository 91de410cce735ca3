//! The status record on librdkafka's mock cluster: a process publishes its listeners'
//! counters, failures and partitions on `private.status` under its process name every
//! interval, and a tombstone under that name when it stops.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use atoll::contract::owned_topics;
use atoll::contract::status::ProcessStatus;
use atoll::{event_service, handlers, App, Event, HandlerError, HandlerResult};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "watched", partitions = 1)]
#[derive(Default, Clone)]
struct Watched;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "job", version = 1, service = Watched)]
struct Job {
    #[event(key)]
    id: String,
}

#[handlers]
impl Watched {
    #[listener(name = "jobs")]
    async fn job(&self, job: Job) -> HandlerResult {
        if job.id == "bad" {
            return Err(HandlerError::permanent("job bad is invalid"));
        }
        Ok(())
    }
}

const STATUS: &str = "acme.test.watched.private.status";

/// Every record on the status topic now, in order: up to its end as the broker tells it.
async fn status_records(bootstrap: &str) -> Vec<OwnedMessage> {
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let (_, end) =
            rdkafka::consumer::Consumer::fetch_watermarks(&c, STATUS, 0, Duration::from_secs(10))
                .unwrap();
        let n = usize::try_from(end).unwrap();
        common::read_topic_within(&bootstrap, STATUS, 1, n, Duration::from_secs(30))
    })
    .await
    .unwrap()
}

/// The last record of each process (`None` for a tombstone).
fn latest(records: &[OwnedMessage]) -> HashMap<String, Option<ProcessStatus>> {
    records
        .iter()
        .map(|m| {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let value = m
                .payload()
                .map(|v| ProcessStatus::from_json(v).unwrap().expect("format 1"));
            (key, value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_publishes_its_status_and_removes_it_when_it_stops() {
    let (cluster, mut config) = common::mock_cluster(owned_topics::<Watched>());
    config.status.interval_ms = 200;
    config.status.build = Some("build-7".into());
    // Committed offsets and ends come with librdkafka's statistics.
    (config.kafka.properties).insert("statistics.interval.ms".into(), "200".into());
    let running = App::new(config).service(Watched).start().await.unwrap();
    let process = running.process_name().to_owned();
    let client = running.client("test");
    for id in ["a", "b", "bad", "c", "d"] {
        client.send(&Job { id: id.into() }).await.unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let records = status_records(&bootstrap).await;
        if let Some(Some(s)) = latest(&records).remove(&process) {
            let done = s.listeners.first().is_some_and(|l| {
                l.handled == 4 && l.partitions.first().is_some_and(|p| p.committed == Some(5))
            }) && s.produced.get("acme.test.watched.private.dlq") == Some(&1);
            if done {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the status never showed it all: {s:#?}"
            );
        }
        assert!(Instant::now() < deadline, "no status record of {process}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.service, "acme.test.watched");
    // What the process's producer sent: the five jobs, and the one dead letter.
    assert_eq!(status.produced.get("acme.test.watched.commands"), Some(&5));
    assert_eq!(status.build.as_deref(), Some("build-7"));
    assert_eq!(status.interval_ms, 200);
    assert!(status.at_ms >= status.started_ms);
    let jobs = &status.listeners[0];
    assert_eq!(
        (jobs.name.as_str(), jobs.group.as_str()),
        ("jobs", "acme.test.watched-jobs")
    );
    assert_eq!((jobs.consumed, jobs.dead_lettered), (5, 1));
    assert_eq!(jobs.failed.get("handler"), Some(&1));
    let error = &jobs.last_errors[0];
    assert_eq!(
        (error.kind.as_str(), error.then.as_str()),
        ("handler", "dead-lettered")
    );
    assert_eq!(error.cause, "job bad is invalid");
    assert_eq!(
        (error.topic.as_str(), error.offset),
        ("acme.test.watched.commands", 2)
    );
    let partition = &jobs.partitions[0];
    assert_eq!((partition.end, partition.lag), (Some(5), Some(0)));
    assert!(!partition.paused && partition.blocked.is_none());
    assert!(
        status.outbox.is_none() && status.inbox.is_none(),
        "no store"
    );

    running.shutdown().await;
    let records = status_records(&bootstrap).await;
    assert_eq!(
        latest(&records).get(&process),
        Some(&None),
        "a tombstone last"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_told_not_to_publishes_no_status() {
    let (cluster, mut config) = common::mock_cluster(owned_topics::<Watched>());
    config.status.interval_ms = 0;
    let running = App::new(config).service(Watched).start().await.unwrap();
    running
        .client("test")
        .send(&Job { id: "a".into() })
        .await
        .unwrap();
    // When on, a record goes out as the process starts, and again every interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.shutdown().await;
    assert!(status_records(&cluster.bootstrap_servers())
        .await
        .is_empty());
}
