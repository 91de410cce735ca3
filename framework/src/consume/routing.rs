//! Which listener handles, skips or dead-letters a record (see `docs/architecture.md#failure-handling-and-dead-letters`: bad input is
//! dead-lettered, never dropped; facts topics stay open to new facts of their owner).

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::contract::retry_topic::RetryState;
use crate::contract::topic::TopicName;

/// A topic of the service that only it reads and whose every type it must know: its
/// `commands` and its `private.reply`.
#[derive(Debug)]
pub(crate) struct Inbox {
    /// The `ce_type`s some listener of the service handles on it.
    pub(crate) types: HashSet<&'static str>,
    /// The listener that dead-letters bad input on it (the first declared one), so that a bad
    /// record is dead-lettered once, not once per listener.
    pub(crate) designated: &'static str,
}

/// What a service's listeners know about each other.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// The service's inboxes, by topic.
    pub(crate) inboxes: HashMap<TopicName, Inbox>,
    /// The listener that reads the retry topics for everyone who does not: it dead-letters
    /// malformed records there, and records of listeners that no longer take their records
    /// from them. The first listener in `non_blocking` retry mode, or else the first listener.
    pub(crate) retry_designated: Option<&'static str>,
    /// The listeners that take their records from the retry topics (`non_blocking` retries).
    pub(crate) retry_readers: HashSet<&'static str>,
    /// The retry tiers read (delays, ms): those of the readers' ladders, and those found on
    /// the broker. Every reader reads each, and so does the designated listener.
    pub(crate) tiers: BTreeSet<u64>,
}

/// What to do with a record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Handle it.
    Handle,
    /// Handle it: it is on the retry topic, with this retry state.
    HandleRetry(RetryState),
    /// Leave it to another listener.
    Skip,
    /// Dead-letter it as bad input, saying why.
    Reject(String),
    /// A retry-topic record of a listener that no longer reads the retry topic.
    Orphan(RetryState),
}

/// Routes a record of type `ce_type` for listener `name` of types `mine` on `topic`.
///
/// On an inbox every type must be one the service handles; its designated listener rejects
/// anything else. On a facts topic, other facts of the topic's owner are skipped (the owner may
/// add facts without breaking its consumers), while a record without `ce_type` or with a type
/// the owner cannot have published is rejected.
pub(crate) fn route(
    inbox: Option<&Inbox>,
    topic: &TopicName,
    (name, mine): (&str, &[&str]),
    ce_type: Option<&str>,
) -> Route {
    let owner = topic.service_prefix();
    let of_owner = |t: &str| {
        t.strip_prefix(owner)
            .is_some_and(|rest| rest.starts_with('.'))
    };
    match (inbox, ce_type) {
        (_, Some(t)) if mine.contains(&t) => Route::Handle,
        (Some(inbox), Some(t)) if inbox.types.contains(t) => Route::Skip,
        (Some(inbox), _) if inbox.designated != name => Route::Skip,
        (_, None) => Route::Reject("record has no ce_type header".into()),
        (Some(_), Some(t)) => Route::Reject(format!(
            "`{t}` is not a type that `{owner}` handles on `{topic}`"
        )),
        (None, Some(t)) if of_owner(t) => Route::Skip,
        (None, Some(t)) => Route::Reject(format!(
            "`{t}` is not a type of `{owner}`, the sole publisher of `{topic}`"
        )),
    }
}

