//! Why an attempt did not succeed, as the retry core ([`super::retry`]) reads it: an
//! [`Outcome`], and the error that is logged, counted and dead-lettered with it.
//!
//! A pure mapping, table-tested: the worker runs the handler and settles its outputs, and
//! hands what went wrong here as a [`Failed`].

use std::time::Duration;

use super::retry::Outcome;
use crate::contract::dead_letter::DeadLetterKind;
use crate::error::Error;
use crate::handler::delivery::Unsettled;
use crate::handler::listener::CallError;
use crate::ops::metrics::UNAVAILABLE;

/// What went wrong in an attempt.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The input did not decode, or the handler returned an error.
    Call(CallError),
    /// The handler panicked (with this message).
    Panicked(String),
    /// The handler ran past its time budget.
    TimedOut(Duration),
    /// The handler succeeded but its outputs did not settle.
    Unsettled(Unsettled),
    /// The store failed before the handler was called (beginning its transaction, claiming
    /// its inbox row, publishing what a first handling left).
    Store(Error),
}

impl Failed {
    /// The attempt's outcome and error.
    pub(crate) fn outcome(self) -> (Outcome, String) {
        let failed = |kind, permanent| Outcome::Failed { kind, permanent };
        match self {
            Self::Call(CallError::Decode(error)) => (Outcome::BadInput, error),
            // A transaction that lost a conflict, or a database out of reach, is no fault of
            // the record: retried without spending the budget.
            Self::Call(CallError::Handler(e))
                if e.sql_error().is_some_and(crate::error::sql_is_transient) =>
            {
                (Outcome::Unavailable, e.to_string())
            }
            Self::Call(CallError::Handler(e)) => (
                failed(DeadLetterKind::Handler, e.is_permanent()),
                e.to_string(),
            ),
            Self::Call(CallError::Unavailable(e)) => (Outcome::Unavailable, e),
            Self::Panicked(message) => (
                failed(DeadLetterKind::Panic, true),
                format!("handler panicked: {message}"),
            ),
            Self::TimedOut(budget) => (
                failed(DeadLetterKind::Timeout, false),
                format!("handler exceeded its time budget of {budget:?}"),
            ),
            Self::Unsettled(Unsettled::NotAcknowledged(e)) => (
                failed(DeadLetterKind::Handler, false),
                format!("produced record not acknowledged: {e}"),
            ),
            Self::Unsettled(Unsettled::Store(e)) | Self::Store(e) => store_failed(&e),
        }
    }
}

/// The outcome of a failure of the store itself: unreachable or a lost conflict is retried
/// without spending the budget; anything else is the listener's transient failure.
fn store_failed(e: &Error) -> (Outcome, String) {
    let outcome = if e.is_transient() {
        Outcome::Unavailable
    } else {
        Outcome::Failed {
            kind: DeadLetterKind::Handler,
            permanent: false,
        }
    };
    (outcome, e.to_string())
}

/// A panic's message, when it is text.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
        .to_owned()
}

/// The dead-letter kind of a failed outcome (bad input is `decode`).
pub(crate) fn outcome_kind(outcome: Outcome) -> DeadLetterKind {
    match outcome {
        Outcome::Failed { kind, .. } => kind,
        Outcome::BadInput | Outcome::Unavailable => DeadLetterKind::Decode,
    }
}

/// The `kind` a failed attempt is counted (`atoll_records_failed_total`) and logged as: its
/// dead-letter kind, or `unavailable` for a dependency out of reach (the registry, the store),
/// which is no fault of the record.
pub(crate) fn failure_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Unavailable => UNAVAILABLE,
        other => outcome_kind(other).as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HandlerError;

    fn store_error(transient: bool) -> Error {
        let source = if transient {
            sqlx::Error::PoolTimedOut
        } else {
            sqlx::Error::RowNotFound
        };
        Error::Store {
            what: "committing".into(),
            source,
        }
    }

    #[test]
    fn each_failure_has_its_outcome_and_error() {
        let failed = |kind, permanent| Outcome::Failed { kind, permanent };
        let handler = |e: HandlerError| Failed::Call(CallError::Handler(e));
        let cases: Vec<(Failed, Outcome, &str)> = vec![
            (
                Failed::Call(CallError::Decode("bad json".into())),
                Outcome::BadInput,
                "bad json",
            ),
            (
                handler(HandlerError::transient("busy")),
                failed(DeadLetterKind::Handler, false),
                "busy",
            ),
            (
                handler(HandlerError::permanent("no such sku")),
                failed(DeadLetterKind::Handler, true),
                "no such sku",
            ),
            (
                handler(HandlerError::from(sqlx::Error::PoolTimedOut)),
                Outcome::Unavailable,
                "pool timed out",
            ),
            (
                Failed::Call(CallError::Unavailable("registry down".into())),
                Outcome::Unavailable,
                "registry down",
            ),
            (
                Failed::Panicked("boom".into()),
                failed(DeadLetterKind::Panic, true),
                "handler panicked: boom",
            ),
            (
                Failed::TimedOut(Duration::from_secs(3)),
                failed(DeadLetterKind::Timeout, false),
                "handler exceeded its time budget of 3s",
            ),
            (
                Failed::Unsettled(Unsettled::NotAcknowledged(Error::Config("x".into()))),
                failed(DeadLetterKind::Handler, false),
                "produced record not acknowledged",
            ),
            (
                Failed::Unsettled(Unsettled::Store(store_error(true))),
                Outcome::Unavailable,
                "committing",
            ),
            (
                Failed::Store(store_error(false)),
                failed(DeadLetterKind::Handler, false),
                "committing",
            ),
        ];
        for (failure, outcome, error) in cases {
            let what = format!("{failure:?}");
            let (got, got_error) = failure.outcome();
            assert_eq!(got, outcome, "{what}");
            assert!(got_error.contains(error), "{what}: {got_error}");
        }
    }

    #[test]
    fn failures_are_counted_under_their_cause() {
        let failed = |kind| Outcome::Failed {
            kind,
            permanent: false,
        };
        let cases = [
            (Outcome::Unavailable, "unavailable"),
            (Outcome::BadInput, "decode"),
            (failed(DeadLetterKind::Timeout), "timeout"),
            (failed(DeadLetterKind::Handler), "handler"),
            (failed(DeadLetterKind::Panic), "panic"),
        ];
        for (outcome, label) in cases {
            assert_eq!(failure_label(outcome), label, "{outcome:?}");
        }
    }

    #[test]
    fn panic_messages_are_readable() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*p), "boom 1");
        let p = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*p), "static");
        let p = std::panic::catch_unwind(|| std::panic::panic_any(7)).unwrap_err();
        assert_eq!(panic_message(&*p), "(non-string panic payload)");
    }
}
