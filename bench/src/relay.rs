//! atoll's side: the relay service's handler, and the process that runs it.

use std::time::Duration;

use atoll::{handlers, App, Context, HandlerResult};

use crate::meter;
use crate::payload::{Relay, Relayed, Transfer};

#[handlers]
impl Relay {
    /// Decodes the transfer (atoll does), awaits the simulated I/O, emits one fact.
    #[listener(name = "relay")]
    async fn relay(&self, ctx: Context<Self>, t: Transfer) -> HandlerResult {
        crate::simulated_io().await;
        ctx.emit(Relayed::from(&t)).await?;
        meter::record(t.ts_us);
        Ok(())
    }
}

/// Runs the relay service until the meter has its records; `ready` is called once every
/// partition is assigned. The broker, the ordering mode and the delivery come from the
/// environment (`ATOLL_LISTENERS__RELAY__ORDERING`, `…__DELIVERY`), set by the orchestrator.
/// With `through_shutdown`, the measured span ends once the service shut down: an
/// exactly-once listener's outputs are only written when its last transaction commits.
pub(crate) async fn run(
    ready: impl FnOnce(),
    through_shutdown: bool,
) -> anyhow::Result<meter::Report> {
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
    Ok(if through_shutdown {
        meter::through_now()
    } else {
        report
    })
}
