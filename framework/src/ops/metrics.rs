//! The process's Prometheus metrics, served on `/metrics` (see [`super::http`]), and the
//! per-listener counters behind [`Running::stats`](crate::Running::stats).
//!
//! Each [`App`](crate::App) has a registry of its own, so several apps in one process (tests,
//! `shop demo`) never mix their figures.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::contract::dead_letter::DeadLetterKind;
use crate::contract::topic::ServiceId;
use crate::ops::stats::ListenerStats;
use crate::ops::status::Observed;
use crate::produce::ProduceMetrics;

/// The `kind` of `atoll_records_failed_total` for a dependency out of reach.
pub(crate) const UNAVAILABLE: &str = "unavailable";

/// The labels of a listener's metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    service: String,
    listener: String,
}

/// A listener's failures, by [`DeadLetterKind`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    service: String,
    listener: String,
    kind: String,
}

/// One partition a listener's consumer group consumes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    service: String,
    listener: String,
    group: String,
    topic: String,
    partition: i32,
}

/// A gauge of seconds.
type Seconds = Gauge<f64, AtomicU64>;

/// 0.5 ms to 16 s, doubling.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Buckets of records per batch: 1, 2, 4 … 1,024.
fn batch_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// The outbox's metrics, fed by the relay of the app's store.
#[derive(Debug, Default)]
pub(crate) struct OutboxMetrics {
    /// Rows the relay published (left by a crash, given back after a failed publish, or
    /// queued behind an older row of their key).
    pub(crate) relayed: Counter,
    /// Failed tries at publishing a row.
    pub(crate) failed: Counter,
    /// Rows that could never be published, written to their service's DLQ.
    pub(crate) dead_lettered: Counter,
    /// Scheduled records moved to the outbox once due.
    pub(crate) promoted: Counter,
}

