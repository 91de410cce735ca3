//! atoll's side: the relay service's handler, and the process that runs it.

use std::time::{Duration, Instant};

use atoll::{handlers, App, Batch, Context, HandlerResult, Handlers};

use crate::meter;
use crate::payload::{BatchRelayed, BatchTransfer, Relay, RelayBatch, Relayed, Transfer};
use crate::Work;

#[handlers]
impl Relay {
    /// Decodes the transfer (atoll does), awaits the simulated I/O, emits one fact. Books what
    /// atoll added to the record's latency: from its poll thread to here, and the emit's
    /// hand-over to the producer (not the broker's acknowledgement, awaited in the background).
    #[listener(name = "relay")]
    async fn relay(&self, ctx: Context<Self>, t: Transfer) -> HandlerResult {
        let queued = ctx.meta().received_at.map(|at| at.elapsed());
        crate::simulated_io().await;
        let emit = Instant::now();
        ctx.emit(Relayed::from(&t)).await?;
        meter::record(t.ts_us, queued.map(|queued| queued + emit.elapsed()));
        Ok(())
    }
}

#[handlers]
impl RelayBatch {
    /// [`Relay`]'s work, a batch of a partition's records per call: each record's fact
    /// emitted through its own context, its latency booked as the per-record handler's is.
    #[listener(name = "relay")]
    async fn relay(&self, batch: Batch<Self, BatchTransfer>) -> HandlerResult {
        for record in &batch {
            let queued = record.meta().received_at.map(|at| at.elapsed());
            crate::simulated_io().await;
            let emit = Instant::now();
            record.ctx.emit(BatchRelayed::from(&record.event)).await?;
            meter::record(record.event.ts_us, queued.map(|q| q + emit.elapsed()));
        }
        Ok(())
    }
}

/// Runs the relay service until the meter has its records; `ready` is called once the
/// worker's share of the partitions is assigned. The broker, the ordering mode and the delivery
/// come from the environment (`ATOLL_LISTENERS__RELAY__ORDERING`, `…__DELIVERY`), set by the
/// orchestrator. With `through_shutdown`, the measured span ends once the service shut down: an
/// exactly-once listener's outputs are only written when its last transaction commits.
pub(crate) async fn run(
    work: &Work,
    ready: impl FnOnce(),
    through_shutdown: bool,
) -> anyhow::Result<meter::Report> {
    run_service(Relay, work, ready, through_shutdown).await
}

/// [`run`] with the batch relay's service (scenario 9).
pub(crate) async fn run_batch(work: &Work, ready: impl FnOnce()) -> anyhow::Result<meter::Report> {
    run_service(RelayBatch, work, ready, false).await
}

async fn run_service<S: Handlers>(
    svc: S,
    work: &Work,
    ready: impl FnOnce(),
    through_shutdown: bool,
) -> anyhow::Result<meter::Report> {
    let running = App::from_env()?.service(svc).start().await?;
    while running
        .assignments()
        .iter()
        .map(|a| a.partitions.len())
        .sum::<usize>()
        < work.ready_partitions as usize
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
