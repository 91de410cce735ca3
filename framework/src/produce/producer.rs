//! Producing records, and waiting for their acknowledgement. The envelope is written by whoever
//! produces (the handler's context, the client); dead letters and retries keep the original
//! headers. The producer moves bytes.

#[cfg(feature = "testing")]
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use rdkafka::statistics::Statistics;

use crate::backoff::Backoff;
use crate::config::client::{connected, ClientHooks};
use crate::error::{Error, Result};

/// The process's shared producer: librdkafka's, or a recorder that keeps what it is given
/// and acknowledges it at once (for unit tests of handlers).
#[derive(Clone)]
pub(crate) struct Producer {
    inner: Inner,
    /// The cluster's topics, as last read.
    topics: Arc<TopicCache>,
    metrics: Arc<ProduceMetrics>,
}

/// What the producer counts of the records whose acknowledgement atoll awaits (every record a
/// handler, the outbox, a dead letter or a saga produces): acknowledged, failed, and how long
/// from the send to the answer.
#[derive(Debug)]
pub(crate) struct ProduceMetrics {
    pub(crate) produced: Counter,
    pub(crate) failed: Counter,
    pub(crate) latency: Histogram,
    /// Records sent to each topic, as librdkafka's last statistics counted them.
    pub(crate) sent: parking_lot::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Default for ProduceMetrics {
    fn default() -> Self {
        Self {
            produced: Counter::default(),
            failed: Counter::default(),
            // 0.5 ms to 16 s, doubling.
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            sent: Default::default(),
        }
    }
}

/// The cluster's topics with their partition counts, when they were read, and the lock
/// that makes reads one at a time.
#[derive(Debug, Default)]
struct TopicCache {
    known: parking_lot::Mutex<Option<(std::time::Instant, HashMap<String, i32>)>>,
    reading: tokio::sync::Mutex<()>,
}

/// How long the cluster's topics, once read, are trusted.
const TOPICS_FOR: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Inner {
    Kafka(Arc<FutureProducer<Events>>),
    #[cfg(feature = "testing")]
    Recording(Arc<Mutex<Vec<Recorded>>>),
}

/// A record a recording producer was given.
#[cfg(feature = "testing")]
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) topic: String,
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Vec<u8>,
    pub(crate) headers: OwnedHeaders,
}

/// The producer client's callbacks: its log, errors and tokens go through the process's
/// [`ClientHooks`], and a fatal error (the idempotent producer can no longer keep its
/// guarantees; nothing is sent from then on) to `on_fatal`.
pub(crate) struct Events {
    hooks: ClientHooks,
    on_fatal: Box<dyn Fn(String) + Send + Sync>,
    /// Where the records sent to each topic are counted.
    metrics: Arc<ProduceMetrics>,
}

impl Events {
    /// Callbacks through `hooks` that report a fatal error to `on_fatal` and count the records
    /// sent to each topic in `metrics`.
    pub(crate) fn new(
        hooks: ClientHooks,
        on_fatal: impl Fn(String) + Send + Sync + 'static,
        metrics: Arc<ProduceMetrics>,
    ) -> Self {
        Self {
            hooks,
            on_fatal: Box::new(on_fatal),
            metrics,
        }
    }
}

impl ClientContext for Events {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.hooks.log("producer", level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(%error, reason, "fatal producer error: the process must be restarted");
            (self.on_fatal)(format!("producer: {reason}"));
        } else {
            self.hooks.error("producer", &error, reason);
        }
    }

    fn stats(&self, statistics: Statistics) {
        if connected(&statistics) {
            self.hooks.connected();
        }
        let sent = statistics.topics.iter().map(|(name, topic)| {
            let n = topic.partitions.iter().filter(|(p, _)| **p >= 0);
            (name.clone(), n.map(|(_, part)| part.txmsgs).sum())
        });
        *self.metrics.sent.lock() = sent.collect();
    }

    fn generate_oauth_token(
        &self,
        _: Option<&str>,
    ) -> std::result::Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.hooks.token()
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

