//! The saga pages: a service's saga instances as its `private.saga` topic holds them, counted
//! by state and filtered (by state, stuck, timed out), and one instance's timeline, from every
//! version of its state the topic still holds (compaction keeps the latest; the versions
//! before it stay until the segment is compacted).
//!
//! Which state is an instance's latest follows the saga engine's own rule: the higher owner
//! generation wins, then the higher version (a revoked owner's late write never wins over its
//! successor's). An instance is **stuck** when nothing will move it: the request it waits for
//! is past its deadline by more than [`OVERDUE_GRACE_MS`] (no process of the service is timing
//! it out), or a compensation already timed out (a saga whose undo gets no answer cannot end
//! by itself).

use std::collections::BTreeMap;

use maud::{html, Markup};
use serde::Deserialize;

use atoll::contract::saga::{Ended, Phase, SagaState, Status};

use crate::dlq::DeadLetter;

/// How long past its deadline a request may wait before its saga counts as stuck: the
/// owner's timers fire about on time, and its state is written a moment after.
pub(crate) const OVERDUE_GRACE_MS: u64 = 10_000;

/// The most instances a page lists (the counts cover all).
pub(crate) const LISTED: usize = 500;

/// One saga instance: every version of its state read, in the order written, each with the
/// time its record was written (when the broker gave one).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Instance {
    pub(crate) versions: Vec<(Option<i64>, SagaState)>,
    /// Which version is the latest (see [`SagaState::supersedes`]).
    latest: usize,
}

impl Instance {
    /// The instance of `versions` (at least one), in the order written.
    fn of(versions: Vec<(Option<i64>, SagaState)>) -> Self {
        let mut latest = 0;
        for (i, (_, v)) in versions.iter().enumerate().skip(1) {
            if v.supersedes(versions[latest].1.rank()) {
                latest = i;
            }
        }
        Self { versions, latest }
    }

    /// Its latest state.
    pub(crate) fn latest(&self) -> &SagaState {
        &self.versions[self.latest].1
    }

    /// When its latest state was written.
    pub(crate) fn since_ms(&self) -> Option<i64> {
        self.versions[self.latest].0
    }

    /// How many of its requests timed out.
    pub(crate) fn timeouts(&self) -> usize {
        let s = self.latest();
        s.history
            .iter()
            .filter(|p| p.ended == Ended::TimedOut)
            .count()
    }

    /// Whether it is stuck at `now_ms` (see the module's doc).
    pub(crate) fn stuck(&self, now_ms: i64) -> bool {
        let s = self.latest();
        let Some(pending) = &s.pending else {
            return false;
        };
        let now = u64::try_from(now_ms).unwrap_or(0);
        let overdue = now > pending.deadline_ms.saturating_add(OVERDUE_GRACE_MS);
        // Its last request: a compensation that timed out (and is being asked again). One
        // answered since is a saga recovering, not stuck.
        let undo_timed_out = s.history.last().is_some_and(|p| {
            p.ended == Ended::TimedOut
                && match p.phase {
                    Some(phase) => phase == Phase::Compensation,
                    // Written before requests kept their phase: the first timeout of an action
                    // turns the saga to compensating, so any other is a compensation's.
                    None => s.status == Status::Compensating && self.timeouts() >= 2,
                }
        });
        overdue || undo_timed_out
    }

    fn shown_by(&self, show: Show, now_ms: i64) -> bool {
        match show {
            Show::All => true,
            Show::State(status) => self.latest().status == status,
            Show::Stuck => self.stuck(now_ms),
            Show::TimedOut => self.timeouts() > 0,
        }
    }
}

/// Which instances a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Show {
    All,
    State(Status),
    Stuck,
    TimedOut,
}

impl Show {
    /// The filter a query's `show` names (empty: all).
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "" | "all" => Self::All,
            "stuck" => Self::Stuck,
            "timed_out" => Self::TimedOut,
            other => Self::State(status_named(other).ok_or_else(|| {
                format!("`{other}` is no filter: all, running, compensating, completed, failed, stuck or timed_out")
            })?),
        })
    }
}

const STATES: [Status; 4] = [
    Status::Running,
    Status::Compensating,
    Status::Completed,
    Status::Failed,
];

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Running => "running",
        Status::Compensating => "compensating",
        Status::Completed => "completed",
        Status::Failed => "failed",
        _ => "unknown",
    }
}

fn status_named(name: &str) -> Option<Status> {
    STATES.into_iter().find(|s| status_name(*s) == name)
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Action => "action",
        Phase::Compensation => "compensation",
        _ => "unknown",
    }
}

