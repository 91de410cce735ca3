//! What it takes to make a cluster match the manifests (a pure core): topics to create,
//! partitions to add, configs to change, and what is only reported (topics no service
//! declares, partition counts above the declared ones, which Kafka cannot lower).

use std::collections::BTreeMap;
use std::fmt;

use atoll::contract::Manifest;

/// A topic as declared, or as found on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicState {
    /// Partition count.
    pub(crate) partitions: i32,
    /// Its configs: as declared; on the cluster, the values of the declared keys (a key the
    /// cluster does not set is missing).
    pub(crate) config: BTreeMap<String, String>,
    /// On the cluster: the topic's other dynamic configs (set on the topic, not declared),
    /// which a config change keeps.
    pub(crate) undeclared: BTreeMap<String, String>,
}

/// One item of a plan.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Change {
    /// A declared topic that does not exist.
    Create {
        /// The topic.
        topic: String,
        /// Its partitions.
        partitions: i32,
        /// Its configs.
        config: BTreeMap<String, String>,
    },
    /// A topic with fewer partitions than declared.
    AddPartitions {
        /// The topic.
        topic: String,
        /// Partitions now.
        from: i32,
        /// Partitions declared.
        to: i32,
    },
    /// A config whose value differs from the declared one.
    SetConfig {
        /// The topic.
        topic: String,
        /// The config.
        key: String,
        /// Its value now, if set.
        from: Option<String>,
        /// The declared value.
        to: String,
    },
    /// A topic of the namespace that no service declares; deleted only when asked.
    Delete {
        /// The topic.
        topic: String,
    },
}

/// What is reported and not done.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Notice {
    /// A topic with more partitions than declared: Kafka cannot remove partitions.
    MorePartitions {
        /// The topic.
        topic: String,
        /// Partitions now.
        actual: i32,
        /// Partitions declared.
        declared: i32,
    },
    /// A topic of the namespace that no service declares, kept (`apply --delete` deletes it).
    Undeclared {
        /// The topic.
        topic: String,
    },
}

/// A plan: the changes, then the notices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// What `apply` does, in order.
    pub(crate) changes: Vec<Change>,
    /// What is only reported.
    pub(crate) notices: Vec<Notice>,
}

/// The topics the manifests declare, by name.
pub(crate) fn declared(manifests: &[Manifest]) -> BTreeMap<String, TopicState> {
    manifests
        .iter()
        .flat_map(|m| &m.services)
        .flat_map(|s| &s.topics)
        .map(|t| {
            let state = TopicState {
                partitions: t.partitions,
                config: t.config.iter().cloned().collect(),
                undeclared: BTreeMap::new(),
            };
            (t.name.to_string(), state)
        })
        .collect()
}

/// Whether `topic` belongs to one of the manifests' namespaces.
pub(crate) fn in_namespaces(manifests: &[Manifest], topic: &str) -> bool {
    manifests
        .iter()
        .any(|m| topic.starts_with(&format!("{}.", m.namespace)))
}

/// The plan that turns `actual` (the namespaces' topics on the cluster) into `declared`.
/// Topics no service declares become [`Change::Delete`] when `delete` is set, else a notice.
/// A `private.replayed` topic of a declared service is the operator tool's (`atoll dlq
/// replay` creates it) and is left alone.
pub(crate) fn plan(
    declared: &BTreeMap<String, TopicState>,
    actual: &BTreeMap<String, TopicState>,
    delete: bool,
) -> Plan {
    let mut plan = Plan::default();
    for (topic, want) in declared {
        let Some(have) = actual.get(topic) else {
            plan.changes.push(Change::Create {
                topic: topic.clone(),
                partitions: want.partitions,
                config: want.config.clone(),
            });
            continue;
        };
        if have.partitions < want.partitions {
            plan.changes.push(Change::AddPartitions {
                topic: topic.clone(),
                from: have.partitions,
                to: want.partitions,
            });
        } else if have.partitions > want.partitions {
            plan.notices.push(Notice::MorePartitions {
                topic: topic.clone(),
                actual: have.partitions,
                declared: want.partitions,
            });
        }
        for (key, value) in &want.config {
            let now = have.config.get(key);
            if now != Some(value) {
                plan.changes.push(Change::SetConfig {
                    topic: topic.clone(),
                    key: key.clone(),
                    from: now.cloned(),
                    to: value.clone(),
                });
            }
        }
    }
    for topic in actual.keys().filter(|t| !declared.contains_key(*t)) {
        let replayed = topic
            .strip_suffix(".private.replayed")
            .is_some_and(|service| declared.contains_key(&format!("{service}.events")));
        if replayed {
            continue;
        }
        if delete {
            plan.changes.push(Change::Delete {
                topic: topic.clone(),
            });
        } else {
            plan.notices.push(Notice::Undeclared {
                topic: topic.clone(),
            });
        }
    }
    plan
}

