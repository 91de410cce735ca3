//! A picture of the system from the manifests: services, the topics between them, and the
//! flows (facts, results, commands, replies), as Graphviz DOT or Mermaid (a pure core); SVG
//! by running Graphviz's `dot`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use atoll::contract::Manifest;

/// What travels along an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Flow {
    /// Facts, from their publisher to their topic and on to listeners.
    Fact,
    /// Results, likewise.
    Result,
    /// Commands, from a sender to the owner's topic and on to the owner.
    Command,
    /// Replies, from a command's owner to the requester's reply topic and on to it.
    Reply,
}

impl Flow {
    fn label(self) -> &'static str {
        match self {
            Flow::Fact => "facts",
            Flow::Result => "results",
            Flow::Command => "commands",
            Flow::Reply => "replies",
        }
    }
}

/// The services, the topics that carry flows, and the edges between them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Graph {
    /// Each service, with the sagas it runs (its listeners that send commands).
    pub(crate) services: BTreeMap<String, Vec<String>>,
    /// Each topic that some edge touches.
    pub(crate) topics: BTreeSet<String>,
    /// (from, to, flow): service → topic or topic → service.
    pub(crate) edges: BTreeSet<(String, String, Flow)>,
}

/// The graph of `manifests`.
pub(crate) fn graph(manifests: &[Manifest]) -> Graph {
    let mut g = Graph::default();
    let events: BTreeMap<&str, _> = manifests.iter().flat_map(|m| m.events()).collect();
    for s in manifests.iter().flat_map(|m| &m.services) {
        let sagas = s
            .listeners
            .iter()
            .filter(|l| !l.sends.is_empty())
            .map(|l| l.name.clone())
            .collect();
        g.services.insert(s.service.clone(), sagas);
        let mut edge = |from: &str, to: &str, flow: Flow| {
            g.edges.insert((from.to_owned(), to.to_owned(), flow));
        };
        for t in &s.topics {
            let name = t.name.as_str();
            if name.ends_with(".events") {
                edge(&s.service, name, Flow::Fact);
            } else if name.ends_with(".results") {
                edge(&s.service, name, Flow::Result);
            }
        }
        for l in &s.listeners {
            let flow = if l.topic.ends_with(".results") {
                Flow::Result
            } else if l.topic.ends_with(".commands") {
                Flow::Command
            } else if l.topic.ends_with(".private.reply") {
                Flow::Reply
            } else {
                Flow::Fact
            };
            // A reply topic shows where replies arrive.
            if flow != Flow::Reply || !l.sends.is_empty() {
                edge(&l.topic, &s.service, flow);
            }
            for sent in &l.sends {
                let Some((owner, command)) = events.get(sent.as_str()) else {
                    continue;
                };
                if let Some(topic) = &command.topic {
                    edge(&s.service, topic, Flow::Command);
                    edge(topic, &owner.service, Flow::Command);
                }
                if command.reply.is_some() {
                    edge(
                        &owner.service,
                        &format!("{}.private.reply", s.service),
                        Flow::Reply,
                    );
                }
            }
        }
    }
    for (from, to, _) in &g.edges {
        for end in [from, to] {
            if !g.services.contains_key(end) {
                g.topics.insert(end.clone());
            }
        }
    }
    g
}

/// Graphviz DOT.
pub(crate) fn dot(g: &Graph) -> String {
    let mut out = String::from(
        "digraph atoll {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=9];\n",
    );
    for (service, sagas) in &g.services {
        let mut label = short(service).to_owned();
        for saga in sagas {
            label.push_str(&format!("\\nsaga: {saga}"));
        }
        let style = if sagas.is_empty() {
            "filled"
        } else {
            "filled,bold"
        };
        out.push_str(&format!(
            "  \"{service}\" [shape=box, style=\"{style}\", fillcolor=\"#dbe9f6\", label=\"{label}\"];\n"
        ));
    }
    for topic in &g.topics {
        out.push_str(&format!(
            "  \"{topic}\" [shape=cylinder, fillcolor=\"#f6f1db\", style=filled, label=\"{}\"];\n",
            topic_label(topic)
        ));
    }
    for (from, to, flow) in &g.edges {
        let style = match flow {
            Flow::Fact => "solid",
            Flow::Result => "bold",
            Flow::Command => "dashed",
            Flow::Reply => "dotted",
        };
        out.push_str(&format!(
            "  \"{from}\" -> \"{to}\" [style={style}, label=\"{}\"];\n",
            flow.label()
        ));
    }
    out.push_str("}\n");
    out
}

