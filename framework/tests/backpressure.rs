//! A partition whose buffer is full is paused and resumed where it stopped: nothing is
//! skipped, whatever librdkafka had prefetched.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::{event_service, handlers, App, Event, HandlerResult, Meta};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "slow", partitions = 2)]
#[derive(Clone, Default)]
struct Slow {
    seen: Arc<Mutex<Vec<(i32, i64, u32)>>>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "item", version = 1, service = Slow)]
struct Item {
    #[event(key)]
    n: u32,
}

#[handlers]
impl Slow {
    #[listener(name = "items")]
    async fn item(&self, meta: Meta, item: Item) -> HandlerResult {
        tokio::time::sleep(Duration::from_micros(300)).await;
        self.seen
            .lock()
            .unwrap()
            .push((meta.partition, meta.offset, item.n));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_partitions_resume_without_skipping() {
    let mut config = Config::default();
    config.listener.max_buffered = 40;
    let svc = Slow::default();
    let running = App::new(config).service(svc.clone()).start().await.unwrap();
    let client = running.client("test");
    let sends = (0..1_000).map(|n| {
        let client = client.clone();
        async move { client.send(&Item { n }).await }
    });
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while svc.seen.lock().unwrap().len() < 1_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;
    let seen = svc.seen.lock().unwrap().clone();
    let unique: BTreeSet<u32> = seen.iter().map(|(_, _, n)| *n).collect();
    assert_eq!(
        unique.len(),
        1_000,
        "every record handled ({} deliveries)",
        seen.len()
    );
    for p in 0..2 {
        let offsets: Vec<i64> = seen
            .iter()
            .filter(|(q, _, _)| *q == p)
            .map(|(_, o, _)| *o)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "partition {p} handled in order, without gaps"
        );
    }
}
