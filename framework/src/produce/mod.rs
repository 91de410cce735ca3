//! The produce layer: one idempotent-ready librdkafka producer per process, and the pending
//! acknowledgement of each record it sends.

mod producer;
pub(crate) mod transactional;

#[cfg(feature = "testing")]
pub(crate) use producer::Recorded;
pub(crate) use producer::{Events, Pending, ProduceMetrics, Producer};
