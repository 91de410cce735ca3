//! Moving a consumer group's committed offsets: to a time (each partition's first record at or
//! after it, found by the crate's `times` module) or to the start of a topic. The console's groups page,
//! `atoll group reset` and `atoll view rebuild` are built on it.
//!
//! Only a group without members is moved. A running member would not read from the new
//! offsets until its partitions are assigned again, and would overwrite them with its own
//! next commit; Kafka's `kafka-consumer-groups --reset-offsets` refuses an active group for
//! the same reason. The check and the commit are two requests: a member joining in between
//! starts from either the old offsets or the new ones, never from a mix within a partition.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

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
    let mut ranges = Vec::new();
    for e in now.elements_for_topic(topic) {
        let (low, high) = consumer
            .fetch_watermarks(topic, e.partition(), TIMEOUT)
            .map_err(group_error(group))?;
        ranges.push((e.partition(), low, high));
    }
    let targets: Vec<(i32, i64)> = match target {
        Target::Start => ranges.iter().map(|&(p, low, _)| (p, low)).collect(),
        Target::Time(ms) => crate::times::offsets_at(kafka, topic, ms, &ranges)?,
    };
    Ok(targets
        .into_iter()
        .map(|(partition, to)| Move {
            partition,
            from: now
                .find_partition(topic, partition)
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0),
            to,
        })
        .collect())
}

/// `moves` that never skip a record the group has not handled: a partition the group committed
/// nothing on is left out (it starts where the listener's `auto.offset.reset` says), and one
/// whose committed offset is before its target stays where it is. For rebuilding a view from a
/// time, which must apply every fact since that time.
pub fn backwards_only(moves: &[Move]) -> Vec<Move> {
    moves
        .iter()
        .filter_map(|m| {
            let from = m.from?;
            Some(Move {
                to: m.to.min(from),
                ..*m
            })
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_backwards_only_never_skips_a_record() {
        let m = |partition, from, to| Move {
            partition,
            from,
            to,
        };
        // (committed, target) → the move kept, if any.
        let cases = [
            ((Some(10), 4), Some(4)),
            ((Some(10), 10), Some(10)),
            // The group has not reached the time yet: it stays.
            ((Some(3), 7), Some(3)),
            // Nothing committed: left to the listener's start.
            ((None, 7), None),
        ];
        for ((from, to), want) in cases {
            let got = backwards_only(&[m(0, from, to)]);
            let want: Vec<Move> = want.map(|to| m(0, from, to)).into_iter().collect();
            assert_eq!(got, want, "{from:?} → {to}");
        }
    }
}
