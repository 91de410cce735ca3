//! Events: the facts a service publishes, the commands it accepts and the replies it sends
//! (see `docs/architecture.md#events-and-the-envelope`).
//!
//! Implement these with `#[derive(Event)]`; the traits say who owns an event and so where it
//! travels and who may produce or consume it.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::service::Service;
use super::topic::TopicName;

/// What an event is: a fact, a command, a reply or a pipeline result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Something that happened, named in the past tense (`order_placed`); published by its
    /// owner on the owner's `events` topic.
    Fact,
    /// A request addressed to its owner (`place_order`); sent to the owner's `commands` topic.
    Command,
    /// The result of a command (`charge_result`), defined by the command's owner and sent to
    /// the requester's `private.reply` topic.
    Reply,
    /// A pipeline's output (`daily_sales`): published by its owner alone on the owner's
    /// `results` topic (the service declares `#[event_service(…, results = true)]`); anyone may
    /// consume it, like a fact. Emitted with `ctx.emit`.
    Result,
}

/// An event type: its name, version, kind and owning service.
///
/// Derive it:
///
/// ```
/// # use atoll::{event_service, Event};
/// # use serde::{Deserialize, Serialize};
/// #[event_service(company = "acme", namespace = "shop", name = "orders")]
/// pub struct Orders;
///
/// #[derive(Debug, Serialize, Deserialize, Event)]
/// #[event(fact, name = "order_placed", version = 1, service = Orders)]
/// pub struct OrderPlaced {
///     #[event(key)]
///     pub order_id: String,
/// }
///
/// use atoll::Event as _;
/// assert_eq!(OrderPlaced::ce_type(), "acme.shop.orders.order_placed.v1");
/// assert_eq!(OrderPlaced::topic().as_str(), "acme.shop.orders.events");
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The service that owns the event.
    type Service: Service;
    /// The event's name, `snake_case`.
    const NAME: &'static str;
    /// The event's contract version, from 1.
    const VERSION: u32;
    /// Fact, command or reply.
    const KIND: EventKind;

    /// The record key: the aggregate id, when the type names a key field.
    fn key(&self) -> Option<String> {
        None
    }

    /// The CloudEvents type, `<company>.<namespace>.<service>.<name>.v<version>`.
    fn ce_type() -> &'static str;

    /// The event's Avro schema, when the type derives `AvroSchema` (the derive fills this in).
    fn avro_schema() -> Option<apache_avro::Schema> {
        None
    }

    /// The topic the event travels on: the owner's `events`, `commands` or `results`. A reply
    /// travels on whichever reply topic the command named; this is the owner's own.
    fn topic() -> TopicName {
        let id = <Self::Service as Service>::ID;
        match Self::KIND {
            EventKind::Fact => id.events(),
            EventKind::Command => id.commands(),
            EventKind::Reply => id.reply(),
            EventKind::Result => id.results(),
        }
    }
}

/// Implemented by the facts and results of service `S`: the only events `S` may emit.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a fact of service `{S}`, so `{S}` cannot emit it",
    label = "not a fact owned by `{S}`",
    note = "a service is the sole publisher of its own facts: emit a fact declared with `#[event(fact, service = {S}, …)]`, or `send` a command to the service that owns `{Self}`"
)]
pub trait FactOf<S: Service>: Event {}

/// Implemented by every command: any service may send a command to its owner.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command",
    label = "not a command",
    note = "only commands can be sent; declare it with `#[event(command, …)]`, or `emit` it if it is a fact of this service"
)]
pub trait Command: Event {}

/// A command that is answered with a reply: declared on the command,
/// `#[event(command, …, reply = StockReserved)]`, so whoever sends it (a saga step, a
/// compensation) knows what answers it without naming it again.
#[diagnostic::on_unimplemented(
    message = "`{Self}` declares no reply type",
    label = "a command without `reply = …`",
    note = "declare the reply on the command: `#[event(command, …, reply = MyReply)]`"
)]
pub trait Request: Command {
    /// The reply that answers the command.
    type Reply: Reply;
}

/// Implemented by the events service `S` may listen to: every fact, and its own commands.
#[diagnostic::on_unimplemented(
    message = "service `{S}` cannot listen to `{Self}`",
    label = "a command of another service",
    note = "a service is the sole subscriber of its own commands: listen to the owner's facts instead, or move this handler to the service that owns `{Self}`"
)]
pub trait ListenableBy<S: Service>: Event {}

/// Implemented by replies: a command handler that returns one sends it to the command's
/// `ce_replyto`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a reply",
    note = "a command handler returns `HandlerResult` (no reply) or `HandlerResult<R>` where `R` is declared with `#[event(reply, …)]`"
)]
pub trait Reply: Event {}
