//! Publishes each service's status record (see [`crate::contract::status`]) every
//! `status.interval_ms` on its `private.status` topic, keyed by the process name, and a
//! tombstone under that key when the process stops gracefully: the compacted topic then holds
//! one record per running process, which is all the operator console reads.
//!
//! The record is assembled from what the process counts anyway (the listeners' metrics and
//! what their consumers last saw), plus two cheap statements on the store: publishing costs a
//! few hundred microseconds per interval, and nothing per record beyond one counter increment
//! for the handling-time percentiles.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::StartEnv;
use crate::contract::status::{InboxStatus, OutboxStatus, ProcessStatus, STATUS_FORMAT};
use crate::contract::topic::{PrivateTopic, ServiceId};
use crate::ops::metrics::Metrics;
use crate::ops::status::{listener_status, now_ms};
use crate::produce::{Pending, Producer};
use crate::store::sizes::{sizes, Sizes};
use crate::store::Store;

/// The status topic's partition: it has one (see [`PrivateTopic::config`]); records and
/// tombstones name it, so that a topic an operator made with more stays one partition's read.
const PARTITION: i32 = 0;

/// How long a round waits for the broker's acknowledgements before it gives up on them.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// How long the tombstones may take to be handed to the producer at shutdown.
const HAND_OVER: Duration = Duration::from_secs(1);

/// What the publisher reads and where it writes.
pub(super) struct Publisher {
    producer: Producer,
    metrics: Arc<Metrics>,
    store: Option<Store>,
    services: Vec<ServiceId>,
    process: String,
    build: Option<String>,
    interval: Duration,
    started_ms: i64,
}

impl Publisher {
    /// Starts publishing the status of `services` (until the process stops), unless
    /// `status.interval_ms` is 0.
    pub(super) fn spawn(
        env: &StartEnv<'_>,
        metrics: Arc<Metrics>,
        services: Vec<ServiceId>,
        started_ms: i64,
    ) -> Option<JoinHandle<()>> {
        let config = &env.config.status;
        let publisher = Self {
            producer: env.producer.clone(),
            metrics,
            store: env.store.cloned(),
            services,
            process: env.process.to_owned(),
            build: config.build.clone(),
            interval: config.interval()?,
            started_ms,
        };
        Some(tokio::spawn(publisher.run(env.stop.clone())))
    }

    /// Publishes every interval until `stop` (a round under way is dropped), then hands the
    /// tombstones to the producer: the shutdown's flush sends them, and waits for them as long
    /// as it waits for anything.
    async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.publish() => {}
            }
        }
        let tombstones = async {
            for service in &self.services {
                let topic = service.private_topic(PrivateTopic::Status);
                let key = self.process.as_bytes();
                if let Err(e) = self
                    .producer
                    .tombstone(topic.as_str(), PARTITION, key)
                    .await
                {
                    tracing::debug!(error = %e, "cannot remove the process's status record");
                }
            }
        };
        // Handing them over waits only while the producer's queue is full (a broker long out
        // of reach): then the shutdown goes on without them.
        if tokio::time::timeout(HAND_OVER, tombstones).await.is_err() {
            tracing::debug!("the status tombstones were not handed over in {HAND_OVER:?}");
        }
    }

    /// One round: each service's record.
    async fn publish(&self) {
        let sizes = match &self.store {
            Some(store) => match sizes(store).await {
                Ok(sizes) => Some(sizes),
                Err(e) => {
                    tracing::debug!(error = %e, "status: cannot read the store's sizes");
                    None
                }
            },
            None => None,
        };
        let mut sent = Vec::new();
        for service in &self.services {
            let record = self.record(*service, sizes);
            let value = serde_json::to_vec(&record).expect("a status record serializes");
            let topic = service.private_topic(PrivateTopic::Status);
            let key = Some(self.process.as_bytes());
            let headers = OwnedHeaders::new();
            let send = self
                .producer
                .send_to(topic.as_str(), Some(PARTITION), key, &value, headers);
            match send.await {
                Ok(pending) => sent.push(pending),
                Err(e) => tracing::debug!(error = %e, "cannot publish the process's status"),
            }
        }
        acked(sent).await;
    }

    /// The record of `service` now.
    fn record(&self, service: ServiceId, sizes: Option<Sizes>) -> ProcessStatus {
        let identity = Identity {
            process: &self.process,
            build: self.build.as_deref(),
            started_ms: self.started_ms,
            interval: self.interval,
        };
        let produced = self.producer.sent_by_topic();
        process_status(&self.metrics, service, &identity, sizes, produced)
    }
}

