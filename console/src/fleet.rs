//! What the console knows of the running services: the status records read from their
//! `private.status` topics (see `atoll::contract::status`), and what it derives from them for
//! its pages. A pure core, fed records by [`crate::source`] and read by [`crate::pages`].
//!
//! A record holds counters since its process started; rates come from two records of one
//! process, and a counter that went down (the process restarted under the same name) counts as
//! a new start, not as a negative rate. A listener's lag is the sum of its partitions' lags as
//! their owners last reported them; its trend compares the lag now with the lag about a minute
//! ago (Kafka consumer-lag tools call a lag that keeps growing a stuck or slow consumer; one
//! point is no trend).

use std::collections::{BTreeMap, VecDeque};

use atoll::contract::status::{ErrorSeen, PartitionStatus, ProcessStatus};

/// How many records of a process are kept: ten minutes at the default 5 s interval.
pub const HISTORY: usize = 120;

/// A process is stale when its last record is older than this many of its intervals.
const STALE_AFTER_INTERVALS: i64 = 3;

/// How far back a trend looks, in milliseconds.
const TREND_WINDOW_MS: i64 = 60_000;

/// A point of a listener's history: (Unix ms, lag in records, records handled per second).
pub type Point = (i64, i64, f64);

/// Every process's recent records, by service and process name.
#[derive(Debug, Default)]
pub struct Fleet {
    processes: BTreeMap<(String, String), VecDeque<ProcessStatus>>,
    /// Services whose status topic exists: shown even when no process of theirs runs.
    known: std::collections::BTreeSet<String>,
    /// The topics each listener's group reads (not the retry topic), as any record ever read
    /// showed them: known after the processes stopped, when their groups may be moved.
    feeds: BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// Whether a process still reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its last record is recent.
    Alive,
    /// Its last record is this many seconds old: it stopped without its tombstone, or cannot
    /// reach the broker.
    Stale(i64),
}

/// Where a listener's lag is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    /// Fewer than two points a while apart.
    Unknown,
    /// Higher than a minute ago.
    Growing,
    /// Lower than a minute ago.
    Shrinking,
    /// The same.
    Steady,
}

impl Trend {
    /// The word the pages show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Growing => "growing",
            Self::Shrinking => "shrinking",
            Self::Steady => "steady",
        }
    }
}

/// One process, as the pages show it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessView {
    /// Its name.
    pub name: String,
    /// Whether it still reports.
    pub liveness: Liveness,
    /// Its last record.
    pub last: ProcessStatus,
}

/// One listener over every process that runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerView {
    /// Its name.
    pub name: String,
    /// Its consumer group.
    pub group: String,
    /// The processes that run it and are alive.
    pub processes: Vec<String>,
    /// Each partition held, with its owner.
    pub partitions: Vec<(String, PartitionStatus)>,
    /// Records behind, summed over the partitions.
    pub lag: i64,
    /// The furthest behind in time a partition is, in seconds.
    pub lag_seconds: f64,
    /// The lag's way.
    pub trend: Trend,
    /// Records handled per second, over the processes' last two records.
    pub rate: f64,
    /// The highest 99th-percentile handling time of the processes' last windows.
    pub p99_ms: Option<f64>,
    /// Failed attempts since the processes started, by kind, summed.
    pub failed: BTreeMap<String, u64>,
    /// Dead letters written since the processes started, summed.
    pub dead_lettered: u64,
    /// Live sagas, for a saga's listener.
    pub sagas_live: Option<i64>,
    /// The last failures of every process, newest first.
    pub last_errors: Vec<(String, ErrorSeen)>,
    /// (Unix ms, lag, records handled per second) over the history, for the charts.
    pub history: Vec<Point>,
}

/// One service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    /// `<company>.<namespace>.<service>`.
    pub name: String,
    /// Its processes, alive or stale.
    pub processes: Vec<ProcessView>,
    /// Its listeners.
    pub listeners: Vec<ListenerView>,
    /// Records per second its alive processes send to each topic (each over its last two
    /// records; 0 with one record).
    pub produced: BTreeMap<String, f64>,
}

