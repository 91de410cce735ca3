//! The contract layer: what services agree on, independent of how records are moved.
//!
//! Topic names and service identity (`topic`), event types (`event`), what a service
//! declares (`service`), the CloudEvents envelope (`envelope`), the dead-letter headers
//! (`dead_letter`), codec kinds and derived Avro schemas (`codec`), schema compatibility
//! (`compat`), the checked-in contract files (`files`), the namespace manifest (`manifest`)
//! the status record processes publish for the operator console (`status`), the operator's
//! holds on partitions that they obey (`control`) and the saga states (`saga`).
//!
//! The public items here are the ones tools need: what services declare, the checked-in
//! contract files, compatibility levels and the status record. Topic names and event types are at the crate root.
//!
//! This layer imports nothing from the runtime (`framework/tests/layers.rs` checks it): tools
//! can rely on it without starting anything.

pub(crate) mod codec;
pub(crate) mod compat;
pub mod control;
pub(crate) mod dead_letter;
pub(crate) mod envelope;
pub(crate) mod event;
pub(crate) mod files;
pub(crate) mod manifest;
pub(crate) mod reply;
pub(crate) mod retry_topic;
pub mod saga;
pub(crate) mod service;
pub mod status;
pub(crate) mod topic;

pub use atoll_naming::is_retry_topic;
pub use compat::Compatibility;
pub use files::{check, write, Contract};
pub use manifest::{owner_of, EventSpec, Kind, Manifest, ManifestError, ServiceManifest, FORMAT};
pub use service::{owned_topics, Delivery, ListenerDescription, ServiceDescription, TopicSpec};

/// Why a contract could not be derived, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// An event has no usable Avro schema, or its name is not a valid Avro name.
    #[error("schema: {0}")]
    Schema(String),
    /// A contract file could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}
