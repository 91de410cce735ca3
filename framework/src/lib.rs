//! # atoll
//!
//! Kafka-backed, event-driven services: "autonomous islands" that own their topics, publish
//! **facts** on `<company>.<namespace>.<service>.events` (sole publisher), accept **commands**
//! on their `.commands` topic (sole subscriber), and keep `.private.*` topics (DLQ, …).
//!
//! ```no_run
//! use atoll::{event_service, handlers, App, Event, HandlerResult};
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
//!     async fn place(&self, cmd: PlaceOrder) -> HandlerResult<OrderPlaced> {
//!         Ok(OrderPlaced { order_id: cmd.order_id })
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
//!
//! # Layers
//!
//! The crate is built in layers; each may use only the layers above it in this list
//! (`tests/layers.rs` checks it):
//!
//! | layer | holds |
//! |---|---|
//! | `contract/` | topic names, service and event identity, the envelope, dead-letter headers, schemas and compatibility |
//! | `error.rs`, `backoff.rs` | the library's errors; the one exponential backoff |
//! | `config/` | configuration, listener settings, librdkafka client settings |
//! | `produce/` | the producer and the acknowledgement of what it sent |
//! | `ops/` | HTTP server, health, metrics, telemetry |
//! | `codec/` | JSON and Avro codecs, the development schema registry |
//! | `store/` | the services' database (PostgreSQL or SQLite): atoll's tables, the application's migrations |
//! | `handler/` | what a handler sees: context, extractors, listeners |
//! | `saga/` | orchestrated sagas (`saga/state.rs` is a pure state machine) |
//! | `consume/` | consumer, poll loop, worker, retry decisions, dead letters, watermark, committer |
//! | `app/` | the process: wires services, broker, producer and endpoints |
//! | `testing.rs` | (feature `testing`) unit-testing handlers and sagas without a broker |
//!
//! The record's path, the delivery contract, the topic convention and the headers are
//! documented in [`guide::architecture`] (`docs/architecture.md`); the other guides are under
//! [`guide`].

mod app;
mod backoff;
pub mod codec;
pub mod config;
mod consume;
pub mod contract;
mod error;
mod handler;
mod ops;
mod produce;
mod saga;
mod store;

#[cfg(feature = "testing")]
pub mod testing;

pub use app::{App, Running};
pub use atoll_macros::{event_service, handlers, Event, Events};
pub use consume::consumer::Assignment;
pub use contract::event::{Command, Event, EventKind, FactOf, ListenableBy, Reply, Request};
pub use contract::service::Service;
pub use contract::topic::{PrivateTopic, ServiceId, TopicKind, TopicName, TopicNameError};
pub use error::{BoxError, Error, FailureKind, HandlerError, Result, ResultExt};
pub use handler::batch::{Batch, BatchRecord};
pub use handler::context::{Client, Context, FromContext, Meta};
pub use handler::input::{Input, InputType};
pub use handler::listener::{describe, HandlerResult, Handlers, Listener};
pub use handler::output::Output;
pub use handler::schedule::{Due, ScheduleKey};
pub use handler::transaction::{StoreTx, Tx};
pub use ops::stats::ListenerStats;
pub use saga::{Saga, Step};
pub use store::driver::{Driver, TxDriver};
pub use store::view::{View, ViewFeed};
pub use store::{Backend, Store};

