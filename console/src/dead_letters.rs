//! The dead-letter pages: a service's DLQ, filtered by type, failure kind, words of the cause,
//! key and time, each dead letter with its headers and decoded payload; and the forms that
//! redrive one or all of those shown to their original topic (a dry run first, by default,
//! and at a rate), which ask for the console's token.

use maud::{html, Markup};
use serde::Deserialize;

use crate::dlq::{DeadLetter, Filter};

/// The filter, as the page's form sends it (every field optional; times as RFC 3339 or as a
/// browser's `datetime-local`, read as UTC).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Query {
    pub(crate) service: Option<String>,
    #[serde(rename = "type", default)]
    pub(crate) ce_type: String,
    #[serde(default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) cause: String,
    #[serde(default)]
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) from: String,
    #[serde(default)]
    pub(crate) to: String,
    /// One dead letter, `<partition>:<offset>` (the redrive form of a row).
    #[serde(default)]
    pub(crate) at: String,
    /// When the page the redrive form is on was made (Unix ms): a redrive leaves out what was
    /// dead-lettered after, which the operator did not see.
    #[serde(default)]
    pub(crate) shown_at: String,
}

impl Query {
    /// The filter it means.
    ///
    /// # Errors
    /// A time or an `at` that does not parse, saying which.
    pub(crate) fn filter(&self) -> Result<Filter, String> {
        let given = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let at = match given(&self.at) {
            None => None,
            Some(at) => {
                let (p, o) = at
                    .split_once(':')
                    .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
                    .ok_or_else(|| format!("`{at}` is no <partition>:<offset>"))?;
                Some((Some(p), o))
            }
        };
        let to_ms = given(&self.to).map(|t| unix_ms(&t)).transpose()?;
        let shown_at = match given(&self.shown_at) {
            None => None,
            Some(t) => Some(
                t.parse::<i64>()
                    .map_err(|_| format!("`{t}` is no time in milliseconds"))?,
            ),
        };
        // Up to the page's making, at most: nothing the operator did not see.
        let to_ms = match (to_ms, shown_at.map(|t| t + 1)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Filter {
            at,
            ce_type: given(&self.ce_type),
            kind: given(&self.kind),
            cause: given(&self.cause),
            key: given(&self.key),
            from_ms: given(&self.from).map(|t| unix_ms(&t)).transpose()?,
            to_ms,
        })
    }
}

/// An RFC 3339 time, or a `datetime-local` one (`2026-12-07T08:00`, seconds optional) read as
/// UTC, in Unix milliseconds.
pub(crate) fn unix_ms(t: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let parsed = time::OffsetDateTime::parse(t, &Rfc3339).ok().or_else(|| {
        let minutes = format_description!("[year]-[month]-[day]T[hour]:[minute]");
        let seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
        time::PrimitiveDateTime::parse(t, minutes)
            .or_else(|_| time::PrimitiveDateTime::parse(t, seconds))
            .ok()
            .map(time::PrimitiveDateTime::assume_utc)
    });
    parsed
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .ok_or_else(|| format!("`{t}` is no time (2026-12-07T08:00:00Z)"))
}

/// What the page shows of a service's DLQ.
pub(crate) struct Shown<'a> {
    pub(crate) base: &'a str,
    pub(crate) service: &'a str,
    pub(crate) query: &'a Query,
    pub(crate) letters: &'a [&'a DeadLetter],
    pub(crate) total: usize,
    /// The anti-forgery value, when the console has actions.
    pub(crate) csrf: Option<&'a str>,
    /// Avro payloads decoded through the schema registry, by `(partition, offset)`.
    pub(crate) decoded: &'a std::collections::HashMap<(i32, i64), String>,
    /// When the page was made (Unix ms).
    pub(crate) now_ms: i64,
}

/// A service's dead letters.
pub(crate) fn page(s: &Shown<'_>) -> Markup {
    let q = s.query;
    let dlq = format!("{}.private.dlq", s.service);
    html! {
        h1 { "Dead letters · " (s.service) }
        form.filter method="get" action=(format!("{}/dlq", s.base)) {
            input type="hidden" name="service" value=(s.service);
            label { "type " input name="type" value=(q.ce_type); }
            label { "kind " input name="kind" value=(q.kind) placeholder="handler, decode…"; }
            label { "cause " input name="cause" value=(q.cause); }
            label { "key " input name="key" value=(q.key); }
            label { "from " input name="from" value=(q.from) placeholder="2026-12-07T08:00"; }
            label { "to " input name="to" value=(q.to); }
            button { "Filter" }
        }
        p { span data-dead-letters=(s.letters.len()) { (s.letters.len()) } " of "
            span data-dead-letters-total=(s.total) { (s.total) } " dead letters on " code { (dlq) } }
        @if let Some(csrf) = s.csrf {
            @if !s.letters.is_empty() {
                (redrive_form(s, csrf, "", &format!("Redrive these {}", s.letters.len())))
            }
        } @else {
            p.empty { "This console only shows: set console.token to redrive dead letters." }
        }
        table.dead-letters {
            thead { tr { th { "record" } th { "dead-lettered" } th { "type" } th { "key" }
                th { "kind" } th { "attempts" } th { "cause" } th {} } }
            tbody {
                @for d in s.letters {
                    (row(s, d))
                }
            }
        }
    }
}