impl Fleet {
    /// Knows `service` (its status topic exists), so that it is shown when none of its
    /// processes runs: a service nobody runs is what an operator most needs to see.
    pub fn know(&mut self, service: &str) {
        self.known.insert(service.to_owned());
    }

    /// Takes a record read from a status topic: `value` `None` is a tombstone (the process
    /// stopped). A record older than the process's last is ignored (read again after a
    /// reassignment, say).
    pub fn apply(&mut self, service: &str, process: &str, value: Option<ProcessStatus>) {
        let key = (service.to_owned(), process.to_owned());
        let Some(record) = value else {
            self.processes.remove(&key);
            return;
        };
        for l in &record.listeners {
            let topics = l.partitions.iter().map(|p| &p.topic);
            let main = topics.filter(|t| !atoll::contract::is_retry_topic(t));
            self.feeds
                .entry(l.group.clone())
                .or_default()
                .extend(main.cloned());
        }
        let history = self.processes.entry(key).or_default();
        if history
            .back()
            .is_some_and(|last| last.at_ms >= record.at_ms)
        {
            return;
        }
        history.push_back(record);
        while history.len() > HISTORY {
            history.pop_front();
        }
    }

    /// The topics `group` reads, as its processes' records showed them (none known: empty).
    pub fn topics_of(&self, group: &str) -> Vec<String> {
        self.feeds
            .get(group)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every service as of `now_ms`, by name.
    pub fn services(&self, now_ms: i64) -> Vec<ServiceView> {
        let mut services: BTreeMap<&str, Vec<&VecDeque<ProcessStatus>>> = BTreeMap::new();
        for service in &self.known {
            services.entry(service).or_default();
        }
        for ((service, _), history) in &self.processes {
            services.entry(service).or_default().push(history);
        }
        services
            .into_iter()
            .map(|(name, histories)| service_view(name, &histories, now_ms))
            .collect()
    }
}

/// Whether a process whose last record is `last` is alive at `now_ms`.
pub(crate) fn liveness(last: &ProcessStatus, now_ms: i64) -> Liveness {
    let age = now_ms.saturating_sub(last.at_ms);
    let interval = i64::try_from(last.interval_ms).unwrap_or(i64::MAX);
    let limit = STALE_AFTER_INTERVALS
        .saturating_mul(interval)
        .saturating_add(2_000);
    if age <= limit {
        Liveness::Alive
    } else {
        Liveness::Stale(age / 1000)
    }
}

fn service_view(name: &str, histories: &[&VecDeque<ProcessStatus>], now_ms: i64) -> ServiceView {
    let processes: Vec<ProcessView> = histories
        .iter()
        .filter_map(|h| h.back())
        .map(|last| ProcessView {
            name: last.process.clone(),
            liveness: liveness(last, now_ms),
            last: last.clone(),
        })
        .collect();
    let alive: Vec<&VecDeque<ProcessStatus>> = histories
        .iter()
        .copied()
        .filter(|h| {
            h.back()
                .is_some_and(|l| liveness(l, now_ms) == Liveness::Alive)
        })
        .collect();
    let mut names: Vec<String> = Vec::new();
    for h in &alive {
        for l in h.back().map(|r| r.listeners.as_slice()).unwrap_or_default() {
            if !names.contains(&l.name) {
                names.push(l.name.clone());
            }
        }
    }
    let listeners = names.iter().map(|n| listener_view(n, &alive)).collect();
    ServiceView {
        name: name.to_owned(),
        processes,
        listeners,
        produced: produced(&alive),
    }
}

impl ListenerView {
    /// Listener `name`, with nothing counted yet.
    pub(crate) fn empty(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            group: String::new(),
            processes: Vec::new(),
            partitions: Vec::new(),
            lag: 0,
            lag_seconds: 0.0,
            trend: Trend::Unknown,
            rate: 0.0,
            p99_ms: None,
            failed: BTreeMap::new(),
            dead_lettered: 0,
            sagas_live: None,
            last_errors: Vec::new(),
            history: Vec::new(),
        }
    }
}