/// Who publishes: the process, its build, when it started, how often it publishes.
struct Identity<'a> {
    process: &'a str,
    build: Option<&'a str>,
    started_ms: i64,
    interval: Duration,
}

/// The record of `service` from what `metrics` counted and the store's `sizes`.
fn process_status(
    metrics: &Metrics,
    service: ServiceId,
    who: &Identity<'_>,
    sizes: Option<Sizes>,
    produced: std::collections::BTreeMap<String, u64>,
) -> ProcessStatus {
    let listeners = metrics.listeners_of(service);
    let listeners = listeners
        .iter()
        .map(|l| listener_status(l, metrics.sagas_of(service, l.listener)))
        .collect();
    let outbox = metrics.outbox();
    ProcessStatus {
        format: STATUS_FORMAT,
        service: service.to_string(),
        process: who.process.to_owned(),
        atoll_version: env!("CARGO_PKG_VERSION").to_owned(),
        build: who.build.map(str::to_owned),
        started_ms: who.started_ms,
        at_ms: now_ms(),
        interval_ms: who.interval.as_millis() as u64,
        listeners,
        outbox: sizes.map(|s| OutboxStatus {
            rows: s.outbox_rows,
            oldest_seconds: s.oldest_ms.map(|ms| ms as f64 / 1000.0),
            relayed: outbox.relayed.get(),
            failed: outbox.failed.get(),
            dead_lettered: outbox.dead_lettered.get(),
        }),
        inbox: sizes.map(|s| InboxStatus { rows: s.inbox_rows }),
        produced,
    }
}

/// What the status record costs, for the benchmark (`atoll-bench status-cost`): the mean
/// time to assemble and serialize one service's record of `listeners` listeners, each holding
/// `partitions` partitions and the most failures a record keeps, over `rounds` rounds; and the
/// mean time one handler attempt's observation (the handling-time histogram) adds.
#[doc(hidden)]
pub fn status_cost(listeners: usize, partitions: usize, rounds: u32) -> (Duration, Duration) {
    let metrics = Metrics::default();
    let service = ServiceId::new("acme", "bench", "status").expect("a valid id");
    let names: Vec<&'static str> = (0..listeners)
        .map(|i| &*Box::leak(format!("listener-{i}").into_boxed_str()))
        .collect();
    for name in &names {
        let l = metrics.listener(service, name, &format!("{service}-{name}"));
        for n in 0..crate::contract::status::LAST_ERRORS as i64 {
            let cause = "the payment provider answered 503 Service Unavailable";
            let at = ("acme.bench.status.commands", 0, n);
            l.observed
                .failed("handler", cause, crate::ops::status::Then::Retrying, at);
        }
        let held = (0..partitions as i32)
            .map(|p| crate::contract::status::PartitionStatus {
                topic: "acme.bench.status.commands".into(),
                partition: p,
                committed: Some(1_000_000),
                end: Some(1_000_100),
                lag: Some(100),
                lag_seconds: Some(0.2),
                paused: false,
                blocked: None,
                held: None,
            })
            .collect();
        l.observed.holds("acme.bench.status.commands", held);
    }
    let who = Identity {
        process: "bench-1",
        build: Some("bench"),
        started_ms: 0,
        interval: Duration::from_secs(5),
    };
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let produced = (0..6)
            .map(|n| (format!("acme.bench.peer{n}.commands"), 1_000_000))
            .collect();
        let record = process_status(&metrics, service, &who, None, produced);
        std::hint::black_box(serde_json::to_vec(&record).expect("serializes"));
    }
    let per_record = started.elapsed() / rounds.max(1);
    let l = metrics.listener(service, names.first().copied().unwrap_or("l"), "g");
    let attempts = 1_000_000u32;
    let started = std::time::Instant::now();
    for i in 0..attempts {
        l.observed
            .handled_in(Duration::from_micros(u64::from(i % 5_000)));
    }
    (per_record, started.elapsed() / attempts)
}

/// Waits (a while) for the broker to take `sent`; a status record that did not make it is
/// replaced by the next.
async fn acked(sent: Vec<Pending>) {
    match tokio::time::timeout(ACK_WAIT, Pending::all(sent)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "a status record was not published"),
        Err(_) => tracing::debug!("status records not acknowledged in {ACK_WAIT:?}"),
    }
}
