//! Holding a retry topic's records until they are due (see
//! `docs/failures.md#non-blocking-retries`).
//!
//! A record on a retry topic carries the time before which it may not be handled. Sleeping in
//! the handler's task until then would keep a handler slot and the partition's worker busy;
//! instead the poll thread keeps the record (and every record polled after it on its
//! partition, so that offsets are still started in order) and pauses the partition, then hands
//! the records on as they fall due and resumes the partition. librdkafka drops what it
//! prefetched for a paused partition and fetches again from the record after the last one
//! polled (confluent-kafka-go #260, librdkafka #1849), so the records polled before the pause
//! took effect must be kept here, not polled again.
//!
//! A tier's records all wait the same delay and are written in about the order they fall
//! due, so the head of a partition is the first due and a record behind it waits no longer
//! than it would anyway. The partition is resumed a little after its last held record was
//! handed on ([`crate::contract::retry_topic::Tier::slack`]): the records written just after
//! it are due by then and come in one fetch, rather than one fetch and one pause per record.
//!
//! This is the pure core: it decides, the poll thread pauses, resumes and sends.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

/// What becomes of a record given to [`Due::admit`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit<T> {
    /// Hand it on now.
    Now(T),
    /// It is held; `first` when nothing was held before it (the partition is to be paused).
    Held { first: bool },
}

/// One partition's records held until due, in the order polled.
#[derive(Debug)]
pub(crate) struct Due<T> {
    /// Each with when it is due: `None` for a record that is not waiting for a time of its
    /// own (another listener's, or malformed), which goes once it is at the head.
    held: VecDeque<(T, Option<SystemTime>)>,
    /// When the partition may be resumed once nothing is held: one slack after the latest due
    /// time of a record it held (a record due when polled moves nothing: pausing for it would
    /// drop the due records prefetched behind it).
    resume_at: Option<SystemTime>,
}

impl<T> Default for Due<T> {
    fn default() -> Self {
        Self {
            held: VecDeque::new(),
            resume_at: None,
        }
    }
}

impl<T> Due<T> {
    /// Takes a record polled at `now`, due at `due`: handed on at once when nothing is held
    /// and it is due, else held behind those held.
    pub(crate) fn admit(&mut self, x: T, due: Option<SystemTime>, now: SystemTime) -> Admit<T> {
        if self.held.is_empty() && due.is_none_or(|at| at <= now) {
            return Admit::Now(x);
        }
        let first = self.held.is_empty();
        self.held.push_back((x, due));
        Admit::Held { first }
    }

    /// The held records due at `now`, in order: the head, and those after it up to the first
    /// that is not due yet.
    pub(crate) fn take_due(&mut self, now: SystemTime, slack: Duration) -> Vec<T> {
        let mut out = Vec::new();
        while let Some((_, due)) = self.held.front() {
            match *due {
                Some(at) if at > now => break,
                Some(at) => self.passed(at, slack),
                None => {}
            }
            if let Some((x, _)) = self.held.pop_front() {
                out.push(x);
            }
        }
        out
    }

    /// Whether the partition may be resumed at `now`: nothing held, and one slack past the
    /// latest due time handed on.
    pub(crate) fn may_resume(&self, now: SystemTime) -> bool {
        self.held.is_empty() && self.resume_at.is_none_or(|at| at <= now)
    }

    /// When something changes next: the head falls due, or the partition may be resumed.
    pub(crate) fn next_change(&self) -> Option<SystemTime> {
        match self.held.front() {
            Some((_, due)) => Some(due.unwrap_or(SystemTime::UNIX_EPOCH)),
            None => self.resume_at,
        }
    }

    /// Whether any record is held.
    pub(crate) fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    fn passed(&mut self, at: SystemTime, slack: Duration) {
        let until = at + slack;
        self.resume_at = Some(self.resume_at.map_or(until, |r| r.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLACK: Duration = Duration::from_millis(50);

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn records_are_held_in_order_and_handed_on_as_they_fall_due() {
        // Polled at 1000: (record, due) → admitted how
        let mut due = Due::default();
        let admitted: Vec<Admit<u32>> = [
            (1, Some(900)),
            (2, None),
            (3, Some(1_500)),
            (4, Some(1_400)),
            (5, None),
            (6, Some(2_000)),
        ]
        .into_iter()
        .map(|(x, d)| due.admit(x, d.map(at), at(1_000)))
        .collect();
        assert_eq!(
            admitted,
            [
                Admit::Now(1),
                Admit::Now(2),
                Admit::Held { first: true },
                // Behind a held record, due or not: offsets start in order.
                Admit::Held { first: false },
                Admit::Held { first: false },
                Admit::Held { first: false },
            ]
        );
        assert_eq!(due.next_change(), Some(at(1_500)));
        // now → handed on, may resume
        let steps: [(u64, &[u32], bool); 5] = [
            (1_499, &[], false),
            (1_500, &[3, 4, 5], false),
            (1_999, &[], false),
            (2_000, &[6], false),
            (2_050, &[], true),
        ];
        for (now, want, resume) in steps {
            assert_eq!(due.take_due(at(now), SLACK), want, "at {now}");
            assert_eq!(due.may_resume(at(now)), resume, "at {now}");
        }
        assert!(!due.holds_any());
        assert_eq!(due.next_change(), Some(at(2_050)));
    }

    #[test]
    fn records_due_when_polled_never_pause_the_partition() {
        let mut due = Due::default();
        assert!(due.may_resume(at(0)), "nothing seen: nothing to wait for");
        assert_eq!(due.next_change(), None);
        for (x, d) in [(1, Some(900)), (2, Some(1_000)), (3, None)] {
            assert_eq!(due.admit(x, d.map(at), at(1_000)), Admit::Now(x));
            assert!(due.may_resume(at(1_000)), "after {x}");
        }
        assert_eq!(due.next_change(), None);
    }

    #[test]
    fn a_record_without_a_time_at_the_head_goes_at_once() {
        let mut due = Due::default();
        assert_eq!(
            due.admit(1, Some(at(5_000)), at(0)),
            Admit::Held { first: true }
        );
        assert_eq!(due.admit(2, None, at(0)), Admit::Held { first: false });
        assert_eq!(due.take_due(at(5_000), SLACK), [1, 2]);
    }
}
