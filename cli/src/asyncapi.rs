//! An AsyncAPI 3.0.0 document of the manifests (a pure core): a channel per public topic
//! (`events`, `commands`, `results`) and per other topic a listener reads or replies go to,
//! an operation per listener (receive) and per thing a service writes (its facts and results,
//! the commands it sends, the replies it answers), a message per event type with its Avro
//! schema (or an open JSON object when it has none), the CloudEvents headers, and the Kafka
//! bindings (topic, partitions, configs, consumer group, key).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use atoll::contract::{owner_of, EventSpec, Manifest, ServiceManifest};
use serde_json::{json, Map, Value};

/// The Kafka bindings' version.
const KAFKA_BINDING: &str = "0.5.0";
/// The topic configs the Kafka binding can state (it takes no others).
const BOUND_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "delete.retention.ms",
    "max.message.bytes",
];
/// The schema format of Avro payloads.
const AVRO: &str = "application/vnd.apache.avro+json;version=1.9.0";

/// The document for `manifests`, with each Avro schema read from `<dir>/avro/<subject>.avsc`;
/// `server` is the broker address it names.
pub(crate) fn document(manifests: &[Manifest], dir: &Path, server: &str) -> anyhow::Result<Value> {
    let events: BTreeMap<&str, (&ServiceManifest, &EventSpec)> =
        manifests.iter().flat_map(|m| m.events()).collect();
    let mut doc = Doc::default();
    for service in manifests.iter().flat_map(|m| &m.services) {
        // Topics and what their owner writes to them.
        for topic in &service.topics {
            let name = topic.name.as_str();
            if !is_public(name) {
                continue;
            }
            doc.channel(name, Some(topic));
            let owned: Vec<&EventSpec> = service
                .events
                .iter()
                .filter(|e| e.topic.as_deref() == Some(name))
                .collect();
            for e in &owned {
                doc.message(name, e);
            }
            if name.ends_with(".events") || name.ends_with(".results") {
                let types: Vec<&str> = owned.iter().map(|e| e.ce_type.as_str()).collect();
                doc.operation(
                    &format!("{}.publish.{}", service.service, kind_of(name)),
                    "send",
                    name,
                    &types,
                    None,
                    &format!(
                        "`{}` publishes its {} (sole publisher).",
                        service.service,
                        kind_of(name)
                    ),
                );
            }
        }
        for l in &service.listeners {
            // What the listener reads that the manifests know (a saga's own start and timeout
            // records are internal).
            let known: Vec<&EventSpec> = l
                .types
                .iter()
                .filter_map(|t| events.get(t.as_str()).map(|(_, e)| *e))
                .collect();
            if known.is_empty() {
                continue;
            }
            // A topic of another service, or a reply topic: a channel without the owner's
            // settings, unless its owner's entry gave them.
            doc.channel(&l.topic, None);
            for e in &known {
                doc.message(&l.topic, e);
            }
            let types: Vec<&str> = known.iter().map(|e| e.ce_type.as_str()).collect();
            doc.operation(
                &format!("{}.{}.receive", service.service, l.name),
                "receive",
                &l.topic,
                &types,
                Some(&l.group_id),
                &format!(
                    "Listener `{}` of `{}` (consumer group `{}`, {:?}).",
                    l.name, service.service, l.group_id, l.delivery
                ),
            );
            for sent in &l.sends {
                let Some((_, command)) = events.get(sent.as_str()) else {
                    continue;
                };
                let Some(topic) = command.topic.as_deref() else {
                    continue;
                };
                doc.channel(topic, None);
                doc.message(topic, command);
                doc.operation(
                    &format!("{}.{}.send.{sent}", service.service, l.name),
                    "send",
                    topic,
                    &[sent.as_str()],
                    None,
                    &format!(
                        "Listener `{}` of `{}` sends `{sent}`.",
                        l.name, service.service
                    ),
                );
                // Its owner answers on this service's reply topic.
                if let Some((reply_owner, reply)) =
                    command.reply.as_deref().and_then(|r| events.get(r))
                {
                    let replies = format!("{}.private.reply", service.service);
                    doc.channel(&replies, None);
                    doc.message(&replies, reply);
                    doc.operation(
                        &format!(
                            "{}.reply.{}.{}",
                            owner_of(sent),
                            reply.name,
                            service.service
                        ),
                        "send",
                        &replies,
                        &[reply.ce_type.as_str()],
                        None,
                        &format!(
                            "`{}` answers `{sent}` on the requester's reply topic.",
                            reply_owner.service
                        ),
                    );
                }
            }
        }
    }
    for (_, e) in events.values() {
        if doc.used.contains(&e.ce_type) {
            doc.components.insert(e.ce_type.clone(), message(e, dir)?);
        }
    }
    let namespaces: Vec<&str> = manifests.iter().map(|m| m.namespace.as_str()).collect();
    Ok(json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": namespaces.join(", "),
            "version": format!("manifest format {}", atoll::contract::FORMAT),
            "description": "Generated by `atoll asyncapi` from the services' manifests: every topic the services own or use, who writes and reads each, and every event type with its schema.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": server,
                "protocol": "kafka",
                "description": "The Kafka cluster (set with `--server`).",
            }
        },
        "channels": doc.channels,
        "operations": doc.operations,
        "components": { "messages": doc.components },
    }))
}

