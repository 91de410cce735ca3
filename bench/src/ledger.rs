//! Scenario 4: atoll's transactional listener on PostgreSQL. Each deposit updates its account
//! and emits one fact, which the outbox publishes after the commit. The meter books each fact
//! as a consumer of the output topic reads it. So the rate counts records through the whole
//! path (transaction, outbox, broker), and the latency runs from the input's production to the
//! output's consumption, outbox publish included.
//!
//! The set-based variant (`--impl atoll-tx-set`) takes each store batch in one call: one
//! `UNNEST` upsert of the batch's accounts (summed per account first: one statement cannot
//! update a row twice), then an emit per record.

use std::time::Duration;

use atoll::{handlers, App, Batch, Context, HandlerResult, Tx};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Postgres, SqlSafeStr};

use crate::meter;
use crate::payload::{
    Deposit, Deposited, Ledger, LedgerSet, SetDeposit, SetDeposited, OUTPUT_LEDGER,
    OUTPUT_LEDGER_SET, PARTITIONS,
};

#[handlers]
impl Ledger {
    /// One UPDATE (an upsert of the account's balance) and one emit, in one transaction.
    #[listener(name = "deposit")]
    async fn deposit(&self, ctx: Context<Self>, mut tx: Tx<Postgres>, d: Deposit) -> HandlerResult {
        sqlx::query(
            "INSERT INTO bench_accounts (id, cents) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET cents = bench_accounts.cents + excluded.cents",
        )
        .bind(&d.account)
        .bind(d.amount_cents)
        .execute(&mut *tx)
        .await?;
        ctx.emit(Deposited {
            id: d.id,
            ts_us: d.ts_us,
            received_us: received_us(&ctx),
            account: d.account,
            amount_cents: d.amount_cents,
        })
        .await?;
        Ok(())
    }
}

#[handlers]
impl LedgerSet {
    /// One upsert of the batch's accounts and an emit per record, in one transaction.
    #[listener(name = "deposit")]
    async fn deposit(&self, mut tx: Tx<Postgres>, batch: Batch<Self, SetDeposit>) -> HandlerResult {
        let mut sums: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for d in batch.events() {
            *sums.entry(d.account.as_str()).or_default() += d.amount_cents;
        }
        let (ids, cents): (Vec<&str>, Vec<i64>) = sums.into_iter().unzip();
        sqlx::query(
            "INSERT INTO bench_accounts (id, cents) SELECT * FROM UNNEST($1::text[], $2::bigint[])
             ON CONFLICT (id) DO UPDATE SET cents = bench_accounts.cents + excluded.cents",
        )
        .bind(&ids)
        .bind(&cents)
        .execute(&mut *tx)
        .await?;
        for record in &batch {
            let d = &record.event;
            record
                .ctx
                .emit(SetDeposited {
                    id: d.id,
                    ts_us: d.ts_us,
                    received_us: received_us(&record.ctx),
                    account: d.account.clone(),
                    amount_cents: d.amount_cents,
                })
                .await?;
        }
        Ok(())
    }
}

/// When atoll's poll thread received the context's record, in microseconds since the epoch
/// (now, when atoll does not say).
fn received_us<S: atoll::Service>(ctx: &Context<S>) -> u64 {
    let since = ctx
        .meta()
        .received_at
        .map_or(0, |at| at.elapsed().as_micros() as u64);
    meter::now_us().saturating_sub(since)
}

/// Which ledger a run starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// [`Ledger`]: a call per record.
    PerRecord,
    /// [`LedgerSet`]: a call per batch.
    Set,
}

fn accounts() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "accounts".into(),
        MigrationType::Simple,
        "CREATE TABLE IF NOT EXISTS bench_accounts (id TEXT PRIMARY KEY, cents BIGINT NOT NULL)"
            .into_sql_str(),
        false,
    )])
}

/// Runs the ledger (store from `ATOLL_STORE__URL`) and a reader of its output until the meter
/// has its records; `ready` is called once every partition is assigned.
pub(crate) async fn run(
    bootstrap: &str,
    kind: Kind,
    ready: impl FnOnce(),
) -> anyhow::Result<meter::Report> {
    let output = match kind {
        Kind::PerRecord => OUTPUT_LEDGER,
        Kind::Set => OUTPUT_LEDGER_SET,
    };
    // The reader starts at the output's end, before the ledger can publish anything.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-ledger-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        // tansu 0.6 now and then leaves a fetch unanswered: without this the reader waits out
        // librdkafka's 60 s request timeout before it asks again.
        .set("socket.timeout.ms", "3000")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let (_, high) = reader.fetch_watermarks(output, p, Duration::from_secs(10))?;
        tpl.add_partition_offset(output, p, Offset::Offset(high))?;
    }
    reader.assign(&tpl)?;
    // tansu answers a partition's end as if its last batch held one record (see
    // `tansu_limitations.rs`): the reader may start inside an earlier run's last batch, whose
    // facts were handed to the producer before this process started, and are not counted.
    let started_ms = (meter::now_us() / 1_000) as i64;
    let app = App::from_env()?.migrations(accounts());
    let running = match kind {
        Kind::PerRecord => app.service(Ledger),
        Kind::Set => app.service(LedgerSet),
    }
    .start()
    .await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) else {
                    continue;
                };
                if m.timestamp().to_millis().is_some_and(|ms| ms < started_ms) {
                    continue;
                }
                if let Some(Ok(d)) = m.payload().map(serde_json::from_slice::<Deposited>) {
                    // atoll's added latency: from its poll thread's receipt of the input to
                    // the outbox's hand-over of the fact to the producer, which stamps the
                    // record (milliseconds).
                    let added = m.timestamp().to_millis().map(|ms| {
                        let handed_us = u64::try_from(ms).unwrap_or(0) * 1_000;
                        Duration::from_micros(handed_us.saturating_sub(d.received_us))
                    });
                    meter::record(d.ts_us, added);
                }
            }
        })
    };
    while running
        .assignments()
        .iter()
        .map(|a| a.partitions.len())
        .sum::<usize>()
        < PARTITIONS as usize
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ready();
    let report = meter::finished().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = reading.join();
    running.shutdown().await;
    Ok(report)
}
