//! What becomes of an outbox row whose publish failed: the pure decision of the relay.
//!
//! A row fails for one of three kinds of reason, and each is waited out differently:
//! - **the record itself** cannot be written, whatever the broker does: larger than
//!   `message.max.bytes`, a partition the topic does not have (a reply's
//!   `atoll_reply_partition`), a record the broker calls invalid. Sending it again can never
//!   succeed, and a row that waits blocks the later rows of its key: it is dead-lettered at once;
//! - **an outage**: no broker answers, the leader moved, the record timed out on its way.
//!   Every row fails alike, and none is at fault: retried without end (backing off to
//!   [`OUTAGE_BACKOFF_MAX`]), as the consumers wait out the same outage;
//! - **anything else** (an unknown topic, say a reply to a `ce_replyto` that was never
//!   created, or a topic the service may not write): perhaps an operator's fix away, perhaps
//!   never. Retried [`UNCERTAIN_ATTEMPTS`] times over two to three minutes, then dead-lettered,
//!   so one row can hold its key up for minutes, never forever.
//!
//! While a row is being retried the relay shows it on the readiness probe; see `relay.rs`.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode as Code;

use crate::backoff::Backoff;
use crate::error::Error;

/// How many times a row failing for an uncertain reason is tried before it is dead-lettered.
pub(crate) const UNCERTAIN_ATTEMPTS: u32 = 10;
/// The longest wait between two tries of a row during an outage.
pub(crate) const OUTAGE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a row's publish failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The record can never be written.
    Record,
    /// The broker (or the way to it) is out.
    Outage,
    /// Neither known to be the record's fault nor an outage.
    Uncertain,
}

impl Cause {
    /// The cause of a publish that failed with `error`.
    pub(crate) fn of(error: &Error) -> Self {
        let code = match error {
            Error::Produce { source, .. } | Error::Kafka { source, .. } => match source {
                KafkaError::MessageProduction(code) => *code,
                KafkaError::Canceled => return Self::Outage,
                _ => return Self::Uncertain,
            },
            _ => return Self::Uncertain,
        };
        match code {
            Code::MessageSizeTooLarge
            | Code::InvalidMessageSize
            | Code::InvalidMessage
            | Code::InvalidRecord
            | Code::UnknownPartition
            | Code::InvalidPartitions => Self::Record,
            Code::MessageTimedOut
            | Code::AllBrokersDown
            | Code::BrokerTransportFailure
            | Code::RequestTimedOut
            | Code::NetworkException
            | Code::LeaderNotAvailable
            | Code::NotLeaderForPartition
            | Code::NotEnoughReplicas
            | Code::NotEnoughReplicasAfterAppend
            | Code::QueueFull
            | Code::OperationTimedOut => Self::Outage,
            _ => Self::Uncertain,
        }
    }
}

/// What to do with a row that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Try again after this long.
    Retry(Duration),
    /// Write it to its service's dead-letter topic and take it out of the outbox.
    DeadLetter,
}

/// The verdict on a row that failed its `attempts`-th try (from 1) for `cause`.
pub(crate) fn verdict(cause: Cause, attempts: u32, backoff: &Backoff) -> Verdict {
    match cause {
        Cause::Record => Verdict::DeadLetter,
        Cause::Uncertain if attempts >= UNCERTAIN_ATTEMPTS => Verdict::DeadLetter,
        Cause::Uncertain | Cause::Outage => Verdict::Retry(backoff.delay(attempts)),
    }
}

/// The relay's backoff between tries of one row: 1 s, doubling up to
/// [`OUTAGE_BACKOFF_MAX`] (so [`UNCERTAIN_ATTEMPTS`] tries span two to three minutes).
pub(crate) fn backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), OUTAGE_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce(code: Code) -> Error {
        Error::Produce {
            topic: "t".into(),
            source: KafkaError::MessageProduction(code),
        }
    }

    #[test]
    fn causes() {
        for (error, cause) in [
            (produce(Code::MessageSizeTooLarge), Cause::Record),
            (produce(Code::InvalidMessageSize), Cause::Record),
            (produce(Code::UnknownPartition), Cause::Record),
            (produce(Code::InvalidRecord), Cause::Record),
            (produce(Code::MessageTimedOut), Cause::Outage),
            (produce(Code::AllBrokersDown), Cause::Outage),
            (produce(Code::NotLeaderForPartition), Cause::Outage),
            (produce(Code::QueueFull), Cause::Outage),
            (
                Error::Produce {
                    topic: "t".into(),
                    source: KafkaError::Canceled,
                },
                Cause::Outage,
            ),
            (produce(Code::UnknownTopic), Cause::Uncertain),
            (produce(Code::UnknownTopicOrPartition), Cause::Uncertain),
            (produce(Code::TopicAuthorizationFailed), Cause::Uncertain),
            (Error::Config("x".into()), Cause::Uncertain),
        ] {
            assert_eq!(Cause::of(&error), cause, "{error}");
        }
    }

    #[test]
    fn verdicts() {
        let backoff = backoff().with_jitter(|| 1.0);
        let s = Duration::from_secs;
        for (cause, attempts, want) in [
            // The record's fault: never tried again.
            (Cause::Record, 1, Verdict::DeadLetter),
            // An outage: waited out without end, the wait capped.
            (Cause::Outage, 1, Verdict::Retry(s(1))),
            (Cause::Outage, 3, Verdict::Retry(s(4))),
            (Cause::Outage, 50, Verdict::Retry(OUTAGE_BACKOFF_MAX)),
            // Uncertain: tried a bounded number of times.
            (Cause::Uncertain, 1, Verdict::Retry(s(1))),
            (
                Cause::Uncertain,
                UNCERTAIN_ATTEMPTS - 1,
                Verdict::Retry(OUTAGE_BACKOFF_MAX),
            ),
            (Cause::Uncertain, UNCERTAIN_ATTEMPTS, Verdict::DeadLetter),
        ] {
            assert_eq!(
                verdict(cause, attempts, &backoff),
                want,
                "{cause:?} after {attempts}"
            );
        }
    }

    #[test]
    fn uncertain_tries_span_minutes_not_hours() {
        let backoff = backoff().with_jitter(|| 1.0);
        let total: Duration = (1..UNCERTAIN_ATTEMPTS).map(|n| backoff.delay(n)).sum();
        assert!(
            total >= Duration::from_secs(120) && total <= Duration::from_secs(600),
            "{total:?}"
        );
    }
}
