//! Helpers shared by the embedded-broker tests.

// Each test crate uses some of them.
#![allow(dead_code, unused_imports)]

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Reads partitions `0..partitions` of `topic` from the beginning until `n` records were read
/// or 30 s passed. Blocking: call it from `spawn_blocking`.
pub(crate) fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Vec<OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

/// The offset `group` committed for partition 0 of `topic`. Blocking: call it from
/// `spawn_blocking`.
pub(crate) fn committed(bootstrap: &str, group: &str, topic: &str) -> Offset {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    c.committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()[0]
        .offset()
}

pub(crate) use atoll::envelope::header_str as header;
