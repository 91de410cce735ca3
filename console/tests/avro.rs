//! Avro dead letters on the console's page, decoded with their writer's schema from the schema
//! registry (atoll's development registry, on librdkafka's mock cluster): a record shows as
//! JSON; one whose schema the registry does not have says so, and the page still shows.

mod common;

use std::time::Duration;

use apache_avro::types::Value;
use atoll::codec::DevRegistry;
use atoll_console::Console;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const DLQ: &str = "acme.test.avro.private.dlq";

/// Registers `schema` under `subject`; its id.
async fn register(url: &str, subject: &str, schema: &str) -> u32 {
    let body = serde_json::json!({ "schema": schema });
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/subjects/{subject}/versions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["id"].as_u64().unwrap() as u32
}

/// The registry's wire format: a zero byte, the schema id, the datum.
fn framed(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(datum);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_dead_letters_show_as_json() {
    let registry = DevRegistry::start().await.unwrap();
    let text = r#"{"type": "record", "name": "Reserve", "namespace": "acme.shop",
        "fields": [{"name": "order_id", "type": "string"}, {"name": "cents", "type": "long"}]}"#;
    let id = register(registry.url(), "acme.shop.inventory.commands-value", text).await;
    let schema = apache_avro::Schema::parse_str(text).unwrap();
    let value = Value::Record(vec![
        ("order_id".into(), Value::String("order-77".into())),
        ("cents".into(), Value::Long(12_345)),
    ]);
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap();
    let mut datum = Vec::new();
    writer.write_value(&mut datum, value).unwrap();

    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic(DLQ, 1, 1).unwrap();
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", cluster.bootstrap_servers());
    let producer: FutureProducer = client.create().unwrap();
    for payload in [framed(id, &datum), framed(9_999, &datum)] {
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: atoll::envelope::CONTENT_TYPE,
            value: Some(atoll::codec::AVRO),
        });
        let record = FutureRecord::<str, [u8]>::to(DLQ)
            .key("k")
            .payload(&payload)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }

    let mut config = atoll::config::Config::default();
    config.schema_registry.url = Some(registry.url().to_owned());
    let console = Console::from_config(&client, "", &config).unwrap();
    let addr = common::serve(&console).await;
    let page = reqwest::get(format!("http://{addr}/dlq?service=acme.test.avro"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("&quot;order_id&quot;: &quot;order-77&quot;")
            && page.contains("&quot;cents&quot;: 12345"),
        "decoded as JSON: {page}"
    );
    assert!(
        page.contains("not decoded"),
        "the unknown schema said: {page}"
    );
}
