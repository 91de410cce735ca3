//! The connection to the broker, configured like the services (`ATOLL_*`, `atoll.toml`).

use std::time::Duration;

use anyhow::{bail, Context as _};
use atoll::broker::client_config;
use atoll::config::Config;
use atoll_console::dlq::Kafka;
use atoll_console::groups;
use rdkafka::{ClientConfig, TopicPartitionList};

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
        Ok(groups::members(&self.kafka, group)?)
    }

    /// `group`'s committed offsets on every partition of `topic`.
    pub(crate) fn committed(&self, group: &str, topic: &str) -> anyhow::Result<TopicPartitionList> {
        Ok(groups::committed(&self.kafka, group, topic)?)
    }

    /// Commits `offsets` for `group` (partitions it never committed are left alone).
    pub(crate) fn commit(&self, group: &str, offsets: &TopicPartitionList) -> anyhow::Result<()> {
        Ok(groups::commit(&self.kafka, group, offsets)?)
    }

    /// Where `group`'s offsets on every partition of `topic` would move to reach `target`;
    /// refused while the group has members.
    pub(crate) fn plan_move(
        &self,
        group: &str,
        topic: &str,
        target: groups::Target,
    ) -> anyhow::Result<Vec<groups::Move>> {
        Ok(groups::plan(&self.kafka, group, topic, target)?)
    }

    /// Commits `moves` for `group` on `topic`.
    pub(crate) fn apply_move(
        &self,
        group: &str,
        topic: &str,
        moves: &[groups::Move],
    ) -> anyhow::Result<()> {
        Ok(groups::apply(&self.kafka, group, topic, moves)?)
    }
}
