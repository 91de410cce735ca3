//! Exactly-once listeners on a broker with Kafka transactions (noida-db: tansu 0.6 delivers
//! nothing written in a transaction). The pipeline service (`PROBE_SERVICE=pipeline`) turns
//! each item into two outputs naming the item's partition and offset; a `read_committed`
//! reader must see each output exactly once, however the processes die.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use atoll::contract::owned_topics;
use atoll::{Event, Service};
use atoll_testkit::probe::{
    Bulk, BulkItem, Depot, Item, Journey, Load, Pipeline, PlanTrek, Relayed, Reserve,
};
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::{header, read_topic, read_topic_as, Tansu};
use rand::{Rng, SeedableRng};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;

const PROBE: &str = env!("CARGO_BIN_EXE_probe");
const OUTPUTS: &str = "acme.test.pipeline.events";
const INPUTS: &str = "acme.test.pipeline.commands";

/// A broker with transactions and the pipeline's topics on it.
async fn broker() -> Tansu {
    with_pipeline_topics(Tansu::builder().transactions(true).start()).await
}

/// `broker`, once the pipeline's topics are on it.
async fn with_pipeline_topics(broker: Tansu) -> Tansu {
    with_topics(broker, owned_topics::<Pipeline>()).await
}

/// `broker`, once `topics` are on it.
async fn with_topics(broker: Tansu, topics: Vec<atoll::contract::TopicSpec>) -> Tansu {
    let driver = atoll::App::new(broker.config())
        .topics(topics)
        .start()
        .await
        .expect("the topics");
    driver.shutdown().await;
    broker
}

/// The environment of pipeline process `name` (a stable name: its `transactional.id`).
fn env(broker: &Tansu, name: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    env_of("pipeline", broker, name, extra)
}

/// The environment of a `service` (`pipeline` or `bulk`) process named `name`.
fn env_of(
    service: &str,
    broker: &Tansu,
    name: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = broker.env();
    env.push(("PROBE_SERVICE".into(), service.into()));
    env.push(("ATOLL_SERVICE__PROCESS_NAME".into(), name.into()));
    // noida-db keeps a member that died in its group (its partitions would wait for it
    // forever), but gives a static member's partitions to its restarted instance.
    env.push(("ATOLL_SERVICE__STATIC_MEMBERSHIP".into(), "true".into()));
    env.push(("ATOLL_LISTENER__COMMIT_INTERVAL_MS".into(), "200".into()));
    for (k, v) in extra {
        env.push(((*k).into(), (*v).into()));
    }
    env
}

/// Writes items `rounds` for each of `keys` keys (a round of one item per key every `pace`),
/// idempotently, one record per batch (noida-db, like tansu, serves a fetch only from the start
/// of a batch).
fn send_items(bootstrap: &str, keys: u32, rounds: std::ops::Range<u32>, pace: Duration) {
    send_items_to((INPUTS, Item::ce_type()), bootstrap, keys, rounds, pace);
}

