//! Producing records with the CloudEvents envelope, and waiting for their acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};

use crate::error::{Error, Result};

/// The process's shared producer.
#[derive(Clone)]
pub(crate) struct Producer {
    inner: Arc<FutureProducer>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

/// A produced record on its way to the broker.
pub(crate) struct Pending {
    topic: String,
    delivery: DeliveryFuture,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Waits until the broker acknowledged the record.
    pub(crate) async fn acked(self) -> Result<()> {
        match self.delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((source, _))) => Err(Error::Produce {
                topic: self.topic,
                source,
            }),
            Err(_) => Err(Error::Produce {
                topic: self.topic,
                source: KafkaError::Canceled,
            }),
        }
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
    pub(crate) fn new(inner: FutureProducer) -> Self {
        Self {
            inner: Arc::new(inner),
        }
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
        let mut headers = Some(headers);
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            if let Some(h) = headers.take() {
                record = record.headers(h);
            }
            match self.inner.send_result(record) {
                Ok(delivery) => {
                    return Ok(Pending {
                        topic: topic.to_owned(),
                        delivery,
                    })
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    headers = record.headers;
                    tokio::time::sleep(Duration::from_millis(5)).await;
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

    /// Records handed to the client and not yet acknowledged (or failed).
    pub(crate) fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }

    /// Waits up to `timeout` for every queued record to be delivered.
    pub(crate) fn flush(&self, timeout: Duration) {
        if let Err(e) = self.inner.flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not finish");
        }
    }
}
