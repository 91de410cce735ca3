//! Redriving dead letters: each chosen one is re-published to its original topic with its key,
//! value and original headers, plus `atoll_replayed_from` (`<dlq>/<partition>/<offset>`) and
//! `atoll_replay_group` (the consumer group of the listener that dead-lettered it: only that
//! listener handles it again, others on the same topic skip it). What was redriven is
//! remembered durably in the compacted `<service>.private.replayed`, keyed by
//! `<dlq>/<partition>/<offset>`: one found there is skipped unless forced. The marker is written
//! after the record was acknowledged, so a crash between the two can redrive one twice (at least
//! once). A rate limit spaces the records out, so that a redrive of thousands does not flood the
//! listener that failed them.
//!
//! `atoll dlq replay` and the console's redrive both run [`redrive`]; [`decide`] is its pure
//! core.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use atoll::dead_letter as h;
use atoll::envelope::{REPLAYED_FROM, REPLAY_GROUP};
use atoll::{PrivateTopic, TopicName};

use super::kafka::Kafka;
use super::letter::{DeadLetter, Filter};
use super::DlqError;

/// What becomes of one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Re-published to `target` for the listener whose group is `group`.
    Redrive {
        /// Its id (`<dlq>/<partition>/<offset>`).
        id: String,
        /// The original topic.
        target: String,
        /// The listener's consumer group.
        group: String,
    },
    /// Left, saying why.
    Skip {
        /// Its id.
        id: String,
        /// Why.
        why: String,
    },
}

/// What happened to one dead letter, as [`redrive`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// Whether the record was sent (`false` in a dry run, and for a skip).
    pub sent: bool,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.decision, self.sent) {
            (Decision::Skip { id, why }, _) => write!(f, "skip {id}: {why}"),
            (Decision::Redrive { id, target, group }, true) => {
                write!(f, "replayed {id} to {target} for {group}")
            }
            (Decision::Redrive { id, target, group }, false) => {
                write!(f, "would replay {id} to {target} for {group}")
            }
        }
    }
}

/// How a redrive runs.
#[derive(Debug, Clone, Default)]
pub struct Redrive {
    /// Which dead letters.
    pub filter: Filter,
    /// Say what would be done; send nothing.
    pub dry_run: bool,
    /// Redrive those redriven before too.
    pub force: bool,
    /// At most this many records per second (none: as fast as the broker takes them).
    pub per_second: Option<f64>,
}

/// How many were redriven and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Redriven (or, in a dry run, that would be).
    pub redriven: usize,
    /// Skipped.
    pub skipped: usize,
}

/// What becomes of `d`, read from `dlq`, given the markers of what was redriven before.
///
/// # Errors
/// [`DlqError::NotADeadLetter`] when it lacks the headers atoll writes.
pub fn decide(
    dlq: &TopicName,
    d: &DeadLetter,
    replayed: &HashMap<String, String>,
    force: bool,
) -> Result<Decision, DlqError> {
    let id = d.id(dlq.as_str());
    if let (Some(when), false) = (replayed.get(&id), force) {
        let why = format!("already replayed ({when}); --force replays it again");
        return Ok(Decision::Skip { id, why });
    }
    let (Some(target), Some(listener)) = (d.header(h::ORIGINAL_TOPIC), d.header(h::LISTENER))
    else {
        return Err(DlqError::NotADeadLetter { id });
    };
    if target.ends_with(".private.saga") {
        let why =
            "a saga state that did not decode; it cannot be replayed (the saga was forgotten)";
        return Ok(Decision::Skip {
            id,
            why: why.to_owned(),
        });
    }
    if let Some(size) = d.header(h::PAYLOAD_OMITTED) {
        let (p, o) = (
            d.header(h::ORIGINAL_PARTITION).unwrap_or("?"),
            d.header(h::ORIGINAL_OFFSET).unwrap_or("?"),
        );
        let why = format!(
            "its payload ({size} bytes) was too large for the DLQ and is not in it; the original is {target} partition {p} offset {o}"
        );
        return Ok(Decision::Skip { id, why });
    }
    Ok(Decision::Redrive {
        id,
        target: target.to_owned(),
        group: format!("{}-{listener}", dlq.service_prefix()),
    })
}

