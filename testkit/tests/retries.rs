//! Retries, budgets and dead-lettering of handler failures, on a real broker (tansu).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::config::{Config, ListenerSettings, RetryMode};
use atoll::{event_service, handlers, App, Event, HandlerError, HandlerResult, Meta, Running};
use atoll_testkit::{committed, header, read_topic, Tansu};
use rdkafka::{Message, Offset};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "retrier", partitions = 3)]
#[derive(Clone, Default)]
struct Retrier {
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    /// Handled ids with when they were handled.
    handled: Arc<Mutex<Vec<(String, Instant)>>>,
    /// Every attempt: id and when it began.
    tried: Arc<Mutex<Vec<(String, Instant)>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "job", version = 1, service = Retrier)]
struct Job {
    id: String,
    /// `ok`, `fail_twice`, `permanent`, `forever` or `panic`.
    behaviour: String,
}

#[handlers]
impl Retrier {
    #[listener(name = "jobs")]
    async fn job(&self, _meta: Meta, job: Job) -> HandlerResult {
        self.tried
            .lock()
            .unwrap()
            .push((job.id.clone(), Instant::now()));
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(job.id.clone()).or_default();
            *n += 1;
            *n
        };
        match job.behaviour.as_str() {
            "fail_twice" if attempt <= 2 => return Err(HandlerError::transient("not yet")),
            "permanent" => return Err(HandlerError::permanent("never valid")),
            "forever" => return Err(HandlerError::transient("still down")),
            "panic" => panic!("job {} panicked", job.id),
            _ => {}
        }
        self.handled.lock().unwrap().push((job.id, Instant::now()));
        Ok(())
    }
}

