//! Operator holds on librdkafka's mock cluster: a hold on a listener's partition, written on
//! the service's `private.control` topic, keeps that partition unhandled (before the process
//! starts, while it runs, across its restart) while the other partitions go on; lifting it
//! (a tombstone) resumes the partition from where it stopped. The status record shows the hold.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::contract::control::{Hold, HoldKey};
use atoll::contract::owned_topics;
use atoll::contract::status::ProcessStatus;
use atoll::{event_service, handlers, App, Event, HandlerResult, Meta};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "held", partitions = 2)]
#[derive(Default, Clone)]
struct Held {
    /// `(partition, id)` of every record handled.
    seen: Arc<Mutex<Vec<(i32, String)>>>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "job", version = 1, service = Held)]
struct Job {
    #[event(key)]
    id: String,
}

#[handlers]
impl Held {
    #[listener(name = "jobs")]
    async fn job(&self, meta: Meta, job: Job) -> HandlerResult {
        self.seen.lock().unwrap().push((meta.partition, job.id));
        Ok(())
    }
}

const CONTROL: &str = "acme.test.held.private.control";
const COMMANDS: &str = "acme.test.held.commands";
const STATUS: &str = "acme.test.held.private.status";

/// Holds (`Some`) or lifts `jobs/<partition>` as an operator tool would.
async fn hold(bootstrap: &str, partition: i32, hold: Option<Hold>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let key = HoldKey::new("jobs", partition).to_string();
    let value = hold.map(|h| serde_json::to_vec(&h).unwrap());
    let mut record = FutureRecord::to(CONTROL).partition(0).key(&key);
    if let Some(v) = &value {
        record = record.payload(v);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
}

/// How many records each partition of the commands topic holds.
async fn written(bootstrap: &str, total: usize) -> [usize; 2] {
    let bootstrap = bootstrap.to_owned();
    let records =
        tokio::task::spawn_blocking(move || common::read_topic(&bootstrap, COMMANDS, 2, total))
            .await
            .unwrap();
    assert_eq!(records.len(), total);
    let mut n = [0; 2];
    for m in records {
        n[m.partition() as usize] += 1;
    }
    n
}

/// How many records of each partition were handled.
fn handled(svc: &Held) -> [usize; 2] {
    let mut n = [0; 2];
    for (p, _) in svc.seen.lock().unwrap().iter() {
        n[*p as usize] += 1;
    }
    n
}

/// Waits until the handled counts are `want` (panics after 30 s).
async fn handled_becomes(svc: &Held, want: [usize; 2], what: &str) {
    let reached = common::eventually(30, || async { handled(svc) == want }).await;
    assert!(reached, "{what}: handled {:?}, want {want:?}", handled(svc));
}

/// The latest status record of `process` whose `jobs` listener holds both partitions and
/// shows `held` (the partitions it pauses for a hold).
async fn status_shows(bootstrap: &str, process: &str, held: &[i32]) -> ProcessStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = bootstrap.to_owned();
        let records = tokio::task::spawn_blocking(move || {
            common::read_topic_within(&b, STATUS, 1, usize::MAX, Duration::from_millis(1500))
        })
        .await
        .unwrap();
        let last = records
            .iter()
            .rev()
            .find(|m| m.key() == Some(process.as_bytes()))
            .and_then(|m| m.payload())
            .and_then(|v| ProcessStatus::from_json(v).unwrap());
        if let Some(s) = &last {
            let parts = &s.listeners[0].partitions;
            let main: Vec<_> = parts.iter().filter(|p| p.topic == COMMANDS).collect();
            let shown: Vec<i32> = main
                .iter()
                .filter(|p| p.held.is_some())
                .map(|p| p.partition)
                .collect();
            if main.len() == 2 && shown == held {
                return s.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no status of {process} showing {held:?} held: {last:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_partition_waits_until_its_hold_is_lifted_across_a_restart() {
    let (cluster, mut config) = common::mock_cluster(owned_topics::<Held>());
    config.status.interval_ms = 200;
    (config.kafka.properties).insert("statistics.interval.ms".into(), "200".into());
    // The restarted process joins once the mock cluster ended the first one's session.
    (config.kafka.properties).insert("session.timeout.ms".into(), "6000".into());
    let bootstrap = cluster.bootstrap_servers();
    // Held before the process starts: never handled, not even before the hold is read.
    hold(&bootstrap, 0, Some(Hold::new("test", "poison record", 1))).await;

    let svc = Held::default();
    let running = App::new(config.clone())
        .service(svc.clone())
        .start()
        .await
        .unwrap();
    let client = running.client("test");
    for i in 0..20 {
        client
            .send(&Job {
                id: format!("a{i}"),
            })
            .await
            .unwrap();
    }
    let first = written(&bootstrap, 20).await;
    assert!(
        first[0] > 0 && first[1] > 0,
        "both partitions get jobs: {first:?}"
    );
    handled_becomes(&svc, [0, first[1]], "partition 1 goes on").await;
    let status = status_shows(&bootstrap, running.process_name(), &[0]).await;
    let part = &status.listeners[0].partitions;
    let held = part.iter().find(|p| p.partition == 0).unwrap();
    let hold_shown = held.held.as_ref().unwrap();
    assert_eq!(
        (hold_shown.by.as_str(), hold_shown.reason.as_str()),
        ("test", "poison record")
    );
    // Held since its assignment: never fetched, so nothing committed (and its end unknown to
    // the process: librdkafka learns it from fetches).
    assert_eq!(held.committed, None, "nothing of it handled");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handled(&svc), [0, first[1]], "partition 0 stays held");

    // A restart: the hold stands.
    running.shutdown().await;
    let running = App::new(config.clone())
        .service(svc.clone())
        .start()
        .await
        .unwrap();
    status_shows(&bootstrap, running.process_name(), &[0]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handled(&svc), [0, first[1]], "still held after a restart");

    // Lifted: partition 0's records are handled, once each.
    hold(&bootstrap, 0, None).await;
    handled_becomes(&svc, first, "partition 0 resumes").await;

    // Held while it runs: partition 1 stops, partition 0 goes on.
    hold(&bootstrap, 1, Some(Hold::new("test", "maintenance", 2))).await;
    status_shows(&bootstrap, running.process_name(), &[1]).await;
    let client = running.client("test");
    for i in 0..20 {
        client
            .send(&Job {
                id: format!("b{i}"),
            })
            .await
            .unwrap();
    }
    let both = written(&bootstrap, 40).await;
    handled_becomes(&svc, [both[0], first[1]], "partition 0 goes on").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handled(&svc), [both[0], first[1]], "partition 1 held");
    hold(&bootstrap, 1, None).await;
    handled_becomes(&svc, both, "partition 1 resumes").await;
    let mut ids: Vec<String> = svc
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "each job handled once");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_no_hold_changes_nothing() {
    let (cluster, config) = common::mock_cluster(owned_topics::<Held>());
    let bootstrap = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    // A key that names no partition, and a value that is no hold: both skipped.
    for (key, value) in [("jobs", "{}"), ("jobs/0", "not json")] {
        let record = FutureRecord::to(CONTROL)
            .partition(0)
            .key(key)
            .payload(value);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let svc = Held::default();
    let running = App::new(config).service(svc.clone()).start().await.unwrap();
    let client = running.client("test");
    for i in 0..10 {
        client
            .send(&Job {
                id: format!("c{i}"),
            })
            .await
            .unwrap();
    }
    let n = written(&bootstrap, 10).await;
    handled_becomes(&svc, n, "nothing is held").await;
    running.shutdown().await;
}
