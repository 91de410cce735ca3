//! Reads the operator's holds (see [`crate::contract::control`]) from each service's
//! `private.control` topic into the process's [`Holds`], which its listeners obey.
//!
//! The reader is a consumer assigned partition 0 of every control topic from the beginning
//! (never a group member, never committing), on a thread of its own. The start waits until it
//! read what the topics held then (at most [`CATCH_UP`]), so that a partition held before the
//! process started is never handled, even briefly, before its listener knows of the hold. A
//! record that is not a hold (a key or value it cannot read, a format it does not know) is
//! logged and skipped: it changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
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

/// Starts reading the holds of `services` (until `stop`); returns them once what the control
/// topics held was read, or after [`CATCH_UP`], saying so in the log.
pub(super) async fn start(
    clients: &Clients,
    services: &[ServiceId],
    stop: CancellationToken,
) -> Result<Arc<Holds>> {
    let holds = Arc::new(Holds::default());
    let topics: HashMap<String, String> = services
        .iter()
        .map(|s| {
            (
                s.private_topic(PrivateTopic::Control).to_string(),
                s.to_string(),
            )
        })
        .collect();
    let consumer: BaseConsumer<Hooked> = clients
        .with(|c| {
            c.set("group.id", "atoll-control")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("enable.partition.eof", "false");
        })
        .create("control")
        .map_err(|e| Error::kafka("creating the reader of the operator's holds", e))?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics.keys() {
        tpl.add_partition_offset(topic, PARTITION, Offset::Beginning)
            .map_err(|e| Error::kafka("assigning the control topics", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka("assigning the control topics", e))?;
    let (caught_up, read) = oneshot::channel();
    let reader = Reader {
        consumer,
        topics,
        holds: holds.clone(),
    };
    thread::Builder::new()
        .name("atoll-control".into())
        .spawn(move || reader.run(caught_up, stop))
        .map_err(|source| Error::Spawn {
            what: "the reader of the operator's holds".into(),
            source,
        })?;
    if tokio::time::timeout(CATCH_UP + Duration::from_secs(5), read)
        .await
        .is_err()
    {
        tracing::warn!("the operator's holds were not read in time: listeners start without them, and obey them once read");
    }
    Ok(holds)
}

struct Reader {
    consumer: BaseConsumer<Hooked>,
    /// Control topic → its service.
    topics: HashMap<String, String>,
    holds: Arc<Holds>,
}

impl Reader {
    /// Reads until `stop`; says when it read what the topics held at its start.
    fn run(self, caught_up: oneshot::Sender<()>, stop: CancellationToken) {
        let mut ends = self.ends();
        let deadline = Instant::now() + CATCH_UP;
        let mut caught_up = Some(caught_up);
        while !stop.is_cancelled() {
            if caught_up.is_some() {
                let behind = ends.values().any(|end| *end > 0);
                if behind && Instant::now() >= deadline {
                    tracing::warn!("the operator's holds were not all read in time: listeners start without the rest, and obey them once read");
                }
                if !behind || Instant::now() >= deadline {
                    let _ = caught_up.take().map(|tx| tx.send(()));
                }
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    if let Some(end) = ends.get_mut(m.topic()) {
                        if m.offset() + 1 >= *end {
                            *end = 0;
                        }
                    }
                    self.read(m.topic(), m.key(), m.payload());
                }
                Some(Err(e)) => tracing::debug!(error = %e, "reading the operator's holds"),
                None => {}
            }
        }
    }

    /// Each control topic's end at the start; 0 for one that is empty or cannot be asked
    /// (a missing topic: its holds are read once it exists).
    fn ends(&self) -> HashMap<String, i64> {
        self.topics
            .keys()
            .map(|topic| {
                let end = match self
                    .consumer
                    .fetch_watermarks(topic, PARTITION, Duration::from_secs(5))
                {
                    Ok((low, high)) if high > low => high,
                    Ok(_) => 0,
                    Err(e) => {
                        tracing::warn!(topic, error = %e, "cannot ask for the end of a control topic: the holds on it are read once it answers");
                        0
                    }
                };
                (topic.clone(), end)
            })
            .collect()
    }

    /// Records the hold (or its lifting) one record says.
    fn read(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(service) = self.topics.get(topic) else {
            return;
        };
        match decode(key, value) {
            Ok((key, hold)) => {
                let held = hold.is_some();
                if self.holds.set(service, key.clone(), hold) {
                    tracing::info!(service, hold = %key, held, "operator's hold read");
                }
            }
            Err(why) => tracing::warn!(topic, why, "a record of the control topic is skipped"),
        }
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
