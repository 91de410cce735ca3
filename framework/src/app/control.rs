//! Reads the operator's holds (see [`crate::contract::control`]) from each service's
//! `private.control` topic into the process's [`Holds`], which its listeners obey.
//!
//! The reader is a consumer assigned partition 0 of every control topic from the beginning
//! (never a group member, never committing), on a thread of its own. The start waits until it
//! read what the topics held then (at most [`CATCH_UP`] from the start of this reader), so that a partition held before the
//! process started is never handled, even briefly, before its listener knows of the hold. A
//! record that is not a hold (a key or value it cannot read, a format it does not know) is
//! logged and skipped: it changes nothing.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::client::{Clients, Hooked};
use crate::consume::holds::Holds;
use crate::contract::control::{Hold, HoldKey, CONTROL_FORMAT};
use crate::contract::topic::{PrivateTopic, ServiceId};
use crate::error::{Error, Result};

/// How long the start waits for the holds to be read.
const CATCH_UP: Duration = Duration::from_secs(10);

/// The control topics' partition: they have one, as the status topics.
const PARTITION: i32 = 0;

/// How often the holds are read again: a new hold is obeyed within about this long.
const READ_EVERY: Duration = Duration::from_secs(2);

/// How long one round of reading may take.
const ROUND: Duration = Duration::from_secs(5);

/// Starts reading the holds of `services` (until `stop`); returns them once what the control
/// topics held was read, or after [`CATCH_UP`], saying so in the log.
pub(super) async fn start(
    clients: &Clients,
    services: &[ServiceId],
    stop: CancellationToken,
) -> Result<Arc<Holds>> {
    let deadline = Instant::now() + CATCH_UP;
    let holds = Arc::new(Holds::default());
    let mut topics = Vec::new();
    for service in services {
        let name = service.private_topic(PrivateTopic::Control).to_string();
        let consumer: BaseConsumer<Hooked> = clients
            .with(|c| {
                c.set("group.id", "atoll-control")
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    // Never made on the fly, without compaction, by asking for it.
                    .set("allow.auto.create.topics", "false")
                    // The end is known by the event, past any transaction marker.
                    .set("enable.partition.eof", "true");
            })
            .create("control")
            .map_err(|e| Error::kafka("creating the reader of the operator's holds", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&name, PARTITION, Offset::Beginning)
            .and_then(|()| consumer.assign(&tpl))
            .map_err(|e| Error::kafka(format!("assigning `{name}`"), e))?;
        topics.push(Topic {
            service: service.to_string(),
            name,
            consumer,
            at_end: false,
            // Asked by the reader, off the async workers.
            missing: true,
        });
    }
    let (caught_up, read) = oneshot::channel();
    let reader = Reader {
        topics,
        holds: holds.clone(),
    };
    thread::Builder::new()
        .name("atoll-control".into())
        .spawn(move || reader.run(caught_up, deadline, stop))
        .map_err(|source| Error::Spawn {
            what: "the reader of the operator's holds".into(),
            source,
        })?;
    // The reader says when it is done, or when the deadline passed; this wait is a backstop.
    let backstop = tokio::time::Instant::from_std(deadline) + Duration::from_secs(1);
    match tokio::time::timeout_at(backstop, read).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => tracing::warn!("the reader of the operator's holds stopped: listeners start without them"),
        Err(_) => tracing::warn!("the operator's holds were not read in time: listeners start without them, and obey them once read"),
    }
    Ok(holds)
}

/// One service's control topic and its reader.
struct Topic {
    service: String,
    name: String,
    consumer: BaseConsumer<Hooked>,
    /// Whether its end was reached once.
    at_end: bool,
    /// Whether the topic did not exist when last asked (asked again every round).
    missing: bool,
}

struct Reader {
    topics: Vec<Topic>,
    holds: Arc<Holds>,
}

