//! What a listener's consumer and its partitions' workers share: its configuration
//! ([`Setup`]), what it talks to ([`Io`]) and what it counts and keeps as it runs
//! ([`Counters`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::holds::Holds;
use super::lanes::Permits;
use super::orphan::RetryGroups;
use super::retry::Policy;
use super::routing::Routes;
use crate::backoff::Backoff;
use crate::codec::Codec;
use crate::config::client::Clients;
use crate::config::ListenerConfig;
use crate::contract::retry_topic::Tier;
use crate::contract::topic::TopicName;
use crate::handler::delivery::Delivery;
use crate::handler::listener::Listener;
use crate::ops::health::ConsumerHealth;
use crate::ops::metrics::ListenerMetrics;
use crate::produce::Producer;

/// What every worker of one listener's consumer shares.
pub(crate) struct ListenerEnv<S> {
    pub(crate) svc: Arc<S>,
    pub(crate) listener: Listener<S>,
    /// What the consumer reads, in which group, with which settings.
    pub(crate) setup: Setup,
    /// What it talks to.
    pub(crate) io: Io,
    /// What it counts and keeps as it runs.
    pub(crate) counters: Counters,
}

/// A listener consumer's configuration.
pub(crate) struct Setup {
    pub(crate) config: ListenerConfig,
    /// The topic consumed: the listener's, or the service's retry topic.
    pub(crate) topic: TopicName,
    pub(crate) group: Group,
    /// What the service's listeners know about each other.
    pub(crate) routes: Arc<Routes>,
    /// The `ce_source` of what the listener produces.
    pub(crate) source: Arc<str>,
    /// The process name: with the consumer group, an exactly-once listener's
    /// `transactional.id` (stable across restarts when configured).
    pub(crate) process: String,
}

impl Setup {
    /// How the listener waits out a failing write or read.
    pub(crate) fn backoff(&self) -> Backoff {
        Policy::of(&self.config).backoff
    }
}

/// A listener consumer's group.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// The listener's own group (`<service>-<listener>`): inbox rows and replays name it.
    pub(crate) listener: String,
    /// Whether the consumer reads the listener's topic or the retry topic.
    pub(crate) mode: Mode,
    /// The group the consumer joins: the listener's, or its retry group on a retry topic
    /// ([`Tier::group`]).
    pub(crate) joined: String,
}

impl Group {
    /// The group of `listener`'s consumer in `mode`.
    pub(crate) fn new(listener: String, mode: Mode) -> Self {
        let joined = match mode {
            Mode::Main => listener.clone(),
            Mode::Retry(tier) => tier.group(&listener),
        };
        Self {
            listener,
            mode,
            joined,
        }
    }
}

/// What a listener's consumer talks to.
pub(crate) struct Io {
    pub(crate) producer: Producer,
    pub(crate) codec: Arc<Codec>,
    /// The process's Kafka clients, for looking up other groups' committed offsets and for
    /// an exactly-once listener's transactional producer.
    pub(crate) clients: Clients,
    /// How the listener's outputs leave.
    pub(crate) delivery: Delivery,
    /// The process's shutdown.
    pub(crate) stop: CancellationToken,
    /// The operator's holds on partitions, as the process read them.
    pub(crate) holds: Arc<Holds>,
}

/// What a listener's consumer counts and keeps as it runs.
pub(crate) struct Counters {
    /// Records finished since the last commit, across partitions.
    pub(crate) finished: AtomicU64,
    /// Shared by the listener's main and retry consumers.
    pub(crate) metrics: Arc<ListenerMetrics>,
    /// The listener's in-flight bounds (`max_in_flight` handlers, and as many records
    /// awaiting their acknowledgements), for concurrent ordering modes.
    pub(crate) permits: Permits,
    /// The consumer's health: partitions stopped behind a failing write show there.
    pub(crate) health: Arc<ConsumerHealth>,
    /// What the retry groups of listeners that no longer read the retry topic committed.
    pub(crate) retry_groups: RetryGroups,
}

impl Counters {
    /// A guard that shows `partition` stopped behind a failing write or read, from its first
    /// [`Blocked::because`] until it is dropped.
    pub(crate) fn blocked(&self, partition: i32) -> Blocked<'_> {
        Blocked {
            counters: self,
            partition,
            shown: false,
        }
    }
}

/// See [`Counters::blocked`].
pub(crate) struct Blocked<'a> {
    counters: &'a Counters,
    partition: i32,
    shown: bool,
}

impl Blocked<'_> {
    /// Shows the partition blocked, saying why.
    pub(crate) fn because(&mut self, why: String) {
        let c = self.counters;
        if c.health.blocked(self.partition, why, !self.shown) {
            c.metrics.blocked.inc();
        }
        self.shown = true;
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        let c = self.counters;
        if self.shown && c.health.unblocked(self.partition) {
            c.metrics.blocked.dec();
        }
    }
}

/// Whether a consumer reads the listener's own topic or a retry topic, and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Main,
    Retry(Tier),
}
