//! The probe service run by the `probe` binary, and its command.
//!
//! Behaviour, from the environment: `PROBE_DELAY_MS` (sleep per record), `PROBE_FAIL` (an id
//! whose handling fails transiently, forever). Every handled record prints a line
//! `handled <listener> <id> <partition> <offset>` on standard output.

use std::io::Write;
use std::time::Duration;

use atoll::{event_service, handlers, Context, Event, HandlerError, HandlerResult, Meta};
use serde::{Deserialize, Serialize};

/// The probe service: `acme.test.probe`, 6 partitions.
#[event_service(company = "acme", namespace = "test", name = "probe", partitions = 6)]
#[derive(Debug, Default)]
pub struct Probe {
    /// Sleep per record.
    pub delay: Duration,
    /// An id that fails forever.
    pub fail: Option<String>,
}

/// A unit of work.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "work", version = 1, service = Probe)]
pub struct Work {
    /// Unique id; also the key.
    #[event(key)]
    pub id: String,
}

impl Probe {
    /// Configured from `PROBE_DELAY_MS` and `PROBE_FAIL`.
    pub fn from_env() -> Self {
        let delay = std::env::var("PROBE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self {
            delay: Duration::from_millis(delay),
            fail: std::env::var("PROBE_FAIL").ok(),
        }
    }

    async fn work(&self, meta: &Meta, work: &Work) -> HandlerResult {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.fail.as_deref() == Some(work.id.as_str()) {
            return Err(HandlerError::transient(format!(
                "configured to fail on {}",
                work.id
            )));
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "handled {} {} {} {}",
            meta.listener, work.id, meta.partition, meta.offset
        )?;
        out.flush()?;
        Ok(())
    }
}

#[handlers]
impl Probe {
    /// The main listener.
    #[listener(name = "work")]
    async fn on_work(&self, meta: Meta, work: Work) -> HandlerResult {
        self.work(&meta, &work).await
    }

    /// A second listener of the same command: its own consumer group.
    #[listener(name = "audit")]
    async fn on_audit(&self, meta: Meta, work: Work) -> HandlerResult {
        self.work(&meta, &work).await
    }
}

/// The pipeline service: `acme.test.pipeline`, 4 partitions. Its `relay` listener is
/// exactly-once: each `item` command becomes two `relayed` facts naming the command's
/// partition and offset, committed with the command's offset in one Kafka transaction. Run by
/// the `probe` binary with `PROBE_SERVICE=pipeline` (`PROBE_DELAY_MS` applies).
#[event_service(
    company = "acme",
    namespace = "test",
    name = "pipeline",
    partitions = 4
)]
#[derive(Debug, Default)]
pub struct Pipeline {
    /// Sleep per record.
    pub delay: Duration,
}

/// An input of the pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "item", version = 1, service = Pipeline)]
pub struct Item {
    /// The key.
    #[event(key)]
    pub key: String,
    /// Its number within the key.
    pub n: u32,
}

/// An output of the pipeline: one of the two written per item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
#[event(fact, name = "relayed", version = 1, service = Pipeline)]
pub struct Relayed {
    /// The item's key.
    #[event(key)]
    pub key: String,
    /// The item's number.
    pub n: u32,
    /// Which of the item's two outputs (0 or 1).
    pub part: u8,
    /// The item's partition.
    pub partition: i32,
    /// The item's offset.
    pub offset: i64,
}

impl Pipeline {
    /// Configured from `PROBE_DELAY_MS`.
    pub fn from_env() -> Self {
        Self {
            delay: Probe::from_env().delay,
        }
    }
}

#[handlers]
impl Pipeline {
    /// Two outputs per item, exactly once.
    #[listener(name = "relay", delivery = "exactly_once")]
    async fn relay(&self, ctx: Context<Self>, item: Item) -> HandlerResult {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let meta = ctx.meta().clone();
        for part in 0..2 {
            ctx.emit(Relayed {
                key: item.key.clone(),
                n: item.n,
                part,
                partition: meta.partition,
                offset: meta.offset,
            })
            .await?;
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "handled {} {}/{} {} {}",
            meta.listener, item.key, item.n, meta.partition, meta.offset
        )?;
        out.flush()?;
        Ok(())
    }
}