/// The whole config to send for `topic` when one of its configs changes (AlterConfigs
/// replaces a topic's dynamic configs): its declared configs, and the dynamic configs it has
/// on the cluster that it does not declare, kept as they are.
pub(crate) fn config_to_send(
    topic: &str,
    declared: &BTreeMap<String, TopicState>,
    actual: &BTreeMap<String, TopicState>,
) -> BTreeMap<String, String> {
    let mut config = actual
        .get(topic)
        .map(|a| a.undeclared.clone())
        .unwrap_or_default();
    if let Some(d) = declared.get(topic) {
        config.extend(d.config.clone());
    }
    config
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create {
                topic,
                partitions,
                config,
            } => {
                write!(f, "+ create {topic} ({partitions} partitions")?;
                for (k, v) in config {
                    write!(f, ", {k}={v}")?;
                }
                write!(f, ")")
            }
            Change::AddPartitions { topic, from, to } => {
                write!(f, "~ partitions {topic}: {from} -> {to}")
            }
            Change::SetConfig {
                topic,
                key,
                from,
                to,
            } => {
                let from = from.as_deref().unwrap_or("(default)");
                write!(f, "~ config {topic}: {key} {from} -> {to}")
            }
            Change::Delete { topic } => write!(f, "- delete {topic}"),
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::MorePartitions {
                topic,
                actual,
                declared,
            } => write!(
                f,
                "! {topic} has {actual} partitions, {declared} declared: Kafka cannot remove \
                 partitions, so it keeps {actual} (recreate the topic to lower it, losing its data \
                 and its keys' placement)"
            ),
            Notice::Undeclared { topic } => write!(
                f,
                "? {topic} is on the cluster but no service declares it (kept; `apply --delete` \
                 deletes it)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(partitions: i32, config: &[(&str, &str)]) -> TopicState {
        TopicState {
            partitions,
            config: config
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            undeclared: BTreeMap::new(),
        }
    }

    fn topics(entries: &[(&str, TopicState)]) -> BTreeMap<String, TopicState> {
        entries
            .iter()
            .map(|(t, s)| ((*t).to_owned(), s.clone()))
            .collect()
    }

    #[test]
    fn a_config_change_keeps_the_undeclared_dynamic_configs() {
        let declared = topics(&[("a.b.c.events", state(6, &[("retention.ms", "1000")]))]);
        let mut on_cluster = state(6, &[("retention.ms", "5")]);
        on_cluster.undeclared = [("max.message.bytes".to_owned(), "2048".to_owned())].into();
        let actual = topics(&[("a.b.c.events", on_cluster)]);
        let sent: Vec<(String, String)> = config_to_send("a.b.c.events", &declared, &actual)
            .into_iter()
            .collect();
        assert_eq!(
            sent,
            [
                ("max.message.bytes".to_owned(), "2048".to_owned()),
                ("retention.ms".to_owned(), "1000".to_owned())
            ]
        );
    }

    /// (declared, actual, delete) → (changes, notices), as printed.
    #[test]
    fn plans() {
        let compact = [("cleanup.policy", "compact")];
        let cases: Vec<(_, _, bool, Vec<&str>, Vec<&str>)> = vec![
            // Nothing on the cluster: everything is created.
            (
                topics(&[
                    ("a.b.c.events", state(6, &[])),
                    ("a.b.c.private.saga", state(6, &compact)),
                ]),
                topics(&[]),
                false,
                vec![
                    "+ create a.b.c.events (6 partitions)",
                    "+ create a.b.c.private.saga (6 partitions, cleanup.policy=compact)",
                ],
                vec![],
            ),
            // As declared: nothing.
            (
                topics(&[("a.b.c.private.saga", state(6, &compact))]),
                topics(&[("a.b.c.private.saga", state(6, &compact))]),
                false,
                vec![],
                vec![],
            ),
            // Fewer partitions and a config off: both changed.
            (
                topics(&[("a.b.c.private.saga", state(6, &compact))]),
                topics(&[(
                    "a.b.c.private.saga",
                    state(3, &[("cleanup.policy", "delete")]),
                )]),
                false,
                vec![
                    "~ partitions a.b.c.private.saga: 3 -> 6",
                    "~ config a.b.c.private.saga: cleanup.policy delete -> compact",
                ],
                vec![],
            ),
            // More partitions than declared: reported, never a change.
            (
                topics(&[("a.b.c.events", state(6, &[]))]),
                topics(&[("a.b.c.events", state(12, &[]))]),
                false,
                vec![],
                vec!["! a.b.c.events has 12 partitions, 6 declared"],
            ),
            // Undeclared: reported, or deleted when asked; the replay topic is left alone.
            (
                topics(&[("a.b.c.events", state(6, &[]))]),
                topics(&[
                    ("a.b.c.events", state(6, &[])),
                    ("a.b.old.events", state(1, &[])),
                    ("a.b.c.private.replayed", state(1, &[])),
                ]),
                false,
                vec![],
                vec!["? a.b.old.events is on the cluster"],
            ),
            (
                topics(&[("a.b.c.events", state(6, &[]))]),
                topics(&[
                    ("a.b.c.events", state(6, &[])),
                    ("a.b.old.events", state(1, &[])),
                ]),
                true,
                vec!["- delete a.b.old.events"],
                vec![],
            ),
        ];
        for (declared, actual, delete, changes, notices) in cases {
            let p = plan(&declared, &actual, delete);
            let got: Vec<String> = p.changes.iter().map(ToString::to_string).collect();
            assert_eq!(got, changes, "{declared:?} / {actual:?}");
            let got: Vec<String> = p.notices.iter().map(ToString::to_string).collect();
            assert_eq!(got.len(), notices.len(), "{got:?}");
            for (g, n) in got.iter().zip(&notices) {
                assert!(g.starts_with(n), "{g} / {n}");
            }
        }
    }
}
