//! Liveness and readiness of the process's listeners, served on `/health/live` and
//! `/health/ready` (see [`super::http`]).
//!
//! - **Live** unless some listener's poll loop has not come round for `http.stalled_after_ms`:
//!   a stuck poll thread stops fetching and heartbeating, and only a restart mends it; nor
//!   while a client reported a fatal error (it does nothing from then on); nor while a
//!   partition has been stopped behind a failing dead-letter or retry-topic write for
//!   `http.stalled_after_ms`.
//! - **Ready** once the start completed and every consumer (each listener's, and its retry
//!   consumer) has joined its group and received an assignment (possibly empty: a group with
//!   more members than partitions leaves some idle), while each one's brokers are reachable,
//!   the clients' login works (a failed TLS handshake or SASL login makes the process not
//!   ready until a client connects again) and no partition is stopped behind a failing write,
//!   and until shutdown begins.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::client::Access;

/// What, beside the consumers, can keep the process from being ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Condition {
    /// The start waits for the cluster or the registry.
    Start,
    /// A Kafka client's login or TLS handshake was refused.
    Kafka,
    /// The schema registry cannot be reached or refuses the login.
    Registry,
    /// An outbox row keeps failing to be published (it holds up the later rows of its key).
    Outbox,
}

/// The process's health, fed by its listeners' poll threads.
#[derive(Debug)]
pub(crate) struct Health {
    epoch: Instant,
    stalled_after: Duration,
    stopping: AtomicBool,
    /// Whether the start completed.
    started: AtomicBool,
    /// What keeps the process from being ready beside its consumers, by what reports it: the
    /// start's wait, a refused Kafka login, the schema registry.
    conditions: Mutex<BTreeMap<Condition, String>>,
    consumers: Mutex<Vec<Arc<ConsumerHealth>>>,
    /// Fatal errors clients reported: the process must be restarted.
    fatal: Mutex<Vec<String>>,
}

/// One consumer's health, updated by its poll thread and callbacks.
#[derive(Debug)]
pub(crate) struct ConsumerHealth {
    name: String,
    epoch: Instant,
    last_poll_ms: AtomicU64,
    joined: AtomicBool,
    broker_up: AtomicBool,
    stopped: AtomicBool,
    /// Partitions stopped behind failing writes: why, since when (ms since the epoch), and
    /// how many writes fail.
    blocked: Mutex<Vec<(i32, String, u64, usize)>>,
    /// A fatal error of its client.
    fatal: Mutex<Option<String>>,
}

impl ConsumerHealth {
    /// `partition` is stopped behind a write that keeps failing, for `why`; `first` on a
    /// write's first failure (a partition may have several failing writes, in `key` or
    /// `unordered` ordering). `true` when the partition was not stopped before.
    pub(crate) fn blocked(&self, partition: i32, why: String, first: bool) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut blocked = self.blocked.lock();
        match blocked.iter_mut().find(|b| b.0 == partition) {
            Some(entry) => {
                entry.1 = why;
                entry.3 += usize::from(first);
                false
            }
            None => {
                blocked.push((partition, why, now, 1));
                true
            }
        }
    }

    /// One of `partition`'s failing writes ended (it succeeded, or it was given up). `true`
    /// when the partition moves again (none of its writes fails any more).
    pub(crate) fn unblocked(&self, partition: i32) -> bool {
        let mut blocked = self.blocked.lock();
        let Some(i) = blocked.iter().position(|b| b.0 == partition) else {
            return false;
        };
        blocked[i].3 -= 1;
        if blocked[i].3 > 0 {
            return false;
        }
        blocked.remove(i);
        true
    }

    /// The partitions stopped behind failing writes now, and why.
    pub(crate) fn blocked_now(&self) -> Vec<(i32, String)> {
        let blocked = self.blocked.lock();
        blocked.iter().map(|b| (b.0, b.1.clone())).collect()
    }

    /// The client reported a fatal error: it will do nothing from now on.
    pub(crate) fn fatal(&self, why: String) {
        self.fatal.lock().get_or_insert(why);
    }

    /// The poll loop came round.
    pub(crate) fn polled(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_poll_ms.store(ms, Ordering::Relaxed);
    }

    /// The consumer received an assignment.
    pub(crate) fn joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
    }

    /// Whether its brokers are reachable, as last reported by librdkafka.
    pub(crate) fn broker_up(&self, up: bool) {
        self.broker_up.store(up, Ordering::Relaxed);
    }

    /// The poll loop ended (shutdown): no longer watched for stalls.
    pub(crate) fn stopped(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn status(&self, now_ms: u64) -> ConsumerStatus {
        ConsumerStatus {
            consumer: self.name.clone(),
            joined: self.joined.load(Ordering::Relaxed),
            broker_up: self.broker_up.load(Ordering::Relaxed),
            stopped: self.stopped.load(Ordering::Relaxed),
            since_last_poll_ms: now_ms.saturating_sub(self.last_poll_ms.load(Ordering::Relaxed)),
            blocked: self
                .blocked
                .lock()
                .iter()
                .map(|(p, why, since, _)| Blocked {
                    partition: *p,
                    why: why.clone(),
                    for_ms: now_ms.saturating_sub(*since),
                })
                .collect(),
            fatal: self.fatal.lock().clone(),
        }
    }
}

