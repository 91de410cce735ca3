//! A dead letter as read from a service's DLQ, and which of them an operator means: one at an
//! offset, or those matching a filter (type, failure kind, words of the cause, key, a time
//! window).

use atoll::dead_letter as h;

use super::DlqError;

/// One record of a DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its partition of the DLQ.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// When it was written to the DLQ (the record's timestamp), in Unix milliseconds.
    pub timestamp_ms: Option<i64>,
    /// The original record's key.
    pub key: Option<Vec<u8>>,
    /// The original record's value.
    pub payload: Option<Vec<u8>>,
    /// The original headers and the `atoll_dlq_*` ones, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    /// A record as read.
    pub fn of(m: &impl rdkafka::Message) -> Self {
        use rdkafka::message::Headers;
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|x| (x.key.to_owned(), x.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// The value of header `name` (the last one of that name), when it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
    }

    /// `<dlq>/<partition>/<offset>`: what names it in replay markers and in the pages.
    pub fn id(&self, dlq: &str) -> String {
        format!("{dlq}/{}/{}", self.partition, self.offset)
    }

    /// Its event type (`ce_type`).
    pub fn ce_type(&self) -> Option<&str> {
        self.header("ce_type")
    }

    /// The failure's kind (`atoll_dlq_error_kind`).
    pub fn kind(&self) -> Option<&str> {
        self.header(h::ERROR_KIND)
    }

    /// The failure's cause (`atoll_dlq_error`).
    pub fn cause(&self) -> Option<&str> {
        self.header(h::ERROR)
    }
}

/// Which dead letters: every condition given must hold (none given: all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The one at this offset, of this partition when given.
    pub at: Option<(Option<i32>, i64)>,
    /// Of this event type.
    pub ce_type: Option<String>,
    /// Of this failure kind (`handler`, `decode`, …).
    pub kind: Option<String>,
    /// Whose cause contains this (ignoring case).
    pub cause: Option<String>,
    /// Whose key contains this.
    pub key: Option<String>,
    /// Dead-lettered at or after this Unix millisecond.
    pub from_ms: Option<i64>,
    /// Dead-lettered before this Unix millisecond.
    pub to_ms: Option<i64>,
}

impl Filter {
    /// Whether `d` is one of them.
    pub fn matches(&self, d: &DeadLetter) -> bool {
        let at = self.at.is_none_or(|(partition, offset)| {
            d.offset == offset && partition.is_none_or(|p| p == d.partition)
        });
        let text = |want: &Option<String>, got: Option<&str>| {
            want.as_ref().is_none_or(|w| got == Some(w.as_str()))
        };
        let cause = self.cause.as_ref().is_none_or(|w| {
            d.cause()
                .is_some_and(|c| c.to_lowercase().contains(&w.to_lowercase()))
        });
        let key = self.key.as_ref().is_none_or(|w| {
            d.key
                .as_deref()
                .is_some_and(|k| String::from_utf8_lossy(k).contains(w.as_str()))
        });
        let time = match (self.from_ms, self.to_ms) {
            (None, None) => true,
            (from, to) => d
                .timestamp_ms
                .is_some_and(|t| from.is_none_or(|f| t >= f) && to.is_none_or(|u| t < u)),
        };
        at && text(&self.ce_type, d.ce_type()) && text(&self.kind, d.kind()) && cause && key && time
    }

