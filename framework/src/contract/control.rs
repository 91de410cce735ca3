//! Operator holds: a partition of a listener that an operator paused, as written on the
//! service's compacted `<service>.private.control` topic and read by every process of the
//! service.
//!
//! The record's key is `<listener>/<partition>` ([`HoldKey`]); its value is a [`Hold`] (JSON),
//! and a tombstone under the key lifts the hold. Whichever process owns the partition, now or
//! after a rebalance or a restart, keeps it paused while the hold stands: a hold is the
//! operator's intent, kept by the topic, not an order to one process that a rebalance would
//! forget. The operator console writes these records; so can any tool.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The version of the hold's format: a process ignores a hold whose `format` it does not know
/// (and says so in its log).
pub const CONTROL_FORMAT: u32 = 1;

/// An operator's hold on one partition of a listener's topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Hold {
    /// [`CONTROL_FORMAT`] when written.
    pub format: u32,
    /// Who asked for it (the operator's name, as typed into the console; `console` when none
    /// was).
    pub by: String,
    /// Why, as the operator said.
    pub reason: String,
    /// When, in Unix milliseconds.
    pub at_ms: i64,
}

impl Hold {
    /// A hold asked for by `by`, for `reason`, at `at_ms`.
    pub fn new(by: impl Into<String>, reason: impl Into<String>, at_ms: i64) -> Self {
        Self {
            format: CONTROL_FORMAT,
            by: by.into(),
            reason: reason.into(),
            at_ms,
        }
    }
}

/// The key of a hold: the listener and the partition of its topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct HoldKey {
    /// The listener's name.
    pub listener: String,
    /// The partition of the listener's topic.
    pub partition: i32,
}

impl HoldKey {
    /// The key of `listener`'s `partition`.
    pub fn new(listener: impl Into<String>, partition: i32) -> Self {
        Self {
            listener: listener.into(),
            partition,
        }
    }
}

impl fmt::Display for HoldKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.listener, self.partition)
    }
}

/// Why a record's key is not a [`HoldKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a hold's key: `<listener>/<partition>` with a partition from 0")]
pub struct NotAHoldKey(pub String);

impl FromStr for HoldKey {
    type Err = NotAHoldKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wrong = || NotAHoldKey(s.to_owned());
        let (listener, partition) = s.rsplit_once('/').ok_or_else(wrong)?;
        let partition: i32 = partition.parse().map_err(|_| wrong())?;
        if listener.is_empty() || partition < 0 {
            return Err(wrong());
        }
        Ok(Self::new(listener, partition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_and_bad_keys_are_refused() {
        let cases = [
            ("orders/3", Some(("orders", 3))),
            ("a/b/0", Some(("a/b", 0))),
            ("orders", None),
            ("orders/", None),
            ("/3", None),
            ("orders/-1", None),
            ("orders/x", None),
        ];
        for (key, want) in cases {
            let got = key.parse::<HoldKey>().ok();
            let want = want.map(|(l, p)| HoldKey::new(l, p));
            assert_eq!(got, want, "{key}");
            if let Some(k) = got {
                assert_eq!(k.to_string(), key);
            }
        }
    }

    #[test]
    fn a_hold_is_json_with_its_format() {
        let hold = Hold::new("console", "poison record", 5);
        let json = serde_json::to_value(&hold).unwrap();
        assert_eq!(json["format"], CONTROL_FORMAT);
        assert_eq!(serde_json::from_value::<Hold>(json).unwrap(), hold);
    }
}
