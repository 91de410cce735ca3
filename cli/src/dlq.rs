//! `atoll dlq list | show | replay`, on the engine of `atoll_console::dlq` (the console's
//! dead-letter page runs the same): a replay re-publishes dead letters to their original topic
//! for the listener that failed them, remembers each in `<service>.private.replayed`, and skips
//! those replayed before unless `--force`.

use std::io::Write;

use atoll::dead_letter as h;
use atoll_console::dlq::{self, DeadLetter, Filter, Redrive};

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

impl Selection {
    /// The filter choosing them, within `[from, to)` (Unix ms) when given.
    pub(crate) fn filter(&self, from_ms: Option<i64>, to_ms: Option<i64>) -> Filter {
        let base = Filter {
            from_ms,
            to_ms,
            ..Filter::default()
        };
        match self {
            Self::At(p, o) => Filter {
                at: Some((*p, *o)),
                ..base
            },
            Self::Type(t) => Filter {
                ce_type: Some(t.clone()),
                ..base
            },
            Self::All => base,
        }
    }
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
fn shown_header(d: &DeadLetter, name: &str) -> String {
    d.header(name)
        .map_or_else(|| "-".to_owned(), |v| printable(v.as_bytes()))
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
    dlq::dlq_topic(topic)?;
    let records = broker.kafka().read_all(topic)?;
    writeln!(
        out,
        "{:<10} {:<25} {:<40} {:<16} {:<12} {:<8} ERROR",
        "OFFSET", "TIME", "TYPE", "KEY", "KIND", "ATTEMPTS"
    )?;
    for d in &records {
        let key = d.key.as_deref().map(printable).unwrap_or_default();
        writeln!(
            out,
            "{:<10} {:<25} {:<40} {:<16} {:<12} {:<8} {}",
            format!("{}:{}", d.partition, d.offset),
            shown_header(d, h::FAILED_AT),
            shown_header(d, "ce_type"),
            one_line(&key, 16),
            shown_header(d, h::ERROR_KIND),
            shown_header(d, h::ATTEMPTS),
            one_line(&shown_header(d, h::ERROR), 100),
        )?;
    }
    writeln!(out, "{} dead letter(s) in {topic}", records.len())?;
    Ok(())
}

/// `atoll dlq show`.
pub(crate) fn show(
    broker: &Broker,
    topic: &str,
    partition: Option<i32>,
    offset: i64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    dlq::dlq_topic(topic)?;
    let records = broker.kafka().read_all(topic)?;
    let one = Selection::At(partition, offset).filter(None, None);
    let d = one.select(topic, &records)?[0];
    writeln!(out, "record {}", d.id(topic))?;
    writeln!(
        out,
        "key: {}",
        d.key.as_deref().map_or_else(|| "(none)".into(), printable)
    )?;
    writeln!(out, "headers:")?;
    for (k, v) in &d.headers {
        let v = v.as_deref().map_or_else(|| "(null)".into(), printable);
        writeln!(out, "  {}: {v}", printable(k.as_bytes()))?;
    }
    let payload = d.payload.as_deref().unwrap_or_default();
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
    how: &Redrive,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut written = Ok(());
    let summary = dlq::redrive(broker.kafka(), topic, how, |outcome| {
        if written.is_ok() {
            written = writeln!(out, "{outcome}");
        }
    })?;
    written?;
    let verb = if how.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    writeln!(
        out,
        "{verb} {}, skipped {} (already replayed, or without payload)",
        summary.redriven, summary.skipped
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
    fn lines_are_kept_short() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdefghijkl", 5), "abcd…");
    }
}
