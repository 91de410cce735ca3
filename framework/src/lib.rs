//! # atoll
//!
//! Kafka-backed, event-driven services: "autonomous islands" that own their topics, publish
//! **facts** on `<company>.<namespace>.<service>.events` (sole publisher), accept **commands**
//! on their `.commands` topic (sole subscriber), and keep `.private.*` topics (DLQ, …).
//!
//! ```no_run
//! use atoll::{event_service, handlers, App, Context, Event, HandlerResult};
//! use serde::{Deserialize, Serialize};
//!
//! #[event_service(company = "acme", namespace = "shop", name = "orders")]
//! pub struct Orders;
//!
//! #[derive(Debug, Serialize, Deserialize, Event)]
//! #[event(command, name = "place_order", version = 1, service = Orders)]
//! pub struct PlaceOrder {
//!     #[event(key)]
//!     pub order_id: String,
//! }
//!
//! #[derive(Debug, Serialize, Deserialize, Event)]
//! #[event(fact, name = "order_placed", version = 1, service = Orders)]
//! pub struct OrderPlaced {
//!     #[event(key)]
//!     pub order_id: String,
//! }
//!
//! #[handlers]
//! impl Orders {
//!     #[listener(name = "place-order")]
//!     async fn place(&self, ctx: Context<Self>, cmd: PlaceOrder) -> HandlerResult {
//!         ctx.emit(OrderPlaced { order_id: cmd.order_id }).await?;
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> atoll::Result<()> {
//!     App::from_env()?.service(Orders).run().await
//! }
//! ```
//!
//! Delivery is **at-least-once**: an offset is committed only after its handler finished and
//! everything it produced was acknowledged. Handlers must be idempotent.

pub mod broker;
pub mod codec;
pub mod config;
pub mod contracts;
pub mod dlq;
pub mod envelope;
pub mod http;
pub mod policy;
pub mod registry;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
pub mod topic;
pub mod watermark;

mod app;
mod committer;
mod consumer;
mod context;
mod error;
mod event;
mod health;
mod metrics;

mod producer;

mod routing;
mod saga;
mod service;
mod stats;
mod worker;

pub use apache_avro::{self, AvroSchema};
pub use app::{App, Running};
pub use atoll_macros::{event_service, handlers, Event};
pub use config::{Config, ListenerConfig, ListenerSettings, RetryMode};
pub use consumer::Assignment;
pub use context::{Client, Context, FromContext, Meta};
pub use dlq::DeadLetterKind;
pub use error::{BoxError, Error, FailureKind, HandlerError, Result, ResultExt};
pub use event::{Command, Event, EventKind, FactOf, ListenableBy, Output, Reply};
pub use policy::OrderingMode;
pub use saga::{Saga, Step};
pub use service::{
    describe, owned_topics, HandlerResult, Handlers, Listener, ListenerDescription, Service,
    ServiceDescription, TopicSpec,
};
pub use stats::ListenerStats;
pub use topic::{ServiceId, TopicKind, TopicName, TopicNameError};

/// Used by the code the macros generate; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::codec::{AvroProbe, AvroProbeDerived, AvroProbeNone};
    pub use crate::saga::saga_listener;
    pub use crate::service::ce_type_of;
    pub use apache_avro::Schema as AvroSchemaValue;
    pub use futures::future::BoxFuture;
    pub use std::sync::{Arc, OnceLock};
}
