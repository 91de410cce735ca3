//! Finding where a time is in a topic: each partition's first record written at or after it.
//! Moving a group to a time ([`crate::groups`]) and reading dead letters within a window
//! ([`crate::dlq`]) are built on it.
//!
//! A time is looked up in the broker's time index (ListOffsets by timestamp, librdkafka's
//! `offsets_for_times`), and the answer is checked against the records around it: the record at
//! the offset found must be at or after the time, the one before it before. Brokers without a
//! working time index answer the start (tansu) or the end (librdkafka's mock cluster) of the
//! partition for any time (see `testkit/tests/*_limitations.rs`); when the check fails, the
//! offset is found by a binary search over the partition's records, reading one record per
//! step, which assumes that record times do not go back within a partition (true of
//! `LogAppendTime` and of producers with one clock). Kafka's own `kafka-consumer-groups
//! --reset-offsets --to-datetime` trusts the index alone.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::dlq::{DlqError, Kafka};

/// How long one request to the broker may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Each partition of `topic` (of `ranges`: partition, start and end offsets) with its first
/// offset whose record is at or after `ms` (Unix ms); its end where none is.
///
/// # Errors
/// The broker did not answer, or a record could not be read.
pub(crate) fn offsets_at(
    kafka: &Kafka,
    topic: &str,
    ms: i64,
    ranges: &[(i32, i64, i64)],
) -> Result<Vec<(i32, i64)>, DlqError> {
    let reader = Reader::new(kafka, topic)?;
    let mut asked = TopicPartitionList::new();
    for (p, _, _) in ranges {
        asked.add_partition_offset(topic, *p, Offset::Offset(ms))?;
    }
    let found = reader.consumer.offsets_for_times(asked, TIMEOUT)?;
    ranges
        .iter()
        .map(|&(p, low, high)| {
            let answer = found
                .find_partition(topic, p)
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0);
            Ok((p, reader.offset_at(p, ms, low, high, answer)?))
        })
        .collect()
}

/// Reads single records of one topic, for their times.
struct Reader<'a> {
    consumer: BaseConsumer,
    topic: &'a str,
}

impl<'a> Reader<'a> {
    fn new(kafka: &Kafka, topic: &'a str) -> Result<Self, DlqError> {
        let mut c = kafka.client().clone();
        c.set("group.id", "atoll-groups")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            // Offsets and times only: a transaction still open must not hold a read back
            // until it ends (`read_committed` reads no further than its start).
            .set("isolation.level", "read_uncommitted");
        Ok(Self {
            consumer: c.create()?,
            topic,
        })
    }

    /// The offset and time of the first record at or after `offset` of partition `p`; `None`
    /// when there is none (the end).
    fn record_at(&self, p: i32, offset: i64) -> Result<Option<(i64, i64)>, DlqError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, p, Offset::Offset(offset))?;
        self.consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        while std::time::Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(100)) {
                // A broker may answer with the whole batch holding the offset.
                Some(Ok(m)) if m.partition() == p && m.offset() >= offset => {
                    let at = m.timestamp().to_millis().unwrap_or(i64::MIN);
                    return Ok(Some((m.offset(), at)));
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(q))) if q == p => {
                    return Ok(None)
                }
                Some(Err(e)) => return Err(e.into()),
                _ => {}
            }
        }
        Err(DlqError::Timeout(format!(
            "{} partition {p} at offset {offset}",
            self.topic
        )))
    }

    /// The first offset of partition `p` (`low`..`high`) whose record is at or after `ms`
    /// (`high` when none is): the broker's `answer` when the records around it agree, else a
    /// binary search.
    fn offset_at(
        &self,
        p: i32,
        ms: i64,
        low: i64,
        high: i64,
        answer: Option<i64>,
    ) -> Result<i64, DlqError> {
        let answer = answer.unwrap_or(high).clamp(low, high);
        // Nothing at the end yet (what is written meanwhile is after any time asked for).
        let at_or_after = answer == high
            || match self.record_at(p, answer)? {
                Some((_, at)) => at >= ms,
                None => true,
            };
        let before = answer == low
            || match self.record_at(p, answer - 1)? {
                Some((o, at)) if o < answer => at < ms,
                // No record right before it (compacted away, a transaction's marker): the
                // answer cannot be checked, so the records are searched.
                _ => false,
            };
        if at_or_after && before {
            return Ok(answer);
        }
        tracing::debug!(
            topic = self.topic,
            partition = p,
            answer,
            "the broker's time index does not agree with the records: searching them"
        );
        let (mut lo, mut hi) = (low, high);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.record_at(p, mid)? {
                Some((o, at)) if o < hi && at < ms => lo = o + 1,
                // At or after the time, or no record from `mid` up to `hi`.
                _ => hi = mid,
            }
        }
        Ok(lo)
    }
}
