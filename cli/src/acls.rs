//! Least-privilege ACLs derived from the manifests and the topic convention (a pure core).
//!
//! A service's principal may:
//! - write its own `events`, `results` and `private.*` topics, and read its `commands` and
//!   `private.*` topics (it is their sole publisher, or their sole subscriber), except
//!   `private.control`, which it only reads (the operator console writes the holds);
//! - read every topic its listeners consume (other services' facts and results);
//! - write the `commands` topic of every command it sends (a saga's steps), and the
//!   `private.reply` topic of every service that sends it a command it answers;
//! - use its consumer groups (`<service>-…`, prefixed), write idempotently (the producers are
//!   idempotent), and, where a listener is exactly-once, its transactional ids
//!   (`<group>.…`, prefixed).
//!
//! Nothing else: `orders` cannot write `inventory`'s events, nor read its commands.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use atoll::contract::{owner_of, Delivery, Kind, Manifest};
use atoll::{TopicKind, TopicName};

/// What an ACL lets a principal do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Operation {
    /// Consume a topic, or use a group.
    Read,
    /// Produce to a topic, or use a transactional id.
    Write,
    /// Look up a transactional id.
    Describe,
    /// Produce idempotently (cluster).
    IdempotentWrite,
}

/// The kind of resource an ACL is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A transactional id.
    TransactionalId,
    /// The cluster.
    Cluster,
}

/// Whether the name is the resource's whole name or a prefix of the names it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Pattern {
    /// Exactly this name.
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// One allow ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Acl {
    /// `User:<…>`.
    pub(crate) principal: String,
    /// The resource's kind.
    pub(crate) resource: ResourceType,
    /// Literal or prefixed.
    pub(crate) pattern: Pattern,
    /// The resource's name (`kafka-cluster` for the cluster).
    pub(crate) name: String,
    /// What is allowed.
    pub(crate) operation: Operation,
}

/// How a service's name maps to its principal: a template where `{service}` is the full name
/// (`acme.shop.orders`) and `{name}` its last segment (`orders`).
#[derive(Debug, Clone)]
pub(crate) struct Principals(pub(crate) String);

impl Default for Principals {
    fn default() -> Self {
        Self("User:{service}".into())
    }
}

impl Principals {
    /// The principal of `service`.
    pub(crate) fn of(&self, service: &str) -> String {
        let name = service.rsplit('.').next().unwrap_or(service);
        self.0.replace("{service}", service).replace("{name}", name)
    }
}

/// The ACLs of every service in `manifests`, sorted. `Err` names a listener that sends a type
/// that cannot be a command.
pub(crate) fn derive(manifests: &[Manifest], principals: &Principals) -> Result<Vec<Acl>, String> {
    let events: BTreeMap<&str, (&str, &atoll::contract::EventSpec)> = manifests
        .iter()
        .flat_map(|m| m.events())
        .map(|(t, (s, e))| (t, (s.service.as_str(), e)))
        .collect();
    let mut acls = BTreeSet::new();
    for service in manifests.iter().flat_map(|m| &m.services) {
        let principal = principals.of(&service.service);
        let mut add = |resource, pattern, name: &str, operation| {
            acls.insert(Acl {
                principal: principal.clone(),
                resource,
                pattern,
                name: name.to_owned(),
                operation,
            });
        };
        // The retry tiers, whichever delays configuration chooses (and those of older
        // ladders, which the service still reads): its own, by their common prefix.
        let tiers = format!("{}.private.retry-", service.service);
        add(
            ResourceType::Topic,
            Pattern::Prefixed,
            &tiers,
            Operation::Write,
        );
        add(
            ResourceType::Topic,
            Pattern::Prefixed,
            &tiers,
            Operation::Read,
        );
        for topic in &service.topics {
            let name = topic.name.as_str();
            if topic.name.retry_tier_ms().is_some() {
                continue;
            }
            match topic.name.kind() {
                TopicKind::Events | TopicKind::Results => add(
                    ResourceType::Topic,
                    Pattern::Literal,
                    name,
                    Operation::Write,
                ),
                TopicKind::Commands => {
                    add(ResourceType::Topic, Pattern::Literal, name, Operation::Read)
                }
                // The operators' holds: the service obeys them, the operator console writes
                // them.
                TopicKind::Private(p) if p == atoll::PrivateTopic::Control.name() => {
                    add(ResourceType::Topic, Pattern::Literal, name, Operation::Read)
                }
                // Private topics, and any kind a later convention adds: the owner's alone.
                _ => {
                    add(
                        ResourceType::Topic,
                        Pattern::Literal,
                        name,
                        Operation::Write,
                    );
                    add(ResourceType::Topic, Pattern::Literal, name, Operation::Read);
                }
            }
        }
        for listener in &service.listeners {
            add(
                ResourceType::Topic,
                Pattern::Literal,
                &listener.topic,
                Operation::Read,
            );
            if listener.delivery == Delivery::ExactlyOnce {
                let ids = format!("{}.", listener.group_id);
                add(
                    ResourceType::TransactionalId,
                    Pattern::Prefixed,
                    &ids,
                    Operation::Write,
                );
                add(
                    ResourceType::TransactionalId,
                    Pattern::Prefixed,
                    &ids,
                    Operation::Describe,
                );
            }
            for sent in &listener.sends {
                let topic = match events.get(sent.as_str()).and_then(|(_, c)| c.topic.clone()) {
                    Some(topic) => topic,
                    // A command of a namespace not given: its owner's `commands` topic.
                    None => format!("{}.commands", owner_of(sent)),
                };
                topic.parse::<TopicName>().map_err(|e| {
                    format!(
                        "listener `{}` of `{}` sends `{sent}`, which is not a command type: {e}",
                        listener.name, service.service
                    )
                })?;
                add(
                    ResourceType::Topic,
                    Pattern::Literal,
                    &topic,
                    Operation::Write,
                );
            }
        }
        add(
            ResourceType::Group,
            Pattern::Prefixed,
            &format!("{}-", service.service),
            Operation::Read,
        );
        add(
            ResourceType::Cluster,
            Pattern::Literal,
            "kafka-cluster",
            Operation::IdempotentWrite,
        );
    }
    // Replies: the owner of a command that is answered writes to each sender's reply topic
    // (a command of a namespace not given is the concern of that namespace's ACLs).
    for sender in manifests.iter().flat_map(|m| &m.services) {
        for sent in sender.listeners.iter().flat_map(|l| &l.sends) {
            let Some((owner, command)) = events.get(sent.as_str()) else {
                continue;
            };
            if command.kind == Kind::Command && command.reply.is_some() {
                acls.insert(Acl {
                    principal: principals.of(owner),
                    resource: ResourceType::Topic,
                    pattern: Pattern::Literal,
                    name: format!("{}.private.reply", sender.service),
                    operation: Operation::Write,
                });
            }
        }
    }
    Ok(acls.into_iter().collect())
}

