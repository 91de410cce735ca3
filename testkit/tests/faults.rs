//! Network faults between the services and the broker (tansu behind the harness's fault
//! proxy): slow responses, blackouts, a broker restart. Nothing is lost, nothing is
//! duplicated, and each key's outputs keep the order of its inputs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::envelope::header_str;
use atoll::{event_service, handlers, App, Context, Event, HandlerResult, Running};
use atoll_testkit::{read_topic, text, Direction, Tansu};
use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "relay", partitions = 3)]
#[derive(Clone)]
struct Relay {
    /// Handlers wait while it is closed (`false`).
    gate: Arc<AtomicBool>,
}

impl Relay {
    fn new() -> Self {
        Self {
            gate: Arc::new(AtomicBool::new(true)),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "step", version = 1, service = Relay)]
struct Step {
    #[event(key)]
    key: String,
    n: u32,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "stepped", version = 1, service = Relay)]
struct Stepped {
    #[event(key)]
    key: String,
    n: u32,
}

#[handlers]
impl Relay {
    #[listener(name = "steps")]
    async fn step(&self, ctx: Context<Self>, step: Step) -> HandlerResult {
        while !self.gate.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ctx.emit(Stepped {
            key: step.key,
            n: step.n,
        })
        .await?;
        Ok(())
    }
}

const EVENTS: &str = "acme.test.relay.events";
const COMMANDS: &str = "acme.test.relay.commands";
/// The relay's partitions (`partitions` in its `#[event_service]`).
const PARTITIONS: i32 = 3;

/// The relay on `broker`, with these pass-through client properties.
async fn start(broker: &Tansu, relay: &Relay, properties: &[(&str, &str)]) -> Running {
    let mut config: Config = broker.config();
    for (k, v) in properties {
        config.kafka.properties.insert((*k).into(), (*v).into());
    }
    App::new(config)
        .service(relay.clone())
        .start()
        .await
        .unwrap()
}

/// Sends `per_key` steps, numbered from 0, for each of `keys` keys.
async fn send_steps(running: &Running, keys: u32, per_key: u32) {
    let client = running.client("test");
    for n in 0..per_key {
        for k in 0..keys {
            let key = format!("k{k}");
            client.send(&Step { key, n }).await.unwrap();
        }
    }
}

/// The outputs: by `ce_id`, how many; by key, the step numbers in the order written.
fn outputs(bootstrap: &str, n: usize) -> (HashMap<String, usize>, BTreeMap<String, Vec<u32>>) {
    let (mut ids, mut by_key) = (HashMap::new(), BTreeMap::<String, Vec<u32>>::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut records = Vec::new();
    while records.len() < n && Instant::now() < deadline {
        records = read_topic(bootstrap, EVENTS, usize::MAX, Duration::from_secs(3));
    }
    for m in &records {
        *ids.entry(header_str(m, "ce_id").unwrap_or_default().to_owned())
            .or_default() += 1;
        let s: Stepped = serde_json::from_str(text(m)).unwrap();
        assert_eq!(m.key(), Some(s.key.as_bytes()));
        by_key.entry(s.key).or_default().push(s.n);
    }
    (ids, by_key)
}

/// Broker responses lost while handlers produce, then the connections cut: the producer
/// sends its requests again, and the idempotent producer (atoll's default) lets the broker
/// drop the copies: no output twice, each key's outputs in input order. (With
/// `enable.idempotence=false` this run writes about 200 of the 200 outputs twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_broker_responses_neither_duplicate_nor_reorder_outputs() {
    let broker = Tansu::builder().proxy(true).start();
    let (keys, per_key) = (4, 50);
    let (relay, running) = held_steps(&broker, keys, per_key).await;
    // The handlers produce while the broker's responses are lost, then the connections drop:
    // the producer cannot know whether the broker wrote its requests, and sends them again.
    let proxy = broker.proxy().expect("this test needs the harness's fault proxy, which an external cluster (ATOLL_TEST_BOOTSTRAP) lacks");
    proxy.blackhole(Direction::ToClient);
    relay.gate.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.close_all();
    }
    proxy.resume();
    assert_outputs_exactly_once_in_order(&broker, running, keys, per_key).await;
}

/// The relay on `broker`, warmed up (its listener joined and handled a step of key `k0`),
/// then `per_key` steps of `keys` keys fetched and held at its closed gate: open it to have
/// the handlers produce.
async fn held_steps(broker: &Tansu, keys: u32, per_key: u32) -> (Relay, Running) {
    let relay = Relay::new();
    let running = start(broker, &relay, &[]).await;
    send_steps(&running, 1, 1).await;
    let b = broker.bootstrap();
    let warm = tokio::task::spawn_blocking(move || outputs(&b, 1))
        .await
        .unwrap();
    assert_eq!(warm.0.len(), 1, "the listener works");
    relay.gate.store(false, Ordering::SeqCst);
    let b = broker.bootstrap();
    tokio::task::spawn_blocking(move || send_raw_steps(&b, keys, per_key))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    (relay, running)
}

/// Waits (up to 2 minutes) until the relay's committed offsets pass all `n` steps sent to it
/// (one record per batch: offsets count records).
fn all_committed(bootstrap: &str, n: usize) {
    let group = <Relay as atoll::Service>::ID
        .group_id("steps")
        .expect("a valid listener name");
    let passed = || -> i64 {
        atoll_testkit::committed(bootstrap, &group, COMMANDS, PARTITIONS)
            .iter()
            .map(|o| o.to_raw().filter(|o| *o >= 0).unwrap_or(0))
            .sum()
    };
    assert!(
        atoll_testkit::process::wait_until(Duration::from_secs(120), || passed() as usize >= n),
        "the relay committed {} of {n} steps",
        passed()
    );
}

