//! A service's identity and the topics it owns: what `#[event_service]` declares.

use crate::contract::codec::CodecKind;
use crate::contract::event::Event;
use crate::contract::topic::{PrivateTopic, ServiceId, TopicName};

/// A service: implemented by `#[event_service]` on the service struct.
pub trait Service: Send + Sync + Sized + 'static {
    /// The service's identity.
    const ID: ServiceId;
    /// How many partitions the service's topics get when atoll creates them.
    const PARTITIONS: i32;
    /// The codec the service produces with (`#[event_service(codec = "avro")]`); configuration
    /// (`service.codec`) overrides it.
    const CODEC: CodecKind = CodecKind::Json;
    /// Whether the service runs sagas (`#[event_service(…, sagas = […])]`), and so owns the
    /// compacted `private.saga` topic.
    const RUNS_SAGAS: bool = false;
    /// Whether the service publishes pipeline results (`#[event_service(…, results = true)]`),
    /// and so owns the `results` topic.
    const PUBLISHES_RESULTS: bool = false;
    /// Configs for the service's topics, as `(topic kind, config, value)`: the kind is the
    /// name after the service's prefix (`events`, `private.dlq`, …), e.g.
    /// `("events", "retention.ms", "604800000")` (`#[event_service(…, topic_config = […])]`).
    /// They apply when atoll creates the topics and appear in the manifest.
    const TOPIC_CONFIG: &'static [(&'static str, &'static str, &'static str)] = &[];
}

/// A topic a service declares, with what atoll creates it with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// The topic.
    pub name: TopicName,
    /// Partition count.
    pub partitions: i32,
    /// Topic configuration (`cleanup.policy`, …), written as a map.
    #[serde(with = "config_map")]
    pub config: Vec<(String, String)>,
}

/// `TopicSpec::config` as a JSON object, sorted by key.
mod config_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        config: &[(String, String)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&str, &str> = config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        map.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// The topics service `S` owns: `events`, `commands`, `results` when it publishes results,
/// `private.dlq`, `private.retry`, `private.reply`, `private.saga` (compacted) when it runs
/// sagas, `private.status` and `private.control` (compacted, one partition each). (`private.replayed` is created by the operator tool when it first replays a dead
/// letter.)
pub fn owned_topics<S: Service>() -> Vec<TopicSpec> {
    let mut topics = vec![
        TopicSpec::plain(S::ID.events(), S::PARTITIONS),
        TopicSpec::plain(S::ID.commands(), S::PARTITIONS),
    ];
    if S::PUBLISHES_RESULTS {
        topics.push(TopicSpec::plain(S::ID.results(), S::PARTITIONS));
    }
    let mut private = vec![PrivateTopic::Dlq, PrivateTopic::Retry, PrivateTopic::Reply];
    if S::RUNS_SAGAS {
        private.push(PrivateTopic::Saga);
    }
    topics.extend(
        private
            .into_iter()
            .map(|p| TopicSpec::private(S::ID, p, S::PARTITIONS)),
    );
    // One record per process, read whole by the console; a few holds, read whole by every
    // process: one partition is plenty.
    topics.push(TopicSpec::private(S::ID, PrivateTopic::Status, 1));
    topics.push(TopicSpec::private(S::ID, PrivateTopic::Control, 1));
    for t in &mut topics {
        let kind = &t.name.as_str()[S::ID.to_string().len() + 1..];
        for (_, key, value) in S::TOPIC_CONFIG.iter().filter(|(k, _, _)| *k == kind) {
            t.config.retain(|(k, _)| k != key);
            t.config.push(((*key).to_owned(), (*value).to_owned()));
        }
    }
    topics
}

/// Adds to `topics` (which hold service `id`'s `private.retry`, see [`owned_topics`]) the
/// retry tiers of `delays` (ms) not already there: each as the service's `private.retry`,
/// renamed.
pub(crate) fn add_retry_tiers(
    topics: &mut Vec<TopicSpec>,
    id: ServiceId,
    delays: impl IntoIterator<Item = u64>,
) {
    let Some(legacy) = topics.iter().find(|t| t.name == id.retry()).cloned() else {
        return;
    };
    for ms in delays {
        let name = id.retry_tier(ms);
        if !topics.iter().any(|t| t.name == name) {
            topics.push(TopicSpec {
                name,
                ..legacy.clone()
            });
        }
    }
}

impl TopicSpec {
    /// One of atoll's private topics of service `id`, compacted when that topic is.
    pub fn private(id: ServiceId, which: PrivateTopic, partitions: i32) -> Self {
        let config = which
            .config()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self {
            name: id.private_topic(which),
            partitions,
            config,
        }
    }

    /// A topic with the broker's default configuration.
    pub fn plain(name: TopicName, partitions: i32) -> Self {
        Self {
            name,
            partitions,
            config: Vec::new(),
        }
    }
}

/// The CloudEvents type of `E`, computed once per type by the derive.
#[doc(hidden)]
pub fn ce_type_of<E: Event>() -> String {
    let id = <E::Service as Service>::ID;
    format!("{id}.{}.v{}", E::NAME, E::VERSION)
}

/// What a service declares, for the namespace manifest and tooling.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceDescription {
    /// `<company>.<namespace>.<service>`.
    pub service: String,
    /// The topics it owns.
    pub topics: Vec<TopicSpec>,
    /// Its listeners.
    pub listeners: Vec<ListenerDescription>,
}

/// One listener of a [`ServiceDescription`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerDescription {
    /// Listener name.
    pub name: String,
    /// Consumer group (its retry-topic consumer, if any, joins `<group_id>.retry`).
    pub group_id: String,
    /// The topic it consumes.
    pub topic: String,
    /// The CloudEvents types it handles.
    pub types: Vec<String>,
    /// Its delivery as the code sets it (`at_least_once` unless the code asks for
    /// `exactly_once`; configuration may still change it).
    #[serde(default)]
    pub delivery: Delivery,
    /// The commands it sends, by type (a saga's steps and compensations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sends: Vec<String>,
}

/// A listener's delivery, as a [`ListenerDescription`] states it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Offsets committed after the record's effects; a redelivery repeats them.
    #[default]
    AtLeastOnce,
    /// Outputs and offsets in one Kafka transaction, under a `transactional.id` of
    /// `<group_id>.<process name>`.
    ExactlyOnce,
}
