//! A saga's persisted state and its transitions, free of I/O.

use std::time::Duration;

pub(crate) use crate::contract::saga::{Ended, Past, Pending, Phase, SagaState, Status};

/// What the transitions need to know about a step.
#[derive(Debug, Clone)]
pub(crate) struct StepInfo {
    pub(crate) name: &'static str,
    pub(crate) compensated: bool,
    pub(crate) timeout: Duration,
}

/// The generation of a new owner of a saga partition: past every generation its restore read,
/// and at least the time of the restore (so an owner that read nothing of its predecessor's
/// still comes after it, as far as the clocks agree).
pub(crate) fn next_generation(newest_read: u64, now_ms: u64) -> u64 {
    newest_read.saturating_add(1).max(now_ms)
}

/// The requests a state remembers in its history, newest last: enough to recognise a late or
/// repeated reply to any recent request, and a bound on the state's size however long the
/// saga runs (a compensation timed out again and again).
pub(crate) const HISTORY: usize = 32;

/// How an input's `ce_causationid` relates to a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// It answers the pending request.
    Pending(Phase, usize),
    /// It answers a request that was already answered: a duplicate.
    Replied,
    /// It answers a request that timed out: late.
    TimedOut,
    /// It answers no request of this saga.
    Unknown,
}

/// The saga key and version a request id names.
pub(crate) fn parse_request_id(request_id: &str) -> Option<(&str, u64)> {
    let (key, version) = request_id.rsplit_once('@')?;
    Some((key, version.parse().ok()?))
}

impl SagaState {
    /// A saga started by input `input`: waiting for its first step (or completed, without
    /// steps).
    pub(crate) fn start(
        key: String,
        data: serde_json::Value,
        input: String,
        correlation_id: String,
        now_ms: u64,
        steps: &[StepInfo],
    ) -> Self {
        let blank = Self {
            key,
            version: 0,
            status: Status::Running,
            data,
            reason: None,
            pending: None,
            history: Vec::new(),
            input,
            correlation_id,
            ended_ms: None,
            generation: 0,
        };
        blank.next(now_ms, steps, |st| st.action(0, steps))
    }

    /// How `causation` relates to this saga.
    pub(crate) fn classify(&self, causation: &str) -> Match {
        if let Some(p) = self.pending.as_ref().filter(|p| p.request_id == causation) {
            return Match::Pending(p.phase, p.step);
        }
        match self.history.iter().find(|p| p.request_id == causation) {
            Some(Past {
                ended: Ended::Replied,
                ..
            }) => Match::Replied,
            Some(Past {
                ended: Ended::TimedOut,
                ..
            }) => Match::TimedOut,
            None => Match::Unknown,
        }
    }

    /// The pending action was answered: `outcome` says whether it succeeded; `data` is the
    /// data as the reply left it.
    pub(crate) fn action_replied(
        &self,
        outcome: Result<(), String>,
        data: serde_json::Value,
        input: String,
        now_ms: u64,
        steps: &[StepInfo],
    ) -> Self {
        let step = self.pending_step();
        let mut st = self.resolved(Ended::Replied, input);
        st.data = data;
        st.next(now_ms, steps, |st| match outcome {
            Ok(()) => st.action(step + 1, steps),
            // The failed step did nothing: undo the ones before it.
            Err(reason) => st.compensate_from(step.checked_sub(1), reason, steps),
        })
    }

    /// The pending compensation was answered: compensate the step before it.
    pub(crate) fn compensation_replied(
        &self,
        input: String,
        now_ms: u64,
        steps: &[StepInfo],
    ) -> Self {
        let step = self.pending_step();
        let st = self.resolved(Ended::Replied, input);
        let reason = st.reason.clone().unwrap_or_default();
        st.next(now_ms, steps, |st| {
            st.compensate_from(step.checked_sub(1), reason, steps)
        })
    }