/// The headers a redriven record carries: the original ones (not atoll's dead-letter or replay
/// headers), then where it was redriven from and for which group.
pub fn headers(d: &DeadLetter, id: &str, group: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<(String, Option<Vec<u8>>)> = d
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with("atoll_dlq_") && !k.starts_with("atoll_replay"))
        .cloned()
        .collect();
    out.push((REPLAYED_FROM.to_owned(), Some(id.as_bytes().to_vec())));
    out.push((REPLAY_GROUP.to_owned(), Some(group.as_bytes().to_vec())));
    out
}

/// The slowest and the fastest rate a redrive takes, in records per second.
const RATES: std::ops::RangeInclusive<f64> = 0.01..=1_000_000.0;

/// A redrive's rate from text: records per second, within 0.01 and 1,000,000.
///
/// # Errors
/// [`DlqError::BadRate`] for anything else.
pub fn rate(text: &str) -> Result<Option<f64>, DlqError> {
    match text.trim().parse::<f64>() {
        Ok(r) if RATES.contains(&r) => Ok(Some(r)),
        _ => Err(DlqError::BadRate(text.to_owned())),
    }
}

/// Checks that `topic` is a DLQ (`<service>.private.dlq`).
///
/// # Errors
/// [`DlqError::NotADlq`].
pub fn dlq_topic(topic: &str) -> Result<TopicName, DlqError> {
    match topic.parse::<TopicName>() {
        Ok(t) if t.private_kind() == Some(PrivateTopic::Dlq) => Ok(t),
        _ => Err(DlqError::NotADlq(topic.to_owned())),
    }
}

