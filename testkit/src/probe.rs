//! The probe service run by the `probe` binary, and its command.
//!
//! Behaviour, from the environment: `PROBE_DELAY_MS` (sleep per record), `PROBE_FAIL` (an id
//! whose handling fails transiently, forever). Every handled record prints a line
//! `handled <listener> <id> <partition> <offset>` on standard output.

use std::io::Write;
use std::time::Duration;

use atoll::{event_service, handlers, Event, HandlerError, HandlerResult, Meta};
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
