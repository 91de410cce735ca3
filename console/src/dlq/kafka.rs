//! The cluster, as the dead-letter tools need it: every record of a topic, a topic's
//! partitions, a compacted topic made when missing, and a record sent and acknowledged. Blocking
//! calls: run them off the async workers (`spawn_blocking`), inside a Tokio runtime.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::letter::DeadLetter;
use super::DlqError;

/// How long one request to the broker may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How long reading a whole topic may take.
const READ_WITHIN: Duration = Duration::from_secs(60);

/// A connection for reading and redriving dead letters.
pub struct Kafka {
    client: ClientConfig,
    producer: FutureProducer,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka").finish_non_exhaustive()
    }
}

impl Kafka {
    /// Connects with `client` (address and security, as the services have them).
    ///
    /// # Errors
    /// The producer cannot be made from `client`.
    pub fn new(client: &ClientConfig) -> Result<Self, DlqError> {
        Ok(Self {
            client: client.clone(),
            producer: client.create()?,
        })
    }

    /// The client configuration it connects with.
    pub(crate) fn client(&self) -> &ClientConfig {
        &self.client
    }

    fn consumer(&self) -> Result<BaseConsumer, DlqError> {
        let mut c = self.client.clone();
        c.set("group.id", "atoll-dlq")
            .set("enable.auto.commit", "false")
            // A partition's end is known by the event, past a transaction's commit marker
            // (which no poll returns).
            .set("enable.partition.eof", "true");
        Ok(c.create()?)
    }

    /// The partitions of `topic`.
    ///
    /// # Errors
    /// [`DlqError::NoTopic`] when it does not exist.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, DlqError> {
        let md = self.consumer()?.fetch_metadata(Some(topic), TIMEOUT)?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if parts.is_empty() {
            let at = self.client.get("bootstrap.servers").unwrap_or_default();
            return Err(DlqError::NoTopic(topic.to_owned(), at.to_owned()));
        }
        Ok(parts)
    }

    /// Every record of `topic` now: each partition from its start to its end, in partition and
    /// offset order.
    ///
    /// # Errors
    /// The topic does not exist, or cannot be read within a minute.
    pub fn read_all(&self, topic: &str) -> Result<Vec<DeadLetter>, DlqError> {
        self.read_between(topic, None, None)
    }

    /// The records of `topic` written at or after `from_ms` and before `to_ms` (Unix ms; no
    /// bound where `None`), in partition and offset order. Each partition is read from its
    /// first record at or after `from_ms` to its first at or after `to_ms` (see
    /// the crate's `times` module), not from its start.
    ///
    /// # Errors
    /// The topic does not exist, or cannot be read within a minute.
    pub fn read_between(
        &self,
        topic: &str,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Vec<DeadLetter>, DlqError> {
        let consumer = self.consumer()?;
        let mut ranges = Vec::new();
        for p in self.partitions(topic)? {
            let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
            ranges.push((p, low, high));
        }
        let edge = |ms: Option<i64>, otherwise: fn(&(i32, i64, i64)) -> i64| match ms {
            Some(ms) => crate::times::offsets_at(self, topic, ms, &ranges),
            None => Ok(ranges.iter().map(|r| (r.0, otherwise(r))).collect()),
        };
        let starts = edge(from_ms, |r| r.1)?;
        let stops = edge(to_ms, |r| r.2)?;
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for ((p, start), (_, end)) in starts.into_iter().zip(stops) {
            if end > start {
                tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
                ends.push((p, start, end));
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return Ok(out);
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + READ_WITHIN;
        let mut done = HashSet::new();
        while done.len() < ends.len() {
            if Instant::now() > deadline {
                return Err(DlqError::Timeout(topic.to_owned()));
            }
            let msg = match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    done.insert(p);
                    continue;
                }
                Some(msg) => msg?,
            };
            let (p, o) = (msg.partition(), msg.offset());
            let Some(&(_, start, end)) = ends.iter().find(|(q, ..)| *q == p) else {
                continue;
            };
            if o + 1 >= end {
                done.insert(p);
            }
            // A broker may answer with the whole batch holding the start; what was written
            // after the read began is left for the next read.
            if (start..end).contains(&o) {
                out.push(DeadLetter::of(&msg));
            }
        }
        out.sort_by_key(|m| (m.partition, m.offset));
        Ok(out)
    }

    /// Sends one record and waits until the broker acknowledged it.
    ///
    /// # Errors
    /// [`DlqError::Send`] when the broker did not take it.
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(String, Option<Vec<u8>>)],
    ) -> Result<(), DlqError> {
        let mut hs = OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(hs);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        self.deliver(record)
    }

    /// Writes `value` under `key` on `partition` of `topic` (a tombstone when `value` is
    /// `None`: a compacted topic then forgets the key), and waits until the broker
    /// acknowledged it.
    ///
    /// # Errors
    /// [`DlqError::Send`] when the broker did not take it.
    pub fn put(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), DlqError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.deliver(record)
    }

    /// Sends `record` and waits for the broker's acknowledgement.
    fn deliver(&self, record: FutureRecord<'_, [u8], [u8]>) -> Result<(), DlqError> {
        let topic = record.topic.to_owned();
        let sent = self.producer.send(record, TIMEOUT);
        tokio::runtime::Handle::current()
            .block_on(sent)
            .map_err(|(error, _)| DlqError::Send { topic, error })?;
        Ok(())
    }

    /// Creates `topic` as a compacted topic with `partitions` unless it exists.
    ///
    /// # Errors
    /// The broker refused to create it.
    pub fn ensure_compacted(&self, topic: &str, partitions: i32) -> Result<(), DlqError> {
        if self.partitions(topic).is_ok() {
            return Ok(());
        }
        let spec = atoll::contract::TopicSpec {
            name: topic.parse()?,
            partitions,
            config: vec![("cleanup.policy".into(), "compact".into())],
        };
        tokio::runtime::Handle::current()
            .block_on(atoll::broker::create_topics(&self.client, &[spec]))?;
        Ok(())
    }
}
