//! What follows a failed handler attempt: the pure decision core of retries and dead letters.
//!
//! [`next`] maps a failed attempt's [`Outcome`], where the record stands ([`Attempt`]) and the
//! listener's [`Policy`] to what the worker does next ([`Next`]). It does no I/O and reads no
//! clock: the worker carries the decision out (sleeps, re-publishes, dead-letters).
//!
//! The rules:
//! - bad input (the payload does not decode) is dead-lettered at once: retrying cannot help;
//! - a permanent failure (a handler's permanent error, a panic) is dead-lettered at once;
//! - a transient failure (a handler's transient error, a timeout) is retried in place, with
//!   backoff, until the in-place attempts are spent (`max_attempts`, 0: never); a delivery
//!   through the retry topic is one attempt;
//! - once spent, a non-blocking listener re-publishes the record to the retry topic while it
//!   has deliveries left (`retry_topic_attempts`); otherwise the record is dead-lettered;
//! - an unavailable dependency the record cannot be blamed for (the schema registry) is
//!   retried in place without spending the budget.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::{ListenerConfig, RetryMode};
use crate::contract::dead_letter::DeadLetterKind;

/// How an attempt failed (a success is finished: nothing follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The record's payload did not decode into the listener's event type.
    BadInput,
    /// The attempt failed: the handler's error, a panic or a timeout.
    Failed {
        /// Which failure, as the DLQ names it.
        kind: DeadLetterKind,
        /// Whether retrying cannot help.
        permanent: bool,
    },
    /// A dependency was unreachable (the schema registry): no fault of the record.
    Unavailable,
}

/// Where a record stands when an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// Attempts made in place in this delivery that spend the budget, this one included when it
    /// does (attempts that found a dependency unavailable do not).
    pub(crate) in_place: u32,
    /// Every attempt made in place in this delivery, this one included (from 1): the backoff
    /// grows with it.
    pub(crate) tries: u32,
    /// The delivery this is: 0 from the listener's own topic, `n` for the `n`-th delivery
    /// through the retry topic.
    pub(crate) delivery: u32,
}

/// A listener's retry policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Attempts in place on the listener's own topic, the first included; 0: no limit.
    pub(crate) max_attempts: u32,
    /// What happens once they are spent.
    pub(crate) mode: RetryMode,
    /// Deliveries through the retry topic (non-blocking).
    pub(crate) retry_topic_attempts: u32,
    /// The backoff between in-place attempts.
    pub(crate) backoff: Backoff,
}

impl Policy {
    /// The policy of a listener's resolved settings.
    pub(crate) fn of(config: &ListenerConfig) -> Self {
        Self {
            max_attempts: config.max_attempts,
            mode: config.retry,
            retry_topic_attempts: config.retry_topic_attempts,
            backoff: Backoff::new(
                Duration::from_millis(config.backoff_ms),
                Duration::from_millis(config.max_backoff_ms),
            ),
        }
    }

    /// Attempts in place in `delivery`: each delivery through the retry topic is one.
    fn in_place_limit(&self, delivery: u32) -> u32 {
        if delivery == 0 {
            self.max_attempts
        } else {
            1
        }
    }
}

/// What the worker does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try again in place after this delay; the partition waits.
    RetryIn(Duration),
    /// Re-publish the record to the retry topic (delivery `attempt.delivery + 1`).
    ToRetryTopic,
    /// Write the record to the DLQ as this kind of failure.
    DeadLetter(DeadLetterKind),
}