/// Every metric family of one app.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    consumed: Family<ListenerLabels, Counter>,
    handled: Family<ListenerLabels, Counter>,
    failed: Family<FailureLabels, Counter>,
    retried: Family<ListenerLabels, Counter>,
    retry_pauses: Family<ListenerLabels, Counter>,
    dead_lettered: Family<ListenerLabels, Counter>,
    deduplicated: Family<ListenerLabels, Counter>,
    handler_duration: Family<ListenerLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<ListenerLabels, Gauge>,
    blocked: Family<ListenerLabels, Gauge>,
    assigned: Family<ListenerLabels, Gauge>,
    lag: Family<PartitionLabels, Gauge>,
    lag_seconds: Family<PartitionLabels, Seconds>,
    commit_duration: Family<ListenerLabels, Histogram, fn() -> Histogram>,
    commits_failed: Family<ListenerLabels, Counter>,
    batch: Family<ListenerLabels, Histogram, fn() -> Histogram>,
    producer_queue: Gauge,
    sagas_live: Family<ListenerLabels, Gauge>,
    produce: Arc<ProduceMetrics>,
    outbox: Arc<OutboxMetrics>,
    /// Every listener's metrics, in the order they were made: the status record reads them.
    listeners: parking_lot::Mutex<Vec<Arc<ListenerMetrics>>>,
    /// The live-saga gauges, by service and saga listener.
    sagas: parking_lot::Mutex<Vec<(ServiceId, &'static str, Gauge)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            consumed: Family::default(),
            handled: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            retry_pauses: Family::default(),
            dead_lettered: Family::default(),
            deduplicated: Family::default(),
            handler_duration: Family::new_with_constructor(duration_buckets),
            in_flight: Family::default(),
            blocked: Family::default(),
            assigned: Family::default(),
            lag: Family::default(),
            lag_seconds: Family::default(),
            commit_duration: Family::new_with_constructor(duration_buckets),
            commits_failed: Family::default(),
            batch: Family::new_with_constructor(batch_buckets),
            producer_queue: Gauge::default(),
            sagas_live: Family::default(),
            produce: Arc::default(),
            outbox: Arc::default(),
            listeners: Default::default(),
            sagas: Default::default(),
        };
        let r = &mut m.registry;
        r.register(
            "atoll_records_consumed",
            "Records the listener's consumer received",
            m.consumed.clone(),
        );
        r.register(
            "atoll_records_handled",
            "Records whose handler succeeded",
            m.handled.clone(),
        );
        r.register(
            "atoll_records_failed",
            "Failed attempts at a record, by kind (decode, unknown_type, handler, panic, timeout, or unavailable: the registry or the store out of reach)",
            m.failed.clone(),
        );
        r.register(
            "atoll_records_retried",
            "Retries: in-place attempts after the first, and records sent to the retry topic",
            m.retried.clone(),
        );
        r.register(
            "atoll_retry_pauses",
            "Times a retry topic's partition was paused until its head record is due",
            m.retry_pauses.clone(),
        );
        r.register(
            "atoll_records_dead_lettered",
            "Records written to the service's DLQ",
            m.dead_lettered.clone(),
        );
        r.register(
            "atoll_records_deduplicated",
            "Records a transactional listener skipped because its inbox shows them handled",
            m.deduplicated.clone(),
        );
        r.register(
            "atoll_handler_duration_seconds",
            "Time a handler attempt took",
            m.handler_duration.clone(),
        );
        r.register(
            "atoll_records_in_flight",
            "Records taken up by a worker and not yet finished",
            m.in_flight.clone(),
        );
        r.register(
            "atoll_partitions_blocked",
            "Partitions stopped behind a dead-letter or retry-topic write that keeps failing (a missing or forbidden topic)",
            m.blocked.clone(),
        );
        r.register(
            "atoll_assigned_partitions",
            "Partitions assigned to the listener's consumers",
            m.assigned.clone(),
        );
        r.register(
            "atoll_consumer_lag",
            "Records behind the partition's end, from the group's committed offset (librdkafka statistics)",
            m.lag.clone(),
        );
        r.register(
            "atoll_consumer_lag_seconds",
            "How far behind in time a lagging partition is: the age of the last record received from it (0 when it does not lag)",
            m.lag_seconds.clone(),
        );
        r.register(
            "atoll_records_produced",
            "Records the broker acknowledged (outputs, outbox records, dead letters, retry-topic copies, saga records)",
            m.produce.produced.clone(),
        );
        r.register(
            "atoll_produce_errors",
            "Records the broker did not take (their producers retry or fail as each path says)",
            m.produce.failed.clone(),
        );
        r.register(
            "atoll_produce_latency_seconds",
            "Time from handing a record to the producer to the broker's acknowledgement",
            m.produce.latency.clone(),
        );
        r.register(
            "atoll_batch_records",
            "Records handled together: in one database transaction of a transactional listener, or one call of a set-based handler (one observation per batch)",
            m.batch.clone(),
        );
        r.register(
            "atoll_sagas_live",
            "Running or compensating sagas the saga's listener holds in this process (saga.max_live caps them)",
            m.sagas_live.clone(),
        );
        r.register(
            "atoll_outbox_relayed",
            "Outbox rows the relay published (left by a crash, given back after a failed publish, or queued behind an older row of their key)",
            m.outbox.relayed.clone(),
        );
        r.register(
            "atoll_outbox_publish_failures",
            "Failed tries at publishing an outbox row",
            m.outbox.failed.clone(),
        );
        r.register(
            "atoll_outbox_dead_lettered",
            "Outbox rows that could never be published, written to their service's DLQ",
            m.outbox.dead_lettered.clone(),
        );
        r.register(
            "atoll_schedule_promoted",
            "Scheduled records moved to the outbox once due (ctx.schedule), to be published",
            m.outbox.promoted.clone(),
        );
        r.register(
            "atoll_commit_duration_seconds",
            "Time from an offset commit request to the broker's answer",
            m.commit_duration.clone(),
        );
        r.register(
            "atoll_commits_failed",
            "Offset commits the broker did not accept",
            m.commits_failed.clone(),
        );
        r.register(
            "atoll_producer_queue_depth",
            "Records produced and not yet acknowledged by the broker",
            m.producer_queue.clone(),
        );
        m
    }
}