fn listener_view(name: &str, alive: &[&VecDeque<ProcessStatus>]) -> ListenerView {
    let mut view = ListenerView::empty(name);
    for history in alive {
        let Some(last) = history.back() else { continue };
        let Some(l) = last.listeners.iter().find(|l| l.name == name) else {
            continue;
        };
        view.group.clone_from(&l.group);
        view.processes.push(last.process.clone());
        for p in &l.partitions {
            view.lag += p.lag.unwrap_or(0).max(0);
            view.lag_seconds = view.lag_seconds.max(p.lag_seconds.unwrap_or(0.0));
            view.partitions.push((last.process.clone(), p.clone()));
        }
        view.p99_ms = max_of(view.p99_ms, l.handling.p99_ms);
        for (kind, n) in &l.failed {
            *view.failed.entry(kind.clone()).or_default() += n;
        }
        view.dead_lettered += l.dead_lettered;
        if let Some(live) = l.sagas_live {
            *view.sagas_live.get_or_insert(0) += live;
        }
        let errors = l
            .last_errors
            .iter()
            .map(|e| (last.process.clone(), e.clone()));
        view.last_errors.extend(errors);
    }
    view.partitions
        .sort_by(|a, b| (&a.1.topic, a.1.partition).cmp(&(&b.1.topic, b.1.partition)));
    view.last_errors
        .sort_by_key(|e| std::cmp::Reverse(e.1.at_ms));
    view.last_errors
        .truncate(atoll::contract::status::LAST_ERRORS);
    view.history = history(name, alive);
    if let Some(&(_, _, rate)) = view.history.last() {
        view.rate = rate;
    }
    view.trend = trend(&view.history);
    view
}

/// How far back the rate of records sent is taken from: the producer's counts move once per
/// statistics interval, which the status records are not aligned with.
const PRODUCED_OVER_MS: i64 = 15_000;

/// Records per second sent to each topic by `alive` processes, summed: each process's over
/// its records of the last [`PRODUCED_OVER_MS`] or more (since it started), 0 with one record.
fn produced(alive: &[&VecDeque<ProcessStatus>]) -> BTreeMap<String, f64> {
    let mut rates = BTreeMap::new();
    for history in alive {
        let Some(last) = history.back() else { continue };
        let same_run = history.iter().filter(|r| r.started_ms == last.started_ms);
        let before = same_run
            .take_while(|r| r.at_ms < last.at_ms)
            .filter(|r| r.at_ms <= last.at_ms - PRODUCED_OVER_MS)
            .last()
            .or_else(|| {
                let earliest = history.iter().find(|r| r.started_ms == last.started_ms);
                earliest.filter(|r| r.at_ms < last.at_ms)
            });
        for (topic, n) in &last.produced {
            let rate = before.map_or(0.0, |b| {
                let then = b.produced.get(topic).copied().unwrap_or(0);
                rate_between((b.at_ms, 0, then), (last.at_ms, 0, *n))
            });
            *rates.entry(topic.clone()).or_insert(0.0) += rate;
        }
    }
    rates
}

fn max_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The listener's (time, lag, rate) series: at each record of any process, the lag summed
/// over every process's latest record until then, and the handling rate summed over each
/// process's rate between its two latest records until then.
fn history(name: &str, alive: &[&VecDeque<ProcessStatus>]) -> Vec<Point> {
    // Each process's points: (at, lag of its partitions, handled since its start).
    let per_process: Vec<Vec<(i64, i64, u64)>> = alive
        .iter()
        .map(|h| {
            h.iter()
                .filter_map(|r| {
                    let l = r.listeners.iter().find(|l| l.name == name)?;
                    let lag = l.partitions.iter().map(|p| p.lag.unwrap_or(0).max(0)).sum();
                    Some((r.at_ms, lag, l.handled))
                })
                .collect()
        })
        .collect();
    let mut times: Vec<i64> = per_process.iter().flatten().map(|p| p.0).collect();
    times.sort_unstable();
    times.dedup();
    // Each process's cursor: how many of its points lie at or before the time at hand.
    let mut upto = vec![0usize; per_process.len()];
    times
        .into_iter()
        .map(|t| {
            let mut lag = 0;
            let mut rate = 0.0;
            for (points, n) in per_process.iter().zip(upto.iter_mut()) {
                while *n < points.len() && points[*n].0 <= t {
                    *n += 1;
                }
                let seen = &points[..*n];
                if let Some(last) = seen.last() {
                    lag += last.1;
                }
                if let [.., before, last] = seen {
                    rate += rate_between(*before, *last);
                }
            }
            (t, lag, rate)
        })
        .collect()
}

