//! What one run measures, the same way for every implementation: each handler calls
//! [`record`] once per input record after its work, and the run ends when `records` were
//! recorded after the first `warmup`.
//!
//! - rate: records / wall time between the first and the last measured record;
//! - CPU: user + system time of the process (getrusage) over the same span, per record;
//! - latency: now − the microsecond timestamp the producer wrote into the payload, into an
//!   HdrHistogram (only when the run measures latency: on a pre-filled backlog it would
//!   measure the backlog's age);
//! - atoll's own added latency (with latency): poll thread → handler start plus the emit's
//!   hand-over to the producer, from [`record`], into a nanosecond HdrHistogram;
//! - peak RSS: the process's high-water resident set (each run is a process of its own).

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use nix::sys::resource::{getrusage, UsageWho};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// The figures of one run, printed by the worker process as one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    /// Records measured.
    pub(crate) records: u64,
    /// Wall time between the first and the last measured record, in seconds.
    pub(crate) secs: f64,
    /// Records per second.
    pub(crate) rate: f64,
    /// CPU time (user + system) of the process per record, in microseconds.
    pub(crate) cpu_us: f64,
    /// Median latency in microseconds, when measured.
    pub(crate) p50_us: Option<u64>,
    /// 99th percentile latency in microseconds, when measured.
    pub(crate) p99_us: Option<u64>,
    /// Median latency added by the framework itself, in microseconds, when measured.
    #[serde(default)]
    pub(crate) added_p50_us: Option<f64>,
    /// 99th percentile of the latency added by the framework itself, in microseconds.
    #[serde(default)]
    pub(crate) added_p99_us: Option<f64>,
    /// Peak resident set of the process, in MiB.
    pub(crate) rss_mib: f64,
}

struct Meter {
    warmup: u64,
    records: u64,
    latency: bool,
    seen: AtomicU64,
    start: OnceLock<(Instant, Duration)>,
    histogram: Mutex<Histogram<u64>>,
    /// The framework's own added latency, in nanoseconds.
    added: Mutex<Histogram<u64>>,
    report: OnceLock<Report>,
    done: Notify,
}

static METER: OnceLock<Meter> = OnceLock::new();

/// Sets up the meter of this process: skip `warmup` records, then measure `records`.
pub(crate) fn init(warmup: u64, records: u64, latency: bool) {
    let meter = Meter {
        warmup,
        records,
        latency,
        seen: AtomicU64::new(0),
        start: OnceLock::new(),
        histogram: Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        ),
        added: Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
        ),
        report: OnceLock::new(),
        done: Notify::new(),
    };
    assert!(METER.set(meter).is_ok(), "the meter is set up once");
}

fn meter() -> &'static Meter {
    METER.get().expect("meter::init runs before any handler")
}

/// The current time in microseconds since the epoch, as written into payloads.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// User + system CPU time of this process so far.
fn cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage(RUSAGE_SELF)");
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
    };
    t(usage.user_time()) + t(usage.system_time())
}

/// The peak resident set of this process image.
fn max_rss_mib() -> f64 {
    atoll_testkit::process::peak_rss_mib("/proc/self/status").unwrap_or(f64::NAN)
}

/// Books one handled record that the producer stamped at `ts_us`, with the latency the
/// framework `added` to it when measured (atoll's relay).
pub(crate) fn record(ts_us: u64, added: Option<Duration>) {
    let m = meter();
    let n = m.seen.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= m.warmup {
        return;
    }
    // Not only by the first measured record's own call: another worker thread may reach the
    // last measured record before that call set the start (it lost the CPU between its count
    // and its clock), and the report needs a start.
    m.start.get_or_init(|| (Instant::now(), cpu()));
    if n > m.warmup + m.records {
        return;
    }
    if m.latency {
        let latency = now_us().saturating_sub(ts_us).max(1);
        let _ = m.histogram.lock().record(latency.min(60_000_000));
        if let Some(added) = added {
            let ns = (added.as_nanos() as u64).clamp(1, 60_000_000_000);
            let _ = m.added.lock().record(ns);
        }
    }
    if n == m.warmup + m.records {
        m.finish();
    }
}

impl Meter {
    fn finish(&self) {
        let report = self.report_now();
        let _ = self.report.set(report);
        self.done.notify_one();
    }

    /// The figures over the span from the first measured record to now.
    fn report_now(&self) -> Report {
        let (t0, cpu0) = *self
            .start
            .get()
            .expect("started at the first measured record");
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        let cpu_us = (cpu() - cpu0).as_secs_f64() * 1e6 / self.records as f64;
        let h = self.histogram.lock();
        let quantile = |q| self.latency.then(|| h.value_at_quantile(q));
        let added = self.added.lock();
        let added_quantile =
            |q| (!added.is_empty()).then(|| added.value_at_quantile(q) as f64 / 1e3);
        Report {
            records: self.records,
            secs,
            rate: self.records as f64 / secs,
            cpu_us,
            p50_us: quantile(0.5),
            p99_us: quantile(0.99),
            added_p50_us: added_quantile(0.5),
            added_p99_us: added_quantile(0.99),
            rss_mib: max_rss_mib(),
        }
    }
}

/// The run's figures with the measured span extended to now (after the records were measured:
/// e.g. once the process shut down and committed its last work).
pub(crate) fn through_now() -> Report {
    meter().report_now()
}

/// Waits until the run's records were measured, and returns the figures.
pub(crate) async fn finished() -> Report {
    let m = meter();
    loop {
        if let Some(r) = m.report.get() {
            return r.clone();
        }
        m.done.notified().await;
    }
}