/// [`send_items`] to `topic`, typed `ce_type` (the bulk service takes the same JSON).
fn send_items_to(
    (topic, ce_type): (&str, &str),
    bootstrap: &str,
    keys: u32,
    rounds: std::ops::Range<u32>,
    pace: Duration,
) {
    use rdkafka::producer::{BaseRecord, Producer};
    let producer = atoll_testkit::raw_producer(bootstrap);
    let first = rounds.start;
    for n in rounds {
        if n > first && !pace.is_zero() {
            producer.flush(Duration::from_secs(60)).unwrap();
            std::thread::sleep(pace);
        }
        for k in 0..keys {
            let key = format!("k{k}");
            let (headers, _) = atoll::envelope::Outgoing::new(ce_type, "test").headers();
            let payload = serde_json::to_vec(&Item {
                key: key.clone(),
                n,
            })
            .unwrap();
            let record = BaseRecord::to(topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            atoll_testkit::send_waiting(&producer, record);
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Waits until pipeline process `p` has all four partitions, then sends it one item.
async fn one_item_once_joined(broker: &Tansu, p: &Proc) {
    assert!(
        wait_until(Duration::from_secs(60), || p.assigned("relay").len() == 4),
        "{}",
        p.log()
    );
    let b = broker.bootstrap();
    tokio::task::spawn_blocking(move || send_items(&b, 1, 0..1, Duration::ZERO))
        .await
        .unwrap();
}

/// The outputs a `read_committed` reader sees (atoll's readers are), until `n` or `timeout`.
///
/// Read again from the start by a new reader every few seconds, keeping the longest read: on
/// noida-db a reader that fetched past an aborted transaction misses what the same producer
/// commits later (`noida_limitations.rs`), and a new reader gets a partition's backlog in one
/// fetch, where the abort's marker and the later commits are seen together.
fn outputs(bootstrap: &str, n: usize, timeout: Duration) -> Vec<(Relayed, String)> {
    outputs_of(OUTPUTS, bootstrap, n, timeout)
}

/// [`outputs`] of `topic` (the bulk service's are the pipeline's JSON).
fn outputs_of(topic: &str, bootstrap: &str, n: usize, timeout: Duration) -> Vec<(Relayed, String)> {
    let deadline = Instant::now() + timeout;
    let mut longest = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let read = atoll_testkit::read_topic(bootstrap, topic, n, left.min(Duration::from_secs(5)));
        if read.len() > longest.len() {
            longest = read;
        }
        if longest.len() >= n || Instant::now() >= deadline {
            return decoded(&longest);
        }
    }
}

/// Each output and its `ce_id`.
fn decoded(outputs: &[OwnedMessage]) -> Vec<(Relayed, String)> {
    outputs
        .iter()
        .map(|m: &OwnedMessage| {
            let relayed: Relayed = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let id = atoll_testkit::header(m, "ce_id")
                .unwrap_or_default()
                .to_owned();
            (relayed, id)
        })
        .collect()
}

/// The outputs of `topic` once all `total` are there (waiting `within`), read again a little
/// later, so that anything written twice follows; then the processes are stopped.
async fn all_outputs_then_again(
    topic: &'static str,
    bootstrap: String,
    total: usize,
    within: Duration,
    procs: &mut [Proc],
) -> Vec<(Relayed, String)> {
    let read = {
        let b = bootstrap.clone();
        tokio::task::spawn_blocking(move || outputs_of(topic, &b, total, within))
            .await
            .unwrap()
    };
    assert_eq!(
        read.len(),
        total,
        "all outputs within {within:?}\n{}",
        procs[0].log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read = tokio::task::spawn_blocking(move || {
        outputs_of(topic, &bootstrap, total + 1, Duration::from_secs(10))
    })
    .await
    .unwrap();
    for p in procs.iter_mut() {
        p.terminate();
    }
    read
}

/// Every item's two outputs are there exactly once, and no `ce_id` repeats.
fn assert_exactly_once(outputs: &[(Relayed, String)], keys: u32, per_key: u32) {
    let mut by_input: BTreeMap<(i32, i64, u8), usize> = BTreeMap::new();
    let mut items = HashSet::new();
    let mut ids = HashSet::new();
    for (r, id) in outputs {
        *by_input.entry((r.partition, r.offset, r.part)).or_default() += 1;
        items.insert((r.key.clone(), r.n));
        assert!(ids.insert(id.clone()), "ce_id {id} twice");
    }
    let twice: Vec<_> = by_input.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "outputs written twice (partition, offset, part): {twice:?}"
    );
    let inputs: HashSet<(i32, i64)> = by_input.keys().map(|(p, o, _)| (*p, *o)).collect();
    for (p, o) in &inputs {
        for part in 0..2 {
            assert!(
                by_input.contains_key(&(*p, *o, part)),
                "the item at {p}/{o} has output {} but not {part}: a transaction was split",
                1 - part
            );
        }
    }
    assert_eq!(
        items.len(),
        (keys * per_key) as usize,
        "every item has its outputs"
    );
    assert_eq!(outputs.len(), 2 * (keys * per_key) as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_written_once_though_processes_are_killed_ten_times() {
    const KEYS: u32 = 50;
    const PER_KEY: u32 = 100;
    let broker = broker().await;
    let names = ["p0", "p1"];
    let mut procs: Vec<Proc> = names
        .iter()
        .map(|n| Proc::start(PROBE, &[], &env(&broker, n, &[("PROBE_DELAY_MS", "1")])))
        .collect();
    let b = broker.bootstrap();
    let sender = std::thread::spawn(move || send_items(&b, KEYS, 0..PER_KEY, Duration::ZERO));
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut kills = 0;
    let total = 2 * (KEYS * PER_KEY) as usize;
    let b = broker.bootstrap();
    let started = Instant::now();
    while kills < 10 && started.elapsed() < Duration::from_secs(240) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..3_000))).await;
        let i = rng.random_range(0..procs.len());
        procs[i].kill();
        kills += 1;
        procs[i] = Proc::start(
            PROBE,
            &[],
            &env(&broker, names[i], &[("PROBE_DELAY_MS", "1")]),
        );
    }
    assert_eq!(kills, 10);
    sender.join().unwrap();
    let within = Duration::from_secs(240);
    let read = all_outputs_then_again(OUTPUTS, b, total, within, &mut procs).await;
    let handled: usize = procs.iter().map(|p| p.handled().len()).sum();
    eprintln!(
        "{} outputs of {} items; the last processes handled {handled} records",
        read.len(),
        KEYS * PER_KEY
    );
    assert_exactly_once(&read, KEYS, PER_KEY);
}

/// The same with a batch listener (the bulk service): each batch's outputs and offsets in one
/// transaction, whose records' outputs are each written once however the processes die.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_listeners_outputs_are_written_once_though_processes_are_killed() {
    const KEYS: u32 = 20;
    const PER_KEY: u32 = 100;
    const BULK_OUT: &str = "acme.test.bulk.events";
    let broker = with_topics(
        Tansu::builder().transactions(true).start(),
        owned_topics::<Bulk>(),
    )
    .await;
    let names = ["b0", "b1"];
    let env = |name: &str| env_of("bulk", &broker, name, &[]);
    let mut procs: Vec<Proc> = names
        .iter()
        .map(|n| Proc::start(PROBE, &[], &env(n)))
        .collect();
    let b = broker.bootstrap();
    // Paced, so that the kills fall among the batches.
    let sender = std::thread::spawn(move || {
        send_items_to(
            ("acme.test.bulk.commands", BulkItem::ce_type()),
            &b,
            KEYS,
            0..PER_KEY,
            Duration::from_millis(80),
        )
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_000..2_500))).await;
        let i = rng.random_range(0..procs.len());
        procs[i].kill();
        procs[i] = Proc::start(PROBE, &[], &env(names[i]));
    }
    sender.join().unwrap();
    let total = 2 * (KEYS * PER_KEY) as usize;
    let within = Duration::from_secs(180);
    let read =
        all_outputs_then_again(BULK_OUT, broker.bootstrap(), total, within, &mut procs).await;
    let handled: usize = procs.iter().map(|p| p.handled().len()).sum();
    // Batches of many, not one record per call.
    let largest = procs
        .iter()
        .flat_map(|p| {
            p.log()
                .lines()
                .filter(|l| l.contains("bulk batch"))
                .filter_map(|l| {
                    l.split("records=")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0);
    assert!(largest > 1, "the largest batch had {largest} records");
    eprintln!(
        "{} outputs of {} items; the last processes handled {handled} records",
        read.len(),
        KEYS * PER_KEY
    );
    assert_exactly_once(&read, KEYS, PER_KEY);
}

/// A zombie: process A's transaction is held open (as in a long pause) after it handled an
/// item; meanwhile a new instance B with A's name (so A's `transactional.id`) starts, which
/// fences A's producer. A's commit fails, its output never becomes visible; B handles the item
/// and the topic holds B's output only. (A broker with KIP-447 also fences a zombie by its
/// consumer group generation; noida-db does not, so the name is shared here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombies_late_commit_is_fenced() {
    let broker = broker().await;
    let mut a = Proc::start(
        PROBE,
        &[],
        &env(
            &broker,
            "zombie",
            &[("ATOLL_TEST_HOLD_TRANSACTION_MS", "20000")],
        ),
    );
    one_item_once_joined(&broker, &a).await;
    // A handles the item and holds its transaction open.
    assert!(
        wait_until(Duration::from_secs(30), || !a.handled().is_empty()),
        "{}",
        a.log()
    );
    let mut b_proc = Proc::start(PROBE, &[], &env(&broker, "zombie", &[]));
    // A's commit comes after its 20 s hold; it is refused and A's listener stops.
    let a_refused = wait_until(Duration::from_secs(60), || {
        let log = a.log();
        log.contains("fenced by a newer instance") && log.contains("the listener stops")
    });
    let b = broker.bootstrap();
    // B's two outputs, and A's late write if it got through.
    let read = tokio::task::spawn_blocking(move || outputs(&b, 3, Duration::from_secs(10)))
        .await
        .unwrap();
    let a_log = a.log();
    a.terminate();
    b_proc.terminate();
    assert_eq!(
        read.len(),
        2,
        "the item's two outputs, once: {read:?}\n--- A ---\n{a_log}\n--- B ---\n{}",
        b_proc.log()
    );
    assert!(
        b_proc.handled().len() == 1,
        "B handled the item: {:?}\n{}",
        b_proc.handled(),
        b_proc.log()
    );
    assert!(a_refused, "A's commit was refused and A stopped:\n{a_log}");
}

/// A zombie saga owner (the interleaving a review found: a revoked owner's delayed state write
/// landing after its successor's, where compaction would keep it), with the saga's listener
/// exactly-once. Journey process A handles a trek's start and holds the transaction with the
/// state and the first command open; B, started with A's name (so A's `transactional.id`:
/// noida-db does not fence by group generation), fences A, restores, and handles the start
/// again. A's late commit is refused: A's state and command were written but aborted, and a
/// `read_committed` reader sees B's state (B's generation) and B's command, once each.
///
/// No depot answers here: on noida-db a consumer that read past A's aborted transaction would
/// not see B's later commits (`noida_limitations.rs`), so the trek's further steps are proven by
/// `sagas_rewound_after_failed_transactions_end_once` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_saga_owners_late_state_write_is_fenced() {
    let broker = Tansu::builder().transactions(true).start();
    let driver = atoll::App::new(broker.config())
        .topics(owned_topics::<Journey>())
        .topics(owned_topics::<Depot>())
        .start()
        .await
        .expect("the journey's and the depot's topics");
    let mut a = Proc::start(
        PROBE,
        &[],
        &journey(
            &broker,
            "zombie-saga",
            &[("ATOLL_TEST_HOLD_TRANSACTION_MS", "20000")],
        ),
    );
    journey_joined(&a);
    driver
        .client("test")
        .send(&PlanTrek { id: "t1".into() })
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || a
            .log()
            .contains("the transaction is held open")),
        "A handled the start and holds its transaction:\n{}",
        a.log()
    );
    let mut b = Proc::start(PROBE, &[], &journey(&broker, "zombie-saga", &[]));
    // A's commit comes after its 20 s hold; it is refused and A's saga listener stops.
    let a_refused = wait_until(Duration::from_secs(60), || {
        let log = a.log();
        log.contains("fenced by a newer instance") && log.contains("the listener stops")
    });
    let bootstrap = broker.bootstrap();
    let (saga, commands) = (
        Journey::ID.saga().to_string(),
        Depot::ID.commands().to_string(),
    );
    let read = move |isolation: &str| {
        let (b, s, c, i) = (
            bootstrap.clone(),
            saga.clone(),
            commands.clone(),
            isolation.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            let read =
                |topic: &str| read_topic_as(&i, &b, topic, usize::MAX, Duration::from_secs(3));
            (read(&s), read(&c))
        })
    };
    let (committed, written) = (
        read("read_committed").await.unwrap(),
        read("read_uncommitted").await.unwrap(),
    );
    let (a_log, b_log) = (a.log(), b.log());
    a.terminate();
    b.terminate();
    driver.shutdown().await;
    let logs = format!("--- A ---\n{a_log}\n--- B ---\n{b_log}");
    assert!(
        a_refused,
        "A's commit was refused and its saga listener stopped:\n{logs}"
    );
    let generations = |states: &[OwnedMessage]| -> Vec<(i32, u64)> {
        let key = b"trek/t1".as_slice();
        states
            .iter()
            .filter(|m| m.key() == Some(key))
            .map(|m| {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                assert_eq!(v["version"], 1, "{v}");
                (m.partition(), v["generation"].as_u64().unwrap())
            })
            .collect()
    };
    // The generation each process took on restoring the saga's partition.
    let restored = |log: &str, p: i32| -> u64 {
        let line = log
            .lines()
            .find(|l| l.contains("saga state restored") && l.contains(&format!(" partition={p} ")))
            .unwrap_or_else(|| panic!("no restore of partition {p}:\n{log}"));
        line.rsplit("generation=")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let kept = generations(&committed.0);
    assert_eq!(kept.len(), 1, "one committed state of the trek\n{logs}");
    let (p, generation) = kept[0];
    assert_eq!(
        generation,
        restored(&b_log, p),
        "the committed state is B's\n{logs}"
    );
    let mut all: Vec<u64> = generations(&written.0)
        .into_iter()
        .map(|(_, g)| g)
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        [restored(&a_log, p), restored(&b_log, p)],
        "A's state was written, in its transaction that was aborted, and B's\n{logs}"
    );
    let reserves = |records: &[OwnedMessage]| {
        records
            .iter()
            .filter(|m| header(*m, "ce_type") == Some(Reserve::ce_type()))
            .count()
    };
    assert_eq!(reserves(&committed.1), 1, "B's command, once\n{logs}");
    assert_eq!(
        reserves(&written.1),
        2,
        "A's aborted command and B's\n{logs}"
    );
    assert!(
        committed
            .1
            .iter()
            .all(|m| header(m, "ce_type") == Some(Reserve::ce_type())),
        "no other command\n{logs}"
    );
}

