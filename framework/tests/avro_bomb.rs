//! Hostile Avro: a record of 15 bytes whose writer schema (any schema the registry
//! holds) declares an array of millions of `null`s, items that take no input bytes to decode.
//! Decoding allocates at most `schema_registry.max_allocation_bytes` (64 MiB by default) for
//! one collection, so the record is dead-lettered as bad input and the process stays small.
//!
//! Alone in its test binary: the peak resident size measured is this test's.

mod common;

use apache_avro::AvroSchema;
use atoll::codec::{CodecKind, DevRegistry};
use atoll::config::Config;
use atoll::envelope::Outgoing;
use atoll::{event_service, handlers, App, Event, HandlerResult, Service};
use common::header;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "bins", partitions = 1)]
#[derive(Debug, Default, Clone)]
struct Bins;

#[derive(Debug, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "bin_filled", version = 1, service = Bins)]
struct BinFilled {
    #[event(key)]
    bin: String,
}

#[handlers]
impl Bins {
    #[listener(name = "filled")]
    async fn filled(&self, _fact: BinFilled) -> HandlerResult {
        Ok(())
    }
}

/// The process's peak resident set, in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// Avro's zig-zag varint of `n`.
fn long(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_bytes_declaring_millions_of_items_are_dead_lettered_in_little_memory() {
    let registry = DevRegistry::start().await.unwrap();
    let bomb = common::register_schema(
        registry.url(),
        "bomb-value",
        // `bin_filled` and one more field: it resolves to the reader's schema.
        r#"{"type":"record","name":"bomb","fields":[{"name":"bin","type":"string"},{"name":"xs","type":{"type":"array","items":"null"}}]}"#,
    )
    .await;
    let mut config = Config::default();
    config.service.codec = Some(CodecKind::Avro);
    config.schema_registry.url = Some(registry.url().to_owned());
    let running = App::new(config).service(Bins).start().await.unwrap();
    // Just under apache-avro's own default limit (512 MiB for one collection), and far over it.
    let value = std::mem::size_of::<apache_avro::types::Value>() as i64;
    let counts = [512 * 1024 * 1024 / value - 1, 500_000_000];
    let client = running.client("attacker");
    for count in counts {
        let mut payload = vec![0];
        payload.extend_from_slice(&bomb.to_be_bytes());
        payload.extend(long(2));
        payload.extend_from_slice(b"b1");
        payload.extend(long(count));
        payload.push(0);
        assert!(payload.len() <= 16, "{} bytes", payload.len());
        let (headers, _) = Outgoing {
            content_type: Some(atoll::codec::AVRO),
            ..Outgoing::new(BinFilled::ce_type(), "attacker")
        }
        .headers();
        client
            .send_raw(Bins::ID.events().as_str(), Some(b"b1"), &payload, headers)
            .await
            .unwrap();
    }
    let bootstrap = running.bootstrap_servers().to_owned();
    let dlq = tokio::task::spawn_blocking(move || {
        common::read_topic(&bootstrap, "acme.test.bins.private.dlq", 1, 2)
    })
    .await
    .unwrap();
    assert_eq!(dlq.len(), 2, "both records are dead-lettered");
    for m in &dlq {
        assert_eq!(header(m, "atoll_dlq_error_kind"), Some("decode"));
        let error = header(m, "atoll_dlq_error").unwrap();
        assert!(error.contains("allocat"), "{error}");
    }
    running.shutdown().await;
    let peak = peak_rss_mib();
    assert!(peak < 200, "the process peaked at {peak} MiB");
}
