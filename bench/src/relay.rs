//! atoll's side: the relay service's handler, and the process that runs it.

use std::time::Duration;

use atoll::{handlers, App, Context, HandlerResult};

use crate::meter;
use crate::payload::{Relay, Relayed, Transfer};
use crate::Work;

/// Simulated I/O per record (scenario 2), set once per process.
static IO: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

#[handlers]
impl Relay {
    /// Decodes the transfer (atoll does), awaits the simulated I/O, emits one fact.
    #[listener(name = "relay")]
    async fn relay(&self, ctx: Context<Self>, t: Transfer) -> HandlerResult {
        if let Some(io) = IO.get().filter(|d| !d.is_zero()) {
            tokio::time::sleep(*io).await;
        }
        ctx.emit(Relayed::from(&t)).await?;
        meter::record(t.ts_us);
        Ok(())
    }
}

/// Runs the relay service until the meter has its records; `ready` is called once every
/// partition is assigned. The ordering mode comes from the environment
/// (`ATOLL_LISTENERS__RELAY__ORDERING`), set by the orchestrator.
pub(crate) async fn run(work: &Work, ready: impl FnOnce()) -> anyhow::Result<meter::Report> {
    let _ = IO.set(work.io());
    let running = App::from_env()?.service(Relay).start().await?;
    while running
        .assignments()
        .iter()
        .map(|a| a.partitions.len())
        .sum::<usize>()
        < crate::payload::PARTITIONS as usize
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ready();
    let report = meter::finished().await;
    running.shutdown().await;
    Ok(report)
}
