//! Two replicas of a transactional service on PostgreSQL, killed again and again (SIGKILL)
//! while commands flow: every effect once, each key's facts in the order they were written
//! (first occurrences by `ce_id`), and facts written twice only from a kill between a row's
//! publish and its delete (the relay publishes such a row again): counted and reported, at
//! most a batch's worth per kill.
//!
//! On noida-db (static membership: a restarted process takes its partitions back at once).
//! `TALLY_RECORDS` and `TALLY_KILLS` size it (default 2,000 commands and 4 kills, in the
//! suite); `scripts/chaos` runs it with 5,000 and 10.
//!
//! And without kills, the broker's answers slowed past a row's lease: no fact written twice.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use atoll::contract::owned_topics;
use atoll::envelope::{header_str, Outgoing};
use atoll::Event;
use atoll_testkit::probe::{Add, Added, Tally};
use atoll_testkit::proxy::Direction;
use atoll_testkit::replicas::Replicas;
use atoll_testkit::{read_topic, Tansu};
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Message;

const PROBE: &str = env!("CARGO_BIN_EXE_probe");
const KEYS: u32 = 40;
/// The most records a batch commits (`listener.batch_size`'s default).
const BATCH: usize = 100;

fn sized(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `add` commands `from..to`, round-robin over the keys, one every `pace`.
fn send_adds(bootstrap: &str, from: u32, to: u32, pace: Duration) {
    let producer = atoll_testkit::raw_producer(bootstrap);
    for i in from..to {
        let (key, n) = (format!("k{}", i % KEYS), i / KEYS);
        let (headers, _) = Outgoing::new(Add::ce_type(), "test").headers();
        let payload = serde_json::to_vec(&Add {
            key: key.clone(),
            n,
        })
        .unwrap();
        let record = BaseRecord::to("acme.test.tally.commands")
            .key(&key)
            .payload(&payload)
            .headers(headers);
        atoll_testkit::send_waiting(&producer, record);
        producer.poll(Duration::ZERO);
        std::thread::sleep(pace);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Two tally processes (`t0`, `t1`) on `broker` and a PostgreSQL of their own.
struct Tallies(Replicas);

impl std::ops::Deref for Tallies {
    type Target = Replicas;

    fn deref(&self) -> &Replicas {
        &self.0
    }
}

impl Tallies {
    /// Creates the tally's topics on `broker` and starts both processes with `settings`.
    async fn start(broker: Tansu, settings: &[(&str, &str)]) -> Self {
        let mut settings = settings.to_vec();
        // `TALLY_BATCH=1`: one store transaction per record (see docs/store.md, "Batches").
        let batch = std::env::var("TALLY_BATCH").ok();
        if let Some(b) = &batch {
            settings.push(("ATOLL_LISTENER__BATCH_SIZE", b.as_str()));
        }
        let topics = owned_topics::<Tally>();
        Self(Replicas::start(broker, PROBE, "tally", &["t0", "t1"], topics, &settings).await)
    }

    /// Sends commands `from..to`, one every 4 ms, on a thread of their own.
    fn send(&self, from: u32, to: u32) -> std::thread::JoinHandle<()> {
        let bootstrap = self.broker.bootstrap();
        std::thread::spawn(move || send_adds(&bootstrap, from, to, Duration::from_millis(4)))
    }

    /// The effects counted so far, waiting (up to 4 minutes) until there are `records`.
    async fn counted(&self, records: u32) -> Vec<(String, i64)> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
        let counted = || async {
            sqlx::query_as::<_, (String, i64)>("SELECT k, n FROM tallies")
                .fetch_all(&pool)
                .await
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut tallies = counted().await;
        while tallies.iter().map(|(_, n)| n).sum::<i64>() < i64::from(records)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
            tallies = counted().await;
        }
        pool.close().await;
        tallies
    }

    /// Asserts every effect of `records` commands once and every fact, each key's in the
    /// order written (first occurrences by `ce_id`); the facts written twice.
    async fn check(&self, records: u32) -> usize {
        let tallies = self.counted(records).await;
        let per_key = i64::from(records / KEYS);
        let wrong: Vec<_> = tallies.iter().filter(|(_, n)| *n != per_key).collect();
        assert!(
            tallies.len() == KEYS as usize && wrong.is_empty(),
            "each key counted {per_key} times: {} keys, wrong {wrong:?}\n{}",
            tallies.len(),
            self.logs()
        );
        let b = self.broker.bootstrap();
        let facts = tokio::task::spawn_blocking(move || {
            read_topic(
                &b,
                "acme.test.tally.events",
                usize::MAX,
                Duration::from_secs(20),
            )
        })
        .await
        .unwrap();
        let mut ids = HashSet::new();
        let mut by_key: HashMap<String, Vec<u32>> = HashMap::new();
        for m in &facts {
            if !ids.insert(header_str(m, "ce_id").unwrap_or_default().to_owned()) {
                continue;
            }
            let added: Added = serde_json::from_slice(m.payload().unwrap()).unwrap();
            by_key.entry(added.key).or_default().push(added.n);
        }
        assert_eq!(ids.len(), records as usize, "every fact\n{}", self.logs());
        for (key, ns) in &by_key {
            let expected: Vec<u32> = (0..records / KEYS).collect();
            if ns != &expected {
                // Every record of the key as read: partition, offset, number.
                let read: Vec<(i32, i64, u32)> = facts
                    .iter()
                    .filter(|m| m.key() == Some(key.as_bytes()))
                    .map(|m| {
                        let added: Added = serde_json::from_slice(m.payload().unwrap()).unwrap();
                        (m.partition(), m.offset(), added.n)
                    })
                    .collect();
                panic!(
                    "{key}'s facts not in the order they were written: {ns:?}\nas read: {read:?}\n{}",
                    self.logs()
                );
            }
        }
        facts.len() - ids.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_killed_again_and_again_keep_every_effect_once_and_each_keys_order() {
    let records = sized("TALLY_RECORDS", 2_000);
    let kills = sized("TALLY_KILLS", 4);
    // A killed member stays in its group on both brokers here; noida-db gives a static
    // member's partitions to its restarted instance (tansu keeps them for the dead one:
    // `tansu_limitations.rs`).
    let broker = Tansu::builder().transactions(true).start();
    let mut run = Tallies::start(broker, &[("ATOLL_SERVICE__STATIC_MEMBERSHIP", "true")]).await;
    let sender = run.send(0, records);
    let mut rng = rand::rngs::StdRng::seed_from_u64(27);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..2_500))).await;
        let i = rng.random_range(0..run.procs.len());
        run.0.kill_and_restart(i);
    }
    sender.join().unwrap();
    let duplicates = run.check(records).await;
    println!("{records} commands, {kills} kills of 2 replicas: {duplicates} facts written twice");
    assert!(
        duplicates <= kills as usize * BATCH,
        "at most a batch written twice per kill: {duplicates}"
    );
    run.0.stop();
}