/// Records per second between two points of one process; 0 across a restart (the counter
/// went down) or without time between them.
fn rate_between(before: (i64, i64, u64), after: (i64, i64, u64)) -> f64 {
    let ms = after.0 - before.0;
    if ms <= 0 || after.2 < before.2 {
        return 0.0;
    }
    (after.2 - before.2) as f64 * 1000.0 / ms as f64
}

/// The lag's way: the last point against the earliest within [`TREND_WINDOW_MS`] of it (at
/// least one other point, some time apart).
fn trend(history: &[Point]) -> Trend {
    let Some(&(now, lag, _)) = history.last() else {
        return Trend::Unknown;
    };
    let Some(&(then, before, _)) = history.iter().find(|p| now - p.0 <= TREND_WINDOW_MS) else {
        return Trend::Unknown;
    };
    if then == now {
        return Trend::Unknown;
    }
    match lag.cmp(&before) {
        std::cmp::Ordering::Greater => Trend::Growing,
        std::cmp::Ordering::Less => Trend::Shrinking,
        std::cmp::Ordering::Equal => Trend::Steady,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(process: &str, at_ms: i64, handled: u64, lag: i64) -> ProcessStatus {
        let json = serde_json::json!({
            "format": 1, "service": "acme.shop.orders", "process": process,
            "atoll_version": "0.1.0", "build": null, "started_ms": 0, "at_ms": at_ms,
            "interval_ms": 5000, "outbox": null, "inbox": null,
            "listeners": [{
                "name": "place", "group": "acme.shop.orders-place",
                "partitions": [{"topic": "acme.shop.orders.commands", "partition": 0,
                    "committed": 10, "end": 10 + lag, "lag": lag, "lag_seconds": 1.0,
                    "paused": false, "blocked": null}],
                "consumed": handled, "handled": handled, "retried": 0, "dead_lettered": 1,
                "deduplicated": 0, "failed": {"handler": 2}, "in_flight": 0,
                "handling": {"count": 5, "p50_ms": 1.0, "p99_ms": at_ms as f64 / 1000.0},
                "sagas_live": null, "last_errors": [{"at_ms": at_ms, "kind": "handler",
                    "then": "dead-lettered", "cause": "no", "topic": "t", "partition": 0,
                    "offset": 3}]
            }]
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_trend_compares_the_lag_now_with_a_minute_ago() {
        #[rustfmt::skip]
        let cases: [(&[Point], Trend); 7] = [
            (&[], Trend::Unknown),
            (&[(0, 5, 0.0)], Trend::Unknown),
            (&[(0, 5, 0.0), (5_000, 9, 0.0)], Trend::Growing),
            (&[(0, 9, 0.0), (5_000, 5, 0.0)], Trend::Shrinking),
            (&[(0, 5, 0.0), (5_000, 5, 0.0)], Trend::Steady),
            // The point two minutes back is out of the window: 7 against 3 a minute ago.
            (&[(0, 100, 0.0), (60_000, 3, 0.0), (120_000, 7, 0.0)], Trend::Growing),
            // Nothing else within the window.
            (&[(0, 100, 0.0), (120_000, 7, 0.0)], Trend::Unknown),
        ];
        for (history, want) in cases {
            assert_eq!(trend(history), want, "{history:?}");
        }
    }

    #[test]
    fn rates_come_from_two_records_and_a_restart_is_no_negative_rate() {
        #[rustfmt::skip]
        let cases = [
            ((0, 0, 0), (5_000, 0, 500), 100.0),
            ((0, 0, 500), (5_000, 0, 10), 0.0),
            ((5_000, 0, 0), (5_000, 0, 10), 0.0),
        ];
        for (before, after, want) in cases {
            assert_eq!(rate_between(before, after), want, "{before:?} {after:?}");
        }
    }

    #[test]
    fn rates_sent_span_fifteen_seconds_of_one_run() {
        let topic = "acme.shop.orders.events";
        let sent = |at_ms: i64, started_ms: i64, n: u64| {
            let mut r = record("a", at_ms, 0, 0);
            r.started_ms = started_ms;
            r.produced = [(topic.to_owned(), n)].into();
            r
        };
        let rate = |records: Vec<ProcessStatus>| {
            let mut fleet = Fleet::default();
            for r in records {
                fleet.apply("acme.shop.orders", "a", Some(r));
            }
            fleet.services(20_000)[0].produced.get(topic).copied()
        };
        // From the record 15 s or more before the last: 300 in 20 s.
        let steady = vec![sent(0, 0, 0), sent(10_000, 0, 100), sent(20_000, 0, 300)];
        assert_eq!(rate(steady), Some(15.0));
        // Fewer than 15 s of records: from the first.
        assert_eq!(rate(vec![sent(0, 0, 0), sent(5_000, 0, 50)]), Some(10.0));
        assert_eq!(rate(vec![sent(15_000, 0, 7)]), Some(0.0), "one record");
        // A restart under the same name: the records before it are another run's.
        let restarted = vec![
            sent(0, 0, 900),
            sent(10_000, 9_000, 10),
            sent(20_000, 9_000, 110),
        ];
        assert_eq!(rate(restarted), Some(10.0));
    }

    #[test]
    fn liveness_allows_three_intervals_and_a_little() {
        let r = record("a", 100_000, 0, 0);
        assert_eq!(liveness(&r, 100_000), Liveness::Alive);
        assert_eq!(liveness(&r, 117_000), Liveness::Alive);
        assert_eq!(liveness(&r, 117_001), Liveness::Stale(17));
        let mut odd = r.clone();
        odd.interval_ms = u64::MAX;
        assert_eq!(liveness(&odd, i64::MAX), Liveness::Alive, "no overflow");
    }

    #[test]
    fn a_listener_sums_its_processes_and_drops_the_stale_and_the_stopped() {
        let mut fleet = Fleet::default();
        let s = "acme.shop.orders";
        fleet.apply(s, "a", Some(record("a", 0, 0, 10)));
        fleet.apply(s, "a", Some(record("a", 10_000, 1_000, 20)));
        // An older record read again is ignored.
        fleet.apply(s, "a", Some(record("a", 5_000, 7, 0)));
        fleet.apply(s, "b", Some(record("b", 10_000, 300, 5)));
        fleet.apply(s, "b", Some(record("b", 20_000, 800, 1)));
        fleet.apply(s, "gone", Some(record("gone", 20_000, 1, 1)));
        fleet.apply(s, "gone", None);
        fleet.apply(s, "old", Some(record("old", -60_000, 1, 1_000)));
        let services = fleet.services(20_000);
        assert_eq!(services.len(), 1);
        let orders = &services[0];
        let names: Vec<(&str, Liveness)> = orders
            .processes
            .iter()
            .map(|p| (p.name.as_str(), p.liveness))
            .collect();
        assert_eq!(
            names,
            [
                ("a", Liveness::Alive),
                ("b", Liveness::Alive),
                ("old", Liveness::Stale(80))
            ]
        );
        // What a stopped process's group read stays known.
        assert_eq!(
            fleet.topics_of("acme.shop.orders-place"),
            ["acme.shop.orders.commands"]
        );
        assert!(fleet.topics_of("acme.shop.orders-other").is_empty());
        fleet.know("acme.shop.payments");
        let services = fleet.services(20_000);
        assert_eq!(services[1].name, "acme.shop.payments");
        assert!(services[1].processes.is_empty() && services[1].listeners.is_empty());
        let place = &orders.listeners[0];
        assert_eq!(place.processes, ["a", "b"]);
        assert_eq!((place.lag, place.partitions.len()), (21, 2));
        // a: 100/s over its last two records; b: 50/s.
        assert_eq!(place.rate, 150.0);
        assert_eq!(place.trend, Trend::Growing, "10 at 0 s, 21 at 20 s");
        assert_eq!(place.p99_ms, Some(20.0));
        assert_eq!((place.failed["handler"], place.dead_lettered), (4, 2));
        assert_eq!(place.last_errors[0].0, "b", "newest first");
        assert_eq!(
            place.history.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(),
            [(0, 10), (10_000, 25), (20_000, 21)]
        );
    }
}
