//! Kafka transactions for exactly-once listeners: a transactional producer that writes a batch
//! of outputs and the consumer offsets of the records that produced them as one transaction
//! (EOS v2, KIP-447: the offsets carry the consumer's group metadata, so a process that lost
//! its partitions in a rebalance is fenced).
//!
//! The producer is blocking and lives on its listener's committer thread; nothing else
//! touches it, so transactions never interleave.

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;

use crate::config::client::{Clients, Hooked};
use crate::error::Error;

/// A record produced by an exactly-once listener's handler, held until the transaction that
/// commits its source record's offset.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub(crate) topic: String,
    /// Explicit partition; `None` lets the partitioner decide from the key.
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Vec<u8>,
    pub(crate) headers: OwnedHeaders,
}

/// How long one transactional call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a commit whose outcome is unknown is called again before the transaction is
/// given up as failed.
const COMMIT_TRIES: u32 = 10;

/// Whether a commit that failed with `e` may be called again: its flush timed out, or
/// librdkafka marks the failure retriable (the outcome is not known yet).
fn commit_may_resume(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_retriable(),
        KafkaError::Flush(_) => true,
        _ => false,
    }
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub(crate) enum TxFailure {
    /// It was aborted (or never began); the producer can begin the next one. Nothing of it
    /// is visible to `read_committed` consumers, and its offsets were not committed.
    Aborted(String),
    /// The producer can no longer be used (a fatal error); a new one must be created. Its
    /// open transaction is aborted by the broker.
    Fatal(String),
    /// A newer producer with this `transactional.id` fenced this one: another process runs
    /// under this process name, and owns the work now. Nothing more may be written.
    Fenced(String),
    /// The broker does not implement Kafka transactions (it refuses to end one).
    Unsupported(String),
}

impl std::fmt::Display for TxFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Aborted(why) => write!(f, "transaction aborted: {why}"),
            Self::Fatal(why) => write!(f, "transactional producer unusable: {why}"),
            Self::Fenced(why) => write!(f, "fenced by a newer instance: {why}"),
            Self::Unsupported(why) => write!(
                f,
                "the broker does not support Kafka transactions, which `exactly_once` needs (Kafka 2.5 or later): {why}"
            ),
        }
    }
}

/// The variable of the zombie test hook (see [`hold_point`]).
pub(crate) const HOLD_TRANSACTION_MS: &str = "ATOLL_TEST_HOLD_TRANSACTION_MS";

/// A test hook for a zombie: with `ATOLL_TEST_HOLD_TRANSACTION_MS=n` in its environment, the
/// process waits `n` ms inside every transaction, after its outputs and offsets were sent and
/// before the commit (as after a long pause), so that another process can take its partitions
/// meanwhile. Without the variable it does nothing.
fn hold_point() {
    static HOLD: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let hold = HOLD.get_or_init(|| std::env::var(HOLD_TRANSACTION_MS).ok()?.parse().ok());
    if let Some(ms) = hold {
        tracing::info!(ms, "test hook: the transaction is held open");
        std::thread::sleep(Duration::from_millis(*ms));
    }
}

/// The variable of the failure test hook (see [`fail_point`]).
pub(crate) const FAIL_TRANSACTION_EVERY: &str = "ATOLL_TEST_FAIL_TRANSACTION_EVERY";

/// A test hook for failed transactions: with `ATOLL_TEST_FAIL_TRANSACTION_EVERY=n` in its
/// environment, every n-th transaction of the process fails just before its commit (as when
/// the broker refuses it), and is aborted. Without the variable it does nothing.
fn fail_point() -> Result<(), KafkaError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static EVERY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let every = EVERY.get_or_init(|| {
        std::env::var(FAIL_TRANSACTION_EVERY)
            .ok()?
            .parse()
            .ok()
            .filter(|n| *n > 0)
    });
    match every {
        Some(n) if (COUNT.fetch_add(1, Ordering::SeqCst) + 1) % n == 0 => {
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::Fail))
        }
        _ => Ok(()),
    }
}

/// A transactional producer with its `transactional.id`, ready for transactions.
pub(crate) struct TxProducer {
    inner: BaseProducer<Hooked>,
    id: String,
}

