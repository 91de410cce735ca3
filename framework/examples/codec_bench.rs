//! Encode and decode cost per record, JSON against Avro (with the development registry).
//!
//! Run with: `cargo run --release -p atoll --example codec_bench [records]`
//!
//! Prints µs per record for encode and decode of a ~200-byte event, after a warm-up (the
//! first Avro call registers and resolves the schema; later ones hit the caches).

use std::time::Instant;

use apache_avro::AvroSchema;
use atoll::codec::DevRegistry;
use atoll::codec::{Codec, CodecKind};
use atoll::{event_service, Event};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "bench", name = "orders")]
struct Orders;

#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "order_placed", version = 1, service = Orders)]
struct OrderPlaced {
    #[event(key)]
    order_id: String,
    customer_id: String,
    skus: Vec<String>,
    quantities: Vec<i64>,
    amount_cents: i64,
    note: String,
}

fn sample(i: usize) -> OrderPlaced {
    OrderPlaced {
        order_id: format!("order-{i:08}"),
        customer_id: format!("customer-{:04}", i % 1000),
        skus: vec!["apple".into(), "banana".into(), "cherry".into()],
        quantities: vec![1, 2, 3],
        amount_cents: 12_345,
        note: "leave at the door, ring twice, thank you very much".into(),
    }
}

async fn measure(codec: &Codec, n: usize) -> (f64, f64, usize, &'static str) {
    let topic = <OrderPlaced as Event>::topic();
    let events: Vec<OrderPlaced> = (0..n).map(sample).collect();
    // Warm-up: registration, schema resolution, allocator.
    for e in events.iter().take(1000) {
        let (p, ct) = codec.encode(&topic, e).await.unwrap();
        let _: OrderPlaced = codec.decode(Some(ct), &p).await.unwrap();
    }
    let start = Instant::now();
    let mut encoded = Vec::with_capacity(n);
    for e in &events {
        encoded.push(codec.encode(&topic, e).await.unwrap());
    }
    let enc = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let start = Instant::now();
    for (p, ct) in &encoded {
        let _: OrderPlaced = codec.decode(Some(ct), p).await.unwrap();
    }
    let dec = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    (enc, dec, encoded[0].0.len(), encoded[0].1)
}

/// The same Avro work without caches: the writer and reader schemata resolved on every call
/// (what `to_avro_datum` / `from_avro_datum` do).
fn uncached(n: usize) -> (f64, f64) {
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::writer::datum::GenericDatumWriter;
    let schema = atoll::codec::schema_of::<OrderPlaced>().unwrap();
    let events: Vec<OrderPlaced> = (0..n).map(sample).collect();
    let start = Instant::now();
    let mut encoded = Vec::with_capacity(n);
    for e in &events {
        let w = GenericDatumWriter::builder(&schema).build().unwrap();
        encoded.push(w.write_ser_to_vec(e).unwrap());
    }
    let enc = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let start = Instant::now();
    for p in &encoded {
        let r = GenericDatumReader::builder(&schema)
            .reader_schema(&schema)
            .build()
            .unwrap();
        let v = r.read_value(&mut &p[..]).unwrap();
        let _: OrderPlaced = apache_avro::from_value(&v).unwrap();
    }
    let dec = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    (enc, dec)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let registry = DevRegistry::start().await.unwrap();
    let settings = atoll::config::SchemaRegistryConfig::default();
    let json = Codec::new(CodecKind::Json, None, &settings).unwrap();
    let avro = Codec::new(
        CodecKind::Avro,
        Some(&atoll::config::Registry::open(registry.url())),
        &settings,
    )
    .unwrap();
    println!("{n} records per codec");
    println!("codec  encode µs/rec  decode µs/rec  bytes/rec  content-type");
    for (name, codec) in [("json", &json), ("avro", &avro)] {
        let (enc, dec, bytes, ct) = measure(codec, n).await;
        println!("{name:<6} {enc:>13.3}  {dec:>13.3}  {bytes:>9}  {ct}");
    }
    let (enc, dec) = uncached(n);
    println!("avro, schemata resolved per call (no caches, no registry): encode {enc:.3} µs/rec, decode {dec:.3} µs/rec");
}
