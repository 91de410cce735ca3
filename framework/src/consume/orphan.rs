//! Records on a retry topic of a listener that no longer reads it (set to `strict`, or
//! renamed): the retry topics' designated reader skips those that listener's retry group had
//! passed, and dead-letters the others in that listener's name, so that a replay takes them to
//! its main path.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::env::{Group, ListenerEnv};
use super::received::Received;
use super::worker::Handled;
use crate::config::client::{Clients, Hooked};
use crate::contract::dead_letter::{DeadLetterKind, Failure};
use crate::contract::envelope::RecordView;
use crate::contract::retry_topic::RetryState;
use crate::contract::service::Service;
use crate::handler::delivery::Settled;

/// How long a retry group's committed offset, once read, is trusted: during a rolling deploy,
/// processes of the old version may still move it.
const PASSED_FOR: Duration = Duration::from_secs(10);

/// On the retry topic, by listener that no longer reads it and partition: the offset its
/// retry group had committed (if any), and when it was read.
#[derive(Debug, Default)]
pub(crate) struct RetryGroups(Mutex<HashMap<(String, i32), Read>>);

/// A retry group's committed offset (if any), and when it was read.
type Read = (Option<i64>, Instant);

impl<S: Service> ListenerEnv<S> {
    /// Skips `msg`, the retry-topic record of a listener that no longer reads it, when that
    /// listener's retry group had passed it; else dead-letters it in that listener's name.
    pub(crate) async fn orphan(
        &self,
        msg: &Received,
        st: RetryState,
        cancel: &CancellationToken,
    ) -> Handled {
        let mut blocked = self.counters.blocked(msg.partition());
        let read = || self.passed_by(&st.listener, msg.partition());
        let passed = self
            .setup
            .backoff()
            .retry_until_cancelled(cancel, read, |e, _| {
                tracing::warn!(error = %e, listener = st.listener, "cannot read the committed offsets of a listener's retry group; retrying");
                blocked.because(format!(
                    "reading the retry group offsets of listener `{}` failed: {e}",
                    st.listener
                ));
            })
            .await;
        drop(blocked);
        let Some(passed) = passed else {
            return Handled::Abandoned;
        };
        if passed.is_some_and(|o| o > msg.offset()) {
            return Handled::Finished(Settled::Done);
        }
        let failure = Failure {
            kind: DeadLetterKind::Handler,
            error: format!(
                "listener `{}` no longer takes records from the retry topic (its retry mode is `strict`, or it was renamed); `atoll dlq replay` hands it to that listener's main path (a renamed listener's record must be sent to it again by hand)",
                st.listener
            ),
            attempts: st.attempts,
        };
        self.dead_letter_as(msg, &st.listener, failure, cancel)
            .await
    }

    /// The offset `listener`'s retry group committed on the retry topic's `partition`.
    async fn passed_by(&self, listener: &str, partition: i32) -> crate::error::Result<Option<i64>> {
        let key = (listener.to_owned(), partition);
        let cache = &self.counters.retry_groups.0;
        if let Some((o, at)) = cache.lock().get(&key) {
            if at.elapsed() < PASSED_FOR {
                return Ok(*o);
            }
        }
        // Its group on the retry topic this consumer reads.
        let group = Group::new(S::ID.group_id(listener)?, self.setup.group.mode).joined;
        let (clients, topic) = (self.io.clients.clone(), self.setup.topic.to_string());
        let offset = tokio::task::spawn_blocking(move || {
            committed_offset(&clients, &group, &topic, partition)
        })
        .await
        .map_err(|e| crate::error::Error::Config(format!("offset lookup panicked: {e}")))??;
        cache.lock().insert(key, (offset, Instant::now()));
        Ok(offset)
    }
}

/// The offset `group` committed on `topic`'s `partition`, if any (blocking).
fn committed_offset(
    clients: &Clients,
    group: &str,
    topic: &str,
    partition: i32,
) -> crate::error::Result<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer<Hooked> = clients
        .with(|c| {
            c.remove("group.instance.id");
            c.set("group.id", group);
        })
        .create("offset lookup")
        .map_err(|e| crate::error::Error::kafka("creating a consumer", e))?;
    // Serves the request for a first OAUTHBEARER token, before the blocking call below.
    let _ = consumer.poll(Duration::ZERO);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| {
            crate::error::Error::kafka(format!("reading `{group}`'s committed offsets"), e)
        })?;
    let Some(entry) = got.elements().into_iter().next() else {
        return Ok(None);
    };
    if let Err(e) = entry.error() {
        return Err(crate::error::Error::kafka(
            format!("reading `{group}`'s committed offset of {topic} partition {partition}"),
            e,
        ));
    }
    Ok(match entry.offset() {
        rdkafka::Offset::Offset(o) => Some(o),
        _ => None,
    })
}
