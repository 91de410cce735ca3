//! The runtime end to end on the embedded broker (librdkafka's mock cluster).

mod common;

use std::sync::{Arc, Mutex};

use atoll::config::Config;
use atoll::{event_service, handlers, App, Context, Event, HandlerError, HandlerResult, Meta};
use common::header;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::Message;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "greeter", partitions = 2)]
struct Greeter {
    seen: Arc<Mutex<Vec<(String, Meta)>>>,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "greet", version = 1, service = Greeter)]
struct Greet {
    #[event(key)]
    who: String,
}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "greeted", version = 1, service = Greeter)]
struct Greeted {
    who: String,
}

#[handlers]
impl Greeter {
    #[listener(name = "greet")]
    async fn greet(&self, ctx: Context<Self>, meta: Meta, cmd: Greet) -> HandlerResult {
        if cmd.who == "nobody" {
            return Err(HandlerError::permanent("cannot greet nobody"));
        }
        self.seen.lock().unwrap().push((cmd.who.clone(), meta));
        ctx.emit(Greeted { who: cmd.who }).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_handled_facts_emitted_and_bad_input_dead_lettered() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let running = App::new(Config::default())
        .service(Greeter { seen: seen.clone() })
        .start()
        .await
        .unwrap();
    let client = running.client("test-driver");
    client.send(&Greet { who: "ada".into() }).await.unwrap();
    // Garbage, an unknown type, then a permanent failure, then a valid one.
    let topic = "acme.test.greeter.commands";
    let typed = |t: &'static str| {
        OwnedHeaders::new().insert(Header {
            key: "ce_type",
            value: Some(t),
        })
    };
    client
        .send_raw(
            topic,
            Some(b"ada"),
            b"\x00\xffnot json",
            typed("acme.test.greeter.greet.v1"),
        )
        .await
        .unwrap();
    client
        .send_raw(
            topic,
            Some(b"ada"),
            b"{}",
            typed("acme.test.greeter.shout.v1"),
        )
        .await
        .unwrap();
    client
        .send_raw(topic, Some(b"ada"), b"{}", OwnedHeaders::new())
        .await
        .unwrap();
    client
        .send(&Greet {
            who: "nobody".into(),
        })
        .await
        .unwrap();
    client.send(&Greet { who: "bob".into() }).await.unwrap();

    let bootstrap = running.bootstrap_servers().to_owned();
    let facts = tokio::task::spawn_blocking({
        let b = bootstrap.clone();
        move || common::read_topic(&b, "acme.test.greeter.events", 2, 2)
    })
    .await
    .unwrap();
    let dlq = tokio::task::spawn_blocking(move || {
        common::read_topic(&bootstrap, "acme.test.greeter.private.dlq", 2, 4)
    })
    .await
    .unwrap();
    running.shutdown().await;

    let mut names: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(w, _)| w.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["ada", "bob"]);
    assert_eq!(facts.len(), 2);
    let (_, meta) = &seen.lock().unwrap()[0];
    let fact = facts
        .iter()
        .find(|f| f.key() == meta.key.as_deref().map(str::as_bytes))
        .unwrap();
    assert_eq!(
        header(fact, "ce_type"),
        Some("acme.test.greeter.greeted.v1")
    );
    assert_eq!(
        header(fact, "ce_correlationid"),
        Some(meta.correlation_id.as_str())
    );
    assert_eq!(header(fact, "ce_causationid"), Some(meta.id.as_str()));
    assert_eq!(
        header(fact, "ce_source"),
        Some("acme.test.greeter"),
        "the service, not the process: a record sent again by another process is the same event"
    );

    let mut kinds: Vec<&str> = dlq
        .iter()
        .map(|m| header(m, "atoll_dlq_error_kind").unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["decode", "handler", "unknown_type", "unknown_type"]);
    for m in &dlq {
        assert_eq!(header(m, "atoll_dlq_original_topic"), Some(topic));
        assert_eq!(header(m, "atoll_dlq_listener"), Some("greet"));
        assert!(header(m, "atoll_dlq_original_offset")
            .unwrap()
            .parse::<i64>()
            .is_ok());
    }
    let decode = dlq
        .iter()
        .find(|m| header(*m, "atoll_dlq_error_kind") == Some("decode"))
        .unwrap();
    assert_eq!(
        decode.payload(),
        Some(&b"\x00\xffnot json"[..]),
        "payload preserved"
    );
    assert_eq!(decode.key(), Some(&b"ada"[..]), "key preserved");
    assert_eq!(
        header(decode, "ce_type"),
        Some("acme.test.greeter.greet.v1"),
        "headers preserved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_service_twice_is_an_error() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let err = App::new(Config::default())
        .service(Greeter { seen: seen.clone() })
        .service(Greeter { seen })
        .start()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("acme.test.greeter` is registered twice"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_for_an_unknown_listener_fails_at_start() {
    let mut config = Config::default();
    config.listeners.insert("greeet".into(), Default::default());
    let err = App::new(config)
        .service(Greeter {
            seen: Default::default(),
        })
        .start()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("listeners.greeet names no listener"),
        "{err}"
    );
    assert!(err.to_string().contains("greet"), "{err}");
}

/// Written by hand (the macro refuses duplicate names): two listeners named alike.
struct Twice;

impl atoll::Service for Twice {
    const ID: atoll::ServiceId = atoll::ServiceId::new_unchecked("acme", "test", "twice");
    const PARTITIONS: i32 = 1;
}

// What `#[event_service]` would generate for a service without sagas.
impl atoll::__private::SagaListeners for Twice {}

impl atoll::Handlers for Twice {
    fn listeners() -> Vec<atoll::Listener<Self>> {
        let noop = |_: Arc<Twice>, _: Context<Twice>, _: Greeted| async { HandlerResult::Ok(()) };
        vec![
            atoll::Listener::new("same", noop),
            atoll::Listener::new("same", noop),
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_listener_names_fail_at_start() {
    let err = App::new(Config::default())
        .service(Twice)
        .start()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("declares listener `same` twice"),
        "{err}"
    );
}
