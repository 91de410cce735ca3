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
    /// No type: where a listener that takes none (refused at start) is looked for.
    pub(crate) fn none() -> Self {
        Self {
            ce_type: "",
            kind: EventKind::Fact,
            topic: "atoll.none.none.events"
                .parse()
                .expect("a valid topic name"),
            partitions: 1,
        }
    }

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
    /// The event types it takes, in declaration order.
    fn types() -> Vec<InputType>;

    /// Decodes the handled record's payload as the type its `ce_type` names.
    fn decode<'a>(
        ctx: &'a Context<S>,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<Self, DecodeError>>;
}

impl<S: Service, E: ListenableBy<S>> Input<S> for E {
    fn types() -> Vec<InputType> {
        vec![InputType::of::<E>()]
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

/// `Err` saying why `types` cannot be one listener's: they must travel on one topic, as one
/// kind (replies from several services all come to the listener's own reply topic).
pub(crate) fn one_topic(types: &[InputType]) -> Result<(), String> {
    let Some(first) = types.first() else {
        return Err("it takes no event type".into());
    };
    for t in &types[1..] {
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
        let cases: Vec<(Vec<InputType>, Option<&str>)> = vec![
            (vec![placed.clone()], None),
            (vec![placed.clone(), completed.clone()], None),
            (
                vec![placed.clone(), charged],
                Some("one listener reads one topic"),
            ),
            (vec![placed.clone(), place], Some("one kind")),
            (
                vec![
                    reply(
                        "acme.shop.payments.charge_result.v1",
                        "acme.shop.payments.private.reply",
                    ),
                    reply(
                        "acme.shop.inventory.reserve_result.v1",
                        "acme.shop.inventory.private.reply",
                    ),
                ],
                None,
            ),
            (vec![], Some("no event type")),
        ];
        for (types, want) in cases {
            let got = one_topic(&types);
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
