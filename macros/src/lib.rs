//! Procedural macros of [atoll](https://docs.rs/atoll). Use them through the `atoll` crate.
//!
//! Each macro parses its attribute, checks it, and expands; every error is reported at once,
//! spanned on the offending tokens, and the annotated item is still emitted so that one
//! mistake does not cascade into unrelated errors.

mod errors;
mod event;
mod events;
mod handlers;
mod segment;
mod service;

use proc_macro::TokenStream;

/// Declares a service on a struct: its identity, and so every topic it owns.
///
/// ```
/// # use atoll::{handlers, Context, HandlerResult, Saga, Step};
/// # use serde::{Deserialize, Serialize};
/// #[atoll::event_service(
///     company = "acme",      // required: `[a-z0-9_-]+`
///     namespace = "shop",    // required
///     name = "orders",       // required: the service's name
///     partitions = 6,        // optional: partitions of the topics atoll creates (default 6)
///     codec = "json",        // optional: "json" (default) or "avro"; `service.codec` overrides
///     sagas = [Checkout],    // optional: the sagas this service runs, declared here only
///     // optional: configs of its topics, as (topic, config, value)
///     topic_config = [("events", "retention.ms", "604800000")],
/// )]
/// pub struct Orders;
/// # #[handlers] impl Orders {}
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # pub struct Checkout { id: String }
/// # impl Saga for Checkout {
/// #     const NAME: &'static str = "checkout";
/// #     fn id(&self) -> String { self.id.clone() }
/// #     fn steps() -> Vec<Step<Self>> { Vec::new() }
/// #     async fn completed(self, _: Context<Orders>) -> HandlerResult { Ok(()) }
/// #     async fn failed(self, _: Context<Orders>, _: String) -> HandlerResult { Ok(()) }
/// # }
/// ```
///
/// The service owns `acme.shop.orders.events` (its facts; it is their sole publisher),
/// `.commands` (its sole subscriber), and `.private.dlq`, `.private.retry`, `.private.reply`
/// and, with sagas, `.private.saga`. Each segment is checked at compile time (with a valid
/// suggestion), and so is the length of the longest topic name against Kafka's limit.
///
/// `sagas = [A, B]` ties each saga to this service: a saga listed nowhere does not compile
/// (`impl Saga` needs it), a saga listed in two services conflicts, and only this service's
/// handlers can `start_saga` it. Each saga runs as listener `<NAME>-saga`.
///
/// `topic_config` sets configs of the service's own topics (named by what follows the
/// service's prefix: `events`, `commands`, `results`, `private.dlq`, …); atoll creates the
/// topics with them and the manifest lists them. A topic the service does not own, a config
/// given twice, or the saga state topic's `cleanup.policy` does not compile.
#[proc_macro_attribute]
pub fn event_service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::expand(attr.into(), item.into()).into()
}

/// Declares a service's listeners on an `impl` block of the service.
///
/// Each method marked `#[listener(name = "…")]` is a handler:
/// `async fn(&self, extractors…, event: E) -> HandlerResult` (or `HandlerResult<R>` for a
/// command whose handler replies with `R`). Extractors come before the event: `Context<Self>`
/// to produce, `Meta` for the record's metadata. Each listener is its own consumer group,
/// `<company>.<namespace>.<service>-<name>`.
///
/// ```
/// # use atoll::{event_service, Context, Event, HandlerResult, Meta};
/// # use serde::{Deserialize, Serialize};
/// # #[event_service(company = "acme", namespace = "shop", name = "payments")]
/// # pub struct Payments;
/// # #[derive(Debug, Serialize, Deserialize, Event)]
/// # #[event(command, name = "charge", version = 1, service = Payments)]
/// # pub struct Charge { #[event(key)] pub order_id: String }
/// #[atoll::handlers]
/// impl Payments {
///     #[listener(
///         name = "charge",          // required: `[a-z0-9_-]+`, unique in the service
///         handler_timeout_ms = 30000, // an attempt's time budget; exceeding it is transient
///         max_attempts = 5,         // attempts in place, the first included (0: no limit)
///         backoff_ms = 100,         // first in-place backoff; doubles ...
///         max_backoff_ms = 10000,   // ... up to this, ±20% jitter
///         retry = "non_blocking",   // "strict" (default: the partition waits) or "non_blocking"
///         retry_topic_attempts = 3, // deliveries through the retry topic (non_blocking)
///         retry_topic_delay_ms = 1000, // before the first of them; doubles
///         ordering = "key",         // "partition" (default), "key" or "unordered"
///         max_in_flight = 256,      // records handled at once (key/unordered)
///         max_buffered = 10000,     // records buffered per partition before it pauses
///         commit_interval_ms = 500, // how often finished offsets are committed ...
///         commit_batch = 1000,      // ... or sooner, after this many records
///         drain_timeout_ms = 10000, // how long revocation and shutdown wait for records
///         delivery = "exactly_once", // outputs and offsets in one Kafka transaction
///         batch_size = 100,         // a partition's records per `Batch` call or store transaction
///         batch_wait_ms = 0,        // how long a batch waits for more records
///     )]
///     async fn charge(&self, ctx: Context<Self>, meta: Meta, cmd: Charge) -> HandlerResult {
///         Ok(())
///     }
/// }
/// ```
///
/// Every setting is optional; configuration under `listeners.<name>` overrides the code, and
/// `listener.*` gives the defaults. Unknown settings, bad values and duplicate names are
/// compile errors.
///
/// `view = "order_status"` (tables separated by commas) declares that the listener builds a
/// read model in those tables. Its handler takes `Tx`; `atoll view rebuild <group>` empties the
/// tables and replays the listener's topic from its start (see the store guide).
///
/// `sends = [ExpireReservation, …]` declares the commands the listener sends (with
/// `ctx.send`, `ctx.request` or `ctx.schedule`): the manifest lists them, so the ACLs it
/// derives let the service write their topics. A type that is not a command is a compile
/// error.
#[proc_macro_attribute]
pub fn handlers(attr: TokenStream, item: TokenStream) -> TokenStream {
    handlers::expand(attr.into(), item.into()).into()
}

