//! What a partition's owner holds of each saga in memory: a live saga's whole state, and of an
//! ended one only what its later inputs need.
//!
//! An ended saga is kept until its retention passes, so that a repeated start is ignored and a
//! late reply recognised; a busy service ends many sagas a second, so a week of them must not be
//! a week of whole states (data, history). What an input to an ended saga needs is its rank
//! (which of two records is later, at a restore), when it ended (the retention), the input that
//! ended it (that input delivered again redoes the end: its hook's outputs may not have been
//! acknowledged), and where its last state record lies on `private.saga`, from which that rare
//! redo reads the whole state back.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::state::SagaState;

/// One saga as the partition's owner holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resident {
    /// Running or compensating; or ended, until its end is done (then it is reduced, when the
    /// offset of its state record, `at`, is known).
    Whole {
        state: Box<SagaState>,
        at: Option<i64>,
    },
    /// Completed or failed.
    Ended(Ended),
}

/// An ended saga, reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ended {
    /// Its last state's (generation, version).
    pub(crate) rank: (u64, u64),
    /// Unix milliseconds when it ended.
    pub(crate) ended_ms: u64,
    /// A hash of the `ce_id` of the input that ended it (see [`Ended::ended_by`]).
    input: u64,
    /// The offset of its last state record on its partition of `private.saga`.
    pub(crate) at: i64,
}

/// What an input to an ended saga does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Afterwards {
    /// It may be the input that ended the saga, delivered again: its end is redone from the
    /// state record at this offset (which names the input; a hash collision is ruled out there).
    Redo(i64),
    /// Anything else: a repeated start, a late reply, a stale timeout.
    Ignore,
}

impl Ended {
    /// `state`, ended, whose record lies at offset `at`; `now` stands in for a missing end time
    /// (a state written before states carried it).
    pub(crate) fn of(state: &SagaState, at: i64, now: u64) -> Self {
        Self {
            rank: state.rank(),
            ended_ms: state.ended_ms.unwrap_or(now),
            input: input_hash(&state.input),
            at,
        }
    }

    /// What the input with `ce_id` `id` does to this saga.
    pub(crate) fn input(&self, id: &str) -> Afterwards {
        if input_hash(id) == self.input {
            Afterwards::Redo(self.at)
        } else {
            Afterwards::Ignore
        }
    }
}

impl Resident {
    /// The saga as a restore found it at offset `at`: reduced when it has ended.
    pub(crate) fn restored(state: SagaState, at: i64, now: u64) -> Self {
        if state.is_ended() {
            Self::Ended(Ended::of(&state, at, now))
        } else {
            Self::Whole {
                state: Box::new(state),
                at: Some(at),
            }
        }
    }

    /// Its last state's (generation, version).
    pub(crate) fn rank(&self) -> (u64, u64) {
        match self {
            Self::Whole { state, .. } => state.rank(),
            Self::Ended(e) => e.rank,
        }
    }

    /// Whether it ended at least `retention_ms` before `now_ms`: its record is then tombstoned.
    pub(crate) fn expired(&self, now_ms: u64, retention_ms: u64) -> bool {
        match self {
            Self::Whole { state, .. } => state.expired(now_ms, retention_ms),
            Self::Ended(e) => now_ms.saturating_sub(e.ended_ms) >= retention_ms,
        }
    }

    /// Whether it is running or compensating.
    pub(crate) fn is_live(&self) -> bool {
        matches!(self, Self::Whole { state, .. } if !state.is_ended())
    }

    /// Reduced, if it is an ended saga held whole at a known offset; `None` otherwise.
    pub(crate) fn reduced(&self, now: u64) -> Option<Self> {
        match self {
            Self::Whole {
                state,
                at: Some(at),
            } if state.is_ended() => Some(Self::Ended(Ended::of(state, *at, now))),
            _ => None,
        }
    }
}

