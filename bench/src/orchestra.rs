//! The orchestrator: one tansu, one pre-filled input topic, interleaved runs, medians, a table
//! and a JSON file.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use atoll::envelope::Outgoing;
use atoll_testkit::Tansu;
use clap::ValueEnum;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::meter::{self, Report};
use crate::payload::{
    transfer, INPUT, INPUT_BATCH, INPUT_LEDGER, INPUT_LEDGER_SET, OUTPUT_ATOLL, OUTPUT_BATCH,
    OUTPUT_FASTSTREAM, OUTPUT_LEDGER, OUTPUT_LEDGER_SET, OUTPUT_RAW, OUTPUT_RUSTSTREAM, PARTITIONS,
};
use crate::Impl;

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Plan {
    /// Records in the backlog drained by scenario 1.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) records: u64,
    /// Measured rounds per scenario (a warm-up round, with a tenth of the records, runs first
    /// and is discarded).
    #[arg(long, default_value_t = 2)]
    pub(crate) rounds: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) keys: u64,
    /// Simulated I/O per record in scenario 2, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub(crate) io_ms: u64,
    /// Records per run of scenario 2 in partition mode (the other modes handle 5×).
    #[arg(long, default_value_t = 3_000)]
    pub(crate) io_records: u64,
    /// Seconds measured per run of scenario 3 (after one second of warm-up).
    #[arg(long, default_value_t = 4)]
    pub(crate) latency_secs: u64,
    /// Records in the backlog the transactional listener drains in scenario 4.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) tx_records: u64,
    /// Records per second of scenario 4's steady run.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) tx_rate: u64,
    /// Records in the backlog drained at least once and exactly once in scenario 5 (noida-db
    /// answers a fetch with the whole backlog of each partition, whatever the fetch limits: at
    /// 200,000 records the 106 MB response exceeds librdkafka's `receive.message.max.bytes`).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) eos_records: u64,
    /// Records in the backlog drained by scenario 6, written in ordinary batches.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) batched_records: u64,
    /// Records in the backlog drained by scenario 9 (batch listener against per record),
    /// written in ordinary batches.
    #[arg(long, default_value_t = 500_000)]
    pub(crate) batch_listener_records: u64,
    /// Records written per run of scenario 7 (each process measures 80% of its share).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) scale_records: u64,
    /// Processes of one listener in scenario 7, on 12 partitions.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4])]
    pub(crate) processes: Vec<u32>,
    /// Backlogs drained in scenario 8, for the peak RSS of each.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000, 1_000_000, 5_000_000])]
    pub(crate) backlogs: Vec<u64>,
    /// Records FastStream drains in scenarios 1 and 6 (it awaits each publish and commit).
    #[arg(long, default_value_t = 5_000)]
    pub(crate) faststream_records: u64,
    /// Implementations to run (default: all).
    #[arg(long = "impl", value_enum, value_delimiter = ',', default_values_t = [Impl::Raw, Impl::Atoll, Impl::Ruststream, Impl::Faststream, Impl::AtollTx, Impl::AtollTxSet, Impl::AtollEos, Impl::AtollBatch])]
    pub(crate) impls: Vec<Impl>,
    /// Scenarios to run (1: drain, 2: simulated I/O, 3: latency, 4: transactional on
    /// PostgreSQL, 5: at-least-once against exactly-once on noida-db, 6: batched drain,
    /// 7: scale-out, 8: memory against backlog, 9: batch listener against per record).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3, 4, 5, 6, 7, 8, 9])]
    pub(crate) scenarios: Vec<u8>,
    /// A smoke run of under two minutes: scenarios 1, 3 and 6 with small inputs, one measured
    /// round, atoll and the raw loop only (overrides those options).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Use this broker instead of starting tansu, or noida-db for scenario 5 (its input topic
    /// must be empty).
    #[arg(long)]
    pub(crate) bootstrap: Option<String>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    pub(crate) json: PathBuf,
}

/// `fetch.wait.max.ms` of every consumer: tansu 0.6 holds a fetch for this long even when
/// records arrive meanwhile, so librdkafka's 500 ms default would be the latency measured.
const FETCH_WAIT_MS: &str = "10";

/// Records ruststream-rdkafka drains in scenarios 1 and 6.
const PEER_RECORDS: u64 = 10_000;

/// Partitions of the input in scenario 7.
const SCALE_PARTITIONS: i32 = 12;

/// A partition buffer no drain fills (scenarios 6 and 7): atoll never pauses a partition of
/// batched input, which tansu could not serve again from inside a batch.
const UNPAUSED: u64 = 100_000_000;

impl Plan {
    /// The plan `--quick` runs.
    fn quick(mut self) -> Self {
        self.records = 100_000;
        self.batched_records = 200_000;
        self.rounds = 1;
        self.latency_secs = 2;
        self.impls = vec![Impl::Raw, Impl::Atoll];
        self.scenarios = vec![1, 3, 6];
        self
    }