/// The instances the records of a `private.saga` topic make, by key, and how many records did
/// not decode. A tombstone removes its key's versions read before it.
pub(crate) fn instances(records: &[DeadLetter]) -> (BTreeMap<String, Instance>, usize) {
    let mut by_key: BTreeMap<String, Vec<(Option<i64>, SagaState)>> = BTreeMap::new();
    let mut undecoded = 0;
    for r in records {
        let Some(key) = r.key.as_deref().map(String::from_utf8_lossy) else {
            undecoded += 1;
            continue;
        };
        match r.payload.as_deref() {
            None => {
                by_key.remove(key.as_ref());
            }
            Some(p) => match serde_json::from_slice::<SagaState>(p) {
                Ok(state) => by_key
                    .entry(key.into_owned())
                    .or_default()
                    .push((r.timestamp_ms, state)),
                Err(_) => undecoded += 1,
            },
        }
    }
    let instances = by_key
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(key, versions)| (key, Instance::of(versions)))
        .collect();
    (instances, undecoded)
}

/// `?service=…&show=…` of the list, `?service=…&key=…` of one instance.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Query {
    pub(crate) service: Option<String>,
    #[serde(default)]
    pub(crate) show: String,
    #[serde(default)]
    pub(crate) key: String,
}

/// The link to a service's sagas, filtered by `show` (empty: all).
pub(crate) fn sagas_href(base: &str, service: &str, show: &str) -> String {
    let q = crate::pages::query;
    match show {
        "" => format!("{base}/sagas?service={}", q(service)),
        show => format!("{base}/sagas?service={}&show={}", q(service), q(show)),
    }
}

fn instance_href(base: &str, service: &str, key: &str) -> String {
    let q = crate::pages::query;
    format!("{base}/saga?service={}&key={}", q(service), q(key))
}

/// What the list page shows.
pub(crate) struct Listed<'a> {
    pub(crate) base: &'a str,
    pub(crate) service: &'a str,
    pub(crate) show: Show,
    pub(crate) shown: &'a str,
    pub(crate) instances: &'a BTreeMap<String, Instance>,
    pub(crate) undecoded: usize,
    pub(crate) now_ms: i64,
}