/// A hash of an input's `ce_id`: 8 bytes instead of the id (a UUID's 36 and its allocation).
fn input_hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::state::Status;

    fn state(status: Status, ended_ms: Option<u64>) -> SagaState {
        let mut st = SagaState::start(
            "trip/1".into(),
            serde_json::json!({"big": "data"}),
            "in-1".into(),
            "c".into(),
            10,
            &[],
        );
        st.status = status;
        st.ended_ms = ended_ms;
        st.generation = 7;
        st
    }

    #[test]
    fn what_a_partition_keeps_of_a_saga() {
        let now = 1_000;
        #[rustfmt::skip]
        let cases: &[(&str, Status, Option<u64>, bool)] = &[
            // what,                                status,             ended_ms,    kept whole
            ("a running saga is kept whole",        Status::Running,      None,        true),
            ("a compensating one too",              Status::Compensating, None,        true),
            ("a completed one is reduced",          Status::Completed,    Some(900),   false),
            ("a failed one too",                    Status::Failed,       Some(900),   false),
            ("an end without a time ends at now",   Status::Completed,    None,        false),
        ];
        for (what, status, ended_ms, whole) in cases {
            let st = state(*status, *ended_ms);
            let kept = Resident::restored(st.clone(), 42, now);
            assert_eq!(matches!(kept, Resident::Whole { .. }), *whole, "{what}");
            assert_eq!(kept.rank(), st.rank(), "{what}: the rank is kept");
            assert_eq!(kept.is_live(), *whole, "{what}");
            if let Resident::Ended(e) = kept {
                assert_eq!(e.ended_ms, ended_ms.unwrap_or(now), "{what}");
                assert_eq!(e.at, 42, "{what}");
            }
        }
    }

    #[test]
    fn what_an_input_does_to_an_ended_saga() {
        let ended = Ended::of(&state(Status::Completed, Some(5)), 42, 0);
        #[rustfmt::skip]
        let cases: &[(&str, &str, Afterwards)] = &[
            ("the ending input again redoes the end", "in-1",  Afterwards::Redo(42)),
            ("any other input is ignored",            "in-2",  Afterwards::Ignore),
            ("an empty id too",                       "",      Afterwards::Ignore),
        ];
        for (what, id, expected) in cases {
            assert_eq!(ended.input(id), *expected, "{what}");
        }
    }

    #[test]
    fn which_sagas_held_whole_are_reduced_once_their_end_is_done() {
        let whole = |status, at| Resident::Whole {
            state: Box::new(state(status, Some(5))),
            at,
        };
        #[rustfmt::skip]
        let cases: &[(&str, Resident, bool)] = &[
            ("ended, its record's offset known",   whole(Status::Completed, Some(9)), true),
            ("ended, failed",                      whole(Status::Failed, Some(9)),    true),
            ("ended, its offset not known",        whole(Status::Completed, None),    false),
            ("running",                            whole(Status::Running, Some(9)),   false),
        ];
        for (what, saga, reduced) in cases {
            let r = saga.reduced(0);
            assert_eq!(r.is_some(), *reduced, "{what}");
            if let Some(Resident::Ended(e)) = r {
                assert_eq!((e.at, e.rank, e.ended_ms), (9, saga.rank(), 5), "{what}");
            }
        }
    }

    #[test]
    fn when_a_saga_expires() {
        let whole = Resident::Whole {
            state: Box::new(state(Status::Completed, Some(100))),
            at: None,
        };
        let reduced = Resident::Ended(Ended::of(&state(Status::Completed, Some(100)), 1, 0));
        let running = Resident::Whole {
            state: Box::new(state(Status::Running, None)),
            at: Some(3),
        };
        #[rustfmt::skip]
        let cases: &[(&str, &Resident, u64, bool)] = &[
            ("a whole ended saga, before its retention",  &whole,   149, false),
            ("a whole ended saga, at its retention",      &whole,   150, true),
            ("a reduced one, before its retention",       &reduced, 149, false),
            ("a reduced one, at its retention",           &reduced, 150, true),
            ("a running saga never",                      &running, u64::MAX, false),
        ];
        for (what, saga, now, expired) in cases {
            assert_eq!(saga.expired(*now, 50), *expired, "{what}");
        }
    }
}