impl Retrier {
    fn handled_ids(&self) -> BTreeSet<String> {
        self.handled
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When each attempt at `id` began.
    fn tries(&self, id: &str) -> Vec<Instant> {
        let tried = self.tried.lock().unwrap();
        tried
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, at)| *at)
            .collect()
    }

    fn attempts(&self, id: &str) -> u32 {
        self.attempts.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

const TOPIC: &str = "acme.test.retrier.commands";
const GROUP: &str = "acme.test.retrier-jobs";

async fn start(broker: &Tansu, svc: &Retrier, settings: ListenerSettings) -> Running {
    let mut config: Config = broker.config();
    config.listener.backoff_ms = 20;
    config.listeners.insert("jobs".into(), settings);
    App::new(config).service(svc.clone()).start().await.unwrap()
}

/// Sends jobs keyed `key` (so they share a partition), in order.
async fn send(running: &Running, key: &str, jobs: &[(&str, &str)]) {
    let client = running.client("test");
    for (id, behaviour) in jobs {
        let (headers, _) = atoll::envelope::Outgoing::new(Job::ce_type(), "test").headers();
        let job = Job {
            id: (*id).into(),
            behaviour: (*behaviour).into(),
        };
        client
            .send_raw(
                TOPIC,
                Some(key.as_bytes()),
                &serde_json::to_vec(&job).unwrap(),
                headers,
            )
            .await
            .unwrap();
    }
}

async fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Reads up to `n` dead letters, waiting at most `timeout`.
async fn dead_letters(
    broker: &Tansu,
    n: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let b = broker.bootstrap();
    tokio::task::spawn_blocking(move || read_topic(&b, "acme.test.retrier.private.dlq", n, timeout))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_twice_then_success_is_handled_once_and_committed() {
    let broker = Tansu::start();
    let svc = Retrier::default();
    let running = start(&broker, &svc, ListenerSettings::default()).await;
    send(&running, "k", &[("a", "fail_twice"), ("b", "ok")]).await;
    assert!(wait(Duration::from_secs(30), || svc.handled_ids().len() == 2).await);
    let stats = running.stats();
    running.shutdown().await;
    assert_eq!(svc.attempts("a"), 3);
    assert_eq!(
        svc.handled
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| id == "a")
            .count(),
        1
    );
    assert_eq!(
        (stats[0].handled, stats[0].retries, stats[0].dead_lettered),
        (2, 2, 0)
    );
    let b = broker.bootstrap();
    let offsets = tokio::task::spawn_blocking(move || committed(&b, GROUP, TOPIC, 3))
        .await
        .unwrap();
    assert!(
        offsets.contains(&Offset::Offset(2)),
        "both records committed: {offsets:?}"
    );
    assert!(
        dead_letters(&broker, 1, Duration::from_secs(3))
            .await
            .is_empty(),
        "nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_and_spent_budgets_are_dead_lettered_with_their_attempts() {
    let broker = Tansu::start();
    let svc = Retrier::default();
    let settings = ListenerSettings {
        max_attempts: Some(4),
        ..Default::default()
    };
    let running = start(&broker, &svc, settings).await;
    send(
        &running,
        "k1",
        &[
            ("perm", "permanent"),
            ("down", "forever"),
            ("boom", "panic"),
            ("after", "ok"),
        ],
    )
    .await;
    let dead = dead_letters(&broker, 3, Duration::from_secs(30)).await;
    assert!(
        wait(Duration::from_secs(10), || svc
            .handled_ids()
            .contains("after"))
        .await,
        "the service is still up"
    );
    let stats = running.stats();
    running.shutdown().await;
    let by_id: HashMap<String, &rdkafka::message::OwnedMessage> = dead
        .iter()
        .map(|m| {
            (
                serde_json::from_slice::<Job>(m.payload().unwrap())
                    .unwrap()
                    .id,
                m,
            )
        })
        .collect();
    assert_eq!(by_id.len(), 3);
    let h = |id: &str, key: &str| header(by_id[id], key).unwrap().to_owned();
    assert_eq!(
        (
            h("perm", "atoll_dlq_error_kind"),
            h("perm", "atoll_dlq_attempts")
        ),
        ("handler".into(), "1".into())
    );
    assert_eq!(svc.attempts("perm"), 1);
    assert_eq!(
        (
            h("down", "atoll_dlq_error_kind"),
            h("down", "atoll_dlq_attempts")
        ),
        ("handler".into(), "4".into())
    );
    assert_eq!(svc.attempts("down"), 4, "the configured budget, no more");
    assert_eq!(h("down", "atoll_dlq_error"), "still down");
    assert_eq!(
        (
            h("boom", "atoll_dlq_error_kind"),
            h("boom", "atoll_dlq_attempts")
        ),
        ("panic".into(), "1".into())
    );
    assert!(h("boom", "atoll_dlq_error").contains("job boom panicked"));
    assert_eq!(stats[0].dead_lettered, 3);
    assert_eq!(stats[0].retries, 3, "three in-place retries of `down`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_blocking_retries_let_the_partition_move_on_then_dead_letter() {
    let broker = Tansu::start();
    let svc = Retrier::default();
    let settings = ListenerSettings {
        max_attempts: Some(2),
        retry: Some(RetryMode::NonBlocking),
        retry_topic_attempts: Some(2),
        // Its 4th attempt comes no sooner than 3 s + 6 s after its 2nd: time enough, on a
        // loaded machine, for the 50 records behind it.
        retry_topic_delay_ms: Some(3_000),
        ..Default::default()
    };
    let running = start(&broker, &svc, settings).await;
    // A poison record, then 50 records behind it in the same partition.
    let started = Instant::now();
    let behind: Vec<(String, &str)> = (0..50).map(|i| (format!("behind-{i}"), "ok")).collect();
    let mut jobs: Vec<(&str, &str)> = vec![("poison", "forever")];
    jobs.extend(behind.iter().map(|(id, b)| (id.as_str(), *b)));
    send(&running, "same-key", &jobs).await;
    assert!(wait(Duration::from_secs(30), || svc.handled_ids().len() == 50).await);
    let behind_done = started.elapsed();
    let poison_attempts_then = svc.attempts("poison");
    let dead = dead_letters(&broker, 1, Duration::from_secs(30)).await;
    let poison_done = started.elapsed();
    running.shutdown().await;
    println!(
        "records behind the poison handled after {behind_done:?} (poison at attempt {poison_attempts_then}); \
         poison dead-lettered after {poison_done:?}"
    );
    assert!(
        poison_attempts_then < 4,
        "the 50 were handled while the poison was still retrying"
    );
    assert!(
        behind_done + Duration::from_millis(1_000) < poison_done,
        "{behind_done:?} vs {poison_done:?}"
    );
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(
        header(d, "atoll_dlq_attempts"),
        Some("4"),
        "2 in place + 2 through the retry topic"
    );
    assert_eq!(
        header(d, "atoll_dlq_original_topic"),
        Some(TOPIC),
        "named as the record it started as"
    );
    assert_eq!(header(d, "atoll_dlq_original_offset"), Some("0"));
    assert_eq!(
        header(d, "atoll_retry_listener"),
        None,
        "retry headers are not part of the dead letter"
    );
    assert_eq!(d.key(), Some(&b"same-key"[..]));
    assert_eq!(svc.attempts("poison"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_mixed_into_valid_records_loses_nothing() {
    let broker = Tansu::start();
    let svc = Retrier::default();
    let running = start(&broker, &svc, ListenerSettings::default()).await;
    let client = running.client("test");
    let mut rng_state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let (mut valid, mut garbage) = (0, 0);
    let mut records: Vec<(String, Vec<u8>)> = Vec::with_capacity(11_000);
    while valid + garbage < 11_000 {
        let is_garbage = garbage < 1_000 && (next() % 11 == 0 || valid == 10_000);
        let key = format!("k{}", next() % 97);
        if is_garbage {
            records.push((key, (0..(next() % 64)).map(|_| next() as u8).collect()));
            garbage += 1;
        } else {
            let job = Job {
                id: format!("v{valid}"),
                behaviour: "ok".into(),
            };
            records.push((key, serde_json::to_vec(&job).unwrap()));
            valid += 1;
        }
    }
    for chunk in records.chunks(500) {
        let sends = chunk.iter().map(|(key, bytes)| {
            let (headers, _) = atoll::envelope::Outgoing::new(Job::ce_type(), "test").headers();
            client.send_raw(TOPIC, Some(key.as_bytes()), bytes, headers)
        });
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
    }
    assert!(
        wait(Duration::from_secs(120), || svc.handled_ids().len()
            == 10_000)
        .await,
        "handled {}",
        svc.handled_ids().len()
    );
    let dead = dead_letters(&broker, 1_000, Duration::from_secs(60)).await;
    let stats = running.stats();
    running.shutdown().await;
    assert_eq!(dead.len(), 1_000);
    assert!(dead
        .iter()
        .all(|m| header(m, "atoll_dlq_error_kind") == Some("decode")));
    assert_eq!((stats[0].handled, stats[0].dead_lettered), (10_000, 1_000));
}

/// A record left on the retry topic by a listener since set to `strict` is not skipped by
/// everyone: it is dead-lettered in the listener's name, for a replay to its main path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_topic_records_of_a_listener_now_strict_are_dead_lettered() {
    let broker = Tansu::start();
    let svc = Retrier::default();
    let non_blocking = ListenerSettings {
        max_attempts: Some(1),
        retry: Some(RetryMode::NonBlocking),
        retry_topic_attempts: Some(3),
        retry_topic_delay_ms: Some(120_000),
        ..Default::default()
    };
    let running = start(&broker, &svc, non_blocking).await;
    send(&running, "k", &[("stranded", "forever"), ("fine", "ok")]).await;
    assert!(
        wait(Duration::from_secs(30), || svc
            .handled_ids()
            .contains("fine"))
        .await
    );
    let b = broker.bootstrap();
    let retried = tokio::task::spawn_blocking(move || {
        read_topic(
            &b,
            "acme.test.retrier.private.retry-120000",
            1,
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        retried.len(),
        1,
        "the failed record went to its delivery's retry tier"
    );
    // Stopped before its retry is due, then restarted with `strict` retries: no ladder has
    // the tier any more, and it is read for being on the broker.
    running.shutdown().await;
    let strict = ListenerSettings {
        retry: Some(RetryMode::Strict),
        ..Default::default()
    };
    let running = start(&broker, &svc, strict).await;
    let dead = dead_letters(&broker, 1, Duration::from_secs(40)).await;
    running.shutdown().await;
    assert_eq!(dead.len(), 1, "the stranded record was dead-lettered");
    let d = &dead[0];
    assert_eq!(header(d, "atoll_dlq_listener"), Some("jobs"));
    assert_eq!(header(d, "atoll_dlq_original_topic"), Some(TOPIC));
    assert!(
        header(d, "atoll_dlq_error")
            .is_some_and(|e| e.contains("no longer takes records from the retry topic")),
        "{:?}",
        header(d, "atoll_dlq_error")
    );
    assert_eq!(
        svc.attempts("stranded"),
        1,
        "never handled after the restart"
    );
}

/// A record that cannot be dead-lettered as it is (too large for the DLQ once the
/// `atoll_dlq_*` headers are added) does not stop its partition: it is dead-lettered as a
/// pointer to itself, and the record behind it is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_the_dlq_is_dead_lettered_as_a_pointer() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let broker = Tansu::start();
    let svc = Retrier::default();
    let running = start(&broker, &svc, ListenerSettings::default()).await;
    // 999,990 bytes without ce_type: bad input, just under the producer's message.max.bytes.
    let big = vec![b'x'; 999_990];
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::<[u8], [u8]>::to(TOPIC)
                .key(&b"k"[..])
                .payload(&big[..]),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    send(&running, "k", &[("behind", "ok")]).await;
    assert!(
        wait(Duration::from_secs(30), || svc
            .handled_ids()
            .contains("behind"))
        .await,
        "the record behind the oversized one was handled"
    );
    let dead = dead_letters(&broker, 1, Duration::from_secs(30)).await;
    running.shutdown().await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(header(d, "atoll_dlq_payload_omitted"), Some("999990"));
    assert_eq!(header(d, "atoll_dlq_error_kind"), Some("unknown_type"));
    let error = header(d, "atoll_dlq_error").unwrap();
    assert!(
        error.contains("no ce_type") && error.contains("too large for the DLQ"),
        "{error}"
    );
    let pointer: serde_json::Value = serde_json::from_slice(d.payload().unwrap()).unwrap();
    let partition: i32 = header(d, "atoll_dlq_original_partition")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        pointer,
        serde_json::json!({"topic": TOPIC, "partition": partition, "offset": 0})
    );
}

/// Reads `topic` for up to `n` records, waiting at most `timeout`.
async fn read(
    broker: &Tansu,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let (b, topic) = (broker.bootstrap(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_topic(&b, &topic, n, timeout))
        .await
        .unwrap()
}

/// A record failing twice goes through the tiers of its listener's ladder, one delivery each,
/// and waits each tier's delay there while its partition pauses (no handler sleeps); the
/// records behind it on its partition are handled meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_climbs_the_ladder_of_retry_tiers_waiting_each_delay() {
    let broker = Tansu::start();
    let svc = Retrier::default();
    let settings = ListenerSettings {
        max_attempts: Some(1),
        retry: Some(RetryMode::NonBlocking),
        retry_topic_attempts: Some(3),
        retry_topic_delays_ms: Some(vec![500, 2_000]),
        ..Default::default()
    };
    let running = start(&broker, &svc, settings).await;
    let behind: Vec<(String, &str)> = (0..50).map(|i| (format!("behind-{i}"), "ok")).collect();
    let mut jobs: Vec<(&str, &str)> = vec![("climber", "fail_twice")];
    jobs.extend(behind.iter().map(|(id, b)| (id.as_str(), *b)));
    send(&running, "same-key", &jobs).await;
    assert!(
        wait(Duration::from_secs(60), || svc.handled_ids().len() == 51).await,
        "handled {:?}",
        svc.handled_ids().len()
    );
    let tiers = [
        read(
            &broker,
            "acme.test.retrier.private.retry-500",
            2,
            Duration::from_secs(5),
        )
        .await,
        read(
            &broker,
            "acme.test.retrier.private.retry-2000",
            2,
            Duration::from_secs(5),
        )
        .await,
        read(
            &broker,
            "acme.test.retrier.private.retry",
            1,
            Duration::from_secs(2),
        )
        .await,
    ];
    let stats = running.stats();
    running.shutdown().await;
    let tries = svc.tries("climber");
    assert_eq!(tries.len(), 3, "{tries:?}");
    let gaps = [tries[1] - tries[0], tries[2] - tries[1]];
    println!("attempts of the climber {gaps:?} apart");
    // Not before each delay (less the millisecond the header's whole milliseconds may cut).
    assert!(gaps[0] >= Duration::from_millis(499), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(1_999), "{gaps:?}");
    let lens: Vec<usize> = tiers.iter().map(Vec::len).collect();
    assert_eq!(
        lens,
        [1, 1, 0],
        "one delivery on each tier, none on the legacy topic"
    );
    assert_eq!(header(&tiers[0][0], "atoll_retry_delivery"), Some("1"));
    assert_eq!(header(&tiers[1][0], "atoll_retry_delivery"), Some("2"));
    assert_eq!(
        header(&tiers[1][0], "atoll_retry_original_topic"),
        Some(TOPIC)
    );
    // The 50 behind were not held up by the climber's waits.
    let last_behind = {
        let handled = svc.handled.lock().unwrap();
        handled
            .iter()
            .filter(|(id, _)| id.starts_with("behind-"))
            .map(|(_, at)| *at)
            .max()
            .unwrap()
    };
    assert!(last_behind < tries[2], "the records behind came first");
    let jobs = stats.iter().find(|s| s.listener == "jobs").unwrap();
    assert!(
        jobs.retry_pauses >= 2,
        "each wait paused its tier's partition: {jobs:?}"
    );
    assert_eq!(jobs.dead_lettered, 0);
}

/// The headers of a retry record for listener `jobs`, due at `not_before`.
fn retry_headers(
    delivery: u32,
    not_before: std::time::SystemTime,
) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::Header;
    let (mut headers, _) = atoll::envelope::Outgoing::new(Job::ce_type(), "test").headers();
    let millis = not_before
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let delivery = delivery.to_string();
    for (key, value) in [
        ("atoll_retry_listener", "jobs"),
        ("atoll_retry_attempts", "1"),
        ("atoll_retry_delivery", delivery.as_str()),
        ("atoll_retry_not_before", millis.as_str()),
        ("atoll_retry_original_topic", TOPIC),
        ("atoll_retry_original_partition", "0"),
        ("atoll_retry_original_offset", "0"),
        ("atoll_retry_error", "written by hand"),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}

/// Records left on the legacy retry topic (by versions before the tiers) and on a tier no
/// ladder has any more (a ladder changed) are still handled, each when it is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_on_the_legacy_topic_and_on_a_tier_left_behind_are_handled_when_due() {
    let broker = Tansu::start();
    let svc = Retrier::default();
    let ladder = |ms: u64| ListenerSettings {
        max_attempts: Some(1),
        retry: Some(RetryMode::NonBlocking),
        retry_topic_delays_ms: Some(vec![ms]),
        ..Default::default()
    };
    // An older ladder made its tier; the ladder is now [500]: the 60 s tier is only on the
    // broker.
    start(&broker, &svc, ladder(60_000)).await.shutdown().await;
    let running = start(&broker, &svc, ladder(500)).await;
    let client = running.client("test");
    let at = Instant::now();
    let written = std::time::SystemTime::now();
    for (topic, id, wait) in [
        ("acme.test.retrier.private.retry", "legacy", 2_000),
        ("acme.test.retrier.private.retry-60000", "stray", 1_500),
    ] {
        let job = Job {
            id: id.into(),
            behaviour: "ok".into(),
        };
        let not_before = written + Duration::from_millis(wait);
        client
            .send_raw(
                topic,
                Some(b"k"),
                &serde_json::to_vec(&job).unwrap(),
                retry_headers(1, not_before),
            )
            .await
            .unwrap();
    }
    assert!(
        wait(Duration::from_secs(30), || svc.handled_ids().len() == 2).await,
        "handled {:?}",
        svc.handled_ids()
    );
    let stats = running.stats();
    running.shutdown().await;
    let waited = |id: &str| svc.tries(id)[0] - at;
    println!(
        "legacy handled after {:?}, stray after {:?}",
        waited("legacy"),
        waited("stray")
    );
    // Not before its time (less the millisecond the header's whole milliseconds may cut).
    assert!(waited("legacy") >= Duration::from_millis(1_999));
    assert!(waited("stray") >= Duration::from_millis(1_499));
    assert_eq!((svc.attempts("legacy"), svc.attempts("stray")), (1, 1));
    let jobs = stats.iter().find(|s| s.listener == "jobs").unwrap();
    assert!(jobs.retry_pauses >= 1, "{jobs:?}");
}
