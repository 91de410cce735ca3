//! The topology page: the picture `atoll graph` draws from the manifests (services, the topics
//! between them, who sends and who reads), drawn here from what the running processes report,
//! with live rates on its edges: records per second each service sends to a topic (its
//! producer's statistics) and handles from it (its listeners').
//!
//! Three columns, read left to right: the services as senders, the topics, the services as
//! readers (a service that does both is on both sides), so that every flow goes one way and no
//! layout engine is needed. [`build`] is the pure core; [`svg`] draws it.

use std::collections::{BTreeMap, BTreeSet};

use maud::{html, Markup};

use crate::fleet::ServiceView;

/// Topics atoll keeps for itself, left out of the picture: they carry no flow between
/// services.
const HIDDEN: [&str; 4] = [
    ".private.status",
    ".private.control",
    ".private.saga",
    ".private.replayed",
];

/// What the picture shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Topology {
    /// Services that send to a shown topic, by name.
    pub(crate) senders: Vec<String>,
    /// The topics, by name.
    pub(crate) topics: Vec<String>,
    /// Services that read a shown topic, by name.
    pub(crate) readers: Vec<String>,
    /// (service, topic, records per second sent).
    pub(crate) sends: Vec<(String, String, f64)>,
    /// (topic, service, its listeners reading it, records per second handled).
    pub(crate) reads: Vec<(String, String, Vec<String>, f64)>,
}

/// The topology of `services`; `topics_of` gives the topics a listener's group reads.
pub(crate) fn build(services: &[ServiceView], topics_of: impl Fn(&str) -> Vec<String>) -> Topology {
    let shown =
        |t: &str| !HIDDEN.iter().any(|h| t.ends_with(h)) && !atoll::contract::is_retry_topic(t);
    let mut sends = Vec::new();
    let mut reads: BTreeMap<(String, String), (Vec<String>, f64)> = BTreeMap::new();
    for s in services {
        for (topic, rate) in s.produced.iter().filter(|(t, _)| shown(t)) {
            sends.push((s.name.clone(), topic.clone(), *rate));
        }
        for l in &s.listeners {
            for topic in topics_of(&l.group).into_iter().filter(|t| shown(t)) {
                let edge = reads.entry((topic, s.name.clone())).or_default();
                edge.0.push(l.name.clone());
                edge.1 += l.rate;
            }
        }
    }
    let reads: Vec<(String, String, Vec<String>, f64)> = reads
        .into_iter()
        .map(|((t, s), (listeners, rate))| (t, s, listeners, rate))
        .collect();
    let senders: BTreeSet<String> = sends.iter().map(|e| e.0.clone()).collect();
    let readers: BTreeSet<String> = reads.iter().map(|e| e.1.clone()).collect();
    let topics: BTreeSet<String> = sends
        .iter()
        .map(|e| e.1.clone())
        .chain(reads.iter().map(|e| e.0.clone()))
        .collect();
    Topology {
        senders: senders.into_iter().collect(),
        topics: topics.into_iter().collect(),
        readers: readers.into_iter().collect(),
        sends,
        reads,
    }
}

const ROW: f64 = 44.0;
const BOX_H: f64 = 30.0;
const BOX_W: f64 = 300.0;
const GAP: f64 = 170.0;
const TOP: f64 = 40.0;

/// The x of column `c` (0 senders, 1 topics, 2 readers).
fn x(c: usize) -> f64 {
    10.0 + c as f64 * (BOX_W + GAP)
}

/// The middle y of row `i`.
fn y(i: usize) -> f64 {
    TOP + i as f64 * ROW + BOX_H / 2.0
}

/// A rate as the edges say it.
fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}/s")
    } else {
        format!("{r:.1}/s")
    }
}