/// A broker with transactions, the journey's topics on it, and the depot answering its steps
/// (in this process, at least once).
async fn journey_broker() -> (Tansu, atoll::Running) {
    let broker = Tansu::builder().transactions(true).start();
    let depot = atoll::App::new(broker.config())
        .topics(owned_topics::<Journey>())
        .service(Depot)
        .start()
        .await
        .expect("the depot, and the journey's topics");
    (broker, depot)
}

/// The environment of journey process `name`, its saga's listener exactly-once.
fn journey(broker: &Tansu, name: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = env(broker, name, extra);
    env.retain(|(k, _)| k != "PROBE_SERVICE");
    env.push(("PROBE_SERVICE".into(), "journey".into()));
    env.push((
        "ATOLL_LISTENERS__TREK-SAGA__DELIVERY".into(),
        "exactly_once".into(),
    ));
    env
}

/// Waits until journey process `p` has both partitions of both its listeners.
fn journey_joined(p: &Proc) {
    assert!(
        wait_until(Duration::from_secs(60), || p.assigned("trek-saga").len()
            == 2
            && p.assigned("plan").len() == 2),
        "{}",
        p.log()
    );
}

/// The versions of trek `id`'s states in `states`, in order.
fn trek_versions(states: &[OwnedMessage], id: &str) -> Vec<u64> {
    let key = format!("trek/{id}");
    states
        .iter()
        .filter(|m| m.key() == Some(key.as_bytes()))
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(m.payload().unwrap()).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Every other transaction of the saga's listener fails (a test hook) and is aborted: the
/// listener rewinds to its committed offsets and its sagas are restored from what was
/// committed, so the aborted work is redone from a consistent state. Each trek ends once, its
/// committed states are exactly versions 1, 2, 3, and each of its commands was written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_rewound_after_failed_transactions_end_once() {
    const TREKS: usize = 6;
    let (broker, depot) = journey_broker().await;
    let mut p = Proc::start(
        PROBE,
        &[],
        &journey(
            &broker,
            "rewound",
            &[("ATOLL_TEST_FAIL_TRANSACTION_EVERY", "2")],
        ),
    );
    journey_joined(&p);
    for i in 0..TREKS {
        depot
            .client("test")
            .send(&PlanTrek {
                id: format!("r{i}"),
            })
            .await
            .unwrap();
    }
    let bootstrap = broker.bootstrap();
    let (events, saga, commands) = (
        Journey::ID.events().to_string(),
        Journey::ID.saga().to_string(),
        Depot::ID.commands().to_string(),
    );
    let (done, states, commands) = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &events, TREKS, Duration::from_secs(180));
        // Anything written twice would follow.
        std::thread::sleep(Duration::from_secs(3));
        let read = |topic: &str| read_topic(&bootstrap, topic, usize::MAX, Duration::from_secs(3));
        (read(&events).len(), read(&saga), read(&commands))
    })
    .await
    .unwrap();
    let log = p.log();
    p.terminate();
    depot.shutdown().await;
    assert_eq!(done, TREKS, "each trek ended once\n{log}");
    assert!(
        log.contains("a transaction failed"),
        "the hook failed transactions\n{log}"
    );
    for i in 0..TREKS {
        let id = format!("r{i}");
        assert_eq!(trek_versions(&states, &id), [1, 2, 3], "trek {id}\n{log}");
        let sent: Vec<&str> = commands
            .iter()
            .filter(|m| m.key() == Some(id.as_bytes()))
            .filter_map(|m| header(m, "ce_type"))
            .collect();
        assert_eq!(
            sent,
            [Reserve::ce_type(), Load::ce_type()],
            "trek {id}\n{log}"
        );
    }
}

