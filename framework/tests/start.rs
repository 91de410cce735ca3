//! A start that fails part-way leaves nothing running: the listeners already started are
//! stopped, and their poll and commit threads joined, before the error is returned. Settings
//! that cannot work together across listeners are refused at start.

mod common;

use atoll::config::{ListenerSettings, RetryMode};
use atoll::{event_service, handlers, App, Event, HandlerResult};
use common::mock_cluster;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "first")]
struct First;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "go", version = 1, service = First)]
struct Go {}

#[handlers]
impl First {
    #[listener(name = "firstl")]
    async fn go(&self, _go: Go) -> HandlerResult {
        Ok(())
    }
}

#[event_service(company = "acme", namespace = "test", name = "second")]
struct Second;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "stop", version = 1, service = Second)]
struct Stop {}

#[handlers]
impl Second {
    #[listener(name = "secondl")]
    async fn stop(&self, _stop: Stop) -> HandlerResult {
        Ok(())
    }
}

/// The names of this process's threads.
fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_stops_and_joins_what_it_started() {
    let topics = atoll::contract::owned_topics::<First>()
        .into_iter()
        .chain(atoll::contract::owned_topics::<Second>());
    let (_cluster, mut config) = mock_cluster(topics);
    // The second service's listener is misconfigured: found after the first one started.
    config.listeners.insert(
        "secondl".into(),
        ListenerSettings {
            max_in_flight: Some(0),
            ..Default::default()
        },
    );
    let started = App::new(config)
        .service(First)
        .service(Second)
        .start()
        .await;
    let Err(e) = started else {
        panic!("the start should fail")
    };
    assert!(e.to_string().contains("max_in_flight"), "{e}");
    let left: Vec<String> = threads()
        .into_iter()
        .filter(|n| n.starts_with("atoll-firstl") || n.starts_with("atoll-commit-fi"))
        .collect();
    assert!(left.is_empty(), "threads left running: {left:?}");
}

#[event_service(company = "acme", namespace = "test", name = "third")]
struct Third;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "left", version = 1, service = Third)]
struct Left {}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "right", version = 1, service = Third)]
struct Right {}

#[handlers]
impl Third {
    #[listener(name = "left")]
    async fn left(&self, _left: Left) -> HandlerResult {
        Ok(())
    }

    #[listener(name = "right")]
    async fn right(&self, _right: Right) -> HandlerResult {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_whose_ladders_together_have_more_than_8_delays_are_refused() {
    let (_cluster, mut config) = mock_cluster(atoll::contract::owned_topics::<Third>());
    for (listener, delays) in [
        ("left", [100, 200, 300, 400, 500]),
        ("right", [500, 600, 700, 800, 900]),
    ] {
        config.listeners.insert(
            listener.into(),
            ListenerSettings {
                retry: Some(RetryMode::NonBlocking),
                retry_topic_attempts: Some(5),
                retry_topic_delays_ms: Some(delays.to_vec()),
                ..Default::default()
            },
        );
    }
    // Listed without their tiers (the start says why)…
    let app = App::new(config).service(Third);
    assert!(
        !app.declared_topics()
            .iter()
            .any(|t| t.name.as_str().contains(".private.retry-")),
        "no tier of settings that cannot work"
    );
    // … and refused at start.
    let Err(e) = app.start().await else {
        panic!("the start should fail")
    };
    let why = e.to_string();
    assert!(
        why.contains("use 9 retry delays together") && why.contains("more than 8"),
        "{why}"
    );
}