/// The picture, as inline SVG; every box and edge also carries `data-*` attributes with its
/// names and rate.
pub(crate) fn svg(t: &Topology) -> Markup {
    let rows = t
        .senders
        .len()
        .max(t.topics.len())
        .max(t.readers.len())
        .max(1);
    let height = TOP + rows as f64 * ROW + 10.0;
    let width = x(2) + BOX_W + 10.0;
    let at = |names: &[String], n: &str| names.iter().position(|s| s == n).unwrap_or(0);
    // The curve from one box to the next column's, and the middle of it (where its rate is).
    let edge = |from: (usize, usize), to: (usize, usize)| {
        let (x1, y1) = (x(from.0) + BOX_W, y(from.1));
        let (x2, y2) = (x(to.0), y(to.1));
        let mid = (x1 + x2) / 2.0;
        let path = format!("M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}");
        (path, (mid, (y1 + y2) / 2.0 - 4.0))
    };
    // An idle edge shows no figure (its title still says it).
    let busy = |r: f64| r >= 0.05;
    // Thicker for busier edges: 1 px idle, 2 at 10/s, 3 at 100/s, …
    let stroke = |r: f64| 1.0 + (1.0 + r).log10();
    html! {
        svg.topology xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="topology" {
            text.column x=(x(0)) y="20" { "sends" }
            text.column x=(x(1)) y="20" { "topics" }
            text.column x=(x(2)) y="20" { "reads" }
            @for (s, topic, r) in &t.sends {
                @let (path, (lx, ly)) = edge((0, at(&t.senders, s)), (1, at(&t.topics, topic)));
                g.edge data-from=(s) data-to=(topic) data-rate=(r) {
                    title { (s) " → " (topic) ": " (rate(*r)) }
                    path d=(path) stroke-width=(stroke(*r)) {}
                    @if busy(*r) { text x=(lx) y=(ly) text-anchor="middle" { (rate(*r)) } }
                }
            }
            @for (topic, s, listeners, r) in &t.reads {
                @let (path, (lx, ly)) = edge((1, at(&t.topics, topic)), (2, at(&t.readers, s)));
                g.edge data-from=(topic) data-to=(s) data-rate=(r) data-listeners=(listeners.join(" ")) {
                    title { (topic) " → " (s) " (" (listeners.join(", ")) "): " (rate(*r)) }
                    path d=(path) stroke-width=(stroke(*r)) {}
                    @if busy(*r) { text x=(lx) y=(ly) text-anchor="middle" { (rate(*r)) } }
                }
            }
            @for (c, names, class) in [(0, &t.senders, "service"), (1, &t.topics, "topic"), (2, &t.readers, "service")] {
                @for (i, n) in names.iter().enumerate() {
                    g class=(class) data-node=(n) data-column=(c) {
                        rect x=(x(c)) y=(y(i) - BOX_H / 2.0) width=(BOX_W) height=(BOX_H) rx=(if c == 1 { 15 } else { 4 }) {}
                        text x=(x(c) + 10.0) y=(y(i) + 5.0) { (n) }
                    }
                }
            }
        }
    }
}

/// The page: the picture, and what it leaves out.
pub(crate) fn page(t: &Topology) -> Markup {
    html! {
        h1 { "Topology" }
        p { "Who sends to which topic and who reads it, with records per second (sent: over "
            "the last 15 s or more; handled: over the last two status records). Drawn from "
            "what runs: a service whose "
            "processes all stopped sends and reads nothing here (" code { "atoll graph" }
            " draws the whole design from the manifests)." }
        @if t.topics.is_empty() { p.empty { "No running process reports a flow yet." } }
        @else { div.topology { (svg(t)) } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Fleet, ListenerView};

    fn service(name: &str, produced: &[(&str, f64)], listeners: &[(&str, f64)]) -> ServiceView {
        let mut s = Fleet::default();
        s.know(name);
        let mut view = s.services(0).remove(0);
        view.produced = produced
            .iter()
            .map(|(t, r)| ((*t).to_owned(), *r))
            .collect();
        view.listeners = listeners
            .iter()
            .map(|(l, r)| ListenerView {
                group: format!("{name}-{l}"),
                rate: *r,
                ..ListenerView::empty(l)
            })
            .collect();
        view
    }

    #[test]
    fn flows_go_from_senders_through_topics_to_readers_with_their_rates() {
        let services = [
            service(
                "acme.shop.orders",
                &[
                    ("acme.shop.inventory.commands", 4.0),
                    ("acme.shop.orders.events", 2.0),
                    ("acme.shop.orders.private.status", 0.2),
                ],
                &[("place", 3.0), ("order-saga", 1.0)],
            ),
            service(
                "acme.shop.inventory",
                &[],
                &[("reserve-stock", 4.0), ("release-stock", 0.5)],
            ),
        ];
        let topics_of = |group: &str| -> Vec<String> {
            match group {
                "acme.shop.orders-place" => vec!["acme.shop.orders.commands".into()],
                "acme.shop.orders-order-saga" => vec!["acme.shop.orders.private.reply".into()],
                "acme.shop.inventory-reserve-stock" | "acme.shop.inventory-release-stock" => {
                    vec![
                        "acme.shop.inventory.commands".into(),
                        "acme.shop.inventory.private.retry".into(),
                        "acme.shop.inventory.private.retry-1000".into(),
                    ]
                }
                _ => Vec::new(),
            }
        };
        let t = build(&services, topics_of);
        assert_eq!(t.senders, ["acme.shop.orders"]);
        assert_eq!(t.readers, ["acme.shop.inventory", "acme.shop.orders"]);
        assert_eq!(
            t.topics,
            [
                "acme.shop.inventory.commands",
                "acme.shop.orders.commands",
                "acme.shop.orders.events",
                "acme.shop.orders.private.reply"
            ],
            "atoll's own topics are left out"
        );
        let inventory = t
            .reads
            .iter()
            .find(|r| r.1 == "acme.shop.inventory")
            .unwrap();
        assert_eq!(inventory.2, ["reserve-stock", "release-stock"]);
        assert_eq!(inventory.3, 4.5, "one edge, the listeners' rates summed");
        let svg = svg(&t).into_string();
        assert!(svg.contains(r#"data-from="acme.shop.orders" data-to="acme.shop.inventory.commands" data-rate="4""#), "{svg}");
        assert_eq!(svg.matches("class=\"edge\"").count(), 2 + 3, "{svg}");
    }
}
