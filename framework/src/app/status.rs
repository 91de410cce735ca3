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

    /// Publishes every interval until `stop`, then the tombstones.
    async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => self.publish().await,
            }
        }
        let mut sent = Vec::new();
        for service in &self.services {
            let topic = service.private_topic(PrivateTopic::Status);
            let key = self.process.as_bytes();
            match self
                .producer
                .tombstone(topic.as_str(), PARTITION, key)
                .await
            {
                Ok(pending) => sent.push(pending),
                Err(e) => tracing::debug!(error = %e, "cannot remove the process's status record"),
            }
        }
        acked(sent).await;
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
        let listeners = self.metrics.listeners_of(service);
        let listeners = listeners
            .iter()
            .map(|l| listener_status(l, self.metrics.sagas_of(service, l.listener)))
            .collect();
        let outbox = self.metrics.outbox();
        ProcessStatus {
            format: STATUS_FORMAT,
            service: service.to_string(),
            process: self.process.clone(),
            atoll_version: env!("CARGO_PKG_VERSION").to_owned(),
            build: self.build.clone(),
            started_ms: self.started_ms,
            at_ms: now_ms(),
            interval_ms: self.interval.as_millis() as u64,
            listeners,
            outbox: sizes.map(|s| OutboxStatus {
                rows: s.outbox_rows,
                oldest_seconds: s.oldest_ms.map(|ms| ms as f64 / 1000.0),
                relayed: outbox.relayed.get(),
                failed: outbox.failed.get(),
                dead_lettered: outbox.dead_lettered.get(),
            }),
            inbox: sizes.map(|s| InboxStatus { rows: s.inbox_rows }),
        }
    }
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