impl Metrics {
    /// What the producer counts into.
    pub(crate) fn produce(&self) -> Arc<ProduceMetrics> {
        self.produce.clone()
    }

    /// The gauge of the live sagas of saga listener `listener`.
    pub(crate) fn sagas_live(&self, service: ServiceId, listener: &'static str) -> Gauge {
        let gauge = self.sagas_live.get_or_create_owned(&ListenerLabels {
            service: service.to_string(),
            listener: listener.to_owned(),
        });
        self.sagas.lock().push((service, listener, gauge.clone()));
        gauge
    }

    /// The live sagas of saga listener `listener`, if it is one.
    pub(crate) fn sagas_of(&self, service: ServiceId, listener: &str) -> Option<i64> {
        let sagas = self.sagas.lock();
        let found = sagas
            .iter()
            .find(|(s, l, _)| *s == service && *l == listener);
        found.map(|(_, _, gauge)| gauge.get())
    }

    /// The metrics of every listener of `service`, in the order they were made.
    pub(crate) fn listeners_of(&self, service: ServiceId) -> Vec<Arc<ListenerMetrics>> {
        let listeners = self.listeners.lock();
        listeners
            .iter()
            .filter(|l| l.service == service)
            .cloned()
            .collect()
    }

    /// The outbox's metrics, for the store's relay.
    pub(crate) fn outbox(&self) -> Arc<OutboxMetrics> {
        self.outbox.clone()
    }

    /// The metrics of one listener (made on first use): `group` is its consumer group.
    pub(crate) fn listener(
        &self,
        service: ServiceId,
        listener: &'static str,
        group: &str,
    ) -> Arc<ListenerMetrics> {
        let mut listeners = self.listeners.lock();
        if let Some(made) = listeners
            .iter()
            .find(|l| l.service == service && l.listener == listener)
        {
            return made.clone();
        }
        let made = Arc::new(self.make_listener(service, listener, group));
        listeners.push(made.clone());
        made
    }

    fn make_listener(
        &self,
        service: ServiceId,
        listener: &'static str,
        group: &str,
    ) -> ListenerMetrics {
        let labels = ListenerLabels {
            service: service.to_string(),
            listener: listener.to_owned(),
        };
        ListenerMetrics {
            observed: Observed::new(group),
            service,
            listener,
            consumed: self.consumed.get_or_create_owned(&labels),
            handled: self.handled.get_or_create_owned(&labels),
            retried: self.retried.get_or_create_owned(&labels),
            retry_pauses: self.retry_pauses.get_or_create_owned(&labels),
            dead_lettered: self.dead_lettered.get_or_create_owned(&labels),
            deduplicated: self.deduplicated.get_or_create_owned(&labels),
            handler_duration: self.handler_duration.get_or_create_owned(&labels),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            blocked: self.blocked.get_or_create_owned(&labels),
            assigned: self.assigned.get_or_create_owned(&labels),
            commit_duration: self.commit_duration.get_or_create_owned(&labels),
            commits_failed: self.commits_failed.get_or_create_owned(&labels),
            batch: self.batch.get_or_create_owned(&labels),
            // One series per kind from the start: nothing to look up when an attempt fails.
            failed: FailedCounters::new(|kind| {
                self.failed.get_or_create_owned(&FailureLabels {
                    service: labels.service.clone(),
                    listener: labels.listener.clone(),
                    kind: kind.as_str().to_owned(),
                })
            }),
            unavailable: self.failed.get_or_create_owned(&FailureLabels {
                service: labels.service.clone(),
                listener: labels.listener.clone(),
                kind: UNAVAILABLE.to_owned(),
            }),
            lag: self.lag.clone(),
            lag_seconds: self.lag_seconds.clone(),
        }
    }

