//! The shop with the Avro codec on a real broker (tansu) and the development registry: every
//! order ends, and the facts are in the Confluent wire format.

use std::time::{Duration, Instant};

use atoll::codec::DevRegistry;
use atoll::codec::{CodecKind, AVRO};
use atoll::{App, Event, Service};
use atoll_testkit::{header, read_topic, Tansu};
use example_shop::orders::{Item, OrderCancelled, OrderCompleted, OrderPlaced, Orders, PlaceOrder};
use example_shop::{with_all, Options};
use rdkafka::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_complete_with_avro_facts_in_the_wire_format() {
    let broker = Tansu::start();
    let registry = DevRegistry::start().await.unwrap();
    let mut config = broker.config();
    config.service.codec = Some(CodecKind::Avro);
    config.schema_registry.url = Some(registry.url().to_owned());
    example_shop::analytics::without_transactions(&mut config);
    let running = with_all(App::new(config), &Options::default())
        .start()
        .await
        .unwrap();
    let client = running.client("test");
    for i in 0..10 {
        client
            .send(&PlaceOrder {
                order_id: format!("a-{i}"),
                customer_id: "c-1".into(),
                items: vec![Item {
                    sku: "banana".into(),
                    qty: 1,
                }],
                amount_cents: if i < 2 { 1_000_000 } else { 1_000 },
            })
            .await
            .unwrap();
    }
    let topic = Orders::ID.events().to_string();
    let terminal = |r: &[rdkafka::message::OwnedMessage]| {
        r.iter()
            .filter(|m| {
                let t = header(*m, "ce_type");
                t == Some(OrderCompleted::ce_type()) || t == Some(OrderCancelled::ce_type())
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut records = Vec::new();
    while Instant::now() < deadline {
        records = read_topic(
            &broker.bootstrap(),
            &topic,
            usize::MAX,
            Duration::from_secs(2),
        );
        if terminal(&records) >= 10 {
            break;
        }
    }
    assert_eq!(terminal(&records), 10);
    let cancelled = records
        .iter()
        .filter(|m| header(*m, "ce_type") == Some(OrderCancelled::ce_type()))
        .count();
    assert_eq!(cancelled, 2, "the two orders above the limit are declined");
    for m in &records {
        let payload = m.payload().unwrap();
        assert_eq!(payload[0], 0, "magic byte");
        assert!(
            u32::from_be_bytes(payload[1..5].try_into().unwrap()) >= 1,
            "schema id"
        );
        assert_eq!(header(m, "content-type"), Some(AVRO));
    }
    let placed = records
        .iter()
        .find(|m| header(*m, "ce_type") == Some(OrderPlaced::ce_type()))
        .unwrap();
    let decoded: OrderPlaced = running
        .decode(Some(AVRO), placed.payload().unwrap())
        .await
        .unwrap();
    assert!(decoded.order_id.starts_with("a-"));
    assert_eq!(decoded.items[0].sku, "banana");
    running.shutdown().await;
}
