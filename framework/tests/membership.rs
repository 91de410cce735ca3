//! Process names and static group membership on the embedded broker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::{event_service, handlers, App, Assignment, Event, HandlerResult, Running};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "member", partitions = 4)]
#[derive(Clone, Default)]
struct Member {
    seen: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "ping", version = 1, service = Member)]
struct Ping {
    #[event(key)]
    id: String,
}

#[handlers]
impl Member {
    #[listener(name = "ping")]
    async fn ping(&self, ping: Ping) -> HandlerResult {
        self.seen.lock().unwrap().push(ping.id);
        Ok(())
    }
}

fn config(bootstrap: Option<&str>, name: &str) -> Config {
    let mut c = Config::default();
    c.kafka.bootstrap_servers = bootstrap.map(str::to_owned);
    c.service.process_name = Some(name.to_owned());
    // The mock cluster has no CreateTopics; the host created them.
    c.kafka.create_topics = false;
    c.kafka
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    c.kafka
        .properties
        .insert("heartbeat.interval.ms".into(), "500".into());
    c
}

fn assignment(r: &Running) -> Assignment {
    r.assignments().into_iter().next().unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_static_member_gets_its_partitions_back() {
    // `host` owns the embedded broker; `a` and `b` are the two processes of the service.
    let host = App::new(Config::default())
        .topics(atoll::contract::owned_topics::<Member>())
        .start()
        .await
        .unwrap();
    let bootstrap = host.bootstrap_servers().to_owned();
    let a = App::new(config(Some(&bootstrap), "a"))
        .service(Member::default())
        .start()
        .await
        .unwrap();
    let b = App::new(config(Some(&bootstrap), "b"))
        .service(Member::default())
        .start()
        .await
        .unwrap();
    let split = wait(|| {
        let (x, y) = (assignment(&a).partitions, assignment(&b).partitions);
        !x.is_empty() && !y.is_empty() && x.len() + y.len() == 4
    })
    .await;
    assert!(split, "a={:?} b={:?}", assignment(&a), assignment(&b));
    let before_a = assignment(&a).partitions;
    let b_before = assignment(&b);
    // A static member does not leave the group when it stops; its successor takes its place.
    a.shutdown().await;
    let a2 = App::new(config(Some(&bootstrap), "a"))
        .service(Member::default())
        .start()
        .await
        .unwrap();
    assert!(
        wait(|| !assignment(&a2).partitions.is_empty()).await,
        "restarted member got no partitions"
    );
    assert_eq!(assignment(&a2).partitions, before_a);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // On Kafka the rejoin causes no rebalance at all; librdkafka's mock cluster rebalances
    // once, and the assignment is still the same once that rebalance ended (on a loaded
    // machine it may still be under way here, `b` holding nothing for a moment).
    assert!(
        wait(|| !assignment(&b).partitions.is_empty()).await,
        "the other member never got its partitions back"
    );
    assert_eq!(
        assignment(&b).partitions,
        b_before.partitions,
        "the other member kept its partitions"
    );
    a2.shutdown().await;
    b.shutdown().await;
    host.shutdown().await;
}