/// An exactly-once listener cannot retry through the retry topic (a record there and handled
/// again after an abort would give its outputs twice): the start fails, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_listener_cannot_use_the_retry_topic() {
    use atoll::config::{ListenerSettings, RetryMode};
    let broker = Tansu::start();
    let mut config = broker.config();
    config.listeners.insert(
        "relay".into(),
        ListenerSettings {
            retry: Some(RetryMode::NonBlocking),
            ..Default::default()
        },
    );
    let refused = match atoll::App::new(config)
        .service(Pipeline::default())
        .start()
        .await
    {
        Ok(running) => {
            running.shutdown().await;
            panic!("started");
        }
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains("listener `relay` cannot be `exactly_once`")
            && refused.contains("non_blocking"),
        "{refused}"
    );
}

/// On a broker without transactions (tansu 0.6 never ends one), an exactly-once listener does
/// not loop on failing transactions: it stops, commits nothing, and says why (liveness fails
/// with the same reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_broker_without_transactions_the_listener_stops_and_says_why() {
    let broker = with_pipeline_topics(Tansu::start()).await;
    let mut env = broker.env();
    env.push(("PROBE_SERVICE".into(), "pipeline".into()));
    let mut p = Proc::start(PROBE, &[], &env);
    one_item_once_joined(&broker, &p).await;
    let stopped = wait_until(Duration::from_secs(90), || {
        p.log().contains("the listener stops")
    });
    let log = p.log();
    p.terminate();
    assert!(stopped, "{log}");
    assert!(log.contains("does not support Kafka transactions"), "{log}");
}