/// A produced record on its way to the broker. It names its topic only when it fails (the
/// failed record carries it), so that a record on its way costs no copy of the name.
pub(crate) struct Pending {
    /// `None`: recorded, so acknowledged already.
    delivery: Option<DeliveryFuture>,
    /// When it was sent, and where its answer is counted.
    sent: std::time::Instant,
    metrics: Arc<ProduceMetrics>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl Pending {
    /// Waits until the broker acknowledged the record.
    pub(crate) async fn acked(self) -> Result<()> {
        self.acked_at().await.map(drop)
    }

    /// Waits until the broker acknowledged the record: the offset it was written at, `None`
    /// when it was recorded (a unit test's producer) or the broker did not say.
    pub(crate) async fn acked_at(self) -> Result<Option<i64>> {
        let Some(delivery) = self.delivery else {
            return Ok(None);
        };
        let answer = match delivery.await {
            // -1 when the broker does not say (`acks=0`).
            Ok(Ok(delivered)) => Ok(Some(delivered.offset).filter(|at| *at >= 0)),
            Ok(Err((source, record))) => Err(Error::Produce {
                topic: rdkafka::Message::topic(&record).to_owned(),
                source,
            }),
            // The producer went away with the record (the process is stopping).
            Err(_) => Err(Error::Produce {
                topic: "(unknown: the producer was closed)".to_owned(),
                source: KafkaError::Canceled,
            }),
        };
        let m = &self.metrics;
        match &answer {
            Ok(_) => {
                m.produced.inc();
                m.latency.observe(self.sent.elapsed().as_secs_f64());
            }
            Err(_) => {
                m.failed.inc();
            }
        }
        answer
    }
}

impl Pending {
    /// Waits for every record of `pending`; the first failure, if any.
    pub(crate) async fn all(pending: Vec<Pending>) -> Result<()> {
        let mut first_err = None;
        for p in pending {
            if let Err(e) = p.acked().await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Producer {
    /// librdkafka's producer, counting into `metrics`.
    pub(crate) fn new(inner: FutureProducer<Events>, metrics: Arc<ProduceMetrics>) -> Self {
        Self {
            inner: Inner::Kafka(Arc::new(inner)),
            topics: Arc::default(),
            metrics,
        }
    }

    /// A producer that records what it is given into `sink` and acknowledges it at once.
    #[cfg(feature = "testing")]
    pub(crate) fn recording(sink: Arc<Mutex<Vec<Recorded>>>) -> Self {
        Self {
            inner: Inner::Recording(sink),
            topics: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// How many partitions `topic` has (`None`: it does not exist), from the metadata of all
    /// the cluster's topics (asking for one topic by name can make a broker create it). What
    /// was read is trusted for 30 s, unless `fresh` asks for a new read; reads are one at a
    /// time and at most one a second (a flood of records naming unknown topics costs no
    /// more). A recording producer knows every topic, with as many partitions as asked for.
    ///
    /// # Errors
    /// [`Error::Kafka`] when the cluster did not answer.
    pub(crate) async fn partitions(&self, topic: &str, fresh: bool) -> Result<Option<i32>> {
        let producer = match &self.inner {
            Inner::Kafka(p) => p.clone(),
            #[cfg(feature = "testing")]
            Inner::Recording(_) => return Ok(Some(i32::MAX)),
        };
        let known = |within: Duration| -> Option<Option<i32>> {
            let topics = self.topics.known.lock();
            let (at, topics) = topics.as_ref()?;
            (at.elapsed() < within).then(|| topics.get(topic).copied())
        };
        if let (false, Some(Some(n))) = (fresh, known(TOPICS_FOR)) {
            return Ok(Some(n));
        }
        let _reading = self.topics.reading.lock().await;
        if let Some(n) = known(Duration::from_secs(1)) {
            return Ok(n);
        }
        let read = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(|m| {
                    m.topics()
                        .iter()
                        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
                        .collect::<HashMap<_, _>>()
                })
        })
        .await
        .map_err(|_| Error::kafka("reading the cluster's topics", KafkaError::Canceled))?
        .map_err(|e| Error::kafka("reading the cluster's topics", e))?;
        let n = read.get(topic).copied();
        *self.topics.known.lock() = Some((std::time::Instant::now(), read));
        Ok(n)
    }

    /// Hands a record to the client; waits while its queue is full. The returned
    /// [`Pending`] resolves once the broker acknowledged it.
    pub(crate) async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Pending> {
        self.send_to(topic, None, key, payload, headers).await
    }

    /// Like [`send`](Self::send), to `partition` when given (else the partitioner decides).
    pub(crate) async fn send_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Pending> {
        self.send_value(topic, partition, key, Some(payload), headers)
            .await
    }

    /// A tombstone (a record without a value) for `key` on `topic`'s `partition`: compaction
    /// then drops the key's earlier records.
    pub(crate) async fn tombstone(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
    ) -> Result<Pending> {
        self.send_value(topic, Some(partition), Some(key), None, OwnedHeaders::new())
            .await
    }

    /// Hands a record to the client, waiting while its queue is full.
    async fn send_value(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<Pending> {
        // One variant without the `testing` feature.
        #[cfg_attr(
            not(feature = "testing"),
            allow(clippy::infallible_destructuring_match)
        )]
        let producer = match &self.inner {
            Inner::Kafka(p) => p,
            #[cfg(feature = "testing")]
            Inner::Recording(sink) => {
                sink.lock().push(Recorded {
                    topic: topic.to_owned(),
                    partition,
                    key: key.map(<[u8]>::to_vec),
                    payload: payload.map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
                return Ok(self.pending(None));
            }
        };
        let mut headers = Some(headers);
        let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(100)).iter();
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic);
            if let Some(v) = payload {
                record = record.payload(v);
            }
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            if let Some(h) = headers.take() {
                record = record.headers(h);
            }
            match producer.send_result(record) {
                Ok(delivery) => return Ok(self.pending(Some(delivery))),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    headers = record.headers;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err((source, _)) => {
                    return Err(Error::Produce {
                        topic: topic.to_owned(),
                        source,
                    })
                }
            }
        }
    }

    /// A record on its way, sent now.
    fn pending(&self, delivery: Option<DeliveryFuture>) -> Pending {
        Pending {
            delivery,
            sent: std::time::Instant::now(),
            metrics: self.metrics.clone(),
        }
    }

    /// Records handed to the client and not yet acknowledged (or failed).
    pub(crate) fn in_flight(&self) -> i32 {
        match &self.inner {
            Inner::Kafka(p) => p.in_flight_count(),
            #[cfg(feature = "testing")]
            Inner::Recording(_) => 0,
        }
    }

    /// Records sent to each topic since the producer started, as librdkafka's statistics
    /// (every `statistics.interval.ms`) last counted them.
    pub(crate) fn sent_by_topic(&self) -> std::collections::BTreeMap<String, u64> {
        self.metrics.sent.lock().clone()
    }

    /// Waits up to `timeout` for every queued record to be delivered.
    pub(crate) fn flush(&self, timeout: Duration) {
        #[cfg_attr(not(feature = "testing"), allow(irrefutable_let_patterns))]
        if let Inner::Kafka(p) = &self.inner {
            if let Err(e) = p.flush(timeout) {
                tracing::warn!(error = %e, "producer flush did not finish");
            }
        }
    }
}