    /// The pending request timed out: a timed-out action is compensated with every step
    /// before it (it may have acted); a timed-out compensation is sent again.
    pub(crate) fn timed_out(&self, input: String, now_ms: u64, steps: &[StepInfo]) -> Self {
        let pending = self
            .pending
            .clone()
            .expect("a timeout answers a pending request");
        let st = self.resolved(Ended::TimedOut, input);
        st.next(now_ms, steps, |st| match pending.phase {
            Phase::Action => {
                let step = &steps[pending.step];
                let reason = format!("step `{}` timed out after {:?}", step.name, step.timeout);
                st.compensate_from(Some(pending.step), reason, steps)
            }
            Phase::Compensation => {
                st.status = Status::Compensating;
                Some((Phase::Compensation, pending.step))
            }
        })
    }

    fn pending_step(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.step)
    }

    /// This state with its pending request moved to the history.
    fn resolved(&self, ended: Ended, input: String) -> Self {
        let mut st = self.clone();
        if let Some(p) = st.pending.take() {
            st.history.push(Past {
                request_id: p.request_id,
                ended,
                phase: Some(p.phase),
            });
            let over = st.history.len().saturating_sub(HISTORY);
            st.history.drain(..over);
        }
        st.input = input;
        st
    }

    /// The next version: `decide` sets the status and names the request to wait for, if any.
    fn next(
        mut self,
        now_ms: u64,
        steps: &[StepInfo],
        decide: impl FnOnce(&mut Self) -> Option<(Phase, usize)>,
    ) -> Self {
        self.version += 1;
        self.pending = decide(&mut self).map(|(phase, step)| Pending {
            request_id: format!("{}@{}", self.key, self.version),
            phase,
            step,
            deadline_ms: now_ms + steps[step].timeout.as_millis() as u64,
        });
        if self.is_ended() {
            self.ended_ms.get_or_insert(now_ms);
        }
        self
    }

    /// Whether the saga completed or failed.
    pub(crate) fn is_ended(&self) -> bool {
        matches!(self.status, Status::Completed | Status::Failed)
    }

    /// Whether the state may be removed at `now_ms`: the saga ended at least `retention_ms`
    /// ago. (A state written before `ended_ms` existed counts as ended at its restore.)
    pub(crate) fn expired(&self, now_ms: u64, retention_ms: u64) -> bool {
        self.is_ended()
            && self
                .ended_ms
                .is_some_and(|ended| now_ms.saturating_sub(ended) >= retention_ms)
    }

    /// Waits for step `step`'s action, or completes past the last step.
    fn action(&mut self, step: usize, steps: &[StepInfo]) -> Option<(Phase, usize)> {
        if step < steps.len() {
            self.status = Status::Running;
            Some((Phase::Action, step))
        } else {
            self.status = Status::Completed;
            None
        }
    }

    /// Compensates the last compensated step at or before `from`, or fails when none is left.
    fn compensate_from(
        &mut self,
        from: Option<usize>,
        reason: String,
        steps: &[StepInfo],
    ) -> Option<(Phase, usize)> {
        self.reason.get_or_insert(reason);
        let next = from.and_then(|from| (0..=from).rev().find(|&i| steps[i].compensated));
        match next {
            Some(i) => {
                self.status = Status::Compensating;
                Some((Phase::Compensation, i))
            }
            None => {
                self.status = Status::Failed;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps() -> Vec<StepInfo> {
        let step = |name, compensated| StepInfo {
            name,
            compensated,
            timeout: Duration::from_secs(10),
        };
        vec![
            step("reserve", true),
            step("charge", true),
            step("ship", false),
        ]
    }

    fn started() -> SagaState {
        SagaState::start(
            "order/o1".into(),
            serde_json::json!({"n": 0}),
            "in-0".into(),
            "flow".into(),
            1_000,
            &steps(),
        )
    }

    fn pending(st: &SagaState) -> (Phase, usize, &str) {
        let p = st.pending.as_ref().expect("pending");
        (p.phase, p.step, &p.request_id)
    }

    #[test]
    fn happy_path_runs_every_step_then_completes() {
        let steps = steps();
        let mut st = started();
        assert_eq!(pending(&st), (Phase::Action, 0, "order/o1@1"));
        assert_eq!(st.pending.as_ref().unwrap().deadline_ms, 11_000);
        for (i, input) in ["in-1", "in-2", "in-3"].into_iter().enumerate() {
            let req = st.pending.as_ref().unwrap().request_id.clone();
            assert_eq!(st.classify(&req), Match::Pending(Phase::Action, i));
            st = st.action_replied(
                Ok(()),
                serde_json::json!({"n": i + 1}),
                input.into(),
                2_000,
                &steps,
            );
        }
        assert_eq!(st.status, Status::Completed);
        assert!(st.pending.is_none());
        assert_eq!(st.version, 4);
        assert_eq!(st.data, serde_json::json!({"n": 3}));
        assert_eq!(st.classify("order/o1@1"), Match::Replied);
        assert_eq!(st.classify("order/o1@9"), Match::Unknown);
    }

    #[test]
    fn a_failed_step_compensates_the_steps_before_it_in_reverse() {
        let steps = steps();
        let st = started().action_replied(Ok(()), serde_json::json!({}), "a".into(), 0, &steps);
        let st = st.action_replied(Ok(()), serde_json::json!({}), "b".into(), 0, &steps);
        // Shipping fails: refund (step 1), then release (step 0).
        let st = st.action_replied(
            Err("no carrier".into()),
            serde_json::json!({}),
            "c".into(),
            0,
            &steps,
        );
        assert_eq!(st.status, Status::Compensating);
        assert_eq!(pending(&st).0, Phase::Compensation);
        assert_eq!(pending(&st).1, 1);
        let st = st.compensation_replied("d".into(), 0, &steps);
        assert_eq!(pending(&st).1, 0);
        let st = st.compensation_replied("e".into(), 0, &steps);
        assert_eq!(st.status, Status::Failed);
        assert_eq!(st.reason.as_deref(), Some("no carrier"));
        assert!(st.pending.is_none());
    }

    #[test]
    fn failing_the_first_step_needs_no_compensation() {
        let st = started().action_replied(
            Err("no stock".into()),
            serde_json::json!({}),
            "a".into(),
            0,
            &steps(),
        );
        assert_eq!(st.status, Status::Failed);
        assert_eq!(st.reason.as_deref(), Some("no stock"));
    }

    #[test]
    fn a_timed_out_step_is_compensated_too_and_its_late_reply_is_recognised() {
        let steps = steps();
        let st = started().action_replied(Ok(()), serde_json::json!({}), "a".into(), 0, &steps);
        let charge = pending(&st).2.to_owned();
        let st = st.timed_out("t".into(), 0, &steps);
        assert_eq!(st.status, Status::Compensating);
        assert_eq!(pending(&st).1, 1, "the timed-out charge is refunded");
        assert_eq!(
            st.reason.as_deref(),
            Some("step `charge` timed out after 10s")
        );
        assert_eq!(st.classify(&charge), Match::TimedOut);
        // A timed-out compensation is sent again, with a new request id.
        let refund = pending(&st).2.to_owned();
        let again = st.timed_out("t2".into(), 0, &steps);
        assert_eq!(pending(&again).0, Phase::Compensation);
        assert_eq!(pending(&again).1, 1);
        assert_ne!(pending(&again).2, refund);
    }

    #[test]
    fn the_state_round_trips_and_request_ids_name_their_saga() {
        let st = started();
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(serde_json::from_str::<SagaState>(&json).unwrap(), st);
        assert_eq!(parse_request_id("order/a@b@7"), Some(("order/a@b", 7)));
        assert_eq!(parse_request_id("no-version"), None);
        assert_eq!(parse_request_id("x@y"), None);
    }

    #[test]
    fn an_ended_saga_expires_after_the_retention() {
        let st = started();
        let (_, _, r0) = pending(&st);
        let r0 = r0.to_owned();
        assert_eq!(st.ended_ms, None);
        let st = st.action_replied(
            Err("no".into()),
            serde_json::json!({}),
            "in-1".into(),
            5_000,
            &steps(),
        );
        assert_eq!(
            st.status,
            Status::Failed,
            "nothing to compensate before the first step"
        );
        assert_eq!(st.ended_ms, Some(5_000));
        assert_eq!(st.classify(&r0), Match::Replied);
        let cases = [
            // (now, retention, expired)
            (5_000, 0, true),
            (5_999, 1_000, false),
            (6_000, 1_000, true),
            (1_000, 1_000, false),
        ];
        for (now, retention, expired) in cases {
            assert_eq!(
                st.expired(now, retention),
                expired,
                "now {now}, retention {retention}"
            );
        }
        let running = started();
        assert!(
            !running.expired(u64::MAX, 0),
            "a running saga never expires"
        );
        let legacy = SagaState {
            ended_ms: None,
            ..st
        };
        assert!(
            !legacy.expired(u64::MAX, 0),
            "ended before `ended_ms` existed: the engine stamps it"
        );
    }

    #[test]
    fn a_later_owners_state_supersedes_a_higher_version_of_an_earlier_owner() {
        let at = |generation, version| SagaState {
            generation,
            version,
            ..started()
        };
        // (read later, read earlier, replaces it?)
        let cases = [
            (at(1, 3), at(1, 2), true, "the next version of one owner"),
            (
                at(1, 2),
                at(1, 2),
                true,
                "the same version again (a redelivery)",
            ),
            (at(1, 2), at(1, 3), false, "an older version of one owner"),
            (at(2, 3), at(1, 3), true, "the successor's version"),
            (at(1, 3), at(2, 2), false, "a revoked owner's late write"),
            (at(1, 9), at(2, 2), false, "however far ahead it got"),
            (
                at(5, 8),
                at(0, 7),
                true,
                "after a state without generation: by version",
            ),
            (
                at(5, 6),
                at(0, 7),
                false,
                "an older version than one without generation",
            ),
            (
                at(0, 7),
                at(5, 6),
                true,
                "without generation, after an older version",
            ),
            (
                at(0, 5),
                at(9, 6),
                false,
                "without generation, an older version",
            ),
        ];
        for (later, earlier, replaces, case) in cases {
            assert_eq!(later.supersedes(earlier.rank()), replaces, "{case}");
        }
    }

    #[test]
    fn a_new_owner_comes_after_every_generation_it_read() {
        // (newest generation read, now, the new owner's)
        let cases = [
            (0, 1_000, 1_000, "nothing read: the time"),
            (500, 1_000, 1_000, "an earlier owner's: the time"),
            (1_000, 1_000, 1_001, "the same millisecond: one past it"),
            (5_000, 1_000, 5_001, "a clock behind the predecessor's"),
            (u64::MAX, 1_000, u64::MAX, "no overflow"),
        ];
        for (read, now, owner, case) in cases {
            assert_eq!(next_generation(read, now), owner, "{case}");
        }
    }

    #[test]
    fn the_history_keeps_the_latest_requests_only() {
        let steps = vec![StepInfo {
            name: "undo",
            compensated: true,
            timeout: Duration::from_secs(1),
        }];
        let mut st = SagaState::start(
            "s/1".into(),
            serde_json::json!({}),
            "i".into(),
            "c".into(),
            0,
            &steps,
        );
        let mut ids = Vec::new();
        st = st.action_replied(
            Err("no".into()),
            serde_json::json!({}),
            "i".into(),
            0,
            &steps,
        );
        // The first step failed with nothing before it: the saga failed. Time out a
        // compensation again and again instead.
        st.status = Status::Compensating;
        st.ended_ms = None;
        st.pending = Some(Pending {
            request_id: "s/1@c".into(),
            phase: Phase::Compensation,
            step: 0,
            deadline_ms: 0,
        });
        for i in 0..100 {
            ids.push(st.pending.as_ref().unwrap().request_id.clone());
            st = st.timed_out(format!("t{i}"), i, &steps);
        }
        assert_eq!(st.history.len(), HISTORY);
        assert_eq!(
            st.classify(&ids[99]),
            Match::TimedOut,
            "the latest are remembered"
        );
        assert_eq!(
            st.classify(&ids[0]),
            Match::Unknown,
            "the oldest are forgotten"
        );
    }
}