/// A pipeline process whose every other transaction is refused just before its commit (by a
/// test hook: at least two fail however few there are, as a slow machine makes fewer, larger
/// transactions; CI once saw a single failure with every third), committing after
/// `commit_batch` records (many small transactions), with `extra` settings.
fn failing_transactions(broker: &Tansu, commit_batch: &str, extra: &[(&str, &str)]) -> Proc {
    let mut settings = vec![
        ("ATOLL_TEST_FAIL_TRANSACTION_EVERY", "2"),
        ("ATOLL_LISTENER__COMMIT_BATCH", commit_batch),
    ];
    settings.extend_from_slice(extra);
    Proc::start(PROBE, &[], &env(broker, "p0", &settings))
}

/// Writes `per_key` items for each of `keys` keys, a round every 200 ms.
async fn send_paced(broker: &Tansu, keys: u32, per_key: u32) {
    let b = broker.bootstrap();
    tokio::task::spawn_blocking(move || {
        send_items(&b, keys, 0..per_key, Duration::from_millis(200))
    })
    .await
    .unwrap();
}

/// Writes `per_key` items for each of `keys` keys (a round every 200 ms) in `steps` steps, each
/// waiting until the outputs of the rounds sent so far (`outputs_after(rounds)`) can be read.
/// A `read_committed` reader sees outputs only once their transaction committed, so the process
/// commits at least `steps` transactions, one after another, however fast or slow it runs (a
/// slow one would otherwise take the whole backlog in two or three).
async fn send_in_steps(
    broker: &Tansu,
    keys: u32,
    per_key: u32,
    steps: u32,
    outputs_after: impl Fn(u32) -> usize + Send + 'static,
) -> Result<(), String> {
    let b = broker.bootstrap();
    tokio::task::spawn_blocking(move || {
        let per_step = per_key.div_ceil(steps);
        for start in (0..per_key).step_by(per_step as usize) {
            let end = (start + per_step).min(per_key);
            send_items(&b, keys, start..end, Duration::from_millis(200));
            let want = outputs_after(end);
            let got = outputs(&b, want, Duration::from_secs(120)).len();
            if got < want {
                return Err(format!("{got} of {want} outputs after {end} rounds"));
            }
        }
        Ok(())
    })
    .await
    .unwrap()
}

