//! Two replicas of a transactional service on PostgreSQL, killed again and again (SIGKILL)
//! while commands flow: every effect once, each key's facts in the order they were written
//! (first occurrences by `ce_id`), and facts written twice only from a kill between a row's
//! publish and its delete (the relay publishes such a row again): counted and reported, at
//! most a batch's worth per kill.
//!
//! On noida-db (static membership: a restarted process takes its partitions back at once).
//! `TALLY_RECORDS` and `TALLY_KILLS` size it (default 2,000 commands and 4 kills, in the
//! suite); `scripts/chaos` runs it with 5,000 and 10.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use atoll::contract::owned_topics;
use atoll::envelope::{header_str, Outgoing};
use atoll::{App, Event};
use atoll_testkit::probe::{Add, Added, Tally};
use atoll_testkit::process::Proc;
use atoll_testkit::{read_topic, Postgres, Tansu};
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Message;

const PROBE: &str = env!("CARGO_BIN_EXE_probe");
const KEYS: u32 = 40;
/// The most records a batch commits (`listener.store_batch`'s default).
const BATCH: usize = 100;

fn sized(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `records` `add` commands, round-robin over the keys, one every `pace`.
fn send_adds(bootstrap: &str, records: u32, pace: Duration) {
    let producer = atoll_testkit::raw_producer(bootstrap);
    for i in 0..records {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_killed_again_and_again_keep_every_effect_once_and_each_keys_order() {
    let records = sized("TALLY_RECORDS", 2_000);
    let kills = sized("TALLY_KILLS", 4);
    let broker = Tansu::builder().transactions(true).start();
    let pg = Postgres::start();
    let url = pg.database("tally");
    let driver = App::new(broker.config())
        .topics(owned_topics::<Tally>())
        .start()
        .await
        .expect("the tally's topics");
    driver.shutdown().await;
    let env = |name: &str| {
        let mut env = broker.env();
        env.push(("PROBE_SERVICE".into(), "tally".into()));
        env.push(("ATOLL_STORE__URL".into(), url.clone()));
        env.push(("ATOLL_SERVICE__PROCESS_NAME".into(), name.into()));
        // A killed member stays in its group on both brokers here; noida-db gives a static
        // member's partitions to its restarted instance (tansu keeps them for the dead one:
        // `tansu_limitations.rs`).
        env.push(("ATOLL_SERVICE__STATIC_MEMBERSHIP".into(), "true".into()));
        // `TALLY_BATCH=100`: with batched store transactions (see docs/store.md, "Batches").
        if let Ok(b) = std::env::var("TALLY_BATCH") {
            env.push(("ATOLL_LISTENER__STORE_BATCH".into(), b));
        }
        env
    };
    let names = ["t0", "t1"];
    let mut procs: Vec<Proc> = names
        .iter()
        .map(|n| Proc::start(PROBE, &[], &env(n)))
        .collect();
    // The commands flow over the kills: 4 ms apart.
    let bootstrap = broker.bootstrap();
    let sender = std::thread::spawn(move || {
        send_adds(&bootstrap, records, Duration::from_millis(4));
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(27);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..2_500))).await;
        let i = rng.random_range(0..procs.len());
        procs[i].kill();
        procs[i] = Proc::start(PROBE, &[], &env(names[i]));
    }
    sender.join().unwrap();

    // Every effect once.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
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
    let logs = || {
        procs
            .iter()
            .map(Proc::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let per_key = i64::from(records / KEYS);
    let wrong: Vec<_> = tallies.iter().filter(|(_, n)| *n != per_key).collect();
    assert!(
        tallies.len() == KEYS as usize && wrong.is_empty(),
        "each key counted {per_key} times: {} keys, wrong {wrong:?}\n{}",
        tallies.len(),
        logs()
    );

    // Every fact, each key's in order; those written twice counted.
    let b = broker.bootstrap();
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
    let duplicates = facts.len() - ids.len();
    println!(
        "{records} commands, {kills} kills of 2 replicas: {} facts, {duplicates} written twice",
        facts.len()
    );
    assert_eq!(ids.len(), records as usize, "every fact\n{}", logs());
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
                logs()
            );
        }
    }
    assert!(
        duplicates <= kills as usize * BATCH,
        "at most a batch written twice per kill: {duplicates}"
    );
    for p in &mut procs {
        p.terminate();
    }
}