/// A table: one line per ACL.
pub(crate) fn table(acls: &[Acl]) -> String {
    let rows: Vec<[String; 5]> = acls
        .iter()
        .map(|a| {
            [
                a.principal.clone(),
                format!("{:?}", a.operation),
                resource_name(a.resource).to_owned(),
                format!("{:?}", a.pattern).to_lowercase(),
                a.name.clone(),
            ]
        })
        .collect();
    let header = ["PRINCIPAL", "OPERATION", "RESOURCE", "PATTERN", "NAME"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// `kafka-acls.sh` commands that create them: one per principal and resource, with all its
/// operations.
pub(crate) fn kafka_acls_commands(acls: &[Acl]) -> String {
    let mut grouped: BTreeMap<(&str, ResourceType, Pattern, &str), Vec<Operation>> =
        BTreeMap::new();
    for a in acls {
        grouped
            .entry((&a.principal, a.resource, a.pattern, &a.name))
            .or_default()
            .push(a.operation);
    }
    let mut out = String::new();
    for ((principal, resource, pattern, name), operations) in grouped {
        let mut line = format!(
            "kafka-acls.sh --bootstrap-server \"$BOOTSTRAP\" --add --allow-principal '{principal}'"
        );
        for op in operations {
            let _ = write!(line, " --operation {op:?}");
        }
        match resource {
            ResourceType::Cluster => line.push_str(" --cluster"),
            _ => {
                let _ = write!(line, " --{} '{name}'", resource_name(resource));
            }
        }
        if pattern == Pattern::Prefixed {
            line.push_str(" --resource-pattern-type prefixed");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn resource_name(r: ResourceType) -> &'static str {
    match r {
        ResourceType::Topic => "topic",
        ResourceType::Group => "group",
        ResourceType::TransactionalId => "transactional-id",
        ResourceType::Cluster => "cluster",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_follow_the_template() {
        assert_eq!(
            Principals::default().of("acme.shop.orders"),
            "User:acme.shop.orders"
        );
        assert_eq!(
            Principals("User:svc-{name}".into()).of("acme.shop.orders"),
            "User:svc-orders"
        );
    }

    fn acl(operation: Operation, resource: ResourceType, pattern: Pattern, name: &str) -> Acl {
        Acl {
            principal: "User:a.b.c".into(),
            resource,
            pattern,
            name: name.into(),
            operation,
        }
    }

    #[test]
    fn commands_group_operations_per_resource() {
        let acls = [
            acl(
                Operation::Read,
                ResourceType::Topic,
                Pattern::Literal,
                "a.b.c.private.retry",
            ),
            acl(
                Operation::Write,
                ResourceType::Topic,
                Pattern::Literal,
                "a.b.c.private.retry",
            ),
            acl(
                Operation::Read,
                ResourceType::Group,
                Pattern::Prefixed,
                "a.b.c-",
            ),
            acl(
                Operation::IdempotentWrite,
                ResourceType::Cluster,
                Pattern::Literal,
                "kafka-cluster",
            ),
        ];
        let text = kafka_acls_commands(&acls);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].ends_with("--operation Read --operation Write --topic 'a.b.c.private.retry'"),
            "{text}"
        );
        assert!(
            lines[1]
                .ends_with("--operation Read --group 'a.b.c-' --resource-pattern-type prefixed"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("--operation IdempotentWrite --cluster"),
            "{text}"
        );
        let table = table(&acls);
        assert!(table.starts_with("PRINCIPAL"), "{table}");
        assert_eq!(table.lines().count(), 5, "{table}");
    }

    #[test]
    fn a_sent_type_that_cannot_be_a_command_is_refused() {
        let manifest: Manifest = serde_json::from_str(
            r#"{"format": 1, "namespace": "a.b", "services": [{"service": "a.b.c", "topics": [],
               "listeners": [{"name": "s", "group_id": "a.b.c-s", "topic": "a.b.c.private.reply",
               "types": [], "sends": ["nonsense"]}]}]}"#,
        )
        .unwrap();
        let e = derive(&[manifest], &Principals::default()).unwrap_err();
        assert!(
            e.contains("listener `s` of `a.b.c` sends `nonsense`"),
            "{e}"
        );
    }
}
