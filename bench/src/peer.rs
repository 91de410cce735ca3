//! A peer run side by side: ruststream-rdkafka, with the same decode and one reply per input,
//! committing with `Commit::Tracked` (a record's offset moves once its handling settled).
//! Partition mode is its default subscription; key mode is `workers(256, by_key)` on the record
//! key, the same bound as atoll's `max_in_flight`.

use ruststream_rdkafka::prelude::*;
use serde::{Deserialize, Serialize};

use crate::meter;
use crate::payload::{Transfer, INPUT, OUTPUT_RUSTSTREAM};
use crate::Work;

/// The output, as ruststream publishes it.
#[derive(Debug, Serialize, Deserialize, Outgoing)]
pub(crate) struct RsRelayed {
    id: u64,
    ts_us: u64,
    account: String,
    amount_cents: i64,
}

async fn relay(t: &Transfer) -> RsRelayed {
    crate::simulated_io().await;
    meter::record(t.ts_us, None);
    RsRelayed {
        id: t.id,
        ts_us: t.ts_us,
        account: t.account.clone(),
        amount_cents: t.amount_cents,
    }
}

#[subscriber(
    KafkaTopic::new(INPUT).start(StartOffset::Earliest).commit(Commit::Tracked),
    reply(OUTPUT_RUSTSTREAM)
)]
async fn by_partition(t: &Transfer) -> RsRelayed {
    relay(t).await
}

#[subscriber(
    KafkaTopic::new(INPUT)
        .start(StartOffset::Earliest)
        .commit(Commit::Tracked)
        .lane_key(LaneKey::RecordKey),
    workers(256, by_key),
    reply(OUTPUT_RUSTSTREAM)
)]
async fn by_key(t: &Transfer) -> RsRelayed {
    relay(t).await
}

/// Runs ruststream until the meter has its records.
pub(crate) async fn run(work: &Work, ready: impl FnOnce()) -> anyhow::Result<meter::Report> {
    let broker = KafkaBroker::new([work.bootstrap.as_str()])
        .default_group(work.group.clone())
        .config("fetch.wait.max.ms", work.fetch_wait_ms.clone())
        // It awaits each publish before taking the next record: batching would only add latency.
        .producer_config("linger.ms", "0");
    let keyed = work.ordering == "key";
    let app = RustStream::new(AppInfo::new("relay", "0.1.0")).with_broker(broker, |b| {
        if keyed {
            b.include(by_key);
        } else {
            b.include(by_partition);
        }
    });
    let running = app.start().await?;
    ready();
    let report = meter::finished().await;
    running.shutdown().await?;
    Ok(report)
}
