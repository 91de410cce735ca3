//! Reads every service's status topic into the [`Fleet`]: a consumer that joins no group and
//! commits nothing (so any number of consoles read side by side), assigned
//! every partition of each `<service>.private.status` topic from its beginning. It looks for
//! new status topics every [`DISCOVER_EVERY`] (a service deployed after the console started
//! shows up then).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atoll::contract::status::ProcessStatus;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::fleet::Fleet;

/// How often the cluster's topics are listed for new status topics.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(10);

/// The suffix of a status topic.
const SUFFIX: &str = ".private.status";

/// How long a metadata request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The reading thread; it stops when dropped.
#[derive(Debug)]
pub struct Source {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Why the console cannot read the cluster.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the status topics: {0}")]
pub struct SourceError(#[from] rdkafka::error::KafkaError);

impl Source {
    /// Starts reading into `fleet` with the client configuration `client` (the broker's
    /// address and security, as the services have them).
    ///
    /// # Errors
    /// The consumer cannot be made (a bad property, say).
    pub fn start(client: &ClientConfig, fleet: Arc<Mutex<Fleet>>) -> Result<Self, SourceError> {
        let mut client = client.clone();
        // librdkafka wants a group for its consumer's calls, though this one never joins it
        // (it assigns partitions itself) and commits nothing to it.
        if client.get("group.id").is_none() {
            client.set("group.id", "atoll-console");
        }
        client
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = client.create()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("atoll-console-source".into())
            .spawn(move || read(&consumer, &fleet, &stopping))
            .expect("a thread starts");
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls until `stop`, assigning new status topics as they appear.
fn read(consumer: &BaseConsumer, fleet: &Mutex<Fleet>, stop: &AtomicBool) {
    let mut known = BTreeSet::new();
    let mut discovered: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if discovered.is_none_or(|at| at.elapsed() >= DISCOVER_EVERY) {
            discovered = Some(Instant::now());
            match discover(consumer, &mut known) {
                Ok(()) => {
                    let mut fleet = fleet.lock();
                    for topic in &known {
                        fleet.know(topic.strip_suffix(SUFFIX).unwrap_or(topic));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "console: cannot list the status topics"),
            }
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => take(fleet, m.topic(), m.key(), m.payload()),
            Some(Err(e)) => tracing::debug!(error = %e, "console: reading a status topic"),
            None => {}
        }
    }
}

/// Assigns the partitions of status topics not read yet, from their beginning (beside those
/// assigned before, which go on where they are).
fn discover(consumer: &BaseConsumer, known: &mut BTreeSet<String>) -> Result<(), SourceError> {
    let metadata = consumer.fetch_metadata(None, TIMEOUT)?;
    let mut new = TopicPartitionList::new();
    for topic in metadata.topics() {
        let name = topic.name();
        if !name.ends_with(SUFFIX) || topic.error().is_some() || known.contains(name) {
            continue;
        }
        for p in topic.partitions() {
            new.add_partition_offset(name, p.id(), Offset::Beginning)?;
        }
        if !topic.partitions().is_empty() {
            known.insert(name.to_owned());
        }
    }
    if new.count() > 0 {
        consumer.incremental_assign(&new)?;
    }
    Ok(())
}

/// Takes one record of a status topic into the fleet; what is not a status record is skipped.
fn take(fleet: &Mutex<Fleet>, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) {
    let Some(service) = topic.strip_suffix(SUFFIX) else {
        return;
    };
    let Some(process) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
        return;
    };
    let record = match value.map(ProcessStatus::from_json) {
        None => None,
        Some(Ok(Some(record))) => Some(record),
        Some(Ok(None)) => return,
        Some(Err(e)) => {
            tracing::debug!(topic, process, error = %e, "console: not a status record");
            return;
        }
    };
    fleet.lock().apply(service, process, record);
}
