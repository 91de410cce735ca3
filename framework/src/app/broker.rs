//! Where records go: librdkafka's embedded mock cluster when no broker is configured (see
//! `docs/architecture.md#brokers`), and creating the topics services declare.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaErrorCode;

use crate::app::wait::until_ok;
use crate::config::client::{Access, ClientHooks, Clients, Hooked};
use crate::contract::service::TopicSpec;
use crate::error::{Error, Result};
use crate::ops::health::Health;

/// librdkafka's in-process mock cluster, owned by a thread of its own (the handle is not
/// `Send`). Functional, not fast: for demos and tests, never for benchmarks.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    requests: mpsc::Sender<Request>,
    thread: Option<thread::JoinHandle<()>>,
}

enum Request {
    Create(TopicSpec, mpsc::Sender<Result<()>>),
    Stop,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster.
    pub fn start() -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (boot_tx, boot_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("atoll-embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = boot_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = boot_tx.send(Ok(cluster.bootstrap_servers()));
                while let Ok(req) = rx.recv() {
                    match req {
                        Request::Create(spec, reply) => {
                            let r = cluster
                                .create_topic(spec.name.as_str(), spec.partitions, 1)
                                .map_err(|e| Error::CreateTopic {
                                    topic: spec.name.to_string(),
                                    reason: e.to_string(),
                                });
                            let _ = reply.send(r);
                        }
                        Request::Stop => break,
                    }
                }
            })
            .map_err(|e| Error::Embedded(e.to_string()))?;
        let bootstrap = boot_rx
            .recv()
            .map_err(|_| Error::Embedded("mock cluster thread died".into()))?
            .map_err(Error::Embedded)?;
        Ok(Self {
            bootstrap,
            requests: tx,
            thread: Some(thread),
        })
    }

    /// The cluster's `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic.
    pub fn create_topic(&self, spec: &TopicSpec) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .send(Request::Create(spec.clone(), tx))
            .map_err(|_| Error::Embedded("mock cluster stopped".into()))?;
        rx.recv()
            .map_err(|_| Error::Embedded("mock cluster stopped".into()))?
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Checks that the cluster `client` bootstraps from answers within `timeout` (its metadata),
/// for tools that talk to it once.
///
/// # Errors
/// [`Error::Kafka`] saying why: the login or the TLS handshake refused (for whom, where, and
/// the broker's reason, as the services log it), or no answer in time.
pub fn reach(client: &ClientConfig, timeout: Duration) -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (who, bootstrap) = who_and_where(client);
    let refused = std::sync::Arc::new(parking_lot::Mutex::new(None));
    let hooks = {
        let refused = refused.clone();
        ClientHooks::new(who, bootstrap.clone(), None, move |access| {
            if let Access::Refused(why) = access {
                *refused.lock() = Some(why);
            }
        })
    };
    let consumer: BaseConsumer<Hooked> = Clients::new(client.clone(), hooks)
        .create("atoll")
        .map_err(|e| Error::kafka("creating a consumer", e))?;
    // Serves what the client asked for at creation (an OAUTHBEARER token, when it has a
    // provider) before the blocking call.
    let _ = consumer.poll(Duration::ZERO);
    let Err(e) = consumer.fetch_metadata(None, timeout) else {
        return Ok(());
    };
    // The client's errors reach its callbacks when it is polled.
    let _ = consumer.poll(Duration::from_millis(200));
    let refused = refused.lock().take();
    let what = match refused {
        Some(why) => why,
        None => format!("no answer from the cluster at {bootstrap} within {timeout:?}"),
    };
    Err(Error::kafka(what, e))
}

/// Creates the topics that do not exist yet on a real broker; existing ones are left alone.
///
/// # Errors
/// [`Error::Kafka`] when the cluster does not answer (unreachable, or the login failed);
/// [`Error::CreateTopic`] naming a topic the broker refused.
pub async fn create_topics(client: &ClientConfig, topics: &[TopicSpec]) -> Result<()> {
    let (who, bootstrap) = who_and_where(client);
    let clients = Clients::new(client.clone(), ClientHooks::detached(who, bootstrap));
    create(&clients, topics).await
}

/// Who a client configured by `client` is to the brokers (its SASL user, its certificate, or
/// `anonymous`), and where it connects: for the messages of tools, which have no `Config`.
fn who_and_where(client: &ClientConfig) -> (String, String) {
    let who = match (
        client.get("sasl.username"),
        client.get("ssl.certificate.location"),
    ) {
        (Some(user), _) => user.to_owned(),
        (None, Some(cert)) => format!("the client certificate {cert}"),
        (None, None) => "anonymous".to_owned(),
    };
    let bootstrap = client.get("bootstrap.servers").unwrap_or("").to_owned();
    (who, bootstrap)
}

/// Creates the missing topics at start, waiting (see [`wait`](super::wait)) while the cluster
/// cannot be reached, refuses the login, or refuses the creation for want of permission.
pub(crate) async fn create_topics_with(
    clients: &Clients,
    topics: &[TopicSpec],
    health: &Health,
) -> Result<()> {
    let why = |e: &Error| match e {
        Error::CreateTopic { .. } => {
            format!("{e} (where operators create the topics, set kafka.create_topics = false)")
        }
        _ => e.to_string(),
    };
    until_ok(health, || create(clients, topics), waits, why).await
}

/// Whether a failure to create topics may mend without a restart: the cluster unreachable,
/// the login refused, the permission missing.
fn waits(e: &Error) -> bool {
    match e {
        Error::Kafka { .. } => true,
        Error::CreateTopic { reason, .. } => {
            reason.contains("authoriz") || reason.to_lowercase().contains("timed out")
        }
        _ => false,
    }
}

async fn create(clients: &Clients, topics: &[TopicSpec]) -> Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<Hooked> = clients
        .create("admin")
        .map_err(|e| Error::kafka("creating the admin client", e))?;
    let configs: Vec<Vec<(&str, &str)>> = topics
        .iter()
        .map(|t| {
            t.config
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        })
        .collect();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&configs)
        .map(|(t, cfg)| {
            cfg.iter().fold(
                NewTopic::new(t.name.as_str(), t.partitions, TopicReplication::Fixed(-1)),
                |nt, (k, v)| nt.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| Error::kafka("creating topics (is the broker reachable?)", e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::CreateTopic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
