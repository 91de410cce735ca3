//! `atoll dlq list | show | replay`.
//!
//! A replay re-publishes a dead letter to its original topic with its key, value and original
//! headers, plus `atoll_replayed_from` (`<dlq>/<partition>/<offset>`) and `atoll_replay_group`
//! (the consumer group of the listener that dead-lettered it: only that listener handles it
//! again, others on the same topic skip it). What was replayed is remembered durably in the
//! compacted topic `<service>.private.replayed`, keyed by `<dlq>/<partition>/<offset>`; a record
//! found there is not replayed again unless `--force`. The marker is written after the replay
//! was acknowledged: a crash between the two can replay one record twice (at least once).

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Context as _};
use atoll::dead_letter as h;
use atoll::envelope::{header_str as header, REPLAYED_FROM, REPLAY_GROUP};
use atoll::{PrivateTopic, TopicName};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

use crate::broker::Broker;

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    /// One record, at `(partition, offset)`; the partition may be left out when unambiguous.
    At(Option<i32>, i64),
    /// Every record of a `ce_type`.
    Type(String),
    /// Every record.
    All,
}

fn dlq_topic(topic: &str) -> anyhow::Result<TopicName> {
    let t: TopicName = topic.parse()?;
    if t.private_kind() != Some(PrivateTopic::Dlq) {
        bail!("`{topic}` is not a dead-letter topic; those are named `<company>.<namespace>.<service>.private.dlq`");
    }
    Ok(t)
}

fn id(topic: &str, m: &OwnedMessage) -> String {
    format!("{topic}/{}/{}", m.partition(), m.offset())
}

/// `bytes` safe to print to a terminal: control characters (C0, DEL and C1: what drives a
/// terminal's escapes) as `\x1b` or `\u{9b}`, bytes that are not UTF-8 as `\xff`. A dead
/// letter's key, headers and error come from whoever wrote the record.
fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\0'..='\x1f' | '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
                '\u{80}'..='\u{9f}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A header's value, printable (`-` when absent).
fn shown_header(m: &OwnedMessage, name: &str) -> String {
    header(m, name).map_or_else(|| "-".to_owned(), |v| printable(v.as_bytes()))
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace(['\n', '\t'], " ");
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    } else {
        s
    }
}

/// `atoll dlq list`.
pub(crate) fn list(broker: &Broker, topic: &str, out: &mut impl Write) -> anyhow::Result<()> {
    dlq_topic(topic)?;
    let records = broker.read_all(topic)?;
    writeln!(
        out,
        "{:<10} {:<25} {:<40} {:<16} {:<12} {:<8} ERROR",
        "OFFSET", "TIME", "TYPE", "KEY", "KIND", "ATTEMPTS"
    )?;
    for m in &records {
        let key = m.key().map(printable).unwrap_or_default();
        writeln!(
            out,
            "{:<10} {:<25} {:<40} {:<16} {:<12} {:<8} {}",
            format!("{}:{}", m.partition(), m.offset()),
            shown_header(m, h::FAILED_AT),
            shown_header(m, "ce_type"),
            one_line(&key, 16),
            shown_header(m, h::ERROR_KIND),
            shown_header(m, h::ATTEMPTS),
            one_line(&shown_header(m, h::ERROR), 100),
        )?;
    }
    writeln!(out, "{} dead letter(s) in {topic}", records.len())?;
    Ok(())
}

fn find(
    records: &[OwnedMessage],
    topic: &str,
    partition: Option<i32>,
    offset: i64,
) -> anyhow::Result<usize> {
    let hits: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, m)| m.offset() == offset && partition.is_none_or(|p| p == m.partition()))
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [i] => Ok(*i),
        [] => bail!(
            "no record at offset {offset}{} in `{topic}`",
            partition
                .map(|p| format!(" of partition {p}"))
                .unwrap_or_default()
        ),
        many => {
            let parts: Vec<String> = many
                .iter()
                .map(|&i| records[i].partition().to_string())
                .collect();
            bail!(
                "offset {offset} is in partitions {} of `{topic}`; add --partition",
                parts.join(", ")
            )
        }
    }
}

/// `atoll dlq show`.
pub(crate) fn show(
    broker: &Broker,
    topic: &str,
    partition: Option<i32>,
    offset: i64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    dlq_topic(topic)?;
    let records = broker.read_all(topic)?;
    let m = &records[find(&records, topic, partition, offset)?];
    writeln!(out, "record {}", id(topic, m))?;
    writeln!(
        out,
        "key: {}",
        m.key().map_or_else(|| "(none)".into(), printable)
    )?;
    writeln!(out, "headers:")?;
    if let Some(hs) = m.headers() {
        for x in hs.iter() {
            let v = x.value.map_or_else(|| "(null)".into(), printable);
            writeln!(out, "  {}: {v}", printable(x.key.as_bytes()))?;
        }
    }
    let payload = m.payload().unwrap_or_default();
    let shown = match serde_json::from_slice::<serde_json::Value>(payload) {
        // serde_json escapes only the controls below U+0020: DEL and C1 pass.
        Ok(v) => serde_json::to_string_pretty(&v)?
            .lines()
            .map(|l| printable(l.as_bytes()))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(_) => format!(
            "{} bytes, not JSON: \"{}\"",
            payload.len(),
            printable(payload)
        ),
    };
    writeln!(out, "payload:\n{shown}")?;
    Ok(())
}