/// A service's sagas: the counts by state, stuck and timed out (each a filter), and the
/// instances the filter shows, live ones first.
pub(crate) fn list(l: &Listed<'_>) -> Markup {
    let all: Vec<&Instance> = l.instances.values().collect();
    let count = |show: Show| all.iter().filter(|i| i.shown_by(show, l.now_ms)).count();
    let mut shown: Vec<(&String, &Instance)> = l
        .instances
        .iter()
        .filter(|(_, i)| i.shown_by(l.show, l.now_ms))
        .collect();
    shown.sort_by_key(|(_, i)| {
        (
            i.latest().pending.is_none(),
            std::cmp::Reverse(i.since_ms()),
        )
    });
    let filters: Vec<(&str, &str, usize)> = STATES
        .iter()
        .map(|s| (status_name(*s), status_name(*s), count(Show::State(*s))))
        .chain([
            ("stuck", "stuck", count(Show::Stuck)),
            ("timed out", "timed_out", count(Show::TimedOut)),
        ])
        .collect();
    html! {
        h1 { "Sagas · " (l.service) }
        p.counts data-sagas-total=(all.len()) {
            a href=(sagas_href(l.base, l.service, "")) { (all.len()) " in all" }
            @for (label, show, n) in &filters {
                " · " a href=(sagas_href(l.base, l.service, show)) data-saga-count=(show) data-count=(n) {
                    (n) " " (label) }
            }
        }
        @if l.undecoded > 0 {
            p.warning data-undecoded=(l.undecoded) { (l.undecoded) " records of the topic are no saga state and are left out." }
        }
        p { "Showing " strong { (if l.shown.is_empty() { "all" } else { l.shown }) } ": "
            span data-shown=(shown.len()) { (shown.len()) } @if shown.len() > LISTED { " (the first " (LISTED) ")" } }
        table.sagas {
            thead { tr { th { "saga" } th { "state" } th { "waits for" } th { "deadline" }
                th { "timeouts" } th { "since" } th { "reason" } } }
            tbody {
                @for (key, i) in shown.iter().take(LISTED) {
                    @let s = i.latest();
                    tr data-saga=(key) data-state=(status_name(s.status)) data-stuck=(i.stuck(l.now_ms)) {
                        td { a href=(instance_href(l.base, l.service, key)) { (key) } }
                        td { (status_name(s.status)) }
                        td { @if let Some(p) = &s.pending { "step " (p.step + 1) " " (phase_name(p.phase)) } @else { "–" } }
                        td { @if let Some(p) = &s.pending { (crate::pages::time(p.deadline_ms as i64)) } @else { "–" } }
                        td data-timeouts=(i.timeouts()) { (i.timeouts()) }
                        td { (i.since_ms().map_or("–".to_owned(), crate::pages::time)) }
                        td.cause { (s.reason.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// One instance: its latest state, the timeline of its versions, its past requests and data.
pub(crate) fn instance(base: &str, service: &str, key: &str, i: &Instance, now_ms: i64) -> Markup {
    let s = i.latest();
    html! {
        h1 { "Saga · " (key) }
        p data-state=(status_name(s.status)) data-stuck=(i.stuck(now_ms)) {
            (status_name(s.status)) @if i.stuck(now_ms) { " (stuck)" }
            ", version " (s.version) ", correlation " code { (s.correlation_id) } }
        @if let Some(reason) = &s.reason { p.cause { (reason) } }
        h2 { "Timeline" }
        table.timeline {
            thead { tr { th { "written" } th { "version" } th { "state" } th { "waits for" }
                th { "deadline" } th { "input" } } }
            tbody {
                @for (at, v) in &i.versions {
                    tr data-version=(v.version) data-state=(status_name(v.status)) {
                        td { (at.map_or("–".to_owned(), crate::pages::time)) }
                        td { (v.version) }
                        td { (status_name(v.status)) }
                        td { @if let Some(p) = &v.pending { "step " (p.step + 1) " " (phase_name(p.phase)) } @else { "–" } }
                        td { @if let Some(p) = &v.pending { (crate::pages::time(p.deadline_ms as i64)) } @else { "–" } }
                        td { code { (v.input) } }
                    }
                }
            }
        }
        p.note { "Versions before the latest stay on the topic until it is compacted." }
        h2 { "Requests" }
        @if s.history.is_empty() { p.empty { "None ended yet." } }
        @else {
            table.requests { tbody {
                @for p in &s.history {
                    tr data-ended=(if p.ended == Ended::TimedOut { "timed_out" } else { "replied" }) {
                        td { code { (p.request_id) } }
                        td { (if p.ended == Ended::TimedOut { "timed out" } else { "replied" }) }
                    }
                }
            } }
        }
        h2 { "Data" }
        pre.payload { (serde_json::to_string_pretty(&s.data).unwrap_or_default()) }
        p { a href=(sagas_href(base, service, "")) { "Back to the sagas" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state record of `key`: `(status, version, generation, pending deadline, timeouts)`.
    fn record(
        key: &str,
        at: i64,
        state: Option<(Status, u64, u64, Option<u64>, usize)>,
    ) -> DeadLetter {
        let payload = state.map(|(status, version, generation, deadline, timeouts)| {
            let pending = deadline.map(|d| serde_json::json!({
                "request_id": format!("{key}@{version}"), "phase": "action", "step": 1, "deadline_ms": d }));
            // An action's timeout, then compensations'.
            let history: Vec<_> = (0..timeouts)
                .map(|n| {
                    let phase = if n == 0 { "action" } else { "compensation" };
                    serde_json::json!({ "request_id": format!("{key}@{n}"),
                        "ended": "timed_out", "phase": phase })
                })
                .collect();
            serde_json::to_vec(&serde_json::json!({
                "key": key, "version": version, "status": status, "data": {}, "reason": null,
                "pending": pending, "history": history, "input": "i", "correlation_id": "c",
                "generation": generation,
            }))
            .unwrap()
        });
        DeadLetter {
            partition: 0,
            offset: 0,
            timestamp_ms: Some(at),
            key: Some(key.as_bytes().to_vec()),
            payload,
            headers: Vec::new(),
        }
    }

    #[test]
    fn the_latest_state_is_the_newest_owners_then_the_highest_version() {
        use Status::*;
        let records = [
            record("order/1", 1, Some((Running, 1, 5, Some(100), 0))),
            record("order/1", 2, Some((Running, 2, 5, Some(100), 0))),
            // A revoked owner's late write: a higher version, an older generation.
            record("order/1", 3, Some((Completed, 3, 4, None, 0))),
            record("order/2", 1, Some((Completed, 4, 5, None, 0))),
            record("order/2", 2, None),
            record("order/3", 1, Some((Failed, 2, 5, None, 1))),
            // A rollback to a version of atoll without generations: its version decides.
            record("order/5", 1, Some((Running, 11, 7, Some(100), 0))),
            record("order/5", 2, Some((Compensating, 12, 0, Some(100), 0))),
            DeadLetter {
                key: None,
                ..record("x", 1, None)
            },
            DeadLetter {
                payload: Some(b"{".to_vec()),
                ..record("order/4", 1, None)
            },
        ];
        let (all, undecoded) = instances(&records);
        assert_eq!(undecoded, 2);
        assert_eq!(
            all.keys().collect::<Vec<_>>(),
            ["order/1", "order/3", "order/5"],
            "a tombstone removes"
        );
        let one = &all["order/1"];
        assert_eq!((one.latest().status, one.latest().version), (Running, 2));
        assert_eq!(one.versions.len(), 3);
        assert_eq!(one.since_ms(), Some(2));
        assert_eq!(all["order/5"].latest().version, 12);
    }

    #[test]
    fn stuck_and_timed_out_are_told_apart() {
        use Status::*;
        let now = 1_000_000;
        // (status, deadline, timeouts) → (stuck, timed out)
        let cases = [
            (Running, Some(now as u64 + 5_000), 0, false, false),
            // Past its deadline, within the grace: its owner is about to time it out.
            (Running, Some(now as u64 - 5_000), 0, false, false),
            (Running, Some(now as u64 - 20_000), 0, true, false),
            (Compensating, Some(now as u64 + 5_000), 1, false, true),
            (Compensating, Some(now as u64 + 5_000), 2, true, true),
            (Failed, None, 1, false, true),
            (Completed, None, 0, false, false),
        ];
        for (status, deadline, timeouts, stuck, timed_out) in cases {
            let (all, _) = instances(&[record("s/1", 1, Some((status, 1, 1, deadline, timeouts)))]);
            let i = &all["s/1"];
            assert_eq!(
                (i.stuck(now), i.shown_by(Show::TimedOut, now)),
                (stuck, timed_out),
                "{status:?} {deadline:?} {timeouts}"
            );
        }
    }

    /// A compensating saga with `history` (JSON) and a far deadline.
    fn compensating(history: serde_json::Value) -> Instance {
        let state = serde_json::json!({
            "key": "s/2", "version": 3, "status": "compensating", "data": {}, "reason": "no",
            "pending": {"request_id": "s/2@3", "phase": "compensation", "step": 0,
                "deadline_ms": u64::MAX / 2},
            "history": history, "input": "i", "correlation_id": "c", "generation": 1,
        });
        Instance::of(vec![(None, serde_json::from_value(state).unwrap())])
    }

    #[test]
    fn an_undo_that_timed_out_is_stuck_whatever_came_before() {
        // The action failed by its reply, then the compensation timed out once.
        let failed_then_undo_timed_out = compensating(serde_json::json!([
            {"request_id": "s/2@1", "ended": "replied", "phase": "action"},
            {"request_id": "s/2@2", "ended": "timed_out", "phase": "compensation"},
        ]));
        assert!(failed_then_undo_timed_out.stuck(0));
        let action_timed_out = compensating(serde_json::json!([
            {"request_id": "s/2@1", "ended": "timed_out", "phase": "action"},
        ]));
        assert!(!action_timed_out.stuck(0), "it compensates, as it should");
        // Written before requests kept their phase: two timeouts tell.
        let before = compensating(serde_json::json!([
            {"request_id": "s/2@1", "ended": "timed_out"},
            {"request_id": "s/2@2", "ended": "timed_out"},
        ]));
        assert!(before.stuck(0));
        // The compensation asked again, and answered: recovering.
        let answered = compensating(serde_json::json!([
            {"request_id": "s/2@1", "ended": "timed_out", "phase": "action"},
            {"request_id": "s/2@2", "ended": "timed_out", "phase": "compensation"},
            {"request_id": "s/2@3", "ended": "replied", "phase": "compensation"},
        ]));
        assert!(!answered.stuck(0));
    }

    #[test]
    fn filters_are_named_or_refused() {
        assert_eq!(Show::parse("").unwrap(), Show::All);
        assert_eq!(
            Show::parse("compensating").unwrap(),
            Show::State(Status::Compensating)
        );
        assert_eq!(Show::parse("stuck").unwrap(), Show::Stuck);
        assert_eq!(Show::parse("timed_out").unwrap(), Show::TimedOut);
        assert!(Show::parse("paused").unwrap_err().contains("no filter"));
    }
}