/// Routes a record on the retry topic for listener `name`. `state` is its retry state, which
/// names the listener it is for (`None`: missing or malformed headers); `valid` says whether
/// that name can be a listener's.
///
/// A listener that reads the retry topic handles its own records there and skips the others'.
/// The designated listener takes the records of listeners that no longer read it (to
/// dead-letter them in their name) and rejects those it cannot place; every other listener
/// skips them.
pub(crate) fn route_retry(
    routes: &Routes,
    name: &str,
    state: Option<RetryState>,
    valid: impl FnOnce(&str) -> Result<(), String>,
) -> Route {
    let designated = routes.retry_designated == Some(name);
    match state {
        Some(st) if routes.retry_readers.contains(st.listener.as_str()) => {
            if st.listener == name {
                Route::HandleRetry(st)
            } else {
                Route::Skip
            }
        }
        Some(st) if designated => match valid(&st.listener) {
            Ok(()) => Route::Orphan(st),
            Err(e) => Route::Reject(format!(
                "record on the retry topic names listener `{}`, which cannot be: {e}",
                st.listener
            )),
        },
        None if designated => {
            Route::Reject("record on the retry topic has no valid atoll_retry_* headers".into())
        }
        Some(_) | None => Route::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_topic() {
        let routes = Routes {
            retry_designated: Some("charge"),
            retry_readers: ["charge", "ship"].into_iter().collect(),
            ..Routes::default()
        };
        let st = |listener: &str| RetryState {
            listener: listener.to_owned(),
            attempts: 3,
            delivery: 1,
            not_before: std::time::SystemTime::UNIX_EPOCH,
            origin: crate::contract::retry_topic::Origin {
                topic: "acme.shop.orders.commands".into(),
                partition: 0,
                offset: 7,
            },
        };
        let ok = |_: &str| Ok(());
        let rejected = |r: Route, what: &str| matches!(r, Route::Reject(e) if e.contains(what));
        // (listener, the record is for) → route
        let cases = [
            ("charge", Some("charge"), Route::HandleRetry(st("charge"))),
            ("ship", Some("ship"), Route::HandleRetry(st("ship"))),
            ("ship", Some("charge"), Route::Skip),
            ("charge", Some("ship"), Route::Skip),
            // A listener no longer reading the retry topic: the designated one takes it.
            ("charge", Some("audit"), Route::Orphan(st("audit"))),
            ("ship", Some("audit"), Route::Skip),
            ("audit", Some("audit"), Route::Skip),
            ("ship", None, Route::Skip),
        ];
        for (name, to, want) in cases {
            let got = route_retry(&routes, name, to.map(st), ok);
            assert_eq!(got, want, "{name} for {to:?}");
        }
        let bad = |_: &str| Err("bad name".to_owned());
        assert!(rejected(
            route_retry(&routes, "charge", Some(st("Not Valid")), bad),
            "names listener `Not Valid`, which cannot be: bad name"
        ));
        assert!(rejected(
            route_retry(&routes, "charge", None, ok),
            "no valid atoll_retry_* headers"
        ));
    }

    fn inbox() -> Inbox {
        Inbox {
            types: [
                "acme.shop.orders.place_order.v1",
                "acme.shop.orders.cancel_order.v1",
            ]
            .into_iter()
            .collect(),
            designated: "place-order",
        }
    }

    #[test]
    fn inbox_topic() {
        let topic: TopicName = "acme.shop.orders.commands".parse().unwrap();
        let mine = "acme.shop.orders.place_order.v1";
        let inbox = inbox();
        let go = |name, t| route(Some(&inbox), &topic, (name, &[mine]), t);
        assert_eq!(go("place-order", Some(mine)), Route::Handle);
        assert_eq!(
            go("place-order", Some("acme.shop.orders.cancel_order.v1")),
            Route::Skip
        );
        assert!(matches!(go("place-order", None), Route::Reject(e) if e.contains("no ce_type")));
        assert!(matches!(
            go("place-order", Some("acme.shop.orders.refund.v1")),
            Route::Reject(e) if e.contains("not a type that `acme.shop.orders` handles")
        ));
        assert!(matches!(
            go("place-order", Some("garbage")),
            Route::Reject(_)
        ));
        // Only the designated listener dead-letters bad input.
        assert_eq!(go("audit", None), Route::Skip);
        assert_eq!(go("audit", Some("garbage")), Route::Skip);
        assert_eq!(go("audit", Some(mine)), Route::Handle);
        // A reply topic is an inbox too: replies come from other services.
        let replies: TopicName = "acme.shop.orders.private.reply".parse().unwrap();
        let reply = "acme.shop.payments.charge_result.v1";
        let inbox = Inbox {
            types: [reply].into_iter().collect(),
            designated: "charged",
        };
        assert_eq!(
            route(Some(&inbox), &replies, ("charged", &[reply]), Some(reply)),
            Route::Handle
        );
        assert!(matches!(
            route(
                Some(&inbox),
                &replies,
                ("charged", &[reply]),
                Some("acme.shop.x.y.v1")
            ),
            Route::Reject(_)
        ));
    }

    #[test]
    fn facts_topic_of_another_service() {
        let topic: TopicName = "acme.shop.orders.events".parse().unwrap();
        let mine = "acme.shop.orders.order_placed.v1";
        let go = |t| route(None, &topic, ("reserve", &[mine]), t);
        assert_eq!(go(Some(mine)), Route::Handle);
        assert_eq!(go(Some("acme.shop.orders.order_completed.v1")), Route::Skip);
        assert_eq!(go(Some("acme.shop.orders.order_placed.v2")), Route::Skip);
        assert!(matches!(go(None), Route::Reject(_)));
        assert!(matches!(
            go(Some("acme.shop.payments.payment_charged.v1")),
            Route::Reject(e) if e.contains("sole publisher")
        ));
        assert!(matches!(
            go(Some("acme.shop.ordersx.order_placed.v1")),
            Route::Reject(_)
        ));
    }
}
