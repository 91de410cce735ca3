//! A JSON payload decoded as an event, as a listener decodes it.
#![no_main]

use std::collections::BTreeMap;

use atoll::codec::{Codec, CodecKind, JSON};
use atoll::{event_service, handlers, Event};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "fuzz", name = "json")]
struct Service;

#[handlers]
impl Service {}

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "thing", version = 1, service = Service)]
struct Thing {
    #[event(key)]
    id: String,
    count: u64,
    ratio: f64,
    tags: Vec<String>,
    attributes: BTreeMap<String, serde_json::Value>,
    parent: Option<Box<Thing>>,
}

fuzz_target!(|data: &[u8]| {
    let codec = Codec::new(CodecKind::Json, None, &Default::default()).unwrap();
    let _ = futures::executor::block_on(codec.decode::<Thing>(Some(JSON), data));
});