/// `atoll dlq replay`.
pub(crate) fn replay(
    broker: &Broker,
    topic: &str,
    selection: &Selection,
    dry_run: bool,
    force: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let dlq = dlq_topic(topic)?;
    let records = broker.read_all(topic)?;
    let chosen: Vec<&OwnedMessage> = match selection {
        Selection::At(p, o) => vec![&records[find(&records, topic, *p, *o)?]],
        Selection::Type(t) => records
            .iter()
            .filter(|m| header(*m, "ce_type") == Some(t.as_str()))
            .collect(),
        Selection::All => records.iter().collect(),
    };
    let memory = dlq.private_sibling(PrivateTopic::Replayed)?.to_string();
    let partitions = broker.partitions(topic)?.len() as i32;
    if !dry_run {
        broker
            .ensure_compacted(&memory, partitions)
            .with_context(|| format!("creating `{memory}`"))?;
    }
    let replayed: HashMap<String, String> = match broker.read_all(&memory) {
        Ok(marks) => marks
            .iter()
            .filter_map(|m| {
                let k = String::from_utf8_lossy(m.key()?).into_owned();
                Some((
                    k,
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                ))
            })
            .collect(),
        Err(_) if dry_run => HashMap::new(),
        Err(e) => return Err(e),
    };
    let (mut done, mut skipped) = (0, 0);
    for m in chosen {
        let rid = id(topic, m);
        if let (Some(when), false) = (replayed.get(&rid), force) {
            writeln!(
                out,
                "skip {rid}: already replayed ({when}); --force replays it again"
            )?;
            skipped += 1;
            continue;
        }
        let (Some(target), Some(listener)) = (header(m, h::ORIGINAL_TOPIC), header(m, h::LISTENER))
        else {
            bail!(
                "{rid} has no {} / {} header: not an atoll dead letter",
                h::ORIGINAL_TOPIC,
                h::LISTENER
            );
        };
        if target.ends_with(".private.saga") {
            writeln!(
                out,
                "skip {rid}: a saga state that did not decode; it cannot be replayed (the saga was forgotten)"
            )?;
            skipped += 1;
            continue;
        }
        if let Some(size) = header(m, h::PAYLOAD_OMITTED) {
            let (p, o) = (
                header(m, h::ORIGINAL_PARTITION).unwrap_or("?"),
                header(m, h::ORIGINAL_OFFSET).unwrap_or("?"),
            );
            writeln!(
                out,
                "skip {rid}: its payload ({size} bytes) was too large for the DLQ and is not in it; the original is {target} partition {p} offset {o}"
            )?;
            skipped += 1;
            continue;
        }
        let group = format!("{}-{listener}", dlq.service_prefix());
        if dry_run {
            writeln!(out, "would replay {rid} to {target} for {group}")?;
            done += 1;
            continue;
        }
        let mut headers = OwnedHeaders::new();
        if let Some(hs) = m.headers() {
            for x in hs
                .iter()
                .filter(|x| !x.key.starts_with("atoll_dlq_") && !x.key.starts_with("atoll_replay"))
            {
                headers = headers.insert(x);
            }
        }
        headers = headers
            .insert(Header {
                key: REPLAYED_FROM,
                value: Some(rid.as_str()),
            })
            .insert(Header {
                key: REPLAY_GROUP,
                value: Some(group.as_str()),
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(target).headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(p) = m.payload() {
            record = record.payload(p);
        }
        broker.send(record)?;
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?;
        let mark = format!("{now} to {target}");
        broker.send(
            FutureRecord::to(&memory)
                .key(rid.as_bytes())
                .payload(mark.as_bytes()),
        )?;
        writeln!(out, "replayed {rid} to {target} for {group}")?;
        done += 1;
    }
    let verb = if dry_run { "would replay" } else { "replayed" };
    writeln!(
        out,
        "{verb} {done}, skipped {skipped} (already replayed, or without payload)"
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_could_drive_a_terminal_is_escaped() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain text", "plain text"),
            ("caf\u{e9} \u{2713}".as_bytes(), "caf\u{e9} \u{2713}"),
            (b"\x1b[31mred", r"\x1b[31mred"),
            (
                b"bell\x07 cr\r nl\n tab\t del\x7f",
                r"bell\x07 cr\x0d nl\x0a tab\x09 del\x7f",
            ),
            ("csi\u{9b}31m".as_bytes(), r"csi\u{9b}31m"),
            (b"bad \xff\xfe utf8", r"bad \xff\xfe utf8"),
        ];
        for (bytes, want) in cases {
            assert_eq!(printable(bytes), *want, "{bytes:?}");
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

    #[test]
    fn lines_are_kept_short() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdefghijkl", 5), "abcd…");
    }
}