    /// The plan as run: `--quick`'s when asked, and without ruststream-rdkafka when built
    /// without the `peers` feature (said on stderr).
    fn resolved(self) -> Self {
        let mut plan = if self.quick { self.quick() } else { self };
        if !cfg!(feature = "peers") && plan.impls.contains(&Impl::Ruststream) {
            eprintln!("ruststream-rdkafka left out: built without the `peers` feature (scripts/bench turns it on)");
            plan.impls.retain(|imp| *imp != Impl::Ruststream);
        }
        plan
    }

    fn runs(&self, scenario: u8) -> bool {
        self.scenarios.contains(&scenario)
    }
}

/// One row of the results: an implementation in a scenario, medians over the measured rounds.
#[derive(Debug, Clone, Serialize)]
struct Row {
    scenario: String,
    implementation: &'static str,
    mode: String,
    rounds: usize,
    records: u64,
    rate: f64,
    cpu_us: f64,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
    /// The framework's own share of the latency (atoll only).
    added_p50_us: Option<f64>,
    added_p99_us: Option<f64>,
    rss_mib: f64,
    /// The spread of the rate over the rounds, min..max.
    rate_min: f64,
    rate_max: f64,
}

/// One run of one implementation.
#[derive(Debug, Clone)]
struct Variant {
    imp: Impl,
    ordering: &'static str,
    io_us: u64,
    warmup: u64,
    records: u64,
    latency: bool,
    /// The store of a transactional run.
    store: Option<String>,
    /// Whether the span measured ends once the worker shut down.
    through_shutdown: bool,
    /// atoll's `max_buffered`, when not its default.
    max_buffered: Option<u64>,
    /// atoll's `status.interval_ms`, when not its default (0: no status records).
    status_ms: Option<u64>,
}

impl Variant {
    /// Its mode in the table: the ordering, and what else sets it apart.
    fn mode(&self) -> String {
        match self.status_ms {
            Some(0) => format!("{}, no status records", self.ordering),
            _ => self.ordering.to_owned(),
        }
    }
}

