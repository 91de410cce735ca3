//! Writing a record elsewhere until the broker acknowledges it: its copy on the retry topic,
//! its dead letter. The partition waits behind such a write (its order is kept), and shows so
//! in health and `atoll_partitions_blocked` while the write fails. An exactly-once listener's
//! dead letter is staged instead, and commits with the record's offset.

use rdkafka::message::OwnedHeaders;
use tokio_util::sync::CancellationToken;

use super::env::ListenerEnv;
use super::received::Received;
use super::worker::Handled;
use crate::contract::dead_letter::{DeadLetterKind, Failure};
use crate::contract::envelope::RecordView;
use crate::contract::service::Service;
use crate::contract::topic::TopicName;
use crate::handler::delivery::{Delivery, Settled};
use crate::ops::status::Then;
use crate::produce::transactional::Output;

/// What a record costs beyond its key, value and headers' bytes (its batch's and its own
/// framing), with room to spare.
const RECORD_OVERHEAD: usize = 512;

/// The bytes of `headers`' keys and values.
fn header_bytes(headers: &OwnedHeaders) -> usize {
    use rdkafka::message::Headers;
    headers
        .iter()
        .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
        .sum()
}

/// How a [`ListenerEnv::write`] ended.
pub(crate) enum Written {
    /// Acknowledged by the broker.
    Yes,
    /// Given up: the partition was revoked or the process is stopping.
    Abandoned,
    /// The record is too large to be sent (why).
    TooLarge(String),
}

impl<S: Service> ListenerEnv<S> {
    /// Dead-letters bad input after its one and only attempt.
    pub(crate) async fn bad_input(
        &self,
        msg: &Received,
        kind: DeadLetterKind,
        error: String,
        cancel: &CancellationToken,
    ) -> Handled {
        self.counters.metrics.failed(kind);
        let failure = Failure {
            kind,
            error,
            attempts: 1,
        };
        self.dead_letter(msg, failure, cancel).await
    }

    /// Writes the record to the service's DLQ and waits for the acknowledgement.
    pub(crate) async fn dead_letter(
        &self,
        msg: &Received,
        failure: Failure,
        cancel: &CancellationToken,
    ) -> Handled {
        self.dead_letter_as(msg, self.listener.name(), failure, cancel)
            .await
    }

    /// [`Self::dead_letter`] in the name of `listener`, whose record it is. A record too large
    /// for the DLQ is dead-lettered as a pointer to itself (see
    /// [`PAYLOAD_OMITTED`](crate::dead_letter::PAYLOAD_OMITTED)).
    pub(crate) async fn dead_letter_as(
        &self,
        msg: &Received,
        listener: &str,
        mut failure: Failure,
        cancel: &CancellationToken,
    ) -> Handled {
        if matches!(self.io.delivery, Delivery::ExactlyOnce) {
            return self.stage_dead_letter(msg, listener, failure);
        }
        let topic = S::ID.dlq();
        let payload = msg.payload().unwrap_or_default();
        let headers = || failure.headers(msg, listener);
        let written = match self
            .write(&topic, msg, payload, headers, cancel, true)
            .await
        {
            Written::TooLarge(why) => {
                failure.error = format!(
                    "{}; the record ({} bytes) is too large for the DLQ ({why}): its payload is a pointer to the original record",
                    failure.error,
                    payload.len()
                );
                let (pointer, headers) = failure.pointer(msg, listener);
                let headers = || headers.clone();
                self.write(&topic, msg, &pointer, headers, cancel, false)
                    .await
            }
            written => written,
        };
        match written {
            Written::Yes => {
                self.dead_lettered(msg, &failure, &topic);
                Handled::Finished(Settled::Done)
            }
            Written::Abandoned | Written::TooLarge(_) => Handled::Abandoned,
        }
    }

    /// An exactly-once listener's dead letter: staged, so that it commits with the record's
    /// offset in the listener's Kafka transaction. A transaction that aborts (and the record
    /// handled again) then leaves no dead letter behind, and the dead letter is written once.
    /// One that would be larger than the producer takes is a pointer from the start (a record
    /// the producer refused would abort every transaction it is in).
    fn stage_dead_letter(&self, msg: &Received, listener: &str, mut failure: Failure) -> Handled {
        let topic = S::ID.dlq();
        let payload = msg.payload().unwrap_or_default();
        let headers = failure.headers(msg, listener);
        let size = payload.len() + msg.key().map_or(0, <[u8]>::len) + header_bytes(&headers);
        let (payload, headers) = if size + RECORD_OVERHEAD <= self.max_record_bytes() {
            (payload.to_vec(), headers)
        } else {
            failure.error = format!(
                "{}; the record ({} bytes) is too large for the DLQ: its payload is a pointer to the original record",
                failure.error,
                payload.len()
            );
            failure.pointer(msg, listener)
        };
        self.dead_lettered(msg, &failure, &topic);
        Handled::Finished(Settled::Staged(vec![Output {
            topic: topic.to_string(),
            partition: None,
            key: msg.key().map(<[u8]>::to_vec),
            payload,
            headers,
        }]))
    }

    /// The largest record the producer sends (`message.max.bytes`, librdkafka's default 1 MB).
    fn max_record_bytes(&self) -> usize {
        self.io
            .clients
            .config()
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    }

    /// Counts, traces, shows and logs a dead letter of `msg` written (or staged) to `topic`.
    fn dead_lettered(&self, msg: &Received, failure: &Failure, topic: &TopicName) {
        let metrics = &self.counters.metrics;
        metrics.dead_lettered.inc();
        let at = (msg.topic(), msg.partition(), msg.offset());
        let kind = failure.kind.as_str();
        (metrics.observed).failed(kind, &failure.error, Then::DeadLettered, at);
        crate::ops::telemetry::spans::failed(failure.kind.as_str(), &failure.error);
        tracing::warn!(kind = %failure.kind, error = failure.error, attempts = failure.attempts, dlq = topic.as_str(), "record dead-lettered");
    }

    /// Writes `payload` with the record's key and `headers()` to `topic` until the broker
    /// acknowledged it. A record too large to send is [`Written::TooLarge`] when `may_shrink`
    /// (the caller sends something smaller instead). Any other failure is retried after a
    /// back-off, one log line each, the partition stopped behind it and shown so (health and
    /// `atoll_partitions_blocked`) until the write succeeds or is abandoned (revocation,
    /// shutdown).
    pub(crate) async fn write(
        &self,
        topic: &TopicName,
        msg: &Received,
        payload: &[u8],
        headers: impl Fn() -> OwnedHeaders,
        cancel: &CancellationToken,
        may_shrink: bool,
    ) -> Written {
        let send = || async {
            let sent = async {
                let pending = self
                    .io
                    .producer
                    .send(topic.as_str(), msg.key(), payload, headers())
                    .await?;
                pending.acked().await
            };
            match sent.await {
                Ok(()) => Ok(Written::Yes),
                Err(e) if may_shrink && e.is_too_large() => Ok(Written::TooLarge(e.to_string())),
                Err(e) => Err(e),
            }
        };
        let mut blocked = self.counters.blocked(msg.partition());
        let written = self
            .setup
            .backoff()
            .retry_until_cancelled(cancel, send, |e, _| {
                tracing::error!(error = %e, topic = topic.as_str(), partition = msg.partition(), offset = msg.offset(), "write failed; the partition waits for it, retrying");
                blocked.because(format!("writing to `{topic}` failed: {e}"));
            })
            .await;
        written.unwrap_or(Written::Abandoned)
    }
}
