//! The benchmark of atoll against a hand-written rdkafka loop and peers (ruststream-rdkafka,
//! FastStream), on one tansu broker (method: `docs/performance.md#method`).
//!
//! ```sh
//! scripts/bench                        # the whole benchmark: tansu, release build, table
//! scripts/bench --quick                # a smoke run of under two minutes
//! cargo run --release -p atoll-bench --features peers -- --help
//! ```
//!
//! The orchestrator starts tansu, fills the input topic once, then runs every measurement as a
//! worker process of its own (this binary, `worker` subcommand), so that CPU time and peak
//! RSS belong to one run. Implementations alternate within each round; the first round is
//! discarded and the table quotes medians.

mod ledger;
mod meter;
mod orchestra;
mod payload;
#[cfg(feature = "peers")]
mod peer;
mod python;
mod raw;
mod relay;

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Benchmark atoll against raw rdkafka and peers on one tansu broker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    plan: orchestra::Plan,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One measured run (started by the orchestrator).
    #[command(hide = true)]
    Worker(Work),
    /// What the status record costs a process: assembling and serializing one record, and
    /// observing one handler attempt; and what share of a listener's CPU that is.
    StatusCost(StatusCost),
}

/// `status-cost`'s settings.
#[derive(Debug, clap::Args)]
struct StatusCost {
    /// Listeners in the service.
    #[arg(long, default_value_t = 10)]
    listeners: usize,
    /// Partitions each listener holds.
    #[arg(long, default_value_t = 12)]
    partitions: usize,
    /// Records assembled.
    #[arg(long, default_value_t = 2_000)]
    rounds: u32,
    /// The listener's CPU per record to compare with, in µs (scenario 3's atoll at 1,000
    /// records/s measured 28–36 µs).
    #[arg(long, default_value_t = 30.0)]
    cpu_us: f64,
    /// How often the record is published, in ms (the default `status.interval_ms`).
    #[arg(long, default_value_t = 5_000)]
    interval_ms: u64,
}

/// Prints what the status record costs (see [`StatusCost`]).
fn status_cost(c: &StatusCost) {
    let (record, attempt) = atoll::__private::status_cost(c.listeners, c.partitions, c.rounds);
    let record_us = record.as_secs_f64() * 1e6;
    let attempt_us = attempt.as_secs_f64() * 1e6;
    println!(
        "status record of {} listeners × {} partitions: {record_us:.1} µs to assemble and serialize; one handler attempt's observation: {:.1} ns",
        c.listeners,
        c.partitions,
        attempt_us * 1e3
    );
    println!(
        "| records/s | status CPU per second | share of the listener's CPU ({} µs/record) |",
        c.cpu_us
    );
    println!("|---|---|---|");
    for rate in [100.0, 1_000.0, 10_000.0] {
        let per_second = record_us * 1_000.0 / c.interval_ms as f64 + attempt_us * rate;
        let share = per_second / (rate * c.cpu_us) * 100.0;
        println!("| {rate:.0} | {per_second:.1} µs | {share:.3}% |");
    }
}

/// The implementations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Impl {
    /// The hand-written rdkafka loop.
    Raw,
    /// atoll.
    Atoll,
    /// ruststream-rdkafka (built with the `peers` feature).
    Ruststream,
    /// FastStream with aiokafka (Python, in a virtualenv `scripts/install-faststream` makes).
    Faststream,
    /// atoll's transactional listener on PostgreSQL (scenario 4).
    AtollTx,
    /// atoll's transactional listener on PostgreSQL with a set-based handler (scenario 4).
    AtollTxSet,
    /// atoll's relay listener, `exactly_once` (scenario 5, on a broker with transactions).
    AtollEos,
    /// atoll's relay with a batch listener: a `Batch` of records per call (scenario 9).
    AtollBatch,
}

