//! What a listener takes: one event type, or an enum of several event types of one topic
//! (`#[derive(Events)]`), each record decoded as the variant its `ce_type` names.

use futures::future::BoxFuture;

use super::context::Context;
use crate::codec::DecodeError;
use crate::contract::event::{Event, EventKind, ListenableBy};
use crate::contract::service::Service;
use crate::contract::topic::TopicName;

/// One event type a listener takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputType {
    /// Its `ce_type`.
    pub ce_type: &'static str,
    /// Fact, command, reply or result.
    pub kind: EventKind,
    /// The topic it travels on (a reply: its owner's reply topic; the listener reads its own).
    pub topic: TopicName,
    /// The partitions its owner declares.
    pub partitions: i32,
}

impl InputType {
    /// Event type `E`.
    pub fn of<E: Event>() -> Self {
        Self {
            ce_type: E::ce_type(),
            kind: E::KIND,
            topic: E::topic(),
            partitions: <E::Service as Service>::PARTITIONS,
        }
    }
}

/// What a listener of service `S` takes: an event `S` may listen to, or an enum of several
/// of one topic, declared with `#[derive(Events)]`:
///
/// ```ignore
/// #[derive(Events)]
/// enum OrderFacts {
///     Placed(OrderPlaced),
///     Completed(OrderCompleted),
///     Cancelled(OrderCancelled),
/// }
///
/// #[listener(name = "orders")]
/// async fn order(&self, fact: OrderFacts) -> HandlerResult {
///     todo!()
/// }
/// ```
///
/// One listener, one consumer group: each record is decoded as the variant its `ce_type`
/// names; records of other types on the topic are skipped, as for a listener of one type.
#[diagnostic::on_unimplemented(
    message = "service `{S}` cannot listen to `{Self}`",
    note = "a listener takes an event `{S}` may listen to (any fact, reply or result, or a command of `{S}`'s own), or an enum of several declared with `#[derive(Events)]`, each of its variants one that `{S}` may listen to: a service is the sole subscriber of its own commands"
)]
pub trait Input<S: Service>: Sized + Send + 'static {
    /// Whether it is a whole batch of records (a set-based handler's [`Batch`](super::batch::Batch)).
    #[doc(hidden)]
    const SET: bool = false;

    /// The event types it takes, in declaration order: the first, then the others (an enum
    /// without variants does not derive).
    fn types() -> (InputType, Vec<InputType>);

    /// Decodes the handled record's payload as the type its `ce_type` names.
    fn decode<'a>(
        ctx: &'a Context<S>,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Self, DecodeError>>;
}

impl<S: Service, E: ListenableBy<S>> Input<S> for E {
    fn types() -> (InputType, Vec<InputType>) {
        (InputType::of::<E>(), Vec::new())
    }

    fn decode<'a>(
        ctx: &'a Context<S>,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Self, DecodeError>> {
        Box::pin(async move {
            let content_type = ctx.meta().content_type.as_deref();
            ctx.codec().decode(content_type, payload).await
        })
    }
}

/// Decodes the payload as `E` and wraps it as the variant `wrap` makes (what
/// `#[derive(Events)]` generates for each variant).
#[doc(hidden)]
pub async fn decode_as<S: Service, E: Event, T>(
    ctx: &Context<S>,
    payload: &[u8],
    wrap: fn(E) -> T,
) -> Result<T, DecodeError> {
    let content_type = ctx.meta().content_type.as_deref();
    ctx.codec().decode(content_type, payload).await.map(wrap)
}

/// The error of a record whose type no variant of `set` names (the routing hands a listener
/// only its types, so this is a record whose `ce_type` changed on the way).
#[doc(hidden)]
pub fn none_of(ce_type: &str, set: &str) -> DecodeError {
    DecodeError::Bad(format!("`{ce_type}` is none of the types of `{set}`"))
}

/// `Err` saying why `others` cannot be one listener's with `first`: they must travel on one
/// topic, as one kind (replies from several services all come to the listener's own reply
/// topic).
pub(crate) fn one_topic(first: &InputType, others: &[InputType]) -> Result<(), String> {
    for t in others {
        if t.kind != first.kind {
            return Err(format!(
                "`{}` is a {:?} and `{}` a {:?}: one listener takes events of one kind",
                first.ce_type, first.kind, t.ce_type, t.kind
            ));
        }
        if t.kind != EventKind::Reply && t.topic != first.topic {
            return Err(format!(
                "`{}` travels on `{}` and `{}` on `{}`: one listener reads one topic",
                first.ce_type, first.topic, t.ce_type, t.topic
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ce_type: &'static str, kind: EventKind, topic: &str) -> InputType {
        InputType {
            ce_type,
            kind,
            topic: topic.parse().unwrap(),
            partitions: 6,
        }
    }

    #[test]
    fn one_listener_takes_one_topic_and_one_kind() {
        let facts = "acme.shop.orders.events";
        let placed = t("acme.shop.orders.order_placed.v1", EventKind::Fact, facts);
        let completed = t(
            "acme.shop.orders.order_completed.v1",
            EventKind::Fact,
            facts,
        );
        let charged = t(
            "acme.shop.payments.charged.v1",
            EventKind::Fact,
            "acme.shop.payments.events",
        );
        let place = t(
            "acme.shop.orders.place_order.v1",
            EventKind::Command,
            "acme.shop.orders.commands",
        );
        let reply = |c, topic| t(c, EventKind::Reply, topic);
        let charge_result = reply(
            "acme.shop.payments.charge_result.v1",
            "acme.shop.payments.private.reply",
        );
        let reserve_result = reply(
            "acme.shop.inventory.reserve_result.v1",
            "acme.shop.inventory.private.reply",
        );
        let cases: Vec<(InputType, Vec<InputType>, Option<&str>)> = vec![
            (placed.clone(), vec![], None),
            (placed.clone(), vec![completed], None),
            (
                placed.clone(),
                vec![charged],
                Some("one listener reads one topic"),
            ),
            (placed, vec![place], Some("one kind")),
            (charge_result, vec![reserve_result], None),
        ];
        for (first, others, want) in cases {
            let types = (&first, &others);
            let got = one_topic(&first, &others);
            match want {
                None => assert!(got.is_ok(), "{types:?}: {got:?}"),
                Some(why) => {
                    let e = got.unwrap_err();
                    assert!(e.contains(why), "{types:?}: {e}");
                }
            }
        }
    }
}