/// Writes the steps for keys `k1`…, idempotently, one record per batch (for tansu).
fn send_raw_steps(bootstrap: &str, keys: u32, per_key: u32) {
    use rdkafka::producer::{BaseRecord, Producer};
    let producer = atoll_testkit::raw_producer(bootstrap);
    for n in 0..per_key {
        for k in 0..keys {
            let key = format!("k{}", k + 1);
            let (headers, _) = atoll::envelope::Outgoing::new(Step::ce_type(), "test").headers();
            let payload = serde_json::to_vec(&Step {
                key: key.clone(),
                n,
            })
            .unwrap();
            producer
                .send(
                    BaseRecord::to(COMMANDS)
                        .key(&key)
                        .payload(&payload)
                        .headers(headers),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Waits until the relay committed every input (so it handles none again), reads its
/// outputs, shuts it down, and checks them (see [`assert_exactly_once_in_order`]).
async fn assert_outputs_exactly_once_in_order(
    broker: &Tansu,
    running: Running,
    keys: u32,
    per_key: u32,
) {
    let n = (keys * per_key) as usize + 1;
    let b = broker.bootstrap();
    let (ids, by_key) = tokio::task::spawn_blocking(move || {
        all_committed(&b, n);
        outputs(&b, n)
    })
    .await
    .unwrap();
    running.shutdown().await;
    assert_eq!(ids.len(), n, "every step's output");
    assert_exactly_once_in_order(&ids, by_key, keys, per_key);
}

/// Outputs must be exactly the steps `0..per_key` of keys `k1…k{keys}` (plus the warm-up's
/// `k0`), each once, in order.
fn assert_exactly_once_in_order(
    ids: &HashMap<String, usize>,
    mut by_key: BTreeMap<String, Vec<u32>>,
    keys: u32,
    per_key: u32,
) {
    let twice: Vec<_> = ids.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "outputs written twice: {twice:?}");
    assert_eq!(by_key.remove("k0"), Some(vec![0]), "the warm-up");
    assert_eq!(by_key.len(), keys as usize, "{by_key:?}");
    for (key, steps) in &by_key {
        let expected: Vec<u32> = (0..per_key).collect();
        assert_eq!(
            steps, &expected,
            "{key}'s outputs lost, repeated or out of order"
        );
    }
}

/// A 30 s blackout between the services and the broker while handlers produce: the same
/// process carries on once the network is back (no restart), nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_broker_blackout_loses_nothing_and_needs_no_restart() {
    let broker = Tansu::builder().proxy(true).start();
    let (keys, per_key) = (3, 30);
    let (relay, running) = held_steps(&broker, keys, per_key).await;
    let proxy = broker.proxy().expect("this test needs the harness's fault proxy, which an external cluster (ATOLL_TEST_BOOTSTRAP) lacks");
    proxy.blackhole(Direction::Both);
    relay.gate.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    // The network is back; connections that lost bytes are reset.
    proxy.resume();
    proxy.close_all();
    assert_outputs_exactly_once_in_order(&broker, running, keys, per_key).await;
}

/// The broker restarts (its data on SQLite) while the service works: the service reconnects
/// by itself, nothing is lost, nothing written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_nothing() {
    let mut broker = Tansu::builder().sqlite(true).start();
    let (keys, per_key) = (3, 40);
    let (relay, running) = held_steps(&broker, keys, per_key).await;
    // The broker goes down and comes back while the handlers produce.
    let restarted = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    relay.gate.store(true, Ordering::SeqCst);
    let broker = restarted.await.unwrap();
    assert_outputs_exactly_once_in_order(&broker, running, keys, per_key).await;
}

/// A process paused for 25 s (SIGSTOP) with work in flight comes back (SIGCONT): every
/// record is handled, none is lost. tansu keeps the silent member in its group meanwhile (its
/// partitions wait for it); on Kafka they would move to the other process after
/// `session.timeout.ms`, and the paused one would rejoin and give its records up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_process_coming_back_loses_nothing() {
    use atoll_testkit::probe::Work;
    use atoll_testkit::process::{wait_until, Proc};
    use std::collections::BTreeSet;
    const PROBE: &str = env!("CARGO_BIN_EXE_probe");
    let broker = Tansu::start();
    let want: BTreeSet<String> = (0..600).map(|i| format!("p-{i}")).collect();
    let driver = broker.driver().await;
    let client = driver.client("test");
    for id in &want {
        client.send(&Work { id: id.clone() }).await.unwrap();
    }
    driver.shutdown().await;
    let mut env = broker.env();
    env.push(("PROBE_DELAY_MS".into(), "20".into()));
    let paused = Proc::start(PROBE, &[], &env);
    let other = Proc::start(PROBE, &[], &env);
    assert!(
        wait_until(Duration::from_secs(60), || paused.ids("work").len() >= 50),
        "{}",
        paused.log()
    );
    paused.pause();
    // tansu keeps a silent member in its group (see `tansu_limitations.rs`), so its partitions
    // wait for it; on Kafka they move to the other process after `session.timeout.ms`.
    std::thread::sleep(Duration::from_secs(25));
    paused.resume();
    let handled = || -> BTreeSet<String> {
        paused
            .ids("work")
            .union(&other.ids("work"))
            .cloned()
            .collect()
    };
    let done = wait_until(Duration::from_secs(120), || handled() == want);
    assert!(
        done,
        "lost {} records:\n{}\n---\n{}",
        want.difference(&handled()).count(),
        paused.log(),
        other.log()
    );
}
