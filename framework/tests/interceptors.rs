//! Interceptors on the embedded broker: tower layers around a service's handlers
//! (`App::layer`) or one listener's (`App::listener_layer`). A layer that refuses a record
//! dead-letters it unhandled with its cause; layers run outermost first, see the record's
//! headers, and wrap only the listeners they are given for; a stock tower layer (a timeout)
//! fails a call transiently, and it is retried. A layer for a listener or a service that does
//! not exist, or around a set-based handler, stops the start with the reason.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::layer::{from_fn, Incoming, Next};
use atoll::{event_service, handlers, App, BoxError, Event, HandlerError, HandlerResult, Service};
use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "desk", partitions = 1)]
#[derive(Default, Clone)]
struct Desk {
    /// What ran, in order: layers' marks and the handlers' `handled:<id>`.
    trace: Arc<Mutex<Vec<String>>>,
    /// Attempts by ticket id.
    attempts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Desk {
    fn mark(&self, what: String) {
        self.trace.lock().unwrap().push(what);
    }
}

#[derive(Debug, Default, Serialize, Deserialize, Event)]
#[event(command, name = "ticket", version = 1, service = Desk)]
struct Ticket {
    #[event(key)]
    id: String,
    /// Sleep this long on the first attempt.
    first_sleep_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize, Event)]
#[event(command, name = "note", version = 1, service = Desk)]
struct Note {
    #[event(key)]
    id: String,
}

#[handlers]
impl Desk {
    #[listener(name = "tickets")]
    async fn ticket(&self, t: Ticket) -> HandlerResult {
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(t.id.clone()).or_default();
            *n += 1;
            *n
        };
        if attempt == 1 && t.first_sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(t.first_sleep_ms)).await;
        }
        self.mark(format!("handled:{}", t.id));
        Ok(())
    }

    #[listener(name = "notes")]
    async fn note(&self, n: Note) -> HandlerResult {
        self.mark(format!("handled:{}", n.id));
        Ok(())
    }
}

/// Commands from anyone but the front desk are refused: dead-lettered, unhandled.
async fn front_desk_only(record: Incoming<Desk>, next: Next<Desk>) -> Result<(), BoxError> {
    if record.meta().source.as_deref() != Some("front-desk") {
        return Err(HandlerError::permanent(format!(
            "not sent by the front desk: {}",
            record.meta().source.as_deref().unwrap_or("no source")
        ))
        .into());
    }
    next.run(record).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_wrap_the_handlers_they_are_given_for_outermost_first() {
    let desk = Desk::default();
    // A layer that marks `name`, the record's key and its `ce_type` header, then hands on.
    let marking = |name: &'static str| {
        let desk = desk.clone();
        from_fn(move |record: Incoming<Desk>, next: Next<Desk>| {
            let desk = desk.clone();
            async move {
                let ce_type = record.header_str("ce_type").unwrap_or("none").to_owned();
                let key = record.meta().key.clone().unwrap_or_default();
                desk.mark(format!("{name}:{key}:{ce_type}"));
                next.run(record).await
            }
        })
    };
    let running = App::new(Config::default())
        .service(desk.clone())
        .layer::<Desk, _>(from_fn(front_desk_only))
        .layer::<Desk, _>(marking("outer"))
        .listener_layer::<Desk, _>("tickets", marking("inner"))
        .listener_layer::<Desk, _>(
            "tickets",
            tower::timeout::TimeoutLayer::new(Duration::from_millis(500)),
        )
        .start()
        .await
        .unwrap();
    let front = running.client("front-desk");
    let stranger = running.client("stranger");
    stranger
        .send(&Ticket {
            id: "sneaky".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    front
        .send(&Ticket {
            id: "t1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    front.send(&Note { id: "n1".into() }).await.unwrap();
    // Its first attempt outlasts the timeout layer: failed transiently, and retried.
    front
        .send(&Ticket {
            id: "slow".into(),
            first_sleep_ms: 2_000,
        })
        .await
        .unwrap();
    let bootstrap = running.bootstrap_servers().to_owned();
    let dlq = tokio::task::spawn_blocking(move || {
        common::read_topic(&bootstrap, "acme.test.desk.private.dlq", 1, 1)
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = |t: &[String]| {
        t.contains(&"handled:slow".to_owned()) && t.contains(&"handled:n1".to_owned())
    };
    while !done(&desk.trace.lock().unwrap()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;

    let trace = desk.trace.lock().unwrap().clone();
    let of = |id: &str| -> Vec<&str> {
        trace
            .iter()
            .filter(|m| m.contains(&format!(":{id}")))
            .map(String::as_str)
            .collect()
    };
    assert_eq!(
        of("t1"),
        [
            "outer:t1:acme.test.desk.ticket.v1",
            "inner:t1:acme.test.desk.ticket.v1",
            "handled:t1"
        ],
        "outermost first, the record's headers seen"
    );
    assert_eq!(
        of("n1"),
        ["outer:n1:acme.test.desk.note.v1", "handled:n1"],
        "a listener layer wraps its listener only"
    );
    assert_eq!(
        of("sneaky"),
        Vec::<&str>::new(),
        "refused before any other layer"
    );
    assert_eq!(
        desk.attempts.lock().unwrap()["slow"],
        2,
        "timed out once, then handled"
    );
    assert_eq!(dlq.len(), 1);
    let header = |name| common::header(&dlq[0], name).unwrap_or_default().to_owned();
    assert_eq!(dlq[0].key(), Some(&b"sneaky"[..]));
    assert_eq!(header("atoll_dlq_error_kind"), "handler");
    assert_eq!(
        header("atoll_dlq_error"),
        "not sent by the front desk: stranger"
    );
    assert_eq!(
        header("atoll_dlq_attempts"),
        "1",
        "a permanent refusal is not retried"
    );
}

#[event_service(company = "acme", namespace = "test", name = "bulk", partitions = 1)]
struct Bulk;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "item", version = 1, service = Bulk)]
struct Item {
    #[event(key)]
    id: String,
}

#[handlers]
impl Bulk {
    #[listener(name = "items")]
    async fn items(&self, _batch: atoll::Batch<Self, Item>) -> HandlerResult {
        Ok(())
    }
}

/// A layer that hands every record on.
async fn pass<S: Service>(record: Incoming<S>, next: Next<S>) -> Result<(), BoxError> {
    next.run(record).await
}

#[tokio::test]
async fn a_layer_that_cannot_wrap_what_it_names_stops_the_start() {
    let starts = [
        (
            App::new(Config::default())
                .service(Desk::default())
                .listener_layer::<Desk, _>("tickts", from_fn(pass::<Desk>)),
            "a layer is given for listener `tickts` of `acme.test.desk`, which has none of that name; its listeners are: tickets, notes",
        ),
        (
            App::new(Config::default())
                .service(Desk::default())
                .layer::<Bulk, _>(from_fn(pass::<Bulk>)),
            "a layer is given for service `acme.test.bulk`, which this app does not register",
        ),
        (
            App::new(Config::default())
                .service(Bulk)
                .layer::<Bulk, _>(from_fn(pass::<Bulk>)),
            "listener `items` takes a `Batch`, and a layer wraps one record's call",
        ),
    ];
    for (app, why) in starts {
        let err = match app.start().await {
            Ok(_) => panic!("started: {why}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(why), "{err}");
    }
}