    /// The OpenMetrics text exposition, with the producer's queue depth as of now.
    pub(crate) fn encode(&self, producer_queue: i64) -> String {
        self.producer_queue.set(producer_queue);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing into a String does not fail");
        out
    }
}

/// `atoll_records_failed_total` of one listener, one series per [`DeadLetterKind`]: made once,
/// so a failed attempt looks nothing up.
#[derive(Debug)]
pub(crate) struct FailedCounters {
    decode: Counter,
    unknown_type: Counter,
    handler: Counter,
    panic: Counter,
    timeout: Counter,
}

impl FailedCounters {
    fn new(mut series: impl FnMut(DeadLetterKind) -> Counter) -> Self {
        Self {
            decode: series(DeadLetterKind::Decode),
            unknown_type: series(DeadLetterKind::UnknownType),
            handler: series(DeadLetterKind::Handler),
            panic: series(DeadLetterKind::Panic),
            timeout: series(DeadLetterKind::Timeout),
        }
    }

    /// The series of `kind`; a new kind fails to compile here until it has one. `None` for
    /// [`DeadLetterKind::Publish`], which is no attempt of a listener's (the outbox counts it
    /// in `atoll_outbox_dead_lettered_total`).
    fn of(&self, kind: DeadLetterKind) -> Option<&Counter> {
        match kind {
            DeadLetterKind::Decode => Some(&self.decode),
            DeadLetterKind::UnknownType => Some(&self.unknown_type),
            DeadLetterKind::Handler => Some(&self.handler),
            DeadLetterKind::Panic => Some(&self.panic),
            DeadLetterKind::Timeout => Some(&self.timeout),
            DeadLetterKind::Publish => None,
        }
    }

    /// Each kind's count.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (DeadLetterKind, u64)> + '_ {
        DeadLetterKind::ALL
            .into_iter()
            .filter_map(|kind| Some((kind, self.of(kind)?.get())))
    }
}

/// One listener's metrics, shared by its main and retry consumers.
#[derive(Debug)]
pub(crate) struct ListenerMetrics {
    pub(crate) service: ServiceId,
    pub(crate) listener: &'static str,
    /// What the status record shows beyond the counters: handling-time percentiles, the last
    /// failures, the partitions held.
    pub(crate) observed: Observed,
    pub(crate) consumed: Counter,
    pub(crate) handled: Counter,
    pub(crate) retried: Counter,
    /// Times a retry topic's partition was paused until its head record is due.
    pub(crate) retry_pauses: Counter,
    pub(crate) dead_lettered: Counter,
    /// Records a transactional listener skipped: its inbox showed them handled.
    pub(crate) deduplicated: Counter,
    pub(crate) handler_duration: Histogram,
    pub(crate) in_flight: Gauge,
    /// Partitions stopped behind a write that keeps failing.
    pub(crate) blocked: Gauge,
    pub(crate) assigned: Gauge,
    pub(crate) commit_duration: Histogram,
    pub(crate) commits_failed: Counter,
    /// Records per batch: a transactional listener's committed transaction, a set-based
    /// handler's call.
    pub(crate) batch: Histogram,
    /// Attempts that failed because a dependency was out of reach (registry, store):
    /// `atoll_records_failed_total{kind="unavailable"}`.
    pub(crate) unavailable: Counter,
    pub(crate) failed: FailedCounters,
    lag: Family<PartitionLabels, Gauge>,
    lag_seconds: Family<PartitionLabels, Seconds>,
}

impl ListenerMetrics {
    /// Counts a failed attempt of `kind`.
    pub(crate) fn failed(&self, kind: DeadLetterKind) {
        if let Some(series) = self.failed.of(kind) {
            series.inc();
        }
    }