/// Redrives the dead letters of `dlq` that `how` chooses, reporting each as it goes.
///
/// # Errors
/// The DLQ cannot be read, a record is not a dead letter, a send was not acknowledged.
pub fn redrive(
    kafka: &Kafka,
    dlq: &str,
    how: &Redrive,
    mut report: impl FnMut(&Outcome),
) -> Result<Summary, DlqError> {
    let topic = dlq_topic(dlq)?;
    let all = kafka.read_between(dlq, how.filter.from_ms, how.filter.to_ms)?;
    let chosen = how.filter.select(dlq, &all)?;
    let memory = topic.private_sibling(PrivateTopic::Replayed)?.to_string();
    if !how.dry_run {
        let partitions = kafka.partitions(dlq)?.len() as i32;
        kafka.ensure_compacted(&memory, partitions)?;
    }
    let replayed: HashMap<String, String> = match kafka.read_all(&memory) {
        Ok(marks) => marks
            .iter()
            .filter_map(|m| {
                let key = String::from_utf8_lossy(m.key.as_deref()?).into_owned();
                let value = String::from_utf8_lossy(m.payload.as_deref().unwrap_or_default());
                Some((key, value.into_owned()))
            })
            .collect(),
        Err(_) if how.dry_run => HashMap::new(),
        Err(e) => return Err(e),
    };
    let gap = match how.per_second {
        None => None,
        Some(r) if RATES.contains(&r) => Some(Duration::from_secs_f64(1.0 / r)),
        Some(r) => return Err(DlqError::BadRate(r.to_string())),
    };
    let mut summary = Summary::default();
    let mut last: Option<Instant> = None;
    for d in chosen {
        let decision = decide(&topic, d, &replayed, how.force)?;
        let Decision::Redrive { id, target, group } = &decision else {
            summary.skipped += 1;
            report(&Outcome {
                decision,
                sent: false,
            });
            continue;
        };
        summary.redriven += 1;
        if how.dry_run {
            report(&Outcome {
                decision,
                sent: false,
            });
            continue;
        }
        if let (Some(gap), Some(at)) = (gap, last) {
            std::thread::sleep(gap.saturating_sub(at.elapsed()));
        }
        last = Some(Instant::now());
        let hs = headers(d, id, group);
        kafka.send(target, d.key.as_deref(), d.payload.as_deref(), &hs)?;
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mark = format!("{now} to {target}");
        kafka.send(&memory, Some(id.as_bytes()), Some(mark.as_bytes()), &[])?;
        report(&Outcome {
            decision,
            sent: true,
        });
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(hs: &[(&str, &str)]) -> DeadLetter {
        DeadLetter {
            partition: 2,
            offset: 9,
            timestamp_ms: None,
            key: Some(b"k".to_vec()),
            payload: Some(b"{}".to_vec()),
            headers: hs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Some(v.as_bytes().to_vec())))
                .collect(),
        }
    }

    #[test]
    fn each_dead_letter_is_redriven_or_skipped_with_why() {
        let dlq: TopicName = "acme.shop.orders.private.dlq".parse().unwrap();
        let id = "acme.shop.orders.private.dlq/2/9";
        let ordinary = [
            (h::ORIGINAL_TOPIC, "acme.shop.orders.commands"),
            (h::LISTENER, "place-order"),
        ];
        let saga = [
            (h::ORIGINAL_TOPIC, "acme.shop.orders.private.saga"),
            (h::LISTENER, "order-saga"),
        ];
        let omitted = [
            (h::ORIGINAL_TOPIC, "acme.shop.orders.commands"),
            (h::LISTENER, "place-order"),
            (h::PAYLOAD_OMITTED, "2000000"),
            (h::ORIGINAL_PARTITION, "0"),
            (h::ORIGINAL_OFFSET, "7"),
        ];
        let marked = HashMap::from([(id.to_owned(), "yesterday".to_owned())]);
        let none = HashMap::new();
        let redrive = Decision::Redrive {
            id: id.into(),
            target: "acme.shop.orders.commands".into(),
            group: "acme.shop.orders-place-order".into(),
        };
        let skip = |why: &str| Decision::Skip {
            id: id.into(),
            why: why.into(),
        };
        type Headers<'a> = &'a [(&'a str, &'a str)];
        #[rustfmt::skip]
        let cases: [(Headers, &HashMap<String, String>, bool, Decision); 5] = [
            (&ordinary, &none, false, redrive.clone()),
            (&ordinary, &marked, false, skip("already replayed (yesterday); --force replays it again")),
            (&ordinary, &marked, true, redrive),
            (&saga, &none, false, skip("a saga state that did not decode; it cannot be replayed (the saga was forgotten)")),
            (&omitted, &none, false, skip("its payload (2000000 bytes) was too large for the DLQ and is not in it; the original is acme.shop.orders.commands partition 0 offset 7")),
        ];
        for (hs, replayed, force, want) in cases {
            assert_eq!(
                decide(&dlq, &letter(hs), replayed, force).unwrap(),
                want,
                "{hs:?}"
            );
        }
        let e = decide(&dlq, &letter(&[]), &none, false).unwrap_err();
        assert!(e.to_string().contains("not an atoll dead letter"), "{e}");
    }

    #[test]
    fn a_redriven_record_keeps_its_headers_but_atolls_own() {
        let d = letter(&[
            ("ce_type", "t"),
            (h::ERROR, "boom"),
            ("atoll_replayed_from", "old"),
        ]);
        let hs = headers(&d, "x/0/1", "g");
        let keys: Vec<&str> = hs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ce_type", REPLAYED_FROM, REPLAY_GROUP]);
        assert_eq!(hs[1].1.as_deref(), Some(&b"x/0/1"[..]));
    }

    #[test]
    fn rates_are_records_per_second_within_bounds() {
        #[rustfmt::skip]
        let cases = [
            ("10", Some(Some(10.0))), ("0.5", Some(Some(0.5))), ("0", None), ("1e-20", None),
            ("-3", None), ("NaN", None), ("inf", None), ("fast", None),
        ];
        for (text, want) in cases {
            assert_eq!(rate(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn only_dead_letter_topics() {
        assert!(dlq_topic("acme.shop.orders.private.dlq").is_ok());
        let e = dlq_topic("acme.shop.orders.events")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a dead-letter topic"), "{e}");
        assert!(dlq_topic("not a topic").is_err());
    }
}