/// An exactly-once listener's dead letter that would be larger than the producer takes is a
/// pointer from the start: staged whole, it would abort every transaction it is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_to_stage_is_a_pointer() {
    const KEYS: u32 = 3;
    const PER_KEY: u32 = 3;
    let broker = broker().await;
    // Item 2 of every key fails for good; the producer takes records of up to 1,000 bytes,
    // less than the dead letter with the record's headers and the error would be.
    let mut p = Proc::start(
        PROBE,
        &[],
        &env(
            &broker,
            "p0",
            &[
                ("PROBE_POISON_EVERY", "3"),
                ("ATOLL_KAFKA__PROPERTIES__MESSAGE_MAX_BYTES", "1000"),
            ],
        ),
    );
    send_paced(&broker, KEYS, PER_KEY).await;
    let b = broker.bootstrap();
    let (outputs, dead) = tokio::task::spawn_blocking(move || {
        let outputs = outputs(
            &b,
            2 * (KEYS * (PER_KEY - 1)) as usize,
            Duration::from_secs(120),
        );
        let dlq = "acme.test.pipeline.private.dlq";
        let dead = read_topic(&b, dlq, KEYS as usize + 1, Duration::from_secs(10));
        (outputs.len(), dead)
    })
    .await
    .unwrap();
    let log = p.log();
    p.terminate();
    assert_eq!(
        outputs,
        2 * (KEYS * (PER_KEY - 1)) as usize,
        "the other items' outputs\n{log}"
    );
    assert_eq!(
        dead.len(),
        KEYS as usize,
        "one dead letter per poison item\n{log}"
    );
    for d in &dead {
        assert!(
            header(d, "atoll_dlq_payload_omitted").is_some(),
            "a pointer"
        );
        assert_eq!(header(d, "atoll_dlq_error_kind"), Some("handler"));
    }
}