/// Runs the plan: prints progress to stderr, the table to stdout, and writes the JSON.
pub(crate) async fn run(plan: Plan) -> anyhow::Result<()> {
    let plan = plan.resolved();
    let started = Instant::now();
    let mut rows = Vec::new();
    if plan.runs(1) {
        let (_tansu, bootstrap) = broker(&plan, Setup::backlog(plan.records)).await?;
        let variants = drains(&plan, plan.records, None);
        let name = format!("1: drain a backlog of {} × ~200 B", plan.records);
        rows.extend(rounds(&bootstrap, &name, &variants, plan.rounds, None).await?);
    }
    if plan.runs(2) {
        let many = (plan.io_records * 5).min(plan.records);
        let (_tansu, bootstrap) = broker(&plan, Setup::backlog(many)).await?;
        let io_us = plan.io_ms * 1000;
        let io = |imp, ordering, records| Variant {
            io_us,
            ..variant(imp, ordering, records)
        };
        let all = [
            io(Impl::Atoll, "partition", plan.io_records),
            io(Impl::Atoll, "key", many),
            io(Impl::Atoll, "unordered", many),
            io(Impl::Ruststream, "partition", plan.io_records),
            io(Impl::Ruststream, "key", many),
        ];
        let variants: Vec<Variant> = all
            .into_iter()
            .filter(|v| plan.impls.contains(&v.imp))
            .collect();
        let name = format!(
            "2: {} ms I/O, {PARTITIONS} partitions, {} keys",
            plan.io_ms, plan.keys
        );
        rows.extend(rounds(&bootstrap, &name, &variants, plan.rounds, None).await?);
    }
    if plan.runs(3) {
        let (_tansu, bootstrap) = broker(&plan, Setup::backlog(0)).await?;
        for rate in [1_000u64, 10_000] {
            let latency = |imp| Variant {
                warmup: rate,
                records: rate * plan.latency_secs,
                latency: true,
                ..variant(imp, "partition", 0)
            };
            let mut variants: Vec<Variant> = [Impl::Raw, Impl::Atoll]
                .into_iter()
                .filter(|imp| plan.impls.contains(imp))
                .map(latency)
                .collect();
            // What the status records cost: the same listener without them.
            if plan.impls.contains(&Impl::Atoll) {
                variants.push(Variant {
                    status_ms: Some(0),
                    ..latency(Impl::Atoll)
                });
            }
            let name = format!("3: steady {rate} records/s");
            let pace = Some((rate, plan.keys));
            rows.extend(rounds(&bootstrap, &name, &variants, plan.rounds, pace).await?);
        }
    }
    let tx_impls = [Impl::AtollTx, Impl::AtollTxSet];
    for imp in tx_impls
        .into_iter()
        .filter(|i| plan.runs(4) && plan.impls.contains(i))
    {
        // As production runs it: every commit synced.
        let pg = atoll_testkit::Postgres::durable();
        let store = Some(pg.database("bench"));
        let (drain_broker, bootstrap) = broker(
            &plan,
            Setup {
                input: imp.input(),
                ..Setup::backlog(plan.tx_records)
            },
        )
        .await?;
        let drain = Variant {
            store: store.clone(),
            ..variant(imp, "partition", plan.tx_records)
        };
        let name = format!(
            "4: transactional on PostgreSQL, 1 upsert + 1 emit per record, drain {}",
            plan.tx_records
        );
        rows.extend(rounds(&bootstrap, &name, &[drain], plan.rounds, None).await?);
        // The steady rounds bring their own.
        drop(drain_broker);
        let rate = plan.tx_rate;
        let steady = Variant {
            warmup: rate,
            records: rate * plan.latency_secs,
            latency: true,
            store,
            ..variant(imp, "partition", 0)
        };
        let name = format!("4: transactional, steady {rate} records/s, input → output read");
        let pace = Some((rate, plan.keys));
        // Each round on a broker of its own: tansu's fetches slow down as its log grows (it
        // lists every batch of a partition per fetch), which delivered the input in ever larger
        // bursts round after round and measured tansu's growth, not the listener.
        let fresh = Brokers::PerRound(
            &plan,
            Setup {
                input: imp.input(),
                ..Setup::backlog(0)
            },
        );
        rows.extend(rounds_on(fresh, &name, &[steady], plan.rounds, pace).await?);
    }
    if plan.runs(5) && plan.impls.contains(&Impl::AtollEos) {
        // tansu never ends a transaction: noida-db serves them (memory storage).
        let (_broker, bootstrap) = broker(
            &plan,
            Setup {
                transactions: true,
                ..Setup::backlog(plan.eos_records)
            },
        )
        .await?;
        let drain = |imp| Variant {
            through_shutdown: true,
            ..variant(imp, "partition", plan.eos_records)
        };
        let variants = [drain(Impl::Atoll), drain(Impl::AtollEos)];
        let name = format!(
            "5: drain {} on noida-db, to the last commit",
            plan.eos_records
        );
        rows.extend(rounds(&bootstrap, &name, &variants, plan.rounds, None).await?);
    }
    if plan.runs(6) {
        let (_tansu, bootstrap) = broker(
            &plan,
            Setup {
                batches: Batches::Ordinary,
                ..Setup::backlog(plan.batched_records)
            },
        )
        .await?;
        let variants = drains(&plan, plan.batched_records, Some(UNPAUSED));
        let name = format!(
            "6: drain {} written in batches, no pauses",
            plan.batched_records
        );
        rows.extend(rounds(&bootstrap, &name, &variants, plan.rounds, None).await?);
    }
    if plan.runs(9) {
        rows.extend(batch_listener(&plan).await?);
    }
    if plan.runs(7) && plan.impls.contains(&Impl::Atoll) {
        for &n in &plan.processes {
            rows.push(scale_out(&plan, n).await?);
        }
    }
    if plan.runs(8) && plan.impls.contains(&Impl::Atoll) {
        for &backlog in &plan.backlogs {
            let (_tansu, bootstrap) = broker(&plan, Setup::backlog(backlog)).await?;
            let name = format!("8: peak RSS draining {backlog}");
            let drain = variant(Impl::Atoll, "partition", backlog);
            // One run per backlog: the first round is not a warm-up here, the RSS is the point.
            let report = run_one(&bootstrap, &drain, None).await?;
            eprintln!(
                "{name} | atoll | {:.0} records/s, {:.1} µs CPU/record, {:.0} MiB",
                report.rate, report.cpu_us, report.rss_mib
            );
            rows.push(summarize(&name, &drain, &[report]));
        }
    }
    print_table(&rows);
    if let Some(dir) = plan.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&plan.json, serde_json::to_vec_pretty(&rows)?)?;
    eprintln!(
        "wrote {} in {:.0} s",
        plan.json.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Scenario 9: the same relay, a record per call against a batch per call (`Batch`), each
/// draining a backlog written in ordinary batches on a broker of its own, never pausing.
async fn batch_listener(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let records = plan.batch_listener_records;
    let name = format!("9: batch listener against per record, drain {records} written in batches");
    let mut rows = Vec::new();
    for imp in [Impl::Atoll, Impl::AtollBatch]
        .into_iter()
        .filter(|imp| plan.impls.contains(imp))
    {
        let setup = Setup {
            input: imp.input(),
            batches: Batches::Ordinary,
            ..Setup::backlog(records)
        };
        let (_tansu, bootstrap) = broker(plan, setup).await?;
        let drain = Variant {
            max_buffered: Some(UNPAUSED),
            ..variant(imp, "partition", records)
        };
        rows.extend(rounds(&bootstrap, &name, &[drain], plan.rounds, None).await?);
    }
    Ok(rows)
}

/// What a scenario's broker holds before its runs.
#[derive(Debug, Clone, Copy)]
struct Setup {
    /// Input records written.
    records: u64,
    /// The input topic, and the type its records carry.
    input: (&'static str, &'static str),
    /// noida-db (which has transactions) instead of tansu.
    transactions: bool,
    /// The input topic's partitions.
    partitions: i32,
    batches: Batches,
}

impl Setup {
    /// `records` of the relay's input, one per batch, on tansu's [`PARTITIONS`].
    fn backlog(records: u64) -> Self {
        Self {
            records,
            input: Impl::Atoll.input(),
            transactions: false,
            partitions: PARTITIONS,
            batches: Batches::Single,
        }
    }
}

/// A fresh broker for one scenario (tansu slows down as its in-memory log grows, so scenarios
/// do not share one), or `--bootstrap`'s, with the topics created and the input written as
/// `setup` says (`plan.keys` keys).
async fn broker(plan: &Plan, setup: Setup) -> anyhow::Result<(Option<Tansu>, String)> {
    let tansu = plan
        .bootstrap
        .is_none()
        .then(|| Tansu::builder().transactions(setup.transactions).start());
    let bootstrap = match (&tansu, &plan.bootstrap) {
        (Some(t), _) => t.bootstrap(),
        (None, b) => b.clone().unwrap_or_default(),
    };
    eprintln!("broker: {bootstrap}");
    create_topics(&bootstrap, setup.partitions).await?;
    let Setup {
        records,
        input,
        batches,
        ..
    } = setup;
    if records > 0 {
        let took = fill(&bootstrap, input, records, plan.keys, batches).await?;
        eprintln!(
            "filled {} ({batches:?} batches) with {records} records in {:.1} s ({:.0} records/s)",
            input.0,
            took.as_secs_f64(),
            records as f64 / took.as_secs_f64()
        );
    }
    Ok((tansu, bootstrap))
}

fn variant(imp: Impl, ordering: &'static str, records: u64) -> Variant {
    Variant {
        imp,
        ordering,
        io_us: 0,
        warmup: 0,
        records,
        latency: false,
        store: None,
        through_shutdown: false,
        max_buffered: None,
        status_ms: None,
    }
}

/// The drain of a backlog of `records` by each of the plan's implementations that drain one:
/// the peers, which await each publish, drain a slice of it (or a run would take hours).
fn drains(plan: &Plan, records: u64, max_buffered: Option<u64>) -> Vec<Variant> {
    let slice = |imp| match imp {
        Impl::Ruststream => records.min(PEER_RECORDS),
        Impl::Faststream => records.min(plan.faststream_records),
        _ => records,
    };
    plan.impls
        .iter()
        .filter(|imp| [Impl::Raw, Impl::Atoll, Impl::Faststream, Impl::Ruststream].contains(imp))
        .map(|&imp| Variant {
            max_buffered,
            ..variant(imp, "partition", slice(imp))
        })
        .collect()
}

/// The broker the rounds of a scenario run on.
enum Brokers<'a> {
    /// One for every round: its address.
    Shared(&'a str),
    /// A fresh one per round, set up as said; with `--bootstrap`, that broker for every round
    /// (its topics exist already: creating them again changes nothing).
    PerRound(&'a Plan, Setup),
}

/// [`rounds_on`] one broker for every round.
async fn rounds(
    bootstrap: &str,
    scenario: &str,
    variants: &[Variant],
    rounds: usize,
    pace: Option<(u64, u64)>,
) -> anyhow::Result<Vec<Row>> {
    let brokers = Brokers::Shared(bootstrap);
    rounds_on(brokers, scenario, variants, rounds, pace).await
}

/// Runs every variant once per round, alternating, the first round discarded; returns the
/// medians. With `pace = Some((rate, keys))` the input is produced at `rate` while each run
/// lasts, starting once the worker has its partitions.
async fn rounds_on(
    brokers: Brokers<'_>,
    scenario: &str,
    variants: &[Variant],
    rounds: usize,
    pace: Option<(u64, u64)>,
) -> anyhow::Result<Vec<Row>> {
    let mut reports: Vec<Vec<Report>> = vec![Vec::new(); variants.len()];
    for round in 0..=rounds {
        let (_fresh, bootstrap) = match brokers {
            Brokers::Shared(bootstrap) => (None, bootstrap.to_owned()),
            Brokers::PerRound(plan, setup) => broker(plan, setup).await?,
        };
        let bootstrap = bootstrap.as_str();
        for (i, v) in variants.iter().enumerate() {
            // The first round warms the broker and the implementation up and is discarded; a
            // tenth of the records does that.
            let warm = Variant {
                records: (v.records / 10).max(1),
                ..v.clone()
            };
            let run = if round == 0 && pace.is_none() {
                &warm
            } else {
                v
            };
            let report = run_one(bootstrap, run, pace).await.with_context(|| {
                format!(
                    "{scenario}: {} ({}) round {round}",
                    v.imp.label(),
                    v.ordering
                )
            })?;
            eprintln!(
                "{scenario} | {} {} | round {round}{} | {:.0} records/s, {:.1} µs CPU/record, p50 {:?} µs, p99 {:?} µs, added p50 {:?} µs, p99 {:?} µs, {:.0} MiB",
                v.imp.label(),
                v.mode(),
                if round == 0 { " (discarded)" } else { "" },
                report.rate,
                report.cpu_us,
                report.p50_us,
                report.p99_us,
                report.added_p50_us,
                report.added_p99_us,
                report.rss_mib
            );
            if round > 0 {
                reports[i].push(report);
            }
        }
    }
    Ok(variants
        .iter()
        .zip(reports)
        .map(|(v, runs)| summarize(scenario, v, &runs))
        .collect())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn summarize(scenario: &str, v: &Variant, runs: &[Report]) -> Row {
    let of = |f: fn(&Report) -> f64| median(runs.iter().map(f).collect());
    let quantile = |f: fn(&Report) -> Option<u64>| {
        let xs: Vec<f64> = runs.iter().filter_map(f).map(|x| x as f64).collect();
        (!xs.is_empty()).then(|| median(xs) as u64)
    };
    let rates = runs.iter().map(|r| r.rate);
    let added = |f: fn(&Report) -> Option<f64>| {
        let xs: Vec<f64> = runs.iter().filter_map(f).collect();
        (!xs.is_empty()).then(|| median(xs))
    };
    Row {
        scenario: scenario.to_owned(),
        implementation: v.imp.label(),
        mode: v.mode(),
        rounds: runs.len(),
        records: v.records,
        rate: of(|r| r.rate),
        cpu_us: of(|r| r.cpu_us),
        p50_us: quantile(|r| r.p50_us),
        p99_us: quantile(|r| r.p99_us),
        added_p50_us: added(|r| r.added_p50_us),
        added_p99_us: added(|r| r.added_p99_us),
        rss_mib: of(|r| r.rss_mib),
        rate_min: rates.clone().fold(f64::INFINITY, f64::min),
        rate_max: rates.fold(0.0, f64::max),
    }
}

/// Starts a worker process for `v`, feeds it when paced, and reads its report.
async fn run_one(bootstrap: &str, v: &Variant, pace: Option<(u64, u64)>) -> anyhow::Result<Report> {
    let to = if pace.is_some() {
        Position::End
    } else {
        Position::Start
    };
    let input = v.imp.input();
    let group = if v.imp == Impl::Faststream {
        // aiokafka cannot join a group whose offsets another client reset on tansu 0.6 (the
        // assignment it is sent is empty): a fresh group per run, which starts at the
        // beginning.
        format!("{}-{}", v.imp.group(), uuid::Uuid::new_v4())
    } else {
        let group = v.imp.group();
        reset_group(bootstrap, &group, input.0, to)?;
        group
    };
    if let Some(url) = &v.store {
        forget_handled(url).await?;
    }
    let mut child = spawn_worker(bootstrap, &group, v, PARTITIONS)?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let report = tokio::time::timeout(WORKER_LIMIT, async {
        let mut feeding = None;
        while let Some(line) = lines.next_line().await? {
            if line == "ready" {
                if let Some((rate, keys)) = pace {
                    let total = v.warmup + v.records;
                    let bootstrap = bootstrap.to_owned();
                    feeding = Some(tokio::spawn(async move {
                        paced(&bootstrap, input, rate, total, keys).await
                    }));
                }
                continue;
            }
            let report = parse_report(&line)?;
            if let Some(f) = feeding {
                f.await??;
            }
            return Ok::<_, anyhow::Error>(report);
        }
        bail!("the worker ended without a report")
    })
    .await
    .context("the worker did not finish within 10 minutes")??;
    let status = child.wait().await?;
    if !status.success() {
        bail!("the worker exited with {status}");
    }
    Ok(report)
}

/// How long one worker may take.
const WORKER_LIMIT: Duration = Duration::from_secs(600);

fn parse_report(line: &str) -> anyhow::Result<Report> {
    serde_json::from_str(line).with_context(|| format!("worker printed `{line}`"))
}

/// Starts the worker process of `v` (this binary, or FastStream's Python), which prints `ready`
/// once `ready_partitions` are assigned to it, then its report.
fn spawn_worker(
    bootstrap: &str,
    group: &str,
    v: &Variant,
    ready_partitions: i32,
) -> anyhow::Result<tokio::process::Child> {
    let mut command = if v.imp == Impl::Faststream {
        crate::python::faststream(bootstrap, group, v.records)?
    } else {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .args(["worker", "--impl"])
            .arg(
                v.imp
                    .to_possible_value()
                    .expect("every implementation has a name")
                    .get_name(),
            )
            .args(["--bootstrap", bootstrap, "--group", group])
            .args(["--ordering", v.ordering])
            .args(["--io-us", &v.io_us.to_string()])
            .args(["--warmup", &v.warmup.to_string()])
            .args(["--records", &v.records.to_string()])
            .args(["--ready-partitions", &ready_partitions.to_string()])
            .args(v.latency.then_some("--latency"))
            .args(v.through_shutdown.then_some("--through-shutdown"))
            .args(["--fetch-wait-ms", FETCH_WAIT_MS])
            .env("ATOLL_KAFKA__BOOTSTRAP_SERVERS", bootstrap)
            .env("ATOLL_SERVICE__STATIC_MEMBERSHIP", "false")
            .env("ATOLL_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000")
            .env("ATOLL_KAFKA__PROPERTIES__HEARTBEAT_INTERVAL_MS", "500")
            .env("ATOLL_KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS", FETCH_WAIT_MS)
            .envs(listener_env(v))
            .envs(v.store.iter().map(|url| ("ATOLL_STORE__URL", url)));
        command
    };
    Ok(command.stdout(Stdio::piped()).kill_on_drop(true).spawn()?)
}

/// The settings of atoll's worker listener as environment variables (none for the other
/// implementations): its ordering, its delivery when exactly once, and its buffer when set.
fn listener_env(v: &Variant) -> Vec<(String, String)> {
    let Some(listener) = v.imp.listener() else {
        return Vec::new();
    };
    let key = |setting: &str| {
        format!(
            "ATOLL_LISTENERS__{}__{setting}",
            listener.to_ascii_uppercase()
        )
    };
    let mut env = vec![(key("ORDERING"), v.ordering.to_owned())];
    if v.imp == Impl::AtollEos {
        env.push((key("DELIVERY"), "exactly_once".to_owned()));
    }
    if let Some(n) = v.max_buffered {
        env.push((key("MAX_BUFFERED"), n.to_string()));
    }
    if let Some(ms) = v.status_ms {
        env.push(("ATOLL_STATUS__INTERVAL_MS".to_owned(), ms.to_string()));
    }
    env
}

/// Scenario 7: `n` processes of the relay listener in one group on 12 partitions. Each run has
/// a fresh broker: the workers join, and once each holds its share of the partitions the input
/// is written in ordinary batches while they drain it; each measures 80% of its share (the
/// keys do not spread exactly evenly). The rate is every measured record over the longest
/// worker's span, the CPU per record the workers' CPU over their records; the machine's CPU
/// use over the runs shows when the two cores, not atoll, are the ceiling.
async fn scale_out(plan: &Plan, n: u32) -> anyhow::Result<Row> {
    let name = format!(
        "7: scale-out, {} records on {SCALE_PARTITIONS} partitions",
        plan.scale_records
    );
    let share = plan.scale_records / u64::from(n);
    let v = Variant {
        max_buffered: Some(UNPAUSED),
        ..variant(Impl::Atoll, "partition", share * 8 / 10)
    };
    let mut runs = Vec::new();
    let mut busy = Vec::new();
    for round in 1..=plan.rounds {
        let (_tansu, bootstrap) = broker(
            plan,
            Setup {
                partitions: SCALE_PARTITIONS,
                ..Setup::backlog(0)
            },
        )
        .await?;
        let ready_partitions = SCALE_PARTITIONS / n as i32;
        let mut children = Vec::new();
        let mut outputs = Vec::new();
        for _ in 0..n {
            let mut child = spawn_worker(&bootstrap, &v.imp.group(), &v, ready_partitions)?;
            outputs.push(BufReader::new(child.stdout.take().expect("piped")).lines());
            children.push(child);
        }
        let reports = tokio::time::timeout(WORKER_LIMIT, async {
            for lines in &mut outputs {
                match lines.next_line().await? {
                    Some(line) if line == "ready" => {}
                    other => bail!("a worker printed {other:?} instead of `ready`"),
                }
            }
            // The last join's rebalance settles.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let cpu = machine_cpu();
            fill(
                &bootstrap,
                Impl::Atoll.input(),
                plan.scale_records,
                plan.keys,
                Batches::Ordinary,
            )
            .await?;
            let mut reports = Vec::new();
            for lines in &mut outputs {
                let line = lines
                    .next_line()
                    .await?
                    .context("a worker ended without a report")?;
                reports.push(parse_report(&line)?);
            }
            Ok::<_, anyhow::Error>((reports, cpu.busy_since()))
        })
        .await
        .context("the workers did not finish within 10 minutes")??;
        for mut child in children {
            let status = child.wait().await?;
            if !status.success() {
                bail!("a worker exited with {status}");
            }
        }
        let (reports, machine) = reports;
        let records: u64 = reports.iter().map(|r| r.records).sum();
        let secs = reports.iter().map(|r| r.secs).fold(0.0, f64::max);
        let cpu_us = reports
            .iter()
            .map(|r| r.cpu_us * r.records as f64)
            .sum::<f64>()
            / records as f64;
        let run = Report {
            records,
            secs,
            rate: records as f64 / secs,
            cpu_us,
            p50_us: None,
            p99_us: None,
            added_p50_us: None,
            added_p99_us: None,
            rss_mib: reports.iter().map(|r| r.rss_mib).fold(0.0, f64::max),
        };
        eprintln!(
            "{name} | atoll ×{n} | round {round} | {:.0} records/s, {:.1} µs CPU/record, machine {:.0}% busy",
            run.rate, run.cpu_us, machine * 100.0
        );
        runs.push(run);
        busy.push(machine);
    }
    let mut row = summarize(&name, &v, &runs);
    row.mode = format!(
        "{n} process{}, machine {:.0}% busy",
        if n == 1 { "" } else { "es" },
        median(busy) * 100.0
    );
    row.records = v.records * u64::from(n);
    Ok(row)
}

/// The machine's CPU counters (`/proc/stat`): busy and total jiffies of all cores.
#[derive(Debug, Clone, Copy)]
struct MachineCpu {
    busy: u64,
    total: u64,
}

fn machine_cpu() -> MachineCpu {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    MachineCpu {
        busy: total - idle,
        total,
    }
}

impl MachineCpu {
    /// The share of the machine's CPU time spent busy since `self` was read.
    fn busy_since(self) -> f64 {
        let now = machine_cpu();
        let total = now.total.saturating_sub(self.total).max(1);
        now.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

/// Empties the transactional run's inbox: the runs of a scenario read the same input again,
/// which the inbox would otherwise skip as repeats. `TRUNCATE`, not `DELETE`: deleted rows
/// would stay in the table as dead versions of the very ids the next run claims again.
async fn forget_handled(url: &str) -> anyhow::Result<()> {
    let mut config = atoll::config::StoreConfig::default();
    config.url = Some(url.to_owned());
    let store = atoll::Store::connect(&config).await?;
    sqlx::query("TRUNCATE atoll_inbox")
        .execute(store.pool())
        .await?;
    store.pool().close().await;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Position {
    Start,
    End,
}

/// Commits `to` for every one of the partitions of `input` in `group`, which has no members
/// now.
fn reset_group(bootstrap: &str, group: &str, input: &str, to: Position) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let offset = match to {
            Position::Start => 0,
            Position::End => {
                consumer
                    .fetch_watermarks(input, p, Duration::from_secs(10))?
                    .1
            }
        };
        tpl.add_partition_offset(input, p, Offset::Offset(offset))?;
    }
    consumer.assign(&tpl)?;
    consumer
        .commit(&tpl, CommitMode::Sync)
        .with_context(|| format!("resetting the offsets of group `{group}`"))?;
    Ok(())
}

/// Creates the benchmark's topics, the input with `partitions`, the others with [`PARTITIONS`].
async fn create_topics(bootstrap: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let topics: Vec<NewTopic<'_>> = [
        INPUT,
        OUTPUT_ATOLL,
        OUTPUT_RAW,
        OUTPUT_RUSTSTREAM,
        OUTPUT_FASTSTREAM,
        INPUT_LEDGER,
        OUTPUT_LEDGER,
        INPUT_LEDGER_SET,
        OUTPUT_LEDGER_SET,
        INPUT_BATCH,
        OUTPUT_BATCH,
    ]
    .iter()
    .map(|t| {
        let n = if *t == INPUT { partitions } else { PARTITIONS };
        NewTopic::new(t, n, TopicReplication::Fixed(-1))
    })
    .collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => bail!("creating {topic}: {e}"),
        }
    }
    Ok(())
}

/// A producer of input records. One record per batch: tansu 0.6 cannot fetch from an offset
/// inside a batch (`testkit/tests/tansu_limitations.rs`), and consumers that pause partitions
/// (atoll's backpressure) fetch again from the next record to handle.
/// The paced producer of scenario 3 batches, lingering 5 ms (tansu cannot take 10,000 small
/// batches a second; consumers that keep up never fetch from inside a batch).
fn producer(bootstrap: &str, linger_ms: &str, batch: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("batch.num.messages", batch)
        .set("linger.ms", linger_ms)
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Sends input record `i` to `input` (topic, `ce_type`), stamped now, with the headers atoll's
/// producers write.
fn send(
    p: &FutureProducer,
    input: (&str, &'static str),
    i: u64,
    keys: u64,
) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
    let t = transfer(i, meter::now_us(), keys);
    let payload = serde_json::to_vec(&t)?;
    let (headers, _) = Outgoing::new(input.1, "bench.perf.driver").headers();
    let record = FutureRecord::to(input.0)
        .key(t.account.as_bytes())
        .payload(&payload)
        .headers(headers);
    p.send_result(record)
        .map_err(|(e, _)| anyhow::anyhow!("producing input {i}: {e}"))
}

/// The outcome of a delivery future as an error.
fn acked(
    ack: Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> anyhow::Result<()> {
    ack?.map_err(|(e, _)| e)?;
    Ok(())
}

/// How the input is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batches {
    /// One record per batch: consumers that pause (atoll's backpressure) can read it on tansu.
    Single,
    /// Ordinary batches (up to 10,000 records, 20 ms linger): read without pauses only.
    Ordinary,
}

/// Producers filling the input at once.
const FILL_CONNECTIONS: usize = 4;

/// Fills the input topic with `records` records; returns how long it took.
async fn fill(
    bootstrap: &str,
    input: (&str, &'static str),
    records: u64,
    keys: u64,
    batches: Batches,
) -> anyhow::Result<Duration> {
    let batch = match batches {
        Batches::Single => "1",
        Batches::Ordinary => "10000",
    };
    // Several connections: tansu takes one-record batches faster from several.
    let producers = (0..FILL_CONNECTIONS)
        .map(|_| producer(bootstrap, "20", batch))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..records {
        while acks.len() >= 100_000 {
            acked(acks.next().await.expect("not empty"))?;
        }
        let p = &producers[(i % FILL_CONNECTIONS as u64) as usize];
        acks.push(send(p, input, i, keys)?);
    }
    while let Some(ack) = acks.next().await {
        acked(ack)?;
    }
    Ok(start.elapsed())
}

/// Produces `total` records at `rate` per second, in 1 ms ticks.
async fn paced(
    bootstrap: &str,
    input: (&str, &'static str),
    rate: u64,
    total: u64,
    keys: u64,
) -> anyhow::Result<()> {
    let p = producer(bootstrap, "5", "10000")?;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut acks = FuturesUnordered::new();
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            acks.push(send(&p, input, 1_000_000_000 + sent, keys)?);
            sent += 1;
        }
        while let Some(Some(ack)) = acks.next().now_or_never() {
            acked(ack)?;
        }
    }
    while let Some(ack) = acks.next().await {
        acked(ack)?;
    }
    Ok(())
}

/// One line saying where the figures come from: the date, the machine, the kernel, the
/// versions of librdkafka and of the brokers.
fn provenance() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0 / 1024.0);
    let kernel = read("/proc/sys/kernel/osrelease");
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    let date = time::OffsetDateTime::now_utc().date();
    format!(
        "{date}: {cores} × {model}, {mem_gib:.0} GiB, Linux {}; librdkafka {librdkafka}; tansu 0.6.0 (noida-db 0.2.3 for scenario 5)",
        kernel.trim()
    )
}