/// The manual: guides to writing, running and testing services, and the architecture
/// reference (the same text as the repository's `docs/`), in the order to learn them:
///
/// | guide | covers |
/// |---|---|
/// | [`services`](guide::services) | writing a service: events, listeners, extractors, producing |
/// | [`testing`](guide::testing) | testing handlers and sagas with `atoll::testing`; the test suite |
/// | [`delivery_and_ordering`](guide::delivery_and_ordering) | at-least-once delivery, commits, ordering modes, exactly once |
/// | [`failures`](guide::failures) | transient and permanent failures, retries, dead letters, the `atoll` tool |
/// | [`configuration`](guide::configuration) | every key, its environment variable and default; logs |
/// | [`operations`](guide::operations) | health, metrics, traces, shutdown, topics as code, docker compose |
/// | [`security`](guide::security) | TLS and SASL to Kafka, the registry, PostgreSQL and OTLP; secrets |
/// | [`avro_and_contracts`](guide::avro_and_contracts) | Avro, the schema registry, schema evolution |
/// | [`store`](guide::store) | durable state: transactional listeners, inbox, outbox, views |
/// | [`sagas`](guide::sagas) | request and reply, orchestrated sagas |
/// | [`reliability`](guide::reliability) | the chaos run and the fault tests |
/// | [`performance`](guide::performance) | the benchmark's method and figures |
/// | [`architecture`](guide::architecture) | layers, the record's path, the contracts |
//
// The guides link to each other with reference links (`[failures][failures.md]`, see
// `scripts/guide-links`): each guide defines them for the repository page, and
// `guide-links.md`, put first, defines them for rustdoc (the first definition wins).
pub mod guide {
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/services.md")]
    pub mod services {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/testing.md")]
    pub mod testing {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/delivery-and-ordering.md")]
    pub mod delivery_and_ordering {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/failures.md")]
    pub mod failures {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/configuration.md")]
    pub mod configuration {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/operations.md")]
    pub mod operations {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/security.md")]
    pub mod security {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/avro-and-contracts.md")]
    pub mod avro_and_contracts {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/store.md")]
    pub mod store {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/sagas.md")]
    pub mod sagas {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/reliability.md")]
    pub mod reliability {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/performance.md")]
    pub mod performance {}
    #[doc = include_str!("../guide-links.md")]
    #[doc = include_str!("../../docs/architecture.md")]
    pub mod architecture {}
}

/// Entry points of the fuzz targets (`fuzz/`, run by `scripts/fuzz`) into parsing code that
/// is not public; built only with `--cfg fuzzing`, as cargo-fuzz builds.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod __fuzz {
    /// Reads `headers` as a listener reads a record's, and checks its reply address's form
    /// and its fit in a topic of 3 partitions.
    pub fn envelope<H: rdkafka::message::Headers>(headers: &H) {
        let env = crate::contract::envelope::Envelope::read(Some(headers));
        let target = crate::contract::reply::ReplyTarget::parse(env.reply_to, env.reply_partition);
        if let Ok(Some(target)) = target {
            let _ = target.fits(Some(3));
        }
    }
}

/// Interceptors: tower layers around a service's handlers ([`App::layer`],
/// [`App::listener_layer`]).
pub mod layer {
    pub use crate::handler::layer::{
        from_fn, Failed, FromFn, FromFnService, HandlerLayer, Handling, Incoming, Next,
    };
}

/// The CloudEvents envelope: header names, what atoll writes on a record it produces
/// ([`Outgoing`](envelope::Outgoing)) and what it reads from one it consumes.
pub mod envelope {
    pub use crate::contract::envelope::*;
}

/// The dead-letter contract: the `atoll_dlq_*` headers and why a record was dead-lettered.
pub mod dead_letter {
    pub use crate::contract::dead_letter::*;
}

/// The non-blocking retry topic's `atoll_retry_*` headers.
pub mod retry_topic {
    pub use crate::contract::retry_topic::{
        ATTEMPTS, DELIVERY, ERROR, LISTENER, NOT_BEFORE, ORIGINAL_OFFSET, ORIGINAL_PARTITION,
        ORIGINAL_TOPIC,
    };
}

/// Brokers: the embedded mock cluster, the shared client settings, and topic creation.
pub mod broker {
    pub use crate::app::broker::{create_topics, reach, EmbeddedBroker};
    pub use crate::config::kafka::client_config;
}

/// Logs and traces: [`init`](telemetry::init) installs them from `telemetry.*`.
pub mod telemetry {
    pub use crate::ops::telemetry::{init, Telemetry};
}

/// Used by the code the macros generate; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::app::status::status_cost;
    pub use crate::contract::codec::{AvroProbe, AvroProbeDerived, AvroProbeNone};
    pub use crate::contract::service::ce_type_of;

    /// The CloudEvents type of command `C`, as `sends = [C]` declares it: a type that is not a
    /// command is an error at it.
    pub fn command_type<C: crate::contract::event::Command>() -> &'static str {
        C::ce_type()
    }
    pub use crate::handler::input::{decode_as, none_of};
    pub use crate::handler::listener::SagaListeners;
    pub use crate::handler::output::{emit_output, reply_output};
    pub use crate::saga::{saga_listener, DeclaredSaga, SagaOf};
    pub use apache_avro::Schema as AvroSchemaValue;
    pub use futures::future::BoxFuture;
    pub use std::sync::{Arc, OnceLock};
}
