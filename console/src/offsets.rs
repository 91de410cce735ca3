//! The consumer groups page: a service's groups as the cluster has them (members, and the
//! committed offsets on the topics each is known to read), and the form that moves a stopped
//! group's offsets to a time (see [`crate::groups`]), for whoever gives the console's token.

use maud::{html, Markup};
use serde::Deserialize;

use atoll::TopicName;

use crate::groups::{Move, Target};

/// One group of the service, as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupView {
    pub(crate) name: String,
    pub(crate) members: usize,
    /// Each known topic with its committed offsets.
    pub(crate) topics: Vec<(String, Vec<Committed>)>,
}

/// A partition and the offset committed on it (`None`: none).
pub(crate) type Committed = (i32, Option<i64>);

/// The link to a service's groups.
pub(crate) fn groups_href(base: &str, service: &str) -> String {
    format!("{base}/groups?service={}", crate::pages::query(service))
}

/// A service's groups, each with a reset form when the console acts (`csrf`).
pub(crate) fn page(base: &str, service: &str, groups: &[GroupView], csrf: Option<&str>) -> Markup {
    html! {
        h1 { "Consumer groups · " (service) }
        p { "A group's offsets can be moved only while none of its consumers runs: stop the "
            "service's processes first." }
        @if groups.is_empty() { p.empty { "The cluster holds no group of this service." } }
        @for g in groups {
            section.group data-group=(g.name) data-members=(g.members) {
                h2 { (g.name) }
                p { @if g.members > 0 { (g.members) " member(s): running" } @else { "no member: stopped" } }
                @for (topic, offsets) in &g.topics {
                    table.offsets data-topic=(topic) {
                        thead { tr { th { "topic" } th { "partition" } th { "committed" } } }
                        tbody { @for (p, o) in offsets {
                            tr data-partition=(p) { td { (topic) } td { (p) }
                                td data-committed=[o] { (o.map_or("–".to_owned(), |o| o.to_string())) } }
                        } }
                    }
                }
                @if let Some(csrf) = csrf {
                    (reset_form(base, service, g, csrf))
                }
            }
        }
    }
}

fn reset_form(base: &str, service: &str, g: &GroupView, csrf: &str) -> Markup {
    let topic = g.topics.first().map(|t| t.0.as_str()).unwrap_or("");
    html! {
        details.reset { summary { "move offsets to a time…" }
            form.reset method="post" action=(format!("{base}/groups/reset")) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="service" value=(service);
                input type="hidden" name="group" value=(g.name);
                label { "topic " input type="text" name="topic" value=(topic) required; }
                label { "time (UTC) " input type="datetime-local" name="time" step="1" required; }
                label { input type="checkbox" name="dry_run" value="on" checked; " dry run" }
                input type="password" name="token" placeholder="token" autocomplete="off" required;
                button { "Move offsets" }
            }
        }
    }
}

/// The reset form's fields. (No `Debug`: it holds the token.)
#[derive(Deserialize)]
pub(crate) struct ResetForm {
    #[serde(default)]
    pub(crate) service: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    time: String,
    dry_run: Option<String>,
    #[serde(default)]
    pub(crate) token: String,
    #[serde(default)]
    pub(crate) csrf: String,
}

/// What a valid reset form asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reset {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) target: Target,
    pub(crate) dry_run: bool,
}

impl ResetForm {
    /// The reset it asks for, or why it is none: only a group of the service (named
    /// `<service>-…`), a topic name, and a time.
    pub(crate) fn reset(&self) -> Result<Reset, String> {
        if self.service.is_empty() || !self.group.starts_with(&format!("{}-", self.service)) {
            return Err(format!(
                "`{}` is no consumer group of service `{}`",
                self.group, self.service
            ));
        }
        let topic: TopicName = self
            .topic
            .trim()
            .parse()
            .map_err(|e| format!("`{}` is no topic: {e}", self.topic))?;
        let ms = crate::dead_letters::unix_ms(self.time.trim())?;
        Ok(Reset {
            group: self.group.clone(),
            topic: topic.to_string(),
            target: Target::Time(ms),
            dry_run: self.dry_run.is_some(),
        })
    }
}

/// What a reset moved (or, in a dry run, would move).
pub(crate) fn moved(base: &str, service: &str, reset: &Reset, moves: &[Move]) -> Markup {
    html! {
        h1 { @if reset.dry_run { "Would move · " } @else { "Moved · " } (reset.group) }
        p { "On " code { (reset.topic) } ", to each partition's first record at or after the time "
            "(its end where none is)." }
        table.moves data-dry-run=(reset.dry_run) {
            thead { tr { th { "partition" } th { "from" } th { "to" } } }
            tbody { @for m in moves {
                tr data-move=(m.partition) data-from=[m.from] data-to=(m.to) {
                    td { (m.partition) } td { (m.from.map_or("–".to_owned(), |o| o.to_string())) } td { (m.to) } }
            } }
        }
        p { a href=(groups_href(base, service)) { "Back to the groups" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(service: &str, group: &str, topic: &str, time: &str) -> ResetForm {
        ResetForm {
            service: service.into(),
            group: group.into(),
            topic: topic.into(),
            time: time.into(),
            dry_run: Some("on".into()),
            token: String::new(),
            csrf: String::new(),
        }
    }

    #[test]
    fn a_reset_names_a_group_of_the_service_a_topic_and_a_time() {
        let s = "acme.shop.orders";
        let ok = form(
            s,
            "acme.shop.orders-place",
            "acme.shop.orders.commands",
            "2026-12-07T08:00",
        )
        .reset()
        .unwrap();
        assert_eq!(ok.target, Target::Time(1_796_630_400_000));
        assert!(ok.dry_run);
        let cases = [
            (
                form(
                    s,
                    "acme.shop.payments-charge",
                    "acme.shop.orders.commands",
                    "2026-12-07T08:00",
                ),
                "no consumer group of service",
            ),
            (
                form("", "-x", "acme.shop.orders.commands", "2026-12-07T08:00"),
                "no consumer group",
            ),
            (
                form(s, "acme.shop.orders-place", "orders", "2026-12-07T08:00"),
                "is no topic",
            ),
            (
                form(
                    s,
                    "acme.shop.orders-place",
                    "acme.shop.orders.commands",
                    "today",
                ),
                "no time",
            ),
        ];
        for (f, why) in cases {
            let err = f.reset().unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