/// A Mermaid flowchart.
pub(crate) fn mermaid(g: &Graph) -> String {
    let ids: BTreeMap<&String, String> = g
        .services
        .keys()
        .chain(&g.topics)
        .enumerate()
        .map(|(i, n)| (n, format!("n{i}")))
        .collect();
    let mut out = String::from("flowchart LR\n");
    for (service, sagas) in &g.services {
        let mut label = short(service).to_owned();
        for saga in sagas {
            label.push_str(&format!("<br/>saga: {saga}"));
        }
        out.push_str(&format!("  {}[\"{label}\"]\n", ids[service]));
    }
    for topic in &g.topics {
        out.push_str(&format!(
            "  {}[(\"{}\")]\n",
            ids[topic],
            topic_label(topic).replace("\\n", "<br/>")
        ));
    }
    for (from, to, flow) in &g.edges {
        let arrow = match flow {
            Flow::Fact | Flow::Command => "-->",
            Flow::Result => "==>",
            Flow::Reply => "-.->",
        };
        out.push_str(&format!(
            "  {} {arrow}|{}| {}\n",
            ids[from],
            flow.label(),
            ids[to]
        ));
    }
    out
}

/// SVG, by Graphviz's `dot`; `Err` when it is not installed or fails.
pub(crate) fn svg(dot_text: &str) -> anyhow::Result<String> {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running Graphviz's `dot` (Debian's `graphviz`)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(dot_text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!("dot failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A service's last segment.
fn short(service: &str) -> &str {
    service.rsplit('.').next().unwrap_or(service)
}

/// `orders\nevents` for `acme.shop.orders.events`.
fn topic_label(topic: &str) -> String {
    let parts: Vec<&str> = topic.splitn(4, '.').collect();
    match parts.as_slice() {
        [_, _, service, rest] => format!("{service}\\n{rest}"),
        _ => topic.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        serde_json::from_str(
            r#"{"format": 1, "namespace": "a.b", "services": [
              {"service": "a.b.orders", "topics": [{"name": "a.b.orders.events", "partitions": 1, "config": {}}],
               "listeners": [{"name": "trip-saga", "group_id": "a.b.orders-trip-saga", "topic": "a.b.orders.private.reply",
                              "types": [], "sends": ["a.b.stock.reserve.v1"]}]},
              {"service": "a.b.stock", "topics": [{"name": "a.b.stock.commands", "partitions": 1, "config": {}}],
               "events": [{"type": "a.b.stock.reserve.v1", "name": "reserve", "version": 1, "kind": "command",
                           "topic": "a.b.stock.commands", "reply": "a.b.stock.reserved.v1"}],
               "listeners": [{"name": "reserve", "group_id": "a.b.stock-reserve", "topic": "a.b.stock.commands", "types": ["a.b.stock.reserve.v1"]},
                             {"name": "orders", "group_id": "a.b.stock-orders", "topic": "a.b.orders.events", "types": []}]}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn flows_connect_services_through_topics() {
        let g = graph(&[manifest()]);
        let edges: Vec<(&str, &str, Flow)> = g
            .edges
            .iter()
            .map(|(a, b, f)| (a.as_str(), b.as_str(), *f))
            .collect();
        assert_eq!(
            edges,
            [
                ("a.b.orders", "a.b.orders.events", Flow::Fact),
                ("a.b.orders", "a.b.stock.commands", Flow::Command),
                ("a.b.orders.events", "a.b.stock", Flow::Fact),
                ("a.b.orders.private.reply", "a.b.orders", Flow::Reply),
                ("a.b.stock", "a.b.orders.private.reply", Flow::Reply),
                ("a.b.stock.commands", "a.b.stock", Flow::Command),
            ]
        );
        assert_eq!(g.services["a.b.orders"], ["trip-saga"]);
        let dot = dot(&g);
        assert!(dot.contains("label=\"orders\\nsaga: trip-saga\""), "{dot}");
        assert!(
            dot.contains(
                "\"a.b.stock\" -> \"a.b.orders.private.reply\" [style=dotted, label=\"replies\"]"
            ),
            "{dot}"
        );
        let mermaid = mermaid(&g);
        assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
        assert_eq!(mermaid.matches("-.->|replies|").count(), 2, "{mermaid}");
    }
}