/// Declares an event type.
///
/// ```
/// # use atoll::{event_service, Event};
/// # use serde::{Deserialize, Serialize};
/// # #[event_service(company = "acme", namespace = "shop", name = "inventory")]
/// # pub struct Inventory;
/// #[derive(Debug, Serialize, Deserialize, Event)]
/// #[event(
///     command,                      // or `fact` (something that happened) or `reply`
///     name = "reserve_stock",       // required: snake_case
///     version = 1,                  // required: the contract version, from 1
///     service = Inventory,          // required: the owner
///     reply = StockReserved,        // commands only, optional: the reply that answers it
/// )]
/// pub struct ReserveStock {
///     #[event(key)]                 // optional: the record key (the aggregate id)
///     pub order_id: String,
/// }
///
/// #[derive(Debug, Serialize, Deserialize, Event)]
/// #[event(reply, name = "stock_reserved", version = 1, service = Inventory)]
/// pub struct StockReserved { pub ok: bool }
/// ```
///
/// A fact travels on its owner's `events` topic and only its owner may emit it; a command on
/// its owner's `commands` topic, sent by anyone and handled only by its owner; a reply on the
/// requester's `private.reply` topic. The CloudEvents type is
/// `<company>.<namespace>.<service>.<name>.v<version>`. `reply = R` lets a saga step or
/// compensation sending this command know its answer without naming it again. Derive
/// `apache_avro::AvroSchema` too for the Avro codec.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(item: TokenStream) -> TokenStream {
    event::expand(item.into()).into()
}

/// Declares what one listener takes when it takes several event types of one topic: an enum
/// with one variant per event type, each holding the event.
///
/// ```
/// # use atoll::{event_service, handlers, Event, Events, HandlerResult};
/// # use serde::{Deserialize, Serialize};
/// # #[event_service(company = "acme", namespace = "shop", name = "orders")]
/// # pub struct Orders;
/// # #[event_service(company = "acme", namespace = "shop", name = "storefront")]
/// # pub struct Storefront;
/// # #[derive(Debug, Serialize, Deserialize, Event)]
/// # #[event(fact, name = "order_placed", version = 1, service = Orders)]
/// # pub struct OrderPlaced { pub order_id: String }
/// # #[derive(Debug, Serialize, Deserialize, Event)]
/// # #[event(fact, name = "order_completed", version = 1, service = Orders)]
/// # pub struct OrderCompleted { pub order_id: String }
/// #[derive(Debug, Events)]
/// pub enum OrderFacts {
///     Placed(OrderPlaced),
///     Completed(OrderCompleted),
/// }
///
/// #[handlers]
/// impl Storefront {
///     // One listener, one consumer group, for both facts.
///     #[listener(name = "orders")]
///     async fn order(&self, fact: OrderFacts) -> HandlerResult {
///         match fact {
///             OrderFacts::Placed(p) => println!("placed {}", p.order_id),
///             OrderFacts::Completed(c) => println!("completed {}", c.order_id),
///         }
///         Ok(())
///     }
/// }
/// ```
///
/// Each record is decoded as the variant its `ce_type` names; types the enum does not name are
/// skipped. The types must travel on one topic as one kind (facts of one service, say, or
/// replies); a service's listener may take only what it may listen to, so an enum naming
/// another service's command does not compile as its input.
#[proc_macro_derive(Events)]
pub fn derive_events(item: TokenStream) -> TokenStream {
    events::expand(item.into()).into()
}
