//! An Avro payload (Confluent wire format) decoded as an event through the registry, with the
//! writer's schema one of several registered: the event's own, one with more fields, one
//! with collections of `null` (items that take no input bytes). The first input byte picks
//! the schema; the rest is the datum.
#![no_main]

use std::sync::OnceLock;

use apache_avro::AvroSchema;
use atoll::codec::{Codec, CodecKind, DevRegistry, AVRO};
use atoll::config::{Registry, SchemaRegistryConfig};
use atoll::{event_service, handlers, Event};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "fuzz", name = "avro")]
struct Service;

#[handlers]
impl Service {}

#[derive(Debug, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "thing", version = 1, service = Service)]
struct Thing {
    #[event(key)]
    id: String,
    count: i64,
    tags: Vec<String>,
    note: Option<String>,
}

struct Setup {
    runtime: tokio::runtime::Runtime,
    codec: Codec,
    ids: Vec<u32>,
    _registry: DevRegistry,
}

const WRITERS: &[&str] = &[
    r#"{"type":"record","name":"thing","fields":[{"name":"id","type":"string"},{"name":"count","type":"long"},{"name":"tags","type":{"type":"array","items":"string"}},{"name":"note","type":["null","string"],"default":null}]}"#,
    r#"{"type":"record","name":"more","fields":[{"name":"id","type":"string"},{"name":"count","type":"long"},{"name":"tags","type":{"type":"array","items":"string"}},{"name":"note","type":["null","string"],"default":null},{"name":"blob","type":"bytes"},{"name":"m","type":{"type":"map","values":"double"}}]}"#,
    r#"{"type":"record","name":"nulls","fields":[{"name":"id","type":"string"},{"name":"count","type":"long"},{"name":"tags","type":{"type":"array","items":"string"}},{"name":"xs","type":{"type":"array","items":"null"}},{"name":"ys","type":{"type":"map","values":"null"}}]}"#,
];

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (registry, codec, ids) = runtime.block_on(async {
            let registry = DevRegistry::start().await.unwrap();
            let settings = SchemaRegistryConfig::default();
            let codec = Codec::new(CodecKind::Avro, Some(&Registry::open(registry.url())), &settings)
                .unwrap();
            let client = reqwest_free::Client::new(registry.url());
            let mut ids = Vec::new();
            for (i, schema) in WRITERS.iter().enumerate() {
                ids.push(client.register(&format!("w{i}-value"), schema));
            }
            (registry, codec, ids)
        });
        Setup {
            runtime,
            codec,
            ids,
            _registry: registry,
        }
    })
}

/// Registration with a bare HTTP/1.1 request (the fuzz crate needs no HTTP client).
mod reqwest_free {
    use std::io::{Read, Write};

    pub struct Client(String);

    impl Client {
        pub fn new(url: &str) -> Self {
            Self(url.trim_start_matches("http://").to_owned())
        }

        pub fn register(&self, subject: &str, schema: &str) -> u32 {
            let body = serde_json::json!({ "schema": schema }).to_string();
            let addr = self.0.clone();
            let subject = subject.to_owned();
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                let req = format!(
                    "POST /subjects/{subject}/versions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(req.as_bytes()).unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                let json = out.split("\r\n\r\n").nth(1).unwrap().to_owned();
                serde_json::from_str::<serde_json::Value>(&json).unwrap()["id"]
                    .as_u64()
                    .unwrap() as u32
            })
            .join()
            .unwrap()
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((pick, datum)) = data.split_first() else {
        return;
    };
    let setup = setup();
    let id = setup.ids[usize::from(*pick) % setup.ids.len()];
    let mut payload = vec![0];
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(datum);
    let _ = setup
        .runtime
        .block_on(setup.codec.decode::<Thing>(Some(AVRO), &payload));
});