/// What a probe reports, as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// `live`, `stalled`, `ready` or `not_ready`.
    pub(crate) status: &'static str,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) reasons: Vec<String>,
    /// Every consumer.
    pub(crate) consumers: Vec<ConsumerStatus>,
}

impl Report {
    /// Whether the probe passes.
    pub(crate) fn ok(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// One consumer in a [`Report`].
#[derive(Debug, Serialize)]
pub(crate) struct ConsumerStatus {
    consumer: String,
    joined: bool,
    broker_up: bool,
    stopped: bool,
    since_last_poll_ms: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocked: Vec<Blocked>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fatal: Option<String>,
}

/// A partition stopped behind a failing write, in a [`ConsumerStatus`].
#[derive(Debug, Serialize)]
pub(crate) struct Blocked {
    partition: i32,
    why: String,
    for_ms: u64,
}

impl Health {
    /// Health that calls a poll loop stalled after `stalled_after`.
    pub(crate) fn new(stalled_after: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            stalled_after,
            stopping: AtomicBool::new(false),
            started: AtomicBool::new(false),
            conditions: Mutex::default(),
            consumers: Mutex::default(),
            fatal: Mutex::default(),
        }
    }

    /// The start completed: readiness is up to the consumers from now on.
    pub(crate) fn started(&self) {
        self.started.store(true, Ordering::Relaxed);
        self.condition(Condition::Start, None);
    }

    /// `condition` keeps the process from being ready, for `why` (`None`: no longer).
    pub(crate) fn condition(&self, condition: Condition, why: Option<String>) {
        let mut conditions = self.conditions.lock();
        match why {
            Some(why) => conditions.insert(condition, why),
            None => conditions.remove(&condition),
        };
    }

    /// The start waits for `why` (`None`: no longer).
    pub(crate) fn waiting(&self, why: Option<String>) {
        self.condition(Condition::Start, why);
    }

    /// What the clients' last login attempt came to.
    pub(crate) fn access(&self, access: Access) {
        let why = match access {
            Access::Refused(why) => Some(why),
            Access::Granted => None,
        };
        self.condition(Condition::Kafka, why);
    }

    /// Watches a new consumer, named e.g. `acme.shop.orders/place_order`.
    pub(crate) fn consumer(&self, name: String) -> Arc<ConsumerHealth> {
        let c = Arc::new(ConsumerHealth {
            name,
            epoch: self.epoch,
            last_poll_ms: AtomicU64::new(0),
            joined: AtomicBool::new(false),
            broker_up: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            blocked: Mutex::default(),
            fatal: Mutex::default(),
        });
        c.polled();
        self.consumers.lock().push(c.clone());
        c
    }

    /// A client not tied to one consumer (the producer) reported a fatal error.
    pub(crate) fn fatal(&self, why: String) {
        self.fatal.lock().push(why);
    }

    /// Shutdown began: not ready any more.
    pub(crate) fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn statuses(&self) -> Vec<ConsumerStatus> {
        let now = self.epoch.elapsed().as_millis() as u64;
        let consumers = self.consumers.lock();
        consumers.iter().map(|c| c.status(now)).collect()
    }

    /// Liveness: no running poll loop stalled.
    pub(crate) fn live(&self) -> Report {
        let consumers = self.statuses();
        let limit = self.stalled_after.as_millis() as u64;
        let mut reasons = self.fatal.lock().clone();
        for c in consumers.iter().filter(|c| !c.stopped) {
            if c.since_last_poll_ms > limit {
                reasons.push(format!(
                    "{}: poll loop stalled for {} ms (limit {limit} ms)",
                    c.consumer, c.since_last_poll_ms
                ));
            }
            if let Some(why) = &c.fatal {
                reasons.push(format!("{}: fatal client error: {why}", c.consumer));
            }
            for b in c.blocked.iter().filter(|b| b.for_ms > limit) {
                reasons.push(format!(
                    "{}: partition {} stopped for {} ms (limit {limit} ms): {}",
                    c.consumer, b.partition, b.for_ms, b.why
                ));
            }
        }
        let status = if reasons.is_empty() {
            "live"
        } else {
            "stalled"
        };
        Report {
            status,
            reasons,
            consumers,
        }
    }

    /// Readiness: every consumer joined, brokers reachable, not stopping.
    pub(crate) fn ready(&self) -> Report {
        let consumers = self.statuses();
        let mut reasons = Vec::new();
        if self.stopping.load(Ordering::Relaxed) {
            reasons.push("shutting down".to_owned());
        }
        let conditions = self.conditions.lock();
        let starting = !self.started.load(Ordering::Relaxed);
        if starting && !conditions.contains_key(&Condition::Start) {
            reasons.push("starting".to_owned());
        }
        reasons.extend(conditions.values().cloned());
        drop(conditions);
        for c in &consumers {
            if !c.joined {
                reasons.push(format!("{}: has not joined its group yet", c.consumer));
            }
            if !c.broker_up {
                reasons.push(format!("{}: brokers unreachable", c.consumer));
            }
            for b in &c.blocked {
                reasons.push(format!(
                    "{}: partition {} stopped: {}",
                    c.consumer, b.partition, b.why
                ));
            }
        }
        let status = if reasons.is_empty() {
            "ready"
        } else {
            "not_ready"
        };
        Report {
            status,
            reasons,
            consumers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_started_and_every_consumer_joined_and_while_brokers_are_up() {
        let h = Health::new(Duration::from_secs(60));
        assert_eq!(h.ready().reasons, ["starting"]);
        h.waiting(Some("starting: creating topics: timed out".into()));
        assert_eq!(h.ready().reasons, ["starting: creating topics: timed out"]);
        h.started();
        assert!(h.ready().ok(), "no consumers: nothing to wait for");
        let a = h.consumer("acme.shop.orders/place_order".into());
        let b = h.consumer("acme.shop.orders/place_order (retry)".into());
        let r = h.ready();
        assert!(!r.ok());
        assert_eq!(r.reasons.len(), 2, "{:?}", r.reasons);
        a.joined();
        assert!(!h.ready().ok());
        b.joined();
        assert!(h.ready().ok());
        b.broker_up(false);
        let r = h.ready();
        assert_eq!(r.status, "not_ready");
        assert!(
            r.reasons[0].contains("brokers unreachable"),
            "{:?}",
            r.reasons
        );
        b.broker_up(true);
        assert!(h.ready().ok());
        h.stopping();
        assert_eq!(h.ready().reasons, ["shutting down"]);
    }

    #[test]
    fn a_poll_loop_that_stops_coming_round_fails_liveness() {
        let h = Health::new(Duration::from_millis(200));
        let c = h.consumer("acme.shop.orders/place_order".into());
        assert!(h.live().ok());
        std::thread::sleep(Duration::from_millis(400));
        let r = h.live();
        assert_eq!(r.status, "stalled");
        assert!(
            r.reasons[0].contains("poll loop stalled"),
            "{:?}",
            r.reasons
        );
        c.polled();
        assert!(h.live().ok());
        std::thread::sleep(Duration::from_millis(400));
        c.stopped();
        assert!(
            h.live().ok(),
            "a loop that ended at shutdown is not stalled"
        );
    }

    #[test]
    fn a_blocked_partition_is_not_ready_at_once_and_not_live_after_the_limit() {
        let h = Health::new(Duration::from_millis(200));
        h.started();
        let c = h.consumer("acme.shop.orders/place_order".into());
        c.joined();
        assert!(c.blocked(
            3,
            "writing to `acme.shop.orders.private.dlq` failed: unknown topic".into(),
            true
        ));
        assert!(
            !c.blocked(3, "again".into(), false),
            "the same write, again"
        );
        assert!(
            !c.blocked(3, "another write".into(), true),
            "a second write, same partition"
        );
        let r = h.ready();
        assert!(
            r.reasons[0].contains("partition 3 stopped") && r.reasons[0].contains("another write"),
            "{:?}",
            r.reasons
        );
        assert!(h.live().ok(), "not yet for longer than the limit");
        std::thread::sleep(Duration::from_millis(300));
        c.polled();
        let r = h.live();
        assert!(
            r.reasons.len() == 1 && r.reasons[0].contains("partition 3 stopped for"),
            "{:?}",
            r.reasons
        );
        assert!(!c.unblocked(3), "the second write still fails");
        assert!(!h.ready().ok());
        assert!(c.unblocked(3));
        assert!(h.ready().ok() && h.live().ok());
    }

    #[test]
    fn a_refused_login_is_not_ready_until_a_client_connects() {
        let h = Health::new(Duration::from_secs(60));
        h.started();
        let why = "authentication failed for alice at 127.0.0.1:9092: invalid-proof";
        h.access(Access::Refused(why.into()));
        assert_eq!(h.ready().reasons, [why]);
        assert!(h.live().ok(), "a restart would not mend it: still live");
        h.access(Access::Granted);
        assert!(h.ready().ok());
    }

    #[test]
    fn a_fatal_client_error_fails_liveness() {
        let h = Health::new(Duration::from_secs(60));
        let c = h.consumer("acme.shop.orders/place_order".into());
        c.fatal("static member fenced".into());
        let r = h.live();
        assert!(
            r.reasons[0].contains("fatal client error: static member fenced"),
            "{:?}",
            r.reasons
        );
        let h = Health::new(Duration::from_secs(60));
        h.fatal("producer: fatal idempotence error".into());
        assert_eq!(h.live().reasons, ["producer: fatal idempotence error"]);
    }
}
