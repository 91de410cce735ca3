//! KIP-848's consumer group protocol (`listener.group_protocol = "consumer"`) on librdkafka's
//! mock cluster, which implements it: the broker assigns the partitions, a process joining
//! takes some over from the one running, a process leaving hands its own back, and every
//! record is handled once; the properties the protocol does not take are refused at start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::config::{Config, GroupProtocol};
use atoll::{event_service, handlers, App, Event, HandlerResult, Running};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "kip", partitions = 4)]
#[derive(Clone, Default)]
struct Kip {
    /// How often each record was handled, by its number.
    seen: Arc<Mutex<BTreeMap<u64, u32>>>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "tick", version = 1, service = Kip)]
struct Tick {
    #[event(key)]
    key: String,
    n: u64,
}

#[handlers]
impl Kip {
    #[listener(name = "tick")]
    async fn tick(&self, tick: Tick) -> HandlerResult {
        *self.seen.lock().unwrap().entry(tick.n).or_default() += 1;
        Ok(())
    }
}

fn config(bootstrap: &str, name: &str) -> Config {
    let mut c = Config::default();
    c.kafka.bootstrap_servers = Some(bootstrap.to_owned());
    c.service.process_name = Some(name.to_owned());
    c.service.static_membership = false;
    // The mock cluster has no CreateTopics; the host created them.
    c.kafka.create_topics = false;
    c.listener.group_protocol = GroupProtocol::Consumer;
    c
}

fn partitions(r: &Running) -> Vec<i32> {
    r.assignments()
        .into_iter()
        .find(|a| a.listener == "tick")
        .map(|a| a.partitions)
        .unwrap_or_default()
}

async fn wait(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Sends ticks `from..to`, keyed over 16 keys.
async fn send(client: &atoll::Client, from: u64, to: u64) {
    for n in from..to {
        client
            .send(&Tick {
                key: format!("k{}", n % 16),
                n,
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_joining_and_leaving_share_the_partitions_and_handle_each_record_once() {
    let host = App::new(Config::default())
        .topics(atoll::contract::owned_topics::<Kip>())
        .start()
        .await
        .unwrap();
    let bootstrap = host.bootstrap_servers().to_owned();
    let client = host.client("test");
    let kip = Kip::default();
    let a = App::new(config(&bootstrap, "a"))
        .service(kip.clone())
        .start()
        .await
        .unwrap();
    assert!(
        wait(|| partitions(&a).len() == 4).await,
        "a alone got {:?}",
        partitions(&a)
    );
    send(&client, 0, 200).await;
    // A second process joins: the broker moves some partitions to it; a keeps the others
    // and goes on with them meanwhile.
    let b = App::new(config(&bootstrap, "b"))
        .service(kip.clone())
        .start()
        .await
        .unwrap();
    // The fewest partitions a held while b joined: with the classic protocol (eager) every
    // member gives all of its partitions back first.
    let mut fewest = 4;
    let split = wait(|| {
        let (x, y) = (partitions(&a), partitions(&b));
        fewest = fewest.min(x.len());
        !x.is_empty() && !y.is_empty() && x.len() + y.len() == 4
    })
    .await;
    assert!(split, "a={:?} b={:?}", partitions(&a), partitions(&b));
    assert!(
        fewest > 0,
        "a gave all of its partitions back while b joined"
    );
    send(&client, 200, 400).await;
    // The first leaves: its partitions go to the other, which handles the rest.
    a.shutdown().await;
    assert!(
        wait(|| partitions(&b).len() == 4).await,
        "b after a left: {:?}",
        partitions(&b)
    );
    send(&client, 400, 600).await;
    let all = wait(|| kip.seen.lock().unwrap().len() == 600).await;
    let seen = kip.seen.lock().unwrap().clone();
    assert!(all, "handled {} of 600", seen.len());
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    b.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_property_the_consumer_protocol_does_not_take_is_refused_at_start() {
    let host = App::new(Config::default())
        .topics(atoll::contract::owned_topics::<Kip>())
        .start()
        .await
        .unwrap();
    let mut c = config(host.bootstrap_servers(), "a");
    c.kafka
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    let refused = App::new(c)
        .service(Kip::default())
        .start()
        .await
        .expect_err("refused");
    let why = refused.to_string();
    assert!(
        why.contains("listener `tick`")
            && why.contains("`consumer` group protocol")
            && why.contains("session.timeout.ms"),
        "{why}"
    );
    host.shutdown().await;
}