/// A record an exactly-once listener dead-letters is dead-lettered once, though the
/// transactions of its offset fail and it is handled again: its dead letter is written in that
/// transaction, not beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_written_once_though_its_transaction_fails() {
    const KEYS: u32 = 5;
    const PER_KEY: u32 = 12;
    const POISON_EVERY: u32 = 3;
    let broker = broker().await;
    // Items 2, 5, 8 and 11 of every key fail for good: dead letters in many transactions, some
    // of which fail.
    let mut p = failing_transactions(&broker, "10", &[("PROBE_POISON_EVERY", "3")]);
    // Four steps, so at least three transactions fail. Rounds 2, 5, 8, 11 have no outputs.
    let sent = send_in_steps(&broker, KEYS, PER_KEY, 4, |rounds| {
        2 * (KEYS * (rounds - (rounds + 1) / POISON_EVERY)) as usize
    })
    .await;
    if let Err(e) = sent {
        panic!("{e}\n{}", p.log());
    }
    let poison = (KEYS * (PER_KEY / POISON_EVERY)) as usize;
    let total = 2 * (KEYS * PER_KEY) as usize - 2 * poison;
    let b = broker.bootstrap();
    let (outputs, dead) = tokio::task::spawn_blocking(move || {
        let outputs = outputs(&b, total, Duration::from_secs(180));
        // A dead letter written twice would follow.
        std::thread::sleep(Duration::from_secs(2));
        let dlq = "acme.test.pipeline.private.dlq";
        let dead = atoll_testkit::read_topic(&b, dlq, poison + 1, Duration::from_secs(10));
        (outputs.len(), dead.len())
    })
    .await
    .unwrap();
    let log = p.log();
    p.terminate();
    assert_eq!(outputs, total, "every other item's outputs\n{log}");
    let rewinds = log.matches("a transaction failed").count();
    assert!(
        rewinds >= 2,
        "transactions failed and were rewound: {rewinds}\n{log}"
    );
    assert_eq!(
        dead, poison,
        "one dead letter per poison item ({rewinds} transactions rewound)"
    );
}

