//! Dead letters: reading a service's DLQ, choosing some, and redriving them to their original
//! topic, for the listener that failed them. `atoll dlq list | show | replay` and the console's
//! dead-letter page are both built on this module.

mod kafka;
mod letter;
mod redrive;

pub use kafka::Kafka;
pub use letter::{DeadLetter, Filter};
pub use redrive::{decide, dlq_topic, headers, rate, redrive, Decision, Outcome, Redrive, Summary};

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// The topic named is not a DLQ.
    #[error("`{0}` is not a dead-letter topic; those are named `<company>.<namespace>.<service>.private.dlq`")]
    NotADlq(String),
    /// The topic does not exist (on the cluster at the address given).
    #[error("topic `{0}` does not exist on {1}")]
    NoTopic(String, String),
    /// No record at the offset asked for.
    #[error("no record at offset {offset}{} in `{dlq}`", partition.map(|p| format!(" of partition {p}")).unwrap_or_default())]
    NoRecordAt {
        /// The DLQ.
        dlq: String,
        /// The partition asked for, if any.
        partition: Option<i32>,
        /// The offset asked for.
        offset: i64,
    },
    /// The offset is in several partitions.
    #[error("offset {offset} is in partitions {} of `{dlq}`; add --partition", partitions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Ambiguous {
        /// The DLQ.
        dlq: String,
        /// The offset asked for.
        offset: i64,
        /// The partitions holding it.
        partitions: Vec<i32>,
    },
    /// A record without the headers atoll writes.
    #[error(
        "{id} has no {} / {} header: not an atoll dead letter",
        atoll::dead_letter::ORIGINAL_TOPIC,
        atoll::dead_letter::LISTENER
    )]
    NotADeadLetter {
        /// The record's id.
        id: String,
    },
    /// A rate that is no number of records per second from 0.01 to 1,000,000.
    #[error("`{0}` is no rate: give records per second, from 0.01 to 1000000")]
    BadRate(String),
    /// Reading took too long.
    #[error("reading `{0}` timed out")]
    Timeout(String),
    /// A record was not acknowledged.
    #[error("producing to `{topic}`: {error}")]
    Send {
        /// Where to.
        topic: String,
        /// The client's error.
        error: rdkafka::error::KafkaError,
    },
    /// The client failed.
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A name that is no atoll topic.
    #[error(transparent)]
    TopicName(#[from] atoll::TopicNameError),
    /// atoll failed (creating a topic).
    #[error(transparent)]
    Atoll(#[from] atoll::Error),
}