fn row(s: &Shown<'_>, d: &DeadLetter) -> Markup {
    let at = format!("{}:{}", d.partition, d.offset);
    html! {
        tr data-dlq=(at) data-type=[d.ce_type()] data-kind=[d.kind()] {
            td { (at) }
            td { (d.header(atoll::dead_letter::FAILED_AT).unwrap_or("–")) }
            td { (d.ce_type().unwrap_or("–")) }
            td { (d.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default()) }
            td { (d.kind().unwrap_or("–")) }
            td { (d.header(atoll::dead_letter::ATTEMPTS).unwrap_or("–")) }
            td.cause { (d.cause().unwrap_or("–")) }
            td {
                details {
                    summary { "record" }
                    h3 { "headers" }
                    table.headers { tbody {
                        @for (k, v) in &d.headers {
                            tr { td { (k) } td { (v.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_else(|| "(null)".into())) } }
                        }
                    } }
                    h3 { "payload" }
                    pre.payload { (s.decoded.get(&(d.partition, d.offset)).cloned()
                        .unwrap_or_else(|| payload(d.payload.as_deref()))) }
                    @if let Some(csrf) = s.csrf {
                        (redrive_form(s, csrf, &at, "Redrive this one"))
                    }
                }
            }
        }
    }
}

/// A payload as a person reads it: pretty JSON; for Avro (the registry's wire format: a zero
/// byte, then the schema id) its schema id and size; else its size and text.
fn payload(p: Option<&[u8]>) -> String {
    let Some(p) = p else {
        return "(none)".to_owned();
    };
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(p) {
        return serde_json::to_string_pretty(&v).unwrap_or_default();
    }
    if let [0, a, b, c, d, ..] = p {
        let id = u32::from_be_bytes([*a, *b, *c, *d]);
        return format!("Avro, schema id {id}, {} bytes", p.len());
    }
    format!(
        "{} bytes, not JSON: {}",
        p.len(),
        String::from_utf8_lossy(p)
    )
}

/// The form redriving what the filter shows, or the one dead letter `at`.
fn redrive_form(s: &Shown<'_>, csrf: &str, at: &str, label: &str) -> Markup {
    let q = s.query;
    html! {
        form.redrive method="post" action=(format!("{}/dlq/redrive", s.base)) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="service" value=(s.service);
            input type="hidden" name="shown_at" value=(s.now_ms);
            @if at.is_empty() {
                input type="hidden" name="type" value=(q.ce_type);
                input type="hidden" name="kind" value=(q.kind);
                input type="hidden" name="cause" value=(q.cause);
                input type="hidden" name="key" value=(q.key);
                input type="hidden" name="from" value=(q.from);
                input type="hidden" name="to" value=(q.to);
            } @else {
                input type="hidden" name="at" value=(at);
            }
            label { "token " input type="password" name="token" autocomplete="off" required; }
            label { "records/s " input type="number" name="rate" value="10" min="0" step="any"; }
            label { input type="checkbox" name="dry_run" value="on" checked; " dry run" }
            button { (label) }
        }
    }
}

/// What a redrive did.
pub(crate) fn redriven(base: &str, service: &str, lines: &[String], dry_run: bool) -> Markup {
    html! {
        h1 { @if dry_run { "Redrive (dry run) · " } @else { "Redriven · " } (service) }
        pre.outcome data-outcome-lines=(lines.len()) {
            @for l in lines { (l) "\n" }
        }
        p { a href=(crate::pages::dlq_href(base, service)) { "Back to the dead letters" } }
    }
}

/// An action refused, saying why.
pub(crate) fn refused(why: &str) -> Markup {
    html! { h1 { "Refused" } p.refused { (why) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_fields_make_the_filter() {
        let q = Query {
            ce_type: "t".into(),
            cause: "  ".into(),
            from: "2026-12-07T08:00".into(),
            to: "2026-12-07T09:00:00Z".into(),
            at: "2:15".into(),
            ..Query::default()
        };
        let f = q.filter().unwrap();
        assert_eq!(f.ce_type.as_deref(), Some("t"));
        assert_eq!(f.cause, None, "blank is no condition");
        assert_eq!(f.at, Some((Some(2), 15)));
        assert_eq!(f.from_ms, Some(1_796_630_400_000));
        assert_eq!(f.to_ms, Some(1_796_634_000_000));
        let seen = Query {
            to: "2026-12-07T09:00:00Z".into(),
            shown_at: "1796630400000".into(),
            ..Query::default()
        };
        assert_eq!(
            seen.filter().unwrap().to_ms,
            Some(1_796_630_400_001),
            "the page's time"
        );
        let bad = Query {
            from: "yesterday".into(),
            ..Query::default()
        };
        assert!(bad.filter().unwrap_err().contains("`yesterday` is no time"));
        let bad = Query {
            at: "3".into(),
            ..Query::default()
        };
        assert!(bad
            .filter()
            .unwrap_err()
            .contains("no <partition>:<offset>"));
    }

    #[test]
    fn payloads_are_shown_as_what_they_are() {
        assert_eq!(payload(Some(br#"{"a":1}"#)), "{\n  \"a\": 1\n}");
        assert_eq!(
            payload(Some(&[0, 0, 0, 0, 7, 2, 4])),
            "Avro, schema id 7, 7 bytes"
        );
        assert_eq!(payload(Some(b"{oops")), "5 bytes, not JSON: {oops");
        assert_eq!(payload(None), "(none)");
    }
}
