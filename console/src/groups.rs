//! Moving a consumer group's committed offsets: to a time (each partition's first record at or
//! after it) or to the start of a topic. The console's groups page and `atoll view rebuild`
//! are built on it.
//!
//! A time is looked up in the broker's time index (ListOffsets by timestamp), and the answer is
//! checked against the records around it: the record at the offset found must be at or after
//! the time, the one before it before. Brokers without a working time index answer the start
//! (tansu) or the end (librdkafka's mock cluster) of the partition for any time (see
//! `testkit/tests/*_limitations.rs`); when the check fails, the offset is found by a binary
//! search over the partition's records, reading one record per step, which assumes that
//! record times do not go back within a partition (true of `LogAppendTime` and of producers
//! with one clock).
//!
//! Only a group without members is moved. A running member would not read from the new
//! offsets until its partitions are assigned again, and would overwrite them with its own
//! next commit; Kafka's `kafka-consumer-groups --reset-offsets` refuses an active group for
//! the same reason. The check and the commit are two requests: a member joining in between
//! starts from either the old offsets or the new ones, never from a mix within a partition.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::dlq::{DlqError, Kafka};

/// How long one request to the broker may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where to move a group's offsets on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// To each partition's first record written at or after this time (Unix ms); to its end
    /// when none is.
    Time(i64),
    /// To each partition's oldest record the broker still has.
    Start,
}

/// One partition's move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The partition.
    pub partition: i32,
    /// The group's committed offset now, if it committed one.
    pub from: Option<i64>,
    /// The offset it will start from.
    pub to: i64,
}

/// Why a group's offsets cannot be moved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The group has members: its consumers run.
    #[error("consumer group `{group}` has {members} member(s): stop its consumers first")]
    Members {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
    },
    /// The broker failed a request, or the topic does not exist.
    #[error(transparent)]
    Kafka(#[from] DlqError),
    /// The broker failed a request about the group.
    #[error("consumer group `{group}`: {error}")]
    Group {
        /// The group.
        group: String,
        /// The client's error.
        error: rdkafka::error::KafkaError,
    },
}

impl Kafka {
    /// A consumer in `group` that joins nothing and commits only what it is told to.
    fn member_of(&self, group: &str) -> Result<BaseConsumer, DlqError> {
        let mut c = self.client().clone();
        c.set("group.id", group).set("enable.auto.commit", "false");
        Ok(c.create()?)
    }
}

fn group_error(group: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> GroupError + '_ {
    move |error| GroupError::Group {
        group: group.to_owned(),
        error,
    }
}

/// How many members `group` has now (0: none of its consumers runs).
///
/// # Errors
/// The broker did not answer.
pub fn members(kafka: &Kafka, group: &str) -> Result<usize, GroupError> {
    let list = kafka
        .member_of("atoll-groups")?
        .fetch_group_list(Some(group), TIMEOUT)
        .map_err(group_error(group))?;
    // Not listed (or listed `Dead`): no consumer is in it.
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| g.members().len())
        .sum())
}

/// The groups whose name starts with `prefix`, with their member counts, by name.
///
/// # Errors
/// The broker did not answer.
pub fn groups_of(kafka: &Kafka, prefix: &str) -> Result<Vec<(String, usize)>, GroupError> {
    let list = kafka
        .member_of("atoll-groups")?
        .fetch_group_list(None, TIMEOUT)
        .map_err(group_error(prefix))?;
    let mut found: Vec<(String, usize)> = list
        .groups()
        .iter()
        .filter(|g| g.name().starts_with(prefix))
        .map(|g| (g.name().to_owned(), g.members().len()))
        .collect();
    found.sort();
    Ok(found)
}

/// `group`'s committed offsets on every partition of `topic` (`Offset::Invalid` where it
/// committed none).
///
/// # Errors
/// The topic does not exist, or the broker did not answer.
pub fn committed(
    kafka: &Kafka,
    group: &str,
    topic: &str,
) -> Result<TopicPartitionList, GroupError> {
    let mut tpl = TopicPartitionList::new();
    for p in kafka.partitions(topic)? {
        tpl.add_partition(topic, p);
    }
    kafka
        .member_of(group)?
        .committed_offsets(tpl, TIMEOUT)
        .map_err(group_error(group))
}

/// Where `group`'s offsets on `topic` would move to reach `target`, refused while the group
/// has members.
///
/// # Errors
/// [`GroupError::Members`] while it has members; the topic does not exist; the broker did not
/// answer.
pub fn plan(
    kafka: &Kafka,
    group: &str,
    topic: &str,
    target: Target,
) -> Result<Vec<Move>, GroupError> {
    let members = members(kafka, group)?;
    if members > 0 {
        return Err(GroupError::Members {
            group: group.to_owned(),
            members,
        });
    }
    let now = committed(kafka, group, topic)?;
    let consumer = kafka.member_of(group)?;
    let mut moves = Vec::new();
    let mut by_time = TopicPartitionList::new();
    for e in now.elements_for_topic(topic) {
        let p = e.partition();
        let from = e.offset().to_raw().filter(|o| *o >= 0);
        let (low, high) = consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .map_err(group_error(group))?;
        match target {
            Target::Start => moves.push(Move {
                partition: p,
                from,
                to: low,
            }),
            Target::Time(ms) => {
                by_time
                    .add_partition_offset(topic, p, Offset::Offset(ms))
                    .map_err(group_error(group))?;
                // Where none is at or after the time: the end.
                moves.push(Move {
                    partition: p,
                    from,
                    to: high,
                });
            }
        }
    }
    if let Target::Time(ms) = target {
        let found = consumer
            .offsets_for_times(by_time, TIMEOUT)
            .map_err(group_error(group))?;
        let reader = Reader::new(kafka, topic)?;
        for m in &mut moves {
            let answer = found
                .find_partition(topic, m.partition)
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0);
            let (low, high) = consumer
                .fetch_watermarks(topic, m.partition, TIMEOUT)
                .map_err(group_error(group))?;
            m.to = reader.offset_at(m.partition, ms, low, high, answer)?;
        }
    }
    Ok(moves)
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
            .set("enable.partition.eof", "true");
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
                Some(Ok(m)) if m.offset() >= offset => {
                    let at = m.timestamp().to_millis().unwrap_or(i64::MIN);
                    return Ok(Some((m.offset(), at)));
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(None),
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
        let at_or_after = match self.record_at(p, answer)? {
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

/// Commits `moves` for `group` on `topic`.
///
/// # Errors
/// The broker refused the commit.
pub fn apply(kafka: &Kafka, group: &str, topic: &str, moves: &[Move]) -> Result<(), GroupError> {
    let mut tpl = TopicPartitionList::new();
    for m in moves {
        tpl.add_partition_offset(topic, m.partition, Offset::Offset(m.to))
            .map_err(group_error(group))?;
    }
    commit(kafka, group, &tpl)
}

/// Commits `offsets` for `group` (partitions without an offset are left alone).
///
/// # Errors
/// The broker refused the commit.
pub fn commit(kafka: &Kafka, group: &str, offsets: &TopicPartitionList) -> Result<(), GroupError> {
    let mut known = TopicPartitionList::new();
    for e in offsets.elements() {
        if let Offset::Offset(o) = e.offset() {
            known
                .add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))
                .map_err(group_error(group))?;
        }
    }
    if known.count() == 0 {
        return Ok(());
    }
    kafka
        .member_of(group)?
        .commit(&known, CommitMode::Sync)
        .map_err(group_error(group))
}
