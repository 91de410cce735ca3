//! Avro with a schema registry (the development one) on the embedded broker: the wire format,
//! schema evolution both ways, bad input, and an unreachable registry.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::AvroSchema;
use atoll::codec::CodecKind;
use atoll::codec::DevRegistry;
use atoll::config::Config;
use atoll::envelope::Outgoing;
use atoll::{event_service, handlers, App, Context, Event, HandlerResult, Service};
use common::header;
use rdkafka::Message;
use serde::{Deserialize, Serialize};

/// The producer, with version 1 of `item_added`.
#[allow(unreachable_pub)]
mod v1 {
    use super::*;

    #[event_service(company = "acme", namespace = "test", name = "cart", partitions = 1)]
    #[derive(Debug, Default)]
    pub struct Cart;

    #[derive(Debug, Serialize, Deserialize, Event, AvroSchema)]
    #[event(command, name = "add_item", version = 1, service = Cart)]
    pub struct AddItem {
        #[event(key)]
        pub cart_id: String,
        pub sku: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event, AvroSchema)]
    #[event(fact, name = "item_added", version = 1, service = Cart)]
    pub struct ItemAdded {
        #[event(key)]
        pub cart_id: String,
        pub sku: String,
    }

    #[derive(Debug, Serialize, Deserialize, Event, AvroSchema)]
    #[event(command, name = "add_item_v2", version = 1, service = Cart)]
    pub struct AddItemV2 {
        #[event(key)]
        pub cart_id: String,
    }

    #[handlers]
    impl Cart {
        #[listener(name = "add-v2")]
        async fn add_v2(&self, ctx: Context<Self>, cmd: AddItemV2) -> HandlerResult {
            ctx.emit(super::ItemAddedV2 {
                cart_id: cmd.cart_id,
                sku: "pear".into(),
                qty: 3,
            })
            .await?;
            Ok(())
        }

        #[listener(name = "add")]
        async fn add(&self, ctx: Context<Self>, cmd: AddItem) -> HandlerResult {
            ctx.emit(ItemAdded {
                cart_id: cmd.cart_id,
                sku: cmd.sku,
            })
            .await?;
            Ok(())
        }
    }
}

/// Version 1 of `item_added` plus a field with a default: a compatible evolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "item_added", version = 1, service = v1::Cart)]
struct ItemAddedV2 {
    #[event(key)]
    cart_id: String,
    sku: String,
    #[avro(default = "1")]
    #[serde(default = "one")]
    qty: i64,
}

fn one() -> i64 {
    1
}

/// A consumer that reads `item_added` as version 2 (the type with `qty`) and as version 1.
#[event_service(company = "acme", namespace = "test", name = "stats", partitions = 1)]
#[derive(Debug, Default, Clone)]
struct Stats {
    seen: Arc<Mutex<Vec<ItemAddedV2>>>,
    older: Arc<Mutex<Vec<v1::ItemAdded>>>,
}

#[handlers]
impl Stats {
    #[listener(name = "count")]
    async fn count(&self, fact: ItemAddedV2) -> HandlerResult {
        self.seen.lock().unwrap().push(fact);
        Ok(())
    }

    #[listener(name = "count-old")]
    async fn count_old(&self, fact: v1::ItemAdded) -> HandlerResult {
        self.older.lock().unwrap().push(fact);
        Ok(())
    }
}

fn avro_config(registry: &str) -> Config {
    let mut config = Config::default();
    config.service.codec = Some(CodecKind::Avro);
    config.schema_registry.url = Some(registry.to_owned());
    config
}

async fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_producer_and_a_newer_consumer_read_each_other() {
    let registry = DevRegistry::start().await.unwrap();
    let stats = Stats::default();
    let running = App::new(avro_config(registry.url()))
        .service(v1::Cart)
        .service(stats.clone())
        .start()
        .await
        .unwrap();
    let client = running.client("test");
    client
        .send(&v1::AddItem {
            cart_id: "c1".into(),
            sku: "apple".into(),
        })
        .await
        .unwrap();
    assert!(wait_for(|| !stats.seen.lock().unwrap().is_empty()).await);
    // Written with v1 (no qty): read as v2 with the default.
    assert_eq!(
        stats.seen.lock().unwrap()[0],
        ItemAddedV2 {
            cart_id: "c1".into(),
            sku: "apple".into(),
            qty: 1
        }
    );
    // The wire format: magic byte 0, a 4-byte schema id, then the datum; content-type says so.
    let bootstrap = running.bootstrap_servers().to_owned();
    let topic = v1::Cart::ID.events().to_string();
    let records = tokio::task::spawn_blocking(move || common::read_topic(&bootstrap, &topic, 1, 1))
        .await
        .unwrap();
    let payload = records[0].payload().unwrap();
    assert_eq!(payload[0], 0);
    let id = u32::from_be_bytes(payload[1..5].try_into().unwrap());
    assert!(id >= 1);
    assert_eq!(
        header(&records[0], "content-type"),
        Some(atoll::codec::AVRO)
    );
    let subject = atoll::codec::subject::<v1::ItemAdded>(
        &v1::Cart::ID.events(),
        atoll::codec::SubjectStrategy::TopicRecordName,
    )
    .unwrap();
    assert_eq!(
        subject,
        "acme.test.cart.events-acme.test.cart.item_added_v1"
    );

    // A newer producer (v2, a compatible second version of the subject) and an older
    // consumer: v2's extra field is dropped; the newer consumer gets it.
    client
        .send(&v1::AddItemV2 {
            cart_id: "c2".into(),
        })
        .await
        .unwrap();
    assert!(wait_for(|| stats.older.lock().unwrap().len() == 2).await);
    assert_eq!(
        stats.older.lock().unwrap()[1],
        v1::ItemAdded {
            cart_id: "c2".into(),
            sku: "pear".into()
        }
    );
    assert!(wait_for(|| stats.seen.lock().unwrap().len() == 2).await);
    assert_eq!(stats.seen.lock().unwrap()[1].qty, 3);
    running.shutdown().await;
}

/// Raw records on the cart's facts topic, as another (broken) producer would write them.
async fn inject(running: &atoll::Running, payloads: &[Vec<u8>]) {
    let client = running.client("test");
    for p in payloads {
        let (headers, _) = Outgoing {
            content_type: Some(atoll::codec::AVRO),
            ..Outgoing::new(v1::ItemAdded::ce_type(), "test")
        }
        .headers();
        client
            .send_raw(v1::Cart::ID.events().as_str(), Some(b"c9"), p, headers)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_avro_is_dead_lettered_as_decode() {
    let registry = DevRegistry::start().await.unwrap();
    // A schema that is registered but is not `item_added`.
    let other = common::register_schema(
        registry.url(),
        "other-value",
        r#"{"type":"record","name":"other","fields":[{"name":"x","type":"int"}]}"#,
    )
    .await;
    let stats = Stats::default();
    let running = App::new(avro_config(registry.url()))
        .service(stats.clone())
        .topics(atoll::contract::owned_topics::<v1::Cart>())
        .start()
        .await
        .unwrap();
    let mut unknown = vec![0, 0, 0, 3, 231];
    unknown.extend_from_slice(&[2, b'a']);
    let mut wrong = vec![0];
    wrong.extend_from_slice(&other.to_be_bytes());
    wrong.push(4);
    inject(
        &running,
        &[vec![1, 0, 0, 0, 1, 2, b'a'], unknown, wrong, vec![0, 0]],
    )
    .await;
    let bootstrap = running.bootstrap_servers().to_owned();
    // Both listeners of the facts topic dead-letter each record; look at one.
    let dlq: Vec<_> = tokio::task::spawn_blocking(move || {
        common::read_topic(&bootstrap, "acme.test.stats.private.dlq", 1, 8)
    })
    .await
    .unwrap()
    .into_iter()
    .filter(|m| header(m, "atoll_dlq_listener") == Some("count"))
    .collect();
    assert_eq!(dlq.len(), 4);
    for m in &dlq {
        assert_eq!(
            header(m, "atoll_dlq_error_kind"),
            Some("decode"),
            "{:?}",
            header(m, "atoll_dlq_error")
        );
        assert_eq!(header(m, "atoll_dlq_attempts"), Some("1"));
    }
    let errors: Vec<&str> = dlq
        .iter()
        .map(|m| header(m, "atoll_dlq_error").unwrap())
        .collect();
    assert!(
        errors[1].contains("999") || errors[1].to_lowercase().contains("not found"),
        "{}",
        errors[1]
    );
    assert!(errors[2].contains("does not resolve"), "{}", errors[2]);
    assert!(stats.seen.lock().unwrap().is_empty());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_retried_not_dead_lettered() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let stats = Stats::default();
    let mut config = avro_config(&url);
    config.listener.backoff_ms = 50;
    config.listener.max_backoff_ms = 200;
    let running = App::new(config)
        .service(stats.clone())
        .topics(atoll::contract::owned_topics::<v1::Cart>())
        .start()
        .await
        .unwrap();
    inject(&running, &[vec![0, 0, 0, 0, 1, 2, b'a', 2, b'b']]).await;
    // Far more attempts than the budget of 3, and still nothing dead-lettered.
    let retried = wait_for(|| {
        running
            .stats()
            .iter()
            .any(|s| s.listener == "count" && s.retries >= 6)
    })
    .await;
    assert!(retried, "{:?}", running.stats());
    let counted = running.stats();
    assert!(counted.iter().all(|s| s.dead_lettered == 0), "{counted:?}");
    assert!(stats.seen.lock().unwrap().is_empty());
    running.shutdown().await;
}

/// A service that declares its codec; the process configures none.
#[event_service(
    company = "acme",
    namespace = "test",
    name = "ledger",
    partitions = 1,
    codec = "avro"
)]
#[derive(Debug, Default)]
struct Ledger;