    /// The dead letters of `all` it means. One asked for by offset must be there, and alone:
    /// an offset found in several partitions needs its partition.
    ///
    /// # Errors
    /// [`DlqError::NoRecordAt`], [`DlqError::Ambiguous`].
    pub fn select<'a>(
        &self,
        dlq: &str,
        all: &'a [DeadLetter],
    ) -> Result<Vec<&'a DeadLetter>, DlqError> {
        let chosen: Vec<&DeadLetter> = all.iter().filter(|d| self.matches(d)).collect();
        if let Some((partition, offset)) = self.at {
            match chosen.as_slice() {
                [] => {
                    return Err(DlqError::NoRecordAt {
                        dlq: dlq.to_owned(),
                        partition,
                        offset,
                    })
                }
                [_] => {}
                many => {
                    return Err(DlqError::Ambiguous {
                        dlq: dlq.to_owned(),
                        offset,
                        partitions: many.iter().map(|d| d.partition).collect(),
                    })
                }
            }
        }
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(
        partition: i32,
        offset: i64,
        t: i64,
        ty: &str,
        kind: &str,
        cause: &str,
    ) -> DeadLetter {
        let header = |k: &str, v: &str| (k.to_owned(), Some(v.as_bytes().to_vec()));
        DeadLetter {
            partition,
            offset,
            timestamp_ms: Some(t),
            key: Some(format!("order-{offset}").into_bytes()),
            payload: Some(b"{}".to_vec()),
            headers: vec![
                header("ce_type", ty),
                header(h::ERROR_KIND, kind),
                header(h::ERROR, cause),
            ],
        }
    }

    #[test]
    fn a_filter_holds_when_each_of_its_conditions_does() {
        let d = letter(
            1,
            7,
            1_000,
            "a.b.c.paid.v1",
            "handler",
            "Card DECLINED by bank",
        );
        #[rustfmt::skip]
        let cases = [
            (Filter::default(), true),
            (Filter { at: Some((None, 7)), ..Filter::default() }, true),
            (Filter { at: Some((Some(2), 7)), ..Filter::default() }, false),
            (Filter { ce_type: Some("a.b.c.paid.v1".into()), ..Filter::default() }, true),
            (Filter { ce_type: Some("a.b.c.paid".into()), ..Filter::default() }, false),
            (Filter { kind: Some("decode".into()), ..Filter::default() }, false),
            (Filter { cause: Some("declined".into()), ..Filter::default() }, true),
            (Filter { cause: Some("timeout".into()), ..Filter::default() }, false),
            (Filter { key: Some("order-7".into()), ..Filter::default() }, true),
            (Filter { key: Some("order-8".into()), ..Filter::default() }, false),
            (Filter { from_ms: Some(1_000), to_ms: Some(1_001), ..Filter::default() }, true),
            (Filter { from_ms: Some(1_001), ..Filter::default() }, false),
            (Filter { to_ms: Some(1_000), ..Filter::default() }, false),
            (Filter { kind: Some("handler".into()), cause: Some("bank".into()), ..Filter::default() }, true),
        ];
        for (filter, want) in cases {
            assert_eq!(filter.matches(&d), want, "{filter:?}");
        }
        let untimed = DeadLetter {
            timestamp_ms: None,
            ..d
        };
        let windowed = Filter {
            from_ms: Some(0),
            ..Filter::default()
        };
        assert!(!windowed.matches(&untimed), "no time: outside any window");
    }

    #[test]
    fn an_offset_must_name_one_dead_letter() {
        let all = [
            letter(0, 3, 0, "t", "handler", "x"),
            letter(1, 3, 0, "t", "handler", "x"),
            letter(1, 4, 0, "t", "handler", "x"),
        ];
        let at = |p, o| Filter {
            at: Some((p, o)),
            ..Filter::default()
        };
        assert_eq!(at(Some(1), 3).select("d", &all).unwrap(), [&all[1]]);
        assert_eq!(at(None, 4).select("d", &all).unwrap(), [&all[2]]);
        let e = at(None, 3).select("d", &all).unwrap_err().to_string();
        assert!(
            e.contains("offset 3 is in partitions 0, 1 of `d`; add --partition"),
            "{e}"
        );
        let e = at(Some(0), 9).select("d", &all).unwrap_err().to_string();
        assert_eq!(e, "no record at offset 9 of partition 0 in `d`");
        assert_eq!(Filter::default().select("d", &all).unwrap().len(), 3);
    }
}
