//! Ordering modes (embedded broker): `key` keeps each key's order under random handler delays
//! while keys run concurrently within the in-flight bound; `unordered` never commits past an
//! unfinished record; a rebalance with records in flight loses nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::{event_service, handlers, App, Event, HandlerResult, Meta};
use rdkafka::Offset;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "lanes", partitions = 2)]
#[derive(Clone, Default)]
struct Lanes {
    seen: Arc<Mutex<Vec<(String, u32)>>>,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "step", version = 1, service = Lanes)]
struct Step {
    #[event(key)]
    key: String,
    seq: u32,
}

#[handlers]
impl Lanes {
    #[listener(name = "steps", ordering = "key", max_in_flight = 8)]
    async fn step(&self, step: Step) -> HandlerResult {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..6))).await;
        self.seen.lock().unwrap().push((step.key, step.seq));
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_mode_keeps_each_keys_order_and_bounds_what_is_in_flight() {
    let svc = Lanes::default();
    let running = App::new(Config::default())
        .service(svc.clone())
        .start()
        .await
        .unwrap();
    let client = running.client("test");
    let (keys, per_key) = (20, 25);
    for seq in 0..per_key {
        for k in 0..keys {
            client
                .send(&Step {
                    key: format!("k{k}"),
                    seq,
                })
                .await
                .unwrap();
        }
    }
    let total = (keys * per_key) as usize;
    assert!(
        wait_for(Duration::from_secs(60), || svc.seen.lock().unwrap().len()
            == total)
        .await
    );
    let mut by_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (k, seq) in svc.seen.lock().unwrap().iter() {
        by_key.entry(k.clone()).or_default().push(*seq);
    }
    assert_eq!(by_key.len(), keys as usize);
    for (k, seqs) in &by_key {
        assert_eq!(*seqs, (0..per_key).collect::<Vec<_>>(), "order of {k}");
    }
    let peak = svc.peak.load(Ordering::SeqCst);
    assert!(peak > 1, "keys ran concurrently (peak {peak})");
    assert!(peak <= 8, "at most max_in_flight at once (peak {peak})");
    running.shutdown().await;
}

#[event_service(company = "acme", namespace = "test", name = "loose", partitions = 1)]
#[derive(Clone, Default)]
struct Loose {
    release: Arc<AtomicBool>,
    done: Arc<Mutex<BTreeSet<i64>>>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "job", version = 1, service = Loose)]
struct Job {
    #[event(key)]
    id: String,
}

#[handlers]
impl Loose {
    #[listener(
        name = "jobs",
        ordering = "unordered",
        max_in_flight = 16,
        handler_timeout_ms = 120000
    )]
    async fn job(&self, meta: Meta, job: Job) -> HandlerResult {
        while job.id == "hold" && !self.release.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.done.lock().unwrap().insert(meta.offset);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_never_commits_past_an_unfinished_record() {
    let svc = Loose::default();
    let mut config = Config::default();
    config.listener.commit_interval_ms = 100;
    let running = App::new(config).service(svc.clone()).start().await.unwrap();
    let client = running.client("test");
    for i in 0..40 {
        let id = if i == 10 {
            "hold".to_owned()
        } else {
            format!("j{i}")
        };
        client.send(&Job { id }).await.unwrap();
    }
    // Everything but the held record (offset 10) finishes; commits keep running.
    assert!(
        wait_for(Duration::from_secs(30), || svc.done.lock().unwrap().len()
            == 39)
        .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let bootstrap = running.bootstrap_servers().to_owned();
    let (group, topic) = ("acme.test.loose-jobs", "acme.test.loose.commands");
    let before = {
        let b = bootstrap.clone();
        tokio::task::spawn_blocking(move || common::committed(&b, group, topic))
            .await
            .unwrap()
    };
    assert!(
        matches!(before, Offset::Offset(o) if o <= 10) || before == Offset::Invalid,
        "committed {before:?} past the unfinished offset 10"
    );
    svc.release.store(true, Ordering::SeqCst);
    assert!(
        wait_for(Duration::from_secs(30), || svc.done.lock().unwrap().len()
            == 40)
        .await
    );
    let after = wait_for(Duration::from_secs(10), || {
        common::committed(&bootstrap, group, topic) == Offset::Offset(40)
    })
    .await;
    assert!(after, "everything committed once the held record finished");
    running.shutdown().await;
}

#[event_service(company = "acme", namespace = "test", name = "shared", partitions = 4)]
#[derive(Clone, Default)]
struct Shared {
    handled: Arc<Mutex<BTreeSet<String>>>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "work", version = 1, service = Shared)]
struct Work {
    #[event(key)]
    id: String,
}

#[handlers]
impl Shared {
    #[listener(name = "work", ordering = "key", max_in_flight = 8)]
    async fn work(&self, w: Work) -> HandlerResult {
        tokio::time::sleep(Duration::from_millis(40)).await;
        self.handled.lock().unwrap().insert(w.id);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_with_records_in_flight_loses_nothing() {
    // `host` owns the embedded broker; two processes of the service share its group.
    let host = App::new(Config::default())
        .topics(atoll::contract::owned_topics::<Shared>())
        .start()
        .await
        .unwrap();
    let mut config = Config::default();
    config.kafka.bootstrap_servers = Some(host.bootstrap_servers().to_owned());
    config.kafka.create_topics = false;
    config.service.static_membership = false;
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "200"),
    ] {
        config.kafka.properties.insert(k.into(), v.into());
    }
    let svc = Shared::default();
    let client = host.client("test");
    // 1,000 records of 40 ms, 8 at a time: about 5 s of work, so the join lands mid-way. All
    // are sent before the first process starts, so that the sends do not eat into that time.
    let all: BTreeSet<String> = (0..1000).map(|i| format!("w{i}")).collect();
    for id in &all {
        client.send(&Work { id: id.clone() }).await.unwrap();
    }
    let first = App::new(config.clone())
        .service(svc.clone())
        .start()
        .await
        .unwrap();
    // A second process joins while the first has records in flight: partitions move.
    assert!(
        wait_for(Duration::from_secs(30), || svc
            .handled
            .lock()
            .unwrap()
            .len()
            >= 50)
        .await
    );
    let second = App::new(config).service(svc.clone()).start().await.unwrap();
    let complete = wait_for(Duration::from_secs(90), || {
        svc.handled.lock().unwrap().len() == all.len()
    })
    .await;
    let revoked = first.assignments().iter().any(|a| a.revocations > 0);
    let got = svc.handled.lock().unwrap().clone();
    assert!(complete, "lost {} records", all.difference(&got).count());
    assert!(revoked, "the second process caused a rebalance");
    second.shutdown().await;
    first.shutdown().await;
}
