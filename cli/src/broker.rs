//! The connection to the broker, configured like the services (`ATOLL_*`, `atoll.toml`).

use std::time::Duration;

use anyhow::{bail, Context as _};
use atoll::broker::client_config;
use atoll::config::Config;
use atoll_console::dlq::Kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A reachable broker.
pub(crate) struct Broker {
    client: ClientConfig,
    bootstrap: String,
    runtime: tokio::runtime::Handle,
    /// Reads topics whole, sends records and lists partitions (shared with the console).
    kafka: Kafka,
}

impl Broker {
    /// Loads the configuration and checks that the broker at `bootstrap` (else the configured
    /// one) answers.
    pub(crate) fn connect_to(
        runtime: tokio::runtime::Handle,
        bootstrap: Option<String>,
    ) -> anyhow::Result<Self> {
        let config = Config::load()?;
        let Some(bootstrap) = bootstrap.or_else(|| config.kafka.bootstrap_servers.clone()) else {
            bail!("no broker configured: set ATOLL_KAFKA__BOOTSTRAP_SERVERS (or kafka.bootstrap_servers in atoll.toml)");
        };
        let mut client = client_config(&config, &bootstrap)?;
        client.set("socket.timeout.ms", "10000");
        atoll::broker::reach(&client, TIMEOUT).with_context(|| {
            format!("cannot reach the broker at {bootstrap} (ATOLL_KAFKA__BOOTSTRAP_SERVERS)")
        })?;
        Ok(Self {
            kafka: Kafka::new(&client)?,
            client,
            bootstrap,
            runtime,
        })
    }

    /// The client configuration (address and properties).
    pub(crate) fn client(&self) -> &ClientConfig {
        &self.client
    }

    /// The address it was reached at.
    pub(crate) fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Runs `f` to its end (the tool runs on a blocking thread).
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn consumer(&self) -> anyhow::Result<BaseConsumer> {
        let mut c = self.client.clone();
        c.set("group.id", "atoll-cli")
            .set("enable.auto.commit", "false");
        Ok(c.create()?)
    }

    /// The connection reading and redriving dead letters.
    pub(crate) fn kafka(&self) -> &Kafka {
        &self.kafka
    }

    /// The partitions of `topic`; an error naming it (and the broker) when it does not exist.
    pub(crate) fn partitions(&self, topic: &str) -> anyhow::Result<Vec<i32>> {
        Ok(self.kafka.partitions(topic)?)
    }

    /// How many members `group` has now (0: no consumer of it is running).
    pub(crate) fn members(&self, group: &str) -> anyhow::Result<usize> {
        let list = self
            .consumer()?
            .fetch_group_list(Some(group), TIMEOUT)
            .with_context(|| format!("describing consumer group `{group}`"))?;
        Ok(list
            .groups()
            .iter()
            .filter(|g| g.name() == group)
            .map(|g| g.members().len())
            .sum())
    }

    /// A consumer in `group`, committing nothing by itself.
    fn member_of(&self, group: &str) -> anyhow::Result<BaseConsumer> {
        let mut c = self.client.clone();
        c.set("group.id", group).set("enable.auto.commit", "false");
        Ok(c.create()?)
    }

    /// `group`'s committed offsets on every partition of `topic`.
    pub(crate) fn committed(&self, group: &str, topic: &str) -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for p in self.partitions(topic)? {
            tpl.add_partition(topic, p);
        }
        self.member_of(group)?
            .committed_offsets(tpl, TIMEOUT)
            .with_context(|| format!("reading the offsets of consumer group `{group}`"))
    }

    /// Commits `offsets` for `group` (partitions it never committed are left alone).
    pub(crate) fn commit(&self, group: &str, offsets: &TopicPartitionList) -> anyhow::Result<()> {
        let mut known = TopicPartitionList::new();
        for e in offsets.elements() {
            if let Offset::Offset(o) = e.offset() {
                known.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))?;
            }
        }
        if known.count() == 0 {
            return Ok(());
        }
        self.member_of(group)?
            .commit(&known, rdkafka::consumer::CommitMode::Sync)
            .with_context(|| format!("committing offsets of consumer group `{group}`"))
    }

    /// Commits `group`'s offsets at the start of every partition of `topic` (the oldest record
    /// the broker still has).
    pub(crate) fn rewind(&self, group: &str, topic: &str) -> anyhow::Result<()> {
        let consumer = self.member_of(group)?;
        let mut tpl = TopicPartitionList::new();
        for p in self.partitions(topic)? {
            let (low, _) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
        consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .with_context(|| format!("rewinding consumer group `{group}` on `{topic}`"))?;
        Ok(())
    }
}