impl std::fmt::Debug for TxProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxProducer")
            .field("transactional.id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TxProducer {
    /// Creates the producer from the process's client configuration and registers
    /// `transactional_id` with the transaction coordinator, which fences any older producer
    /// with that id and aborts its open transaction (blocking).
    pub(crate) fn new(clients: &Clients, transactional_id: &str) -> Result<Self, String> {
        let inner: BaseProducer<Hooked> = clients
            .with(|config| {
                // Consumer-only settings would make the producer warn about them.
                for key in ["group.instance.id", "isolation.level", "auto.offset.reset"] {
                    config.remove(key);
                }
                config
                    .set("transactional.id", transactional_id)
                    .set("enable.idempotence", "true");
            })
            .create(&format!("tx {transactional_id}"))
            .map_err(|e| Error::kafka("creating the transactional producer", e).to_string())?;
        // Serves the request for a first OAUTHBEARER token, before the blocking call below.
        inner.poll(Duration::ZERO);
        inner
            .init_transactions(CALL_TIMEOUT)
            .map_err(|e| format!("registering transactional.id `{transactional_id}`: {e}"))?;
        Ok(Self {
            inner,
            id: transactional_id.to_owned(),
        })
    }

    /// Writes `outputs` (in order) and commits `offsets` for the consumer `group` in one
    /// transaction (blocking). On failure the transaction is aborted when it can be.
    pub(crate) fn commit(
        &self,
        outputs: &[Output],
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), TxFailure> {
        self.inner.begin_transaction().map_err(|e| self.failed(e))?;
        let result = self
            .write(outputs)
            .and_then(|()| {
                self.inner
                    .send_offsets_to_transaction(offsets, group, CALL_TIMEOUT)
            })
            .and_then(|()| {
                hold_point();
                fail_point()?;
                self.commit_retrying()
            });
        let Err(e) = result else {
            return Ok(());
        };
        match self.failed(e) {
            TxFailure::Aborted(why) => match self.abort() {
                Ok(()) => Err(TxFailure::Aborted(why)),
                // A fenced producer cannot abort; the broker aborts for it.
                Err(e) => Err(match self.failed(e) {
                    fenced @ TxFailure::Fenced(_) => fenced,
                    other => TxFailure::Fatal(format!("{why}; then aborting failed: {other}")),
                }),
            },
            other => Err(other),
        }
    }

    /// Aborts the open transaction. librdkafka waits for the delivery reports of what it
    /// purges, which this producer serves only when polled: so short calls, polling between
    /// them (an abort that timed out may be called again).
    fn abort(&self) -> Result<(), KafkaError> {
        let deadline = std::time::Instant::now() + CALL_TIMEOUT;
        loop {
            self.inner.poll(Duration::ZERO);
            match self.inner.abort_transaction(Duration::from_millis(500)) {
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && std::time::Instant::now() < deadline => {}
                other => return other,
            }
        }
    }

    /// Hands every output to the client, waiting while its queue is full.
    fn write(&self, outputs: &[Output]) -> Result<(), KafkaError> {
        for o in outputs {
            let mut record = BaseRecord::to(&o.topic)
                .payload(&o.payload)
                .headers(o.headers.clone());
            if let Some(key) = &o.key {
                record = record.key(key);
            }
            if let Some(p) = o.partition {
                record = record.partition(p);
            }
            loop {
                match self.inner.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.inner.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Commits the open transaction, calling again while the outcome is unknown: a flush that
    /// timed out, or a commit that librdkafka marks retriable (a commit call may be resumed;
    /// an abort may not follow it).
    fn commit_retrying(&self) -> Result<(), KafkaError> {
        let mut tries = 0;
        loop {
            match self.inner.commit_transaction(CALL_TIMEOUT) {
                Err(e @ (KafkaError::Transaction(_) | KafkaError::Flush(_)))
                    if tries < COMMIT_TRIES && commit_may_resume(&e) =>
                {
                    tries += 1;
                    tracing::warn!(
                        transactional_id = %self.id, error = %e, tries,
                        "a transaction's commit did not end; calling it again"
                    );
                }
                other => return other,
            }
        }
    }

    /// What a failed call means for the transaction and the producer.
    fn failed(&self, e: KafkaError) -> TxFailure {
        let why = format!("{e} (transactional.id `{}`)", self.id);
        // A send refused because the producer is in a fatal state says only "fatal"; the
        // client knows which.
        if let Some((code, reason)) = self.inner.client().fatal_error() {
            return match code {
                RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced => {
                    TxFailure::Fenced(format!("{reason}; {why}"))
                }
                _ => TxFailure::Fatal(format!("{reason}; {why}")),
            };
        }
        match &e {
            KafkaError::Transaction(t)
                if matches!(
                    t.code(),
                    RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced
                ) =>
            {
                TxFailure::Fenced(why)
            }
            KafkaError::Transaction(t) if t.code() == RDKafkaErrorCode::UnsupportedFeature => {
                TxFailure::Unsupported(why)
            }
            KafkaError::Transaction(t)
                if t.is_fatal() || !t.txn_requires_abort() && !t.is_retriable() =>
            {
                TxFailure::Fatal(why)
            }
            _ => TxFailure::Aborted(why),
        }
    }
}
