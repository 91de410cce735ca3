//! The console's reader on librdkafka's mock cluster: a running process's status shows up,
//! with its listener, and goes when the process stops.

use std::time::{Duration, Instant};

use atoll::contract::owned_topics;
use atoll::{event_service, handlers, App, Event, HandlerResult};
use atoll_console::{Console, Liveness};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "seen", partitions = 1)]
#[derive(Default, Clone)]
struct Seen;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "ping", version = 1, service = Seen)]
struct Ping {
    #[event(key)]
    id: String,
}

#[handlers]
impl Seen {
    #[listener(name = "pings")]
    async fn ping(&self, _ping: Ping) -> HandlerResult {
        Ok(())
    }
}

/// Waits until `f` holds of what the console sees.
async fn until(console: &Console, what: &str, f: impl Fn(&[atoll_console::ServiceView]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let services = console.services();
        if f(&services) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {services:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_shows_up_with_its_listener_and_goes_when_it_stops() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    for t in owned_topics::<Seen>() {
        cluster
            .create_topic(t.name.as_str(), t.partitions, 1)
            .unwrap();
    }
    let mut config = atoll::config::Config::default();
    config.kafka.bootstrap_servers = Some(cluster.bootstrap_servers());
    config.kafka.create_topics = false;
    config.status.interval_ms = 200;
    let running = App::new(config.clone())
        .service(Seen)
        .start()
        .await
        .unwrap();
    running
        .client("t")
        .send(&Ping { id: "a".into() })
        .await
        .unwrap();
    let client = atoll::broker::client_config(&config, &cluster.bootstrap_servers()).unwrap();
    let console = Console::start(&client, "", None).unwrap();
    let process = running.process_name().to_owned();
    until(&console, "the process and its handled record", |s| {
        s.iter().any(|s| {
            s.name == "acme.test.seen"
                && s.processes
                    .iter()
                    .any(|p| p.name == process && p.liveness == Liveness::Alive)
                && s.listeners
                    .iter()
                    .any(|l| l.name == "pings" && l.processes == [process.clone()])
                && s.processes
                    .iter()
                    .any(|p| p.last.listeners.iter().any(|l| l.handled == 1))
        })
    })
    .await;
    running.shutdown().await;
    until(&console, "the service without processes", |s| {
        s.iter()
            .any(|s| s.name == "acme.test.seen" && s.processes.is_empty())
    })
    .await;
}