/// Transactions that fail inside a live process (every second is refused just before its
/// commit, by a test hook; on noida-db the one after an abort can fail too, with `skipped
/// sequence numbers`) are aborted, and the partitions handled again from their committed
/// offsets: a `read_committed` reader still sees each output once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_written_once_though_transactions_fail() {
    const KEYS: u32 = 20;
    const PER_KEY: u32 = 25;
    let broker = broker().await;
    let mut p = failing_transactions(&broker, "25", &[]);
    // Five steps, so at least four transactions fail.
    let sent = send_in_steps(&broker, KEYS, PER_KEY, 5, |rounds| {
        2 * (KEYS * rounds) as usize
    })
    .await;
    if let Err(e) = sent {
        panic!("{e}\n{}", p.log());
    }
    let total = 2 * (KEYS * PER_KEY) as usize;
    let b = broker.bootstrap();
    let read = tokio::task::spawn_blocking(move || {
        let first = outputs(&b, total, Duration::from_secs(180));
        // Anything written twice would follow.
        std::thread::sleep(Duration::from_secs(2));
        (first.len(), outputs(&b, total + 1, Duration::from_secs(10)))
    })
    .await
    .unwrap();
    let log = p.log();
    p.terminate();
    assert_eq!(read.0, total, "all outputs\n{log}");
    let rewinds = log.matches("a transaction failed").count();
    assert!(
        rewinds >= 2,
        "transactions failed and were rewound: {rewinds}\n{log}"
    );
    eprintln!(
        "{} outputs of {} items; {rewinds} failed transactions rewound; {} records handled",
        read.1.len(),
        KEYS * PER_KEY,
        p.handled().len()
    );
    assert_exactly_once(&read.1, KEYS, PER_KEY);
}