fn print_table(rows: &[Row]) {
    println!("{}", provenance());
    println!();
    println!("| scenario | implementation | mode | records per run | records/s (min–max) | CPU µs/record | p50 / p99 latency | atoll-added p50 / p99 | peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let latency = match (r.p50_us, r.p99_us) {
            (Some(a), Some(b)) => format!("{:.2} / {:.2} ms", a as f64 / 1e3, b as f64 / 1e3),
            _ => "—".to_owned(),
        };
        let added = match (r.added_p50_us, r.added_p99_us) {
            (Some(a), Some(b)) => format!("{a:.0} / {b:.0} µs"),
            _ => "—".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {:.0} ({:.0}–{:.0}) | {:.1} | {} | {} | {:.0} MiB |",
            r.scenario,
            r.implementation,
            r.mode,
            r.records,
            r.rate,
            r.rate_min,
            r.rate_max,
            r.cpu_us,
            latency,
            added,
            r.rss_mib
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{listener_env, median, parse_report, variant, Plan, Variant};
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        plan: Plan,
    }

    #[test]
    fn each_worker_gets_settings_for_its_own_listener_only() {
        use crate::Impl;
        let with_buffer = |imp| Variant {
            max_buffered: Some(7),
            ..variant(imp, "key", 10)
        };
        let keys =
            |v: &Variant| -> Vec<String> { listener_env(v).into_iter().map(|(k, _)| k).collect() };
        for (imp, want) in [
            (Impl::Raw, vec![]),
            (Impl::Faststream, vec![]),
            (Impl::Ruststream, vec![]),
            (
                Impl::Atoll,
                vec![
                    "ATOLL_LISTENERS__RELAY__ORDERING",
                    "ATOLL_LISTENERS__RELAY__MAX_BUFFERED",
                ],
            ),
            (
                Impl::AtollEos,
                vec![
                    "ATOLL_LISTENERS__RELAY__ORDERING",
                    "ATOLL_LISTENERS__RELAY__DELIVERY",
                    "ATOLL_LISTENERS__RELAY__MAX_BUFFERED",
                ],
            ),
            // The transactional worker's listener is `deposit`: a `relay` setting stopped its
            // start (`listeners.relay names no listener of this process`).
            (
                Impl::AtollTx,
                vec![
                    "ATOLL_LISTENERS__DEPOSIT__ORDERING",
                    "ATOLL_LISTENERS__DEPOSIT__MAX_BUFFERED",
                ],
            ),
            (
                Impl::AtollTxSet,
                vec![
                    "ATOLL_LISTENERS__DEPOSIT__ORDERING",
                    "ATOLL_LISTENERS__DEPOSIT__MAX_BUFFERED",
                ],
            ),
        ] {
            assert_eq!(keys(&with_buffer(imp)), want, "{imp:?}");
        }
    }

    #[test]
    fn a_python_workers_report_reads_without_the_atoll_fields() {
        let line = r#"{"records": 5000, "secs": 2.5, "rate": 2000.0, "cpu_us": 480.5, "p50_us": null, "p99_us": null, "rss_mib": 61.2}"#;
        let report = parse_report(line).unwrap();
        assert_eq!(report.records, 5000);
        assert_eq!(report.added_p99_us, None);
        assert!(parse_report("Traceback (most recent call last):").is_err());
    }

    #[test]
    fn the_quick_plan_is_small_and_leaves_out_the_peers() {
        let plan = Cli::parse_from(["bench", "--quick"]).plan.resolved();
        assert_eq!(plan.scenarios, [1, 3, 6]);
        assert!(plan.records <= 100_000 && plan.batched_records <= 200_000);
        assert_eq!(plan.rounds, 1);
        assert!(!plan.impls.contains(&crate::Impl::Faststream));
        assert!(!plan.impls.contains(&crate::Impl::Ruststream));
        let full = Cli::parse_from(["bench"]).plan;
        assert_eq!(full.scenarios, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(full.processes, [1, 2, 4]);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