impl Impl {
    /// The name in the table.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Raw => "raw rdkafka",
            Self::Atoll => "atoll",
            Self::Ruststream => "ruststream-rdkafka",
            Self::Faststream => "FastStream (Python)",
            Self::AtollTx => "atoll, transactional",
            Self::AtollTxSet => "atoll, transactional, set-based",
            Self::AtollEos => "atoll, exactly once",
            Self::AtollBatch => "atoll, batch listener",
        }
    }

    /// The listener atoll's worker runs (`None` for the others): its settings are given to
    /// that listener only, as a setting naming a listener the process lacks stops its start.
    pub(crate) fn listener(self) -> Option<&'static str> {
        match self {
            Self::Atoll | Self::AtollEos | Self::AtollBatch => Some("relay"),
            Self::AtollTx | Self::AtollTxSet => Some("deposit"),
            Self::Raw | Self::Ruststream | Self::Faststream => None,
        }
    }

    /// The consumer group the implementation reads the input with.
    pub(crate) fn group(self) -> String {
        let atoll = |id: atoll::ServiceId| {
            let listener = self.listener().expect("atoll's workers have a listener");
            id.group_id(listener).expect("a valid listener name")
        };
        match self {
            Self::Raw => "bench-raw".to_owned(),
            Self::Ruststream => "bench-ruststream".to_owned(),
            Self::Faststream => "bench-faststream".to_owned(),
            Self::Atoll | Self::AtollEos => atoll(<payload::Relay as atoll::Service>::ID),
            Self::AtollTx => atoll(<payload::Ledger as atoll::Service>::ID),
            Self::AtollTxSet => atoll(<payload::LedgerSet as atoll::Service>::ID),
            Self::AtollBatch => atoll(<payload::RelayBatch as atoll::Service>::ID),
        }
    }

    /// The topic it reads and the `ce_type` of its records.
    pub(crate) fn input(self) -> (&'static str, &'static str) {
        use atoll::Event;
        match self {
            Self::AtollTx => (payload::INPUT_LEDGER, payload::Deposit::ce_type()),
            Self::AtollTxSet => (payload::INPUT_LEDGER_SET, payload::SetDeposit::ce_type()),
            Self::AtollBatch => (payload::INPUT_BATCH, payload::BatchTransfer::ce_type()),
            _ => (payload::INPUT, payload::Transfer::ce_type()),
        }
    }
}

/// One worker run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Work {
    /// Which implementation.
    #[arg(long = "impl", value_enum)]
    pub(crate) imp: Impl,
    /// Broker.
    #[arg(long)]
    pub(crate) bootstrap: String,
    /// Consumer group.
    #[arg(long)]
    pub(crate) group: String,
    /// `partition`, `key` or `unordered`.
    #[arg(long, default_value = "partition")]
    pub(crate) ordering: String,
    /// Simulated I/O per record, in microseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) io_us: u64,
    /// Records handled before measuring.
    #[arg(long, default_value_t = 0)]
    pub(crate) warmup: u64,
    /// Records measured.
    #[arg(long)]
    pub(crate) records: u64,
    /// `fetch.wait.max.ms` of the consumer.
    #[arg(long, default_value = "500")]
    pub(crate) fetch_wait_ms: String,
    /// Whether to measure latency.
    #[arg(long)]
    pub(crate) latency: bool,
    /// Whether the measured span ends once the process shut down (its last offsets, and
    /// transaction, committed) rather than at the last record handled.
    #[arg(long)]
    pub(crate) through_shutdown: bool,
    /// `ready` is printed once this many partitions are assigned to the process.
    #[arg(long, default_value_t = payload::PARTITIONS)]
    pub(crate) ready_partitions: i32,
}

/// Simulated I/O per record (scenario 2), set once per worker process.
static IO: OnceLock<Duration> = OnceLock::new();

/// Awaits the run's simulated I/O, if any: what every implementation's handler does first.
pub(crate) async fn simulated_io() {
    if let Some(io) = IO.get().filter(|d| !d.is_zero()) {
        tokio::time::sleep(*io).await;
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Some(Command::Worker(work)) => runtime.block_on(worker(work)),
        Some(Command::StatusCost(c)) => {
            status_cost(&c);
            Ok(())
        }
        None => runtime.block_on(orchestra::run(cli.plan)),
    }
}

/// A worker: runs one implementation until its records are measured, prints `ready` once it
/// has every partition, then the report as one JSON line.
async fn worker(work: Work) -> anyhow::Result<()> {
    meter::init(work.warmup, work.records, work.latency);
    let _ = IO.set(Duration::from_micros(work.io_us));
    let ready = || {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    };
    let report = match work.imp {
        Impl::Raw => raw::run(&work, ready).await?,
        Impl::Atoll => relay::run(&work, ready, work.through_shutdown).await?,
        Impl::AtollEos => relay::run(&work, ready, true).await?,
        Impl::AtollBatch => relay::run_batch(&work, ready).await?,
        #[cfg(feature = "peers")]
        Impl::Ruststream => peer::run(&work, ready).await?,
        #[cfg(not(feature = "peers"))]
        Impl::Ruststream => anyhow::bail!("built without the `peers` feature"),
        Impl::Faststream => anyhow::bail!("FastStream runs as a Python process, not a worker"),
        Impl::AtollTx => ledger::run(&work.bootstrap, ledger::Kind::PerRecord, ready).await?,
        Impl::AtollTxSet => ledger::run(&work.bootstrap, ledger::Kind::Set, ready).await?,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&report)?)?;
    out.flush()?;
    Ok(())
}
