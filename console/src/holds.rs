//! Holding a listener's partition from its page, and lifting the hold: the form, what it asks
//! for, and the page that answers it. A hold is a record on the service's `private.control`
//! topic (see `atoll::contract::control`), which every process of the service obeys; the
//! console writes it, for whoever gives its token.

use maud::{html, Markup};
use serde::Deserialize;

use atoll::contract::control::{Hold, HoldKey};
use atoll::contract::status::PartitionStatus;
use atoll::{PrivateTopic, TopicName};

/// The longest reason kept (longer ones are refused, not cut: the operator sees why).
const REASON_MAX: usize = 500;

/// The longest name of who asks.
const BY_MAX: usize = 100;

/// The hold form's fields. (No `Debug`: it holds the token.)
#[derive(Deserialize)]
pub(crate) struct HoldForm {
    #[serde(default)]
    pub(crate) service: String,
    #[serde(default)]
    listener: String,
    #[serde(default)]
    partition: String,
    /// `hold` or `lift`.
    #[serde(default)]
    action: String,
    /// Who asks (the operator's name, as typed).
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    pub(crate) token: String,
    #[serde(default)]
    pub(crate) csrf: String,
}

/// What a valid form asks for: a record for the control topic.
#[derive(Debug, PartialEq)]
pub(crate) struct Change {
    /// The service's control topic.
    pub(crate) topic: String,
    pub(crate) key: HoldKey,
    /// The hold; `None` lifts it.
    pub(crate) hold: Option<Hold>,
}

impl HoldForm {
    /// The change it asks for at `now_ms`, or why it is no request.
    pub(crate) fn change(&self, now_ms: i64) -> Result<Change, String> {
        let control = PrivateTopic::Control.name();
        let topic: TopicName = format!("{}.private.{control}", self.service)
            .parse()
            .map_err(|e| format!("`{}` is no service: {e}", self.service))?;
        if self.listener.is_empty() || self.listener.contains('/') {
            return Err(format!("`{}` is no listener's name", self.listener));
        }
        let partition = self
            .partition
            .parse::<i32>()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| format!("`{}` is no partition", self.partition))?;
        let hold = match self.action.as_str() {
            "hold" => {
                let (reason, by) = (self.reason.trim(), self.by.trim());
                if reason.chars().count() > REASON_MAX || by.chars().count() > BY_MAX {
                    return Err(format!(
                        "the reason is longer than {REASON_MAX} characters, or the name than {BY_MAX}"
                    ));
                }
                if reason.chars().chain(by.chars()).any(char::is_control) {
                    return Err("the name and the reason are one line of text".into());
                }
                let by = if by.is_empty() { "console" } else { by };
                Some(Hold::new(by, reason, now_ms))
            }
            "lift" => None,
            other => return Err(format!("`{other}` is no action: `hold` or `lift`")),
        };
        Ok(Change {
            topic: topic.to_string(),
            key: HoldKey::new(self.listener.clone(), partition),
            hold,
        })
    }
}

/// The form holding partition `p` of `listener`, or lifting its hold.
pub(crate) fn form(
    base: &str,
    service: &str,
    listener: &str,
    p: &PartitionStatus,
    csrf: &str,
) -> Markup {
    let action = if p.held.is_some() { "lift" } else { "hold" };
    let fields = html! {
        form.hold method="post" action=(format!("{base}/listener/hold")) data-hold-form=(p.partition) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="service" value=(service);
            input type="hidden" name="listener" value=(listener);
            input type="hidden" name="partition" value=(p.partition);
            input type="hidden" name="action" value=(action);
            @if action == "hold" {
                input type="text" name="by" placeholder="your name" maxlength=(BY_MAX);
                input type="text" name="reason" placeholder="why" maxlength=(REASON_MAX);
            }
            input type="password" name="token" placeholder="token" autocomplete="off" required;
            button name="do" value=(action) { @if action == "hold" { "Hold" } @else { "Lift hold" } }
        }
    };
    html! {
        // A hold is the exception: its form opens on demand; lifting one is a click away.
        @if action == "hold" { details.hold { summary { "hold…" } (fields) } } @else { (fields) }
    }
}

/// What the console wrote.
pub(crate) fn done(base: &str, service: &str, change: &Change) -> Markup {
    let back = crate::pages::listener_href(base, service, &change.key.listener);
    html! {
        @match &change.hold {
            Some(h) => {
                h1 { "Held · " (change.key) }
                p.outcome data-held=(change.key.partition) {
                    "Partition " (change.key.partition) " of " (change.key.listener) " is held by "
                    (h.by) ": every process of " (service) " stops fetching it within a moment. "
                    "The listener's page shows it held once their next status arrives." }
            }
            None => {
                h1 { "Hold lifted · " (change.key) }
                p.outcome data-lifted=(change.key.partition) {
                    "Partition " (change.key.partition) " of " (change.key.listener)
                    " is no longer held: its owner fetches it again from where it stopped." }
            }
        }
        p { a href=(back) { "Back to the listener" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(
        service: &str,
        listener: &str,
        partition: &str,
        action: &str,
        reason: &str,
    ) -> HoldForm {
        HoldForm {
            service: service.into(),
            listener: listener.into(),
            partition: partition.into(),
            action: action.into(),
            by: String::new(),
            reason: reason.into(),
            token: String::new(),
            csrf: String::new(),
        }
    }

    #[test]
    fn a_form_asks_for_a_hold_or_its_lifting_or_says_why_not() {
        let held = form("acme.shop.orders", "place", "3", "hold", " poison ")
            .change(7)
            .unwrap();
        assert_eq!(held.topic, "acme.shop.orders.private.control");
        assert_eq!(held.key, HoldKey::new("place", 3));
        let hold = held.hold.unwrap();
        assert_eq!(
            (hold.by.as_str(), hold.reason.as_str(), hold.at_ms),
            ("console", "poison", 7)
        );
        let lifted = form("acme.shop.orders", "place", "3", "lift", "")
            .change(7)
            .unwrap();
        assert_eq!(lifted.hold, None);

        let long = "x".repeat(REASON_MAX + 1);
        let cases = [
            (form("shop", "place", "3", "hold", ""), "is no service"),
            (form("acme.shop.orders", "", "3", "hold", ""), "no listener"),
            (
                form("acme.shop.orders", "a/b", "3", "hold", ""),
                "no listener",
            ),
            (
                form("acme.shop.orders", "place", "-1", "hold", ""),
                "no partition",
            ),
            (
                form("acme.shop.orders", "place", "x", "hold", ""),
                "no partition",
            ),
            (
                form("acme.shop.orders", "place", "3", "pause", ""),
                "no action",
            ),
            (
                form("acme.shop.orders", "place", "3", "hold", &long),
                "longer than",
            ),
            (
                form("acme.shop.orders", "place", "3", "hold", "a\u{1b}[2J"),
                "one line",
            ),
        ];
        for (f, why) in cases {
            let err = f.change(7).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