#[derive(Debug, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "book", version = 1, service = Ledger)]
struct Book {
    #[event(key)]
    id: String,
}

#[derive(Debug, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "booked", version = 1, service = Ledger)]
struct Booked {
    #[event(key)]
    id: String,
}

#[handlers]
impl Ledger {
    #[listener(name = "book")]
    async fn book(&self, ctx: Context<Self>, cmd: Book) -> HandlerResult {
        ctx.emit(Booked { id: cmd.id }).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_declares_its_codec() {
    assert_eq!(<Ledger as Service>::CODEC, CodecKind::Avro);
    // No codec and no registry configured: the embedded mode starts the development registry
    // because a registered service declares Avro.
    let running = App::new(Config::default())
        .service(Ledger)
        .start()
        .await
        .unwrap();
    assert!(running.schema_registry_url().is_some());
    // The client produces with the process's codec (JSON); the service answers in Avro.
    running
        .client("test")
        .send(&Book { id: "b1".into() })
        .await
        .unwrap();
    let bootstrap = running.bootstrap_servers().to_owned();
    let (commands, facts) = tokio::task::spawn_blocking(move || {
        (
            common::read_topic(&bootstrap, "acme.test.ledger.commands", 1, 1),
            common::read_topic(&bootstrap, "acme.test.ledger.events", 1, 1),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        header(&commands[0], "content-type"),
        Some("application/json")
    );
    assert_eq!(header(&facts[0], "content-type"), Some(atoll::codec::AVRO));
    assert_eq!(facts[0].payload().unwrap()[0], 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_registration_a_missing_subject_fails_fast() {
    let registry = DevRegistry::start().await.unwrap();
    let mut config = avro_config(registry.url());
    config.schema_registry.auto_register = false;
    let running = App::new(config)
        .topics(atoll::contract::owned_topics::<v1::Cart>())
        .start()
        .await
        .unwrap();
    let err = running
        .client("test")
        .send(&v1::AddItem {
            cart_id: "c1".into(),
            sku: "apple".into(),
        })
        .await
        .unwrap_err();
    assert!(
        !err.is_transient(),
        "a missing subject is not retried: {err}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with("schema:") && msg.contains("404"), "{msg}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_without_a_registry_on_a_real_broker_fails_at_start() {
    // A declared Avro service, a configured broker, no registry URL: no development registry
    // is started outside the embedded mode, so the start fails and says what to set.
    let mut config = Config::default();
    config.kafka.bootstrap_servers = Some("127.0.0.1:9".into());
    config.kafka.create_topics = false;
    let err = App::new(config)
        .service(Ledger)
        .start()
        .await
        .map(|_| ())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("ATOLL_SCHEMA_REGISTRY__URL"), "{msg}");
}