impl Reader {
    /// Reads until `stop`; says when it read what the topics held (each reached its end), or
    /// once `deadline` passed.
    fn run(mut self, caught_up: oneshot::Sender<()>, deadline: Instant, stop: CancellationToken) {
        let mut caught_up = Some(caught_up);
        while !stop.is_cancelled() {
            for t in self.topics.iter_mut().filter(|t| t.missing) {
                t.missing = missing(t);
                // A topic that does not exist holds no hold: nothing to wait for.
                t.at_end |= t.missing;
            }
            self.read_round(&stop);
            if caught_up.is_some() {
                let behind = self.topics.iter().any(|t| !t.at_end);
                if behind && Instant::now() >= deadline {
                    tracing::warn!("the operator's holds were not all read in time: listeners start without the rest, and obey them once read");
                }
                if !behind || Instant::now() >= deadline {
                    let _ = caught_up.take().map(|tx| tx.send(()));
                }
            }
            // Between rounds, nothing is fetched: a fetch always waiting on an empty topic
            // would hold a broker's attention for no record (noida-db stalls under it).
            let resume_at = Instant::now() + READ_EVERY;
            while Instant::now() < resume_at && !stop.is_cancelled() {
                thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Fetches each topic until its end (or for [`ROUND`] at most), then pauses it.
    fn read_round(&mut self, stop: &CancellationToken) {
        let round_ends = Instant::now() + ROUND;
        let mut ended: Vec<bool> = self.topics.iter().map(|t| t.missing).collect();
        for t in &self.topics {
            t.resume();
        }
        while ended.iter().any(|e| !e) && Instant::now() < round_ends && !stop.is_cancelled() {
            for (t, done) in self.topics.iter_mut().zip(ended.iter_mut()) {
                match t.consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => read(&self.holds, t, m.key(), m.payload()),
                    Some(Err(KafkaError::PartitionEOF(_))) => {
                        t.at_end = true;
                        *done = true;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(topic = t.name, error = %e, "reading the operator's holds")
                    }
                    None => {}
                }
            }
        }
        for t in &self.topics {
            t.pause();
        }
    }
}

impl Topic {
    fn partition(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.name, PARTITION);
        tpl
    }

    fn pause(&self) {
        if let Err(e) = self.consumer.pause(&self.partition()) {
            tracing::debug!(topic = self.name, error = %e, "cannot pause the control topic");
        }
    }

    fn resume(&self) {
        if let Err(e) = self.consumer.resume(&self.partition()) {
            tracing::debug!(topic = self.name, error = %e, "cannot resume the control topic");
        }
    }
}

/// Whether the broker says `t`'s topic does not exist: it holds no hold, nothing to wait for
/// (it is read once it is made). A broker that does not answer: not known to be missing.
fn missing(t: &Topic) -> bool {
    let name = t.name.as_str();
    let missing = t
        .consumer
        .fetch_metadata(Some(name), Duration::from_secs(5))
        .is_ok_and(|md| {
            // Only the broker's word that it does not know the topic: a transient error is
            // waited out like any slow answer.
            let unknown = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
            md.topics()
                .iter()
                .any(|t| t.name() == name && t.error() == Some(unknown))
        });
    if missing {
        tracing::info!(
            topic = name,
            "no control topic: no operator's hold to read yet"
        );
    }
    missing
}

/// Records the hold (or its lifting) one record of `t` says.
fn read(holds: &Holds, t: &Topic, key: Option<&[u8]>, value: Option<&[u8]>) {
    match decode(key, value) {
        Ok((key, hold)) => {
            let held = hold.is_some();
            if holds.set(&t.service, key.clone(), hold) {
                tracing::info!(service = t.service, hold = %key, held, "operator's hold read");
            }
        }
        Err(why) => tracing::warn!(
            topic = t.name,
            why,
            "a record of the control topic is skipped"
        ),
    }
}

/// The hold one record of a control topic says: `None` lifts it (a tombstone).
fn decode(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> std::result::Result<(HoldKey, Option<Hold>), String> {
    let key = key.ok_or("it has no key")?;
    let key = std::str::from_utf8(key).map_err(|_| "its key is not UTF-8".to_owned())?;
    let key: HoldKey = key
        .parse()
        .map_err(|e: crate::contract::control::NotAHoldKey| e.to_string())?;
    let Some(value) = value else {
        return Ok((key, None));
    };
    #[derive(serde::Deserialize)]
    struct Format {
        format: u32,
    }
    let format: Format =
        serde_json::from_slice(value).map_err(|e| format!("its value is not a hold: {e}"))?;
    if format.format != CONTROL_FORMAT {
        return Err(format!(
            "its format {} is not one this version of atoll reads ({CONTROL_FORMAT})",
            format.format
        ));
    }
    let hold =
        serde_json::from_slice(value).map_err(|e| format!("its value is not a hold: {e}"))?;
    Ok((key, Some(hold)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_that_are_not_holds_are_refused_with_why() {
        let hold = serde_json::to_vec(&Hold::new("console", "why", 1)).unwrap();
        let future = br#"{"format": 2, "by": "x"}"#;
        // (key, value) → held, or part of why not
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, Result<bool, &'a str>);
        let cases: [Case; 7] = [
            (Some(b"orders/1"), Some(&hold), Ok(true)),
            (Some(b"orders/1"), None, Ok(false)),
            (None, Some(&hold), Err("no key")),
            (Some(b"orders"), Some(&hold), Err("not a hold's key")),
            (Some(&[0xff, 0x2f, 0x31]), None, Err("not UTF-8")),
            (Some(b"orders/1"), Some(b"{"), Err("not a hold")),
            (Some(b"orders/1"), Some(future), Err("format 2")),
        ];
        for (key, value, want) in cases {
            match (decode(key, value), want) {
                (Ok((k, hold)), Ok(held)) => {
                    assert_eq!(k, HoldKey::new("orders", 1));
                    assert_eq!(hold.is_some(), held);
                }
                (Err(why), Err(part)) => assert!(why.contains(part), "{why}"),
                (got, want) => panic!("{key:?} {value:?}: {got:?}, want {want:?}"),
            }
        }
    }
}
