//! Offsets are committed in batches: by count before the interval passes, and in full on
//! shutdown.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::{event_service, handlers, App, Event, HandlerResult};
use rdkafka::Offset;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "counter", partitions = 1)]
#[derive(Clone, Default)]
struct Counter {
    handled: Arc<AtomicUsize>,
    /// The `n` of each tick handled.
    seen: Arc<std::sync::Mutex<Vec<u32>>>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "tick", version = 1, service = Counter)]
struct Tick {
    n: u32,
}

#[handlers]
impl Counter {
    #[listener(name = "ticks")]
    async fn tick(&self, tick: Tick) -> HandlerResult {
        self.seen.lock().unwrap().push(tick.n);
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_by_count_before_the_interval_and_in_full_on_shutdown() {
    // `host` owns the embedded broker, so that it outlives the service's app.
    let host = App::new(Config::default())
        .topics(atoll::contract::owned_topics::<Counter>())
        .start()
        .await
        .unwrap();
    let bootstrap = host.bootstrap_servers().to_owned();
    let mut config = Config::default();
    config.kafka.bootstrap_servers = Some(bootstrap.clone());
    config.kafka.create_topics = false;
    config.listener.commit_interval_ms = 600_000;
    config.listener.commit_batch = 10;
    let svc = Counter::default();
    let running = App::new(config).service(svc.clone()).start().await.unwrap();
    let client = host.client("test");
    let deadline = Instant::now() + Duration::from_secs(30);
    let send_and_wait = |from: u32, to: u32| {
        let (client, svc) = (client.clone(), svc.clone());
        async move {
            for n in from..to {
                client.send(&Tick { n }).await.unwrap();
                while svc.handled.load(Ordering::SeqCst) <= n as usize && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    // Ten records: exactly one batch.
    send_and_wait(0, 10).await;
    let b = bootstrap.clone();
    // Within 30 s, of an interval of 10 minutes.
    let mid = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let at = common::committed(&b, "acme.test.counter-ticks", "acme.test.counter.commands");
            if at == Offset::Offset(10) || Instant::now() > deadline {
                return at;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert!(
        mid == Offset::Offset(10),
        "a batch was committed long before the interval: {mid:?}"
    );
    // Five more: fewer than a batch, so only the shutdown commits them.
    send_and_wait(10, 15).await;
    assert_eq!(svc.handled.load(Ordering::SeqCst), 15);
    let b = bootstrap.clone();
    let before_stop = tokio::task::spawn_blocking(move || {
        common::committed(&b, "acme.test.counter-ticks", "acme.test.counter.commands")
    })
    .await
    .unwrap();
    assert_eq!(before_stop, mid, "no batch of five");
    running.shutdown().await;
    let end = tokio::task::spawn_blocking(move || {
        common::committed(
            &bootstrap,
            "acme.test.counter-ticks",
            "acme.test.counter.commands",
        )
    })
    .await
    .unwrap();
    assert_eq!(
        end,
        Offset::Offset(15),
        "shutdown commits everything that finished"
    );
    host.shutdown().await;
}

/// A group without committed offsets starts where `listener.start_from` says: from the oldest
/// record (`earliest`, the default), or from the records written after it joined (`latest`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_starts_where_start_from_says() {
    use atoll::config::StartFrom;
    for start_from in [StartFrom::Earliest, StartFrom::Latest] {
        let host = App::new(Config::default())
            .topics(atoll::contract::owned_topics::<Counter>())
            .start()
            .await
            .unwrap();
        let client = host.client("test");
        // Three records before the group exists.
        for n in 0..3 {
            client.send(&Tick { n }).await.unwrap();
        }
        let mut config = Config::default();
        config.kafka.bootstrap_servers = Some(host.bootstrap_servers().to_owned());
        config.kafka.create_topics = false;
        config.listener.start_from = start_from;
        let svc = Counter::default();
        let running = App::new(config).service(svc.clone()).start().await.unwrap();
        // Once the group reads, the records written from then on are handled either way: ticks
        // from 100 until one is.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut n = 100;
        while !svc.seen.lock().unwrap().iter().any(|s| *s >= 100) && Instant::now() < deadline {
            client.send(&Tick { n }).await.unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Anything more would come within this.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = svc.seen.lock().unwrap().clone();
        assert!(
            seen.iter().any(|s| *s >= 100),
            "{start_from:?}: reading: {seen:?}"
        );
        let before: Vec<u32> = seen.iter().copied().filter(|s| *s < 100).collect();
        let want: Vec<u32> = match start_from {
            StartFrom::Earliest => vec![0, 1, 2],
            _ => vec![],
        };
        assert_eq!(
            before, want,
            "{start_from:?}: the records written before the group"
        );
        running.shutdown().await;
        host.shutdown().await;
    }
}
