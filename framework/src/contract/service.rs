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
}

/// A topic a service declares, with what atoll creates it with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicSpec {
    /// The topic.
    #[serde(serialize_with = "ser_topic")]
    pub name: TopicName,
    /// Partition count.
    pub partitions: i32,
    /// Topic configuration (`cleanup.policy`, …).
    pub config: Vec<(String, String)>,
}

fn ser_topic<Ser: serde::Serializer>(t: &TopicName, s: Ser) -> Result<Ser::Ok, Ser::Error> {
    s.serialize_str(t.as_str())
}

/// The topics service `S` owns: `events`, `commands`, `results` when it publishes results,
/// `private.dlq`, `private.retry`, `private.reply`, and `private.saga` (compacted) when it runs
/// sagas. (`private.replayed` is created by the operator tool when it first replays a dead
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
    topics
}

impl TopicSpec {
    /// One of atoll's private topics of service `id`, compacted when that topic is.
    pub fn private(id: ServiceId, which: PrivateTopic, partitions: i32) -> Self {
        let config = if which.compacted() {
            vec![("cleanup.policy".to_owned(), "compact".to_owned())]
        } else {
            Vec::new()
        };
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

/// What a service declares, for generated topic listings and tooling.
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListenerDescription {
    /// Listener name.
    pub name: String,
    /// Consumer group.
    pub group_id: String,
    /// The topic it consumes.
    pub topic: String,
    /// The CloudEvents type it handles.
    pub ce_type: String,
}
