//! In partition mode a handler's outputs are acknowledged in the background: the next record is
//! handled meanwhile, but a record counts as finished only once its outputs are acknowledged.
//! Here the broker rejects the first produce requests: those records are handled again, every
//! output arrives, and the offsets end committed with nothing dead-lettered.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::{event_service, handlers, App, Context, Event, HandlerResult};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::Offset;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "echo", partitions = 1)]
#[derive(Default, Clone)]
struct Echo {
    handled: Arc<Mutex<HashMap<u32, u32>>>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "ping", version = 1, service = Echo)]
struct Ping {
    n: u32,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "pinged", version = 1, service = Echo)]
struct Pinged {
    n: u32,
}

#[handlers]
impl Echo {
    #[listener(name = "pings")]
    async fn ping(&self, ctx: Context<Self>, ping: Ping) -> HandlerResult {
        ctx.emit(Pinged { n: ping.n }).await?;
        *self.handled.lock().unwrap().entry(ping.n).or_default() += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_whose_outputs_were_rejected_are_handled_again() {
    const N: u32 = 30;
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    for t in atoll::contract::owned_topics::<Echo>() {
        cluster
            .create_topic(t.name.as_str(), t.partitions, 1)
            .unwrap();
    }
    let mut config = Config::default();
    config.kafka.bootstrap_servers = Some(bootstrap.clone());
    config.kafka.create_topics = false;
    config.listener.commit_batch = 1;
    let client_app = App::new(config.clone()).start().await.unwrap();
    let client = client_app.client("test");
    for n in 0..N {
        client.send(&Ping { n }).await.unwrap();
    }
    // The service's first two produce requests fail for good (not retriable).
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 2],
    );
    let svc = Echo::default();
    let running = App::new(config).service(svc.clone()).start().await.unwrap();
    let b = bootstrap.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::task::spawn_blocking({
        let b = b.clone();
        move || common::committed(&b, "acme.test.echo-pings", "acme.test.echo.commands")
    })
    .await
    .unwrap()
        != Offset::Offset(N as i64)
    {
        assert!(
            Instant::now() < deadline,
            "the offsets were never committed in full"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = running.stats();
    running.shutdown().await;
    assert!(stats.iter().all(|s| s.dead_lettered == 0), "{stats:?}");

    let handled = svc.handled.lock().unwrap().clone();
    assert_eq!(
        handled.len(),
        N as usize,
        "every record handled: {handled:?}"
    );
    let again: Vec<u32> = (0..N).filter(|n| handled[n] > 1).collect();
    assert!(
        !again.is_empty(),
        "the records of the rejected requests were handled again: {handled:?}"
    );
    let out = tokio::task::spawn_blocking(move || {
        common::read_topic(&b, "acme.test.echo.events", 1, N as usize)
    })
    .await
    .unwrap();
    assert!(out
        .iter()
        .all(|m| common::header(m, "ce_type") == Some("acme.test.echo.pinged.v1")));
    let mut seen: Vec<u32> = out
        .iter()
        .map(|m| {
            let p: Pinged = serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap();
            p.n
        })
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..N).collect::<Vec<_>>(), "every output arrived");
    client_app.shutdown().await;
}