/// Writes the document as YAML.
pub(crate) fn yaml(doc: &Value) -> anyhow::Result<String> {
    serde_yaml_ng::to_string(doc).context("writing YAML")
}

#[derive(Default)]
struct Doc {
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    components: Map<String, Value>,
    /// The types some channel carries.
    used: BTreeSet<String>,
}

impl Doc {
    fn channel(&mut self, topic: &str, spec: Option<&atoll::contract::TopicSpec>) {
        let channel = self.channels.entry(topic.to_owned()).or_insert_with(|| {
            json!({
                "address": topic,
                "messages": {},
                "bindings": { "kafka": { "topic": topic, "bindingVersion": KAFKA_BINDING } },
            })
        });
        if let Some(spec) = spec {
            let kafka = &mut channel["bindings"]["kafka"];
            kafka["partitions"] = json!(spec.partitions);
            if !spec.config.is_empty() {
                let config: Map<String, Value> = spec
                    .config
                    .iter()
                    .filter(|(k, _)| BOUND_CONFIGS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), config_value(k, v)))
                    .collect();
                kafka["topicConfiguration"] = Value::Object(config);
            }
        }
    }

    fn message(&mut self, topic: &str, e: &EventSpec) {
        self.used.insert(e.ce_type.clone());
        self.channels[topic]["messages"][&e.ce_type] =
            json!({ "$ref": format!("#/components/messages/{}", e.ce_type) });
    }

    fn operation(
        &mut self,
        id: &str,
        action: &str,
        topic: &str,
        types: &[&str],
        group: Option<&str>,
        description: &str,
    ) {
        let mut op = json!({
            "action": action,
            "channel": { "$ref": format!("#/channels/{}", pointer(topic)) },
            "description": description,
            "messages": types
                .iter()
                .map(|t| json!({ "$ref": format!("#/channels/{}/messages/{}", pointer(topic), pointer(t)) }))
                .collect::<Vec<_>>(),
        });
        if let Some(group) = group {
            op["bindings"] = json!({ "kafka": {
                "groupId": { "type": "string", "enum": [group] },
                "bindingVersion": KAFKA_BINDING,
            }});
        }
        self.operations.insert(id.to_owned(), op);
    }
}

/// An event type's message: its payload schema, the CloudEvents headers, the key binding.
fn message(e: &EventSpec, dir: &Path) -> anyhow::Result<Value> {
    let payload = match e.schema_file(dir) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("reading the schema of {} ({})", e.ce_type, path.display())
            })?;
            let schema: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", path.display()))?;
            json!({ "schemaFormat": AVRO, "schema": schema })
        }
        None => json!({ "type": "object", "description": "JSON; the event declares no schema." }),
    };
    let mut description = format!("A {}, version {}.", e.kind.as_str(), e.version);
    if let Some(reply) = &e.reply {
        description.push_str(&format!(" Answered with `{reply}`."));
    }
    if let Some(subject) = &e.subject {
        description.push_str(&format!(" Registry subject `{subject}`."));
    }
    Ok(json!({
        "name": e.ce_type,
        "title": e.name,
        "summary": description,
        "contentType": if e.subject.is_some() { "avro/binary" } else { "application/json" },
        "headers": headers(&e.ce_type),
        "payload": payload,
        "bindings": { "kafka": {
            "key": { "type": "string", "description": "The aggregate id (the event's key field)." },
            "bindingVersion": KAFKA_BINDING,
        }},
    }))
}

/// The CloudEvents headers (Kafka binding, `ce_` prefix) every record carries.
fn headers(ce_type: &str) -> Value {
    json!({
        "type": "object",
        "required": ["ce_id", "ce_source", "ce_specversion", "ce_type"],
        "properties": {
            "ce_id": { "type": "string", "description": "Unique per event; the inbox deduplicates by it." },
            "ce_source": { "type": "string", "description": "The producing service." },
            "ce_specversion": { "type": "string", "const": "1.0" },
            "ce_type": { "type": "string", "const": ce_type },
            "ce_time": { "type": "string", "format": "date-time" },
            "ce_correlationid": { "type": "string" },
            "ce_causationid": { "type": "string" },
            "ce_replyto": { "type": "string", "description": "On a command: the topic of its reply." },
            "content-type": { "type": "string" },
        },
    })
}

fn is_public(topic: &str) -> bool {
    [".events", ".commands", ".results"]
        .iter()
        .any(|s| topic.ends_with(s))
}

fn kind_of(topic: &str) -> &str {
    topic.rsplit('.').next().unwrap_or(topic)
}

/// A JSON pointer segment (`/` and `~` escaped).
fn pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// A topic config value as the Kafka binding types it.
fn config_value(key: &str, value: &str) -> Value {
    match key {
        "cleanup.policy" => json!(value.split(',').map(str::trim).collect::<Vec<_>>()),
        _ => value
            .parse::<i64>()
            .map_or_else(|_| json!(value), |n| json!(n)),
    }
}
