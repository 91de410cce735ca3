//! The effectful side of `plan` and `apply`: the namespaces' topics as the cluster has them,
//! and a plan carried out through the Admin API.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use atoll::contract::{Manifest, TopicSpec};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, ResourceSpecifier,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::broker::Broker;
use crate::plan::{in_namespaces, Change, Plan, TopicState};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The topics of the manifests' namespaces on the cluster, with the values of the configs
/// `declared` names for them.
pub(crate) fn actual(
    broker: &Broker,
    manifests: &[Manifest],
    declared: &BTreeMap<String, TopicState>,
) -> anyhow::Result<BTreeMap<String, TopicState>> {
    let consumer: BaseConsumer = broker.client().create()?;
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .with_context(|| format!("listing the topics of {}", broker.bootstrap()))?;
    let mut topics: BTreeMap<String, TopicState> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && in_namespaces(manifests, t.name()))
        .map(|t| {
            let state = TopicState {
                partitions: t.partitions().len() as i32,
                config: BTreeMap::new(),
                undeclared: BTreeMap::new(),
            };
            (t.name().to_owned(), state)
        })
        .collect();
    let with_config: Vec<&String> = topics
        .keys()
        .filter(|t| declared.get(*t).is_some_and(|d| !d.config.is_empty()))
        .collect();
    if with_config.is_empty() {
        return Ok(topics);
    }
    let admin = admin(broker)?;
    let resources: Vec<ResourceSpecifier<'_>> = with_config
        .iter()
        .map(|t| ResourceSpecifier::Topic(t.as_str()))
        .collect();
    let described = broker
        .block_on(admin.describe_configs(&resources, &options()))
        .context("describing the topics' configs")?;
    let mut found = BTreeMap::new();
    for (topic, result) in with_config.iter().zip(described) {
        let resource =
            result.map_err(|e| anyhow::anyhow!("describing the configs of {topic}: {e}"))?;
        let wanted = &declared[*topic].config;
        let (values, others): (BTreeMap<String, String>, BTreeMap<String, String>) = resource
            .entries
            .iter()
            .filter(|e| {
                wanted.contains_key(&e.name) || matches!(e.source, ConfigSource::DynamicTopic)
            })
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .partition(|(k, _)| wanted.contains_key(k));
        found.insert((*topic).clone(), (values, others));
    }
    for (topic, (values, others)) in found {
        if let Some(state) = topics.get_mut(&topic) {
            state.config = values;
            state.undeclared = others;
        }
    }
    Ok(topics)
}

/// Carries out `plan`'s changes in order, printing each as it is done. A topic whose config
/// changes gets all its `declared` configs, and keeps the dynamic configs it has on the
/// cluster (`actual`) that it does not declare.
pub(crate) fn apply(
    broker: &Broker,
    plan: &Plan,
    declared: &BTreeMap<String, TopicState>,
    actual: &BTreeMap<String, TopicState>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let admin = admin(broker)?;
    let mut altered = std::collections::BTreeSet::new();
    for change in &plan.changes {
        match change {
            Change::Create {
                topic,
                partitions,
                config,
            } => {
                let spec = TopicSpec {
                    name: topic.parse()?,
                    partitions: *partitions,
                    config: config.clone().into_iter().collect(),
                };
                broker
                    .block_on(atoll::broker::create_topics(broker.client(), &[spec]))
                    .with_context(|| format!("creating {topic}"))?;
            }
            Change::AddPartitions { topic, to, .. } => {
                let results =
                    broker
                        .block_on(admin.create_partitions(
                            &[NewPartitions::new(topic, *to as usize)],
                            &options(),
                        ))
                        .with_context(|| format!("adding partitions to {topic}"))?;
                for r in results {
                    r.map_err(|(t, e)| anyhow::anyhow!("adding partitions to {t}: {e}"))?;
                }
            }
            Change::SetConfig { topic, .. } => {
                // AlterConfigs replaces a topic's whole dynamic config: every declared key of
                // the topic goes at once, the first time one of them changes.
                if !altered.insert(topic) {
                    writeln!(out, "{change}")?;
                    continue;
                }
                let config = crate::plan::config_to_send(topic, declared, actual);
                let alter = config.iter().fold(
                    AlterConfig::new(ResourceSpecifier::Topic(topic)),
                    |a, (k, v)| a.set(k, v),
                );
                let unsupported = || {
                    let wanted: Vec<String> = declared[topic]
                        .config
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    anyhow::anyhow!(
                        "changing the configs of {topic}: the broker at {} does not support \
                         AlterConfigs; set them by hand ({})",
                        broker.bootstrap(),
                        wanted.join(", ")
                    )
                };
                let results = match broker.block_on(admin.alter_configs(&[alter], &options())) {
                    Ok(results) => results,
                    Err(KafkaError::AdminOp(
                        RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion,
                    )) => return Err(unsupported()),
                    Err(e) => {
                        return Err(e).with_context(|| format!("changing the configs of {topic}"))
                    }
                };
                for r in results {
                    r.map_err(|(_, e)| anyhow::anyhow!("changing the configs of {topic}: {e}"))?;
                }
            }
            Change::Delete { topic } => {
                let results = broker
                    .block_on(admin.delete_topics(&[topic.as_str()], &options()))
                    .with_context(|| format!("deleting {topic}"))?;
                for r in results {
                    r.map_err(|(t, e)| anyhow::anyhow!("deleting {t}: {e}"))?;
                }
            }
        }
        writeln!(out, "{change}")?;
    }
    Ok(())
}

/// What to do when the broker cannot take ACLs.
const NO_ACLS: &str = "ACLs need a Kafka broker with an authorizer (`authorizer.class.name`); \
                       elsewhere run the `atoll acls --format commands` lines";

/// Creates `acls` through the Admin API (existing ones are kept as they are). A broker that
/// refuses gets an error saying so and what to do instead.
pub(crate) fn create_acls(broker: &Broker, acls: &[crate::acls::Acl]) -> anyhow::Result<()> {
    crate::acl_admin::create(&admin(broker)?, acls, TIMEOUT)
        .map_err(|e| anyhow::anyhow!("creating ACLs on {}: {e:#}; {NO_ACLS}", broker.bootstrap()))
}

/// Creates the ACLs derived from the manifests in `dir` in a child process of this binary:
/// librdkafka aborts the process when a broker answers CreateAcls with something it cannot
/// read (tansu 0.6 does), and the abort must not take the tool down with it.
pub(crate) fn create_acls_in_child(
    broker: &Broker,
    dir: &std::path::Path,
    principal: &str,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this program")?;
    let out = std::process::Command::new(exe)
        .arg("create-acls-in-child")
        .arg(dir)
        .args(["--bootstrap", broker.bootstrap(), "--principal", principal])
        .output()
        .context("running the ACL step")?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(_) => bail!("{}", stderr.trim().trim_start_matches("error: ")),
        None => bail!(
            "creating ACLs on {}: librdkafka could not read the broker's answer to CreateAcls \
             (a broker without ACL support); {NO_ACLS}",
            broker.bootstrap()
        ),
    }
}

fn admin(broker: &Broker) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    broker
        .client()
        .create()
        .with_context(|| format!("creating the admin client for {}", broker.bootstrap()))
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(TIMEOUT))
}