/// Without kills, every answer of the broker held for longer than a row's lease (15 s: 20 s)
/// while the replicas publish: each renews the leases of the rows it is sending, so neither the
/// other replica's relay nor its own takes one of them over. No fact is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_slower_than_a_lease_write_no_fact_twice() {
    let broker = Tansu::builder().proxy(true).start();
    // Heartbeats are answered 20 s late: a longer session keeps the group as it is.
    let run = Tallies::start(
        broker,
        &[("ATOLL_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "45000")],
    )
    .await;
    // The replicas are at work before the broker slows down.
    let warm = KEYS * 5;
    run.send(0, warm).join().unwrap();
    run.counted(warm).await;
    // The rest waits in the topic while the replicas are stopped (a producer through the slow
    // broker would send a handful of records per answer).
    for p in &run.procs {
        p.pause();
    }
    let records = KEYS * 50;
    run.send(warm, records).join().unwrap();
    let proxy = run.broker.proxy().expect(
        "this test needs the harness's fault proxy, which an external cluster (ATOLL_TEST_BOOTSTRAP) lacks",
    );
    // The replicas' next fetch is answered 20 s on; the outputs of what it brings are
    // acknowledged 20 s after they were sent: 5 s past their first lease.
    proxy.delay(Direction::ToClient, Duration::from_secs(20));
    for p in &run.procs {
        p.resume();
    }
    tokio::time::sleep(Duration::from_secs(45)).await;
    proxy.resume();
    let duplicates = run.check(records).await;
    assert_eq!(duplicates, 0, "facts written twice\n{}", run.logs());
    run.0.stop();
}
