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
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "tick", version = 1, service = Counter)]
struct Tick {
    n: u32,
}

#[handlers]
impl Counter {
    #[listener(name = "ticks")]
    async fn tick(&self, _tick: Tick) -> HandlerResult {
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
    let mid = tokio::task::spawn_blocking(move || {
        common::committed(&b, "acme.test.counter-ticks", "acme.test.counter.commands")
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