/// What follows `outcome` for a record at `attempt` under `policy`.
pub(crate) fn next(outcome: Outcome, attempt: Attempt, policy: &Policy) -> Next {
    let (kind, permanent) = match outcome {
        Outcome::BadInput => return Next::DeadLetter(DeadLetterKind::Decode),
        Outcome::Unavailable => return Next::RetryIn(policy.backoff.delay(attempt.tries)),
        Outcome::Failed { kind, permanent } => (kind, permanent),
    };
    if permanent {
        return Next::DeadLetter(kind);
    }
    let limit = policy.in_place_limit(attempt.delivery);
    if limit == 0 || attempt.in_place < limit {
        return Next::RetryIn(policy.backoff.delay(attempt.tries));
    }
    let deliveries_left = attempt.delivery < policy.retry_topic_attempts;
    if policy.mode == RetryMode::NonBlocking && deliveries_left {
        Next::ToRetryTopic
    } else {
        Next::DeadLetter(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeadLetterKind::{Decode, Handler, Panic, Timeout};

    fn exact() -> f64 {
        1.0
    }

    fn policy(max_attempts: u32, mode: RetryMode, retry_topic_attempts: u32) -> Policy {
        Policy {
            max_attempts,
            mode,
            retry_topic_attempts,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_millis(1_000))
                .with_jitter(exact),
        }
    }

    const fn at(in_place: u32, delivery: u32) -> Attempt {
        Attempt {
            in_place,
            tries: in_place,
            delivery,
        }
    }

    /// `in_place` budget-spending attempts among `tries`.
    const fn after(in_place: u32, tries: u32) -> Attempt {
        Attempt {
            in_place,
            tries,
            delivery: 0,
        }
    }

    const fn transient(kind: DeadLetterKind) -> Outcome {
        Outcome::Failed {
            kind,
            permanent: false,
        }
    }

    const fn permanent(kind: DeadLetterKind) -> Outcome {
        Outcome::Failed {
            kind,
            permanent: true,
        }
    }

    fn ms(n: u64) -> Next {
        Next::RetryIn(Duration::from_millis(n))
    }

    #[test]
    fn every_branch() {
        use RetryMode::{NonBlocking, Strict};
        let strict = policy(3, Strict, 3);
        let non_blocking = policy(3, NonBlocking, 2);
        let unlimited = policy(0, Strict, 3);
        #[rustfmt::skip]
        let table: &[(&str, Outcome, Attempt, &Policy, Next)] = &[
            ("bad input is dead-lettered at once",    Outcome::BadInput,   at(1, 0), &unlimited, Next::DeadLetter(Decode)),
            ("bad input on the retry topic too",      Outcome::BadInput,   at(1, 1), &non_blocking, Next::DeadLetter(Decode)),
            ("a permanent error is dead-lettered",    permanent(Handler),  at(1, 0), &non_blocking, Next::DeadLetter(Handler)),
            ("a panic is dead-lettered",              permanent(Panic),    at(1, 0), &unlimited, Next::DeadLetter(Panic)),
            ("transient: first backoff",              transient(Handler),  at(1, 0), &strict, ms(100)),
            ("transient: backoff doubles",            transient(Timeout),  at(2, 0), &strict, ms(200)),
            ("transient: strict budget spent",        transient(Timeout),  at(3, 0), &strict, Next::DeadLetter(Timeout)),
            ("transient: no limit keeps retrying",    transient(Handler),  at(50, 0), &unlimited, ms(1_000)),
            ("transient: backoff capped",             transient(Handler),  at(5, 0), &unlimited, ms(1_000)),
            ("non-blocking: in place first",          transient(Handler),  at(2, 0), &non_blocking, ms(200)),
            ("non-blocking: spent → retry topic",     transient(Handler),  at(3, 0), &non_blocking, Next::ToRetryTopic),
            ("retry topic: one attempt per delivery", transient(Handler),  at(1, 1), &non_blocking, Next::ToRetryTopic),
            ("retry topic: deliveries spent",         transient(Timeout),  at(1, 2), &non_blocking, Next::DeadLetter(Timeout)),
            ("strict listener never uses the topic",  transient(Handler),  at(1, 1), &strict, Next::DeadLetter(Handler)),
            ("unavailable never spends the budget",   Outcome::Unavailable, at(3, 0), &strict, ms(400)),
            ("unavailable backs off with every try",  Outcome::Unavailable, after(0, 4), &strict, ms(800)),
            ("a failure after an outage has budget",  transient(Handler),  after(1, 3), &strict, ms(400)),
            ("the budget counts failures only",       transient(Handler),  after(3, 5), &strict, Next::DeadLetter(Handler)),
            ("unavailable on the retry topic",        Outcome::Unavailable, at(1, 2), &non_blocking, ms(100)),
        ];
        for (name, outcome, attempt, policy, want) in table {
            assert_eq!(next(*outcome, *attempt, policy), *want, "{name}");
        }
    }

    #[test]
    fn the_policy_comes_from_the_listener_settings() {
        let c = ListenerConfig {
            max_attempts: 5,
            retry: RetryMode::NonBlocking,
            retry_topic_attempts: 4,
            backoff_ms: 10,
            max_backoff_ms: 20,
            ..ListenerConfig::default()
        };
        let p = Policy::of(&c).with_backoff_jitter(exact);
        assert_eq!(
            (p.max_attempts, p.mode, p.retry_topic_attempts),
            (5, RetryMode::NonBlocking, 4)
        );
        assert_eq!(p.backoff.delay(1), Duration::from_millis(10));
        assert_eq!(p.backoff.delay(3), Duration::from_millis(20));
    }

    impl Policy {
        fn with_backoff_jitter(self, jitter: crate::backoff::Jitter) -> Self {
            Self {
                backoff: self.backoff.with_jitter(jitter),
                ..self
            }
        }
    }
}