    /// Observes a duration in seconds into `histogram`.
    pub(crate) fn observe(histogram: &Histogram, took: Duration) {
        histogram.observe(took.as_secs_f64());
    }

    /// Sets the lag of `topic`'s `partition` for consumer group `group`: in records, and in
    /// seconds when known.
    pub(crate) fn set_lag(
        &self,
        topic: &str,
        group: &str,
        partition: i32,
        records: i64,
        seconds: Option<f64>,
    ) {
        let labels = self.partition(topic, group, partition);
        self.lag.get_or_create(&labels).set(records);
        if let Some(s) = seconds {
            self.lag_seconds.get_or_create(&labels).set(s);
        }
    }

    /// Drops the lag of partitions no longer assigned to `group`.
    pub(crate) fn forget_lag(&self, topic: &str, group: &str, partitions: &[i32]) {
        for p in partitions {
            let labels = self.partition(topic, group, *p);
            self.lag.remove(&labels);
            self.lag_seconds.remove(&labels);
        }
    }

    fn partition(&self, topic: &str, group: &str, partition: i32) -> PartitionLabels {
        PartitionLabels {
            service: self.service.to_string(),
            listener: self.listener.to_owned(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
        }
    }

    /// The counters as a [`ListenerStats`].
    pub(crate) fn snapshot(&self) -> ListenerStats {
        ListenerStats {
            service: self.service,
            listener: self.listener,
            handled: self.handled.get(),
            retries: self.retried.get(),
            retry_pauses: self.retry_pauses.get(),
            dead_lettered: self.dead_lettered.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_with_its_labels() {
        let m = Metrics::default();
        let id = ServiceId::new("acme", "shop", "orders").unwrap();
        let l = m.listener(id, "place_order", "acme.shop.orders-place_order");
        l.consumed.inc();
        l.handled.inc();
        l.failed(DeadLetterKind::Timeout);
        l.set_lag("acme.shop.orders.commands", "g", 3, 42, Some(1.5));
        let produce = m.produce();
        produce.produced.inc();
        produce.latency.observe(0.002);
        ListenerMetrics::observe(&l.handler_duration, Duration::from_millis(3));
        let text = m.encode(7);
        for line in [
            r#"atoll_records_consumed_total{service="acme.shop.orders",listener="place_order"} 1"#,
            r#"atoll_records_handled_total{service="acme.shop.orders",listener="place_order"} 1"#,
            r#"atoll_records_failed_total{service="acme.shop.orders",listener="place_order",kind="timeout"} 1"#,
            r#"atoll_consumer_lag{service="acme.shop.orders",listener="place_order",group="g",topic="acme.shop.orders.commands",partition="3"} 42"#,
            r#"atoll_consumer_lag_seconds{service="acme.shop.orders",listener="place_order",group="g",topic="acme.shop.orders.commands",partition="3"} 1.5"#,
            "atoll_records_produced_total 1",
            "atoll_produce_errors_total 0",
            "atoll_produce_latency_seconds_count 1",
            "atoll_outbox_dead_lettered_total 0",
            r#"atoll_handler_duration_seconds_count{service="acme.shop.orders",listener="place_order"} 1"#,
            "atoll_producer_queue_depth 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        for kind in DeadLetterKind::ALL {
            let series = format!(
                r#"atoll_records_failed_total{{service="acme.shop.orders",listener="place_order",kind="{}"}}"#,
                kind.as_str()
            );
            let want = if kind == DeadLetterKind::Timeout {
                1
            } else {
                0
            };
            assert!(
                text.contains(&format!("{series} {want}\n")),
                "{series} {want}"
            );
        }
        l.forget_lag("acme.shop.orders.commands", "g", &[3]);
        assert!(!m.encode(0).contains("partition=\"3\""));
        let s = l.snapshot();
        assert_eq!((s.handled, s.retries, s.dead_lettered), (1, 0, 0));
    }
}
