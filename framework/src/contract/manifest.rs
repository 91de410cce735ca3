//! The manifest of a namespace: every service of `<company>.<namespace>`, the topics it owns
//! (partitions and configs), the event types it owns (kind, version, topic, schema subject),
//! its listeners (consumer group, topic, types, delivery) and the commands it sends.
//!
//! A service binary writes it (`<binary> topics --write <dir>` in the shop) from what the code
//! declares, as `<dir>/<company>.<namespace>.json`; the `atoll` tool reads it to plan topics,
//! derive ACLs and draw the system, without the services' code. Reading checks every name and
//! reports a bad one with the file and the field (`services[1].topics[0].name`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::codec::{subject, SubjectStrategy};
use super::event::{Event, EventKind, Request};
use super::service::{ListenerDescription, ServiceDescription, TopicSpec};
use super::topic::TopicName;

/// The manifest format this version of atoll writes and reads.
pub const FORMAT: u32 = 1;

/// The manifest of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format ([`FORMAT`]).
    pub format: u32,
    /// `<company>.<namespace>`.
    pub namespace: String,
    /// Its services, in the order they were given.
    pub services: Vec<ServiceManifest>,
}

/// One service of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceManifest {
    /// `<company>.<namespace>.<service>`.
    pub service: String,
    /// The topics it owns, with what they are created with.
    pub topics: Vec<TopicSpec>,
    /// The event types it owns.
    #[serde(default)]
    pub events: Vec<EventSpec>,
    /// Its listeners.
    pub listeners: Vec<ListenerDescription>,
}

/// An event type as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// The CloudEvents type, `<service>.<name>.v<version>`.
    #[serde(rename = "type")]
    pub ce_type: String,
    /// The snake_case name.
    pub name: String,
    /// The contract version.
    pub version: u32,
    /// Fact, command, reply or result.
    pub kind: Kind,
    /// The topic it travels on; none for a reply, which goes to the requester's reply topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The reply that answers it (a command declared with `reply = …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Its Avro schema's registry subject, when it derives `AvroSchema`; the schema is
    /// `avro/<subject>.avsc` beside the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// [`EventKind`] as the manifest spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Published by its owner on the owner's `events` topic.
    Fact,
    /// Sent to its owner's `commands` topic.
    Command,
    /// Sent to the requester's `private.reply` topic.
    Reply,
    /// Published by its owner on the owner's `results` topic.
    Result,
}

impl Kind {
    /// As the manifest spells it: `fact`, `command`, `reply` or `result`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fact => "fact",
            Kind::Command => "command",
            Kind::Reply => "reply",
            Kind::Result => "result",
        }
    }
}

impl From<EventKind> for Kind {
    fn from(k: EventKind) -> Self {
        match k {
            EventKind::Fact => Kind::Fact,
            EventKind::Command => Kind::Command,
            EventKind::Reply => Kind::Reply,
            EventKind::Result => Kind::Result,
        }
    }
}

impl EventSpec {
    /// The manifest entry of event `E`.
    pub fn of<E: Event>() -> Self {
        Self::build::<E>(None)
    }

    /// The manifest entry of command `C`, naming its reply.
    pub fn request<C: Request>() -> Self {
        Self::build::<C>(Some(C::Reply::ce_type().to_owned()))
    }

    fn build<E: Event>(reply: Option<String>) -> Self {
        let topic = E::topic();
        Self {
            ce_type: E::ce_type().to_owned(),
            name: E::NAME.to_owned(),
            version: E::VERSION,
            kind: E::KIND.into(),
            subject: subject::<E>(&topic, SubjectStrategy::TopicRecordName).ok(),
            topic: (E::KIND != EventKind::Reply).then(|| topic.to_string()),
            reply,
        }
    }

    /// Its Avro schema's file under the manifests' directory `dir`
    /// (`<dir>/avro/<subject>.avsc`), when it has a subject.
    pub fn schema_file(&self, dir: &Path) -> Option<PathBuf> {
        let subject = self.subject.as_ref()?;
        Some(dir.join("avro").join(format!("{subject}.avsc")))
    }

    /// The service that owns it (the prefix of its type).
    pub fn owner(&self) -> &str {
        owner_of(&self.ce_type)
    }
}

/// Why a manifest could not be built or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a manifest, or a field is wrong.
    #[error("{path}: {field}: {why}")]
    Invalid {
        /// The file (empty when built from code).
        path: PathBuf,
        /// The field, as a path (`services[1].topics[0].name`), or `.` for the whole file.
        field: String,
        /// What is wrong with it.
        why: String,
    },
}

impl Manifest {
    /// The manifest of `services` (all of one namespace), owning `events` (each listed under
    /// the service that owns it; events of services not listed are left out).
    pub fn new(
        services: Vec<ServiceDescription>,
        events: Vec<EventSpec>,
    ) -> Result<Self, ManifestError> {
        let invalid = |field: String, why: String| ManifestError::Invalid {
            path: PathBuf::from("(the declarations in the code)"),
            field,
            why,
        };
        let namespace = services
            .first()
            .map(|s| namespace_of(&s.service).to_owned())
            .ok_or_else(|| invalid(".".into(), "no services".into()))?;
        let mut by_owner: BTreeMap<String, BTreeMap<String, EventSpec>> = BTreeMap::new();
        for e in events {
            by_owner
                .entry(e.owner().to_owned())
                .or_default()
                .insert(e.ce_type.clone(), e);
        }
        let services = services
            .into_iter()
            .map(|s| ServiceManifest {
                events: by_owner
                    .remove(&s.service)
                    .map(|m| m.into_values().collect())
                    .unwrap_or_default(),
                service: s.service,
                topics: s.topics,
                listeners: s.listeners,
            })
            .collect();
        let manifest = Self {
            format: FORMAT,
            namespace,
            services,
        };
        manifest
            .check()
            .map_err(|(field, why)| invalid(field, why))?;
        Ok(manifest)
    }

    /// The file name: `<company>.<namespace>.json`.
    pub fn file_name(&self) -> String {
        format!("{}.json", self.namespace)
    }

    /// As written: pretty JSON with a trailing newline.
    pub fn render(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("serializable");
        s.push('\n');
        s
    }

    /// Reads and checks the manifest at `path`.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(field, why)| ManifestError::Invalid {
            path: path.to_owned(),
            field,
            why,
        })
    }

    /// Reads every manifest (`*.json`) directly in `dir`, by file name.
    pub fn read_dir(dir: &Path) -> Result<Vec<Self>, ManifestError> {
        let io = |source| ManifestError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "json") && p.is_file());
        paths.sort();
        if paths.is_empty() {
            return Err(ManifestError::Invalid {
                path: dir.to_owned(),
                field: ".".into(),
                why: "no manifest (`<company>.<namespace>.json`) here; a service binary writes \
                      one with `topics --write <dir>`"
                    .into(),
            });
        }
        let manifests: Vec<Self> = paths
            .iter()
            .map(|p| Self::read(p))
            .collect::<Result<_, _>>()?;
        for (path, m) in paths.iter().zip(&manifests) {
            if path.file_name().is_some_and(|f| *f != *m.file_name()) {
                return Err(ManifestError::Invalid {
                    path: path.clone(),
                    field: "namespace".into(),
                    why: format!("namespace `{}` belongs in {}", m.namespace, m.file_name()),
                });
            }
        }
        Ok(manifests)
    }

    fn parse(text: &str) -> Result<Self, (String, String)> {
        if text.trim_start().starts_with('[') {
            return Err((
                ".".into(),
                "a topic listing of an older atoll, not a manifest; write it again with \
                 `topics --write`"
                    .into(),
            ));
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        let manifest: Self = serde_path_to_error::deserialize(de)
            .map_err(|e| (e.path().to_string(), e.into_inner().to_string()))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Checks what the types do not: the format, and that every name is one of the namespace's
    /// services, topics and groups.
    fn check(&self) -> Result<(), (String, String)> {
        if self.format != FORMAT {
            return Err((
                "format".into(),
                format!(
                    "format {} is not the one this atoll reads ({FORMAT})",
                    self.format
                ),
            ));
        }
        if self.services.is_empty() {
            return Err(("services".into(), "no services".into()));
        }
        let mut seen = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = |(field, why): (String, String)| (format!("services[{i}].{field}"), why);
            check_service(&s.service).map_err(|why| at(("service".into(), why)))?;
            if namespace_of(&s.service) != self.namespace {
                let why = format!("`{}` is not in namespace `{}`", s.service, self.namespace);
                return Err(at(("service".into(), why)));
            }
            if !seen.insert(&s.service) {
                let why = format!("`{}` is listed twice", s.service);
                return Err(at(("service".into(), why)));
            }
            s.check_topics().map_err(at)?;
            s.check_events().map_err(at)?;
            s.check_listeners().map_err(at)?;
        }
        Ok(())
    }

    /// Every event type of every service, by type.
    pub fn events(&self) -> BTreeMap<&str, (&ServiceManifest, &EventSpec)> {
        self.services
            .iter()
            .flat_map(|s| s.events.iter().map(move |e| (e.ce_type.as_str(), (s, e))))
            .collect()
    }
}

/// The service that owns event type `ce_type` (`<service>.<name>.v<version>`): its prefix.
pub fn owner_of(ce_type: &str) -> &str {
    let without_version = ce_type.rsplit_once('.').map_or("", |(s, _)| s);
    without_version.rsplit_once('.').map_or("", |(s, _)| s)
}

/// `<company>.<namespace>` of a service or topic name.
fn namespace_of(name: &str) -> &str {
    let mut dots = name.match_indices('.').map(|(i, _)| i);
    match (dots.next(), dots.next()) {
        (Some(_), Some(second)) => &name[..second],
        _ => name,
    }
}

/// Checks that `name` is `<company>.<namespace>.<service>` with valid segments.
fn check_service(name: &str) -> Result<(), String> {
    if name.split('.').count() != 3 {
        return Err(format!("`{name}` is not `<company>.<namespace>.<service>`"));
    }
    format!("{name}.events")
        .parse::<TopicName>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A field of a service's manifest (`topics[0].name`) that is wrong, and why.
type FieldError = (String, String);

impl ServiceManifest {
    /// Each topic is the service's, has a partition, and is listed once.
    fn check_topics(&self) -> Result<(), FieldError> {
        let mut names = BTreeSet::new();
        for (j, t) in self.topics.iter().enumerate() {
            let field = |f: &str| format!("topics[{j}].{f}");
            if t.name.service_prefix() != self.service {
                let why = format!("`{}` is not a topic of `{}`", t.name, self.service);
                return Err((field("name"), why));
            }
            if t.partitions < 1 {
                let why = format!("{} partitions; a topic has at least 1", t.partitions);
                return Err((field("partitions"), why));
            }
            if !names.insert(t.name.as_str()) {
                return Err((field("name"), format!("`{}` is listed twice", t.name)));
            }
        }
        Ok(())
    }

    /// Each event type is named after the service, listed once, on its owner's topic of its
    /// kind, with a reply only on a command and a subject atoll writes.
    fn check_events(&self) -> Result<(), FieldError> {
        let service = &self.service;
        let mut types = BTreeSet::new();
        for (j, e) in self.events.iter().enumerate() {
            let field = |f: &str| format!("events[{j}].{f}");
            if e.ce_type != format!("{service}.{}.v{}", e.name, e.version) {
                let why = format!(
                    "`{}` is not `{service}.<name>.v<version>` with name `{}` and version {}",
                    e.ce_type, e.name, e.version
                );
                return Err((field("type"), why));
            }
            if !types.insert(e.ce_type.as_str()) {
                return Err((field("type"), format!("`{}` is listed twice", e.ce_type)));
            }
            // Each kind travels on its owner's topic of that kind; a reply on the requester's
            // reply topic, so it names none.
            let expected = match e.kind {
                Kind::Fact => Some(format!("{service}.events")),
                Kind::Command => Some(format!("{service}.commands")),
                Kind::Result => Some(format!("{service}.results")),
                Kind::Reply => None,
            };
            if e.topic != expected {
                let want = expected.map_or("no topic".to_owned(), |t| format!("`{t}`"));
                let why = format!("a {} of `{service}` travels on {want}", e.kind.as_str());
                return Err((field("topic"), why));
            }
            if e.reply.is_some() && e.kind != Kind::Command {
                return Err((field("reply"), "only a command has a reply".into()));
            }
            let safe = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
            if let Some(subject) = &e.subject {
                if subject.is_empty() || subject.contains("..") || !subject.chars().all(safe) {
                    let why = format!("`{subject}` is not a registry subject atoll writes");
                    return Err((field("subject"), why));
                }
            }
        }
        Ok(())
    }

    /// Each listener is listed once, reads a valid topic, and is in a group of the service.
    fn check_listeners(&self) -> Result<(), FieldError> {
        let prefix = format!("{}-", self.service);
        let mut listeners = BTreeSet::new();
        for (j, l) in self.listeners.iter().enumerate() {
            let field = |f: &str| format!("listeners[{j}].{f}");
            if !listeners.insert(l.name.as_str()) {
                return Err((field("name"), format!("`{}` is listed twice", l.name)));
            }
            l.topic
                .parse::<TopicName>()
                .map_err(|why| (field("topic"), why.to_string()))?;
            if !l.group_id.starts_with(&prefix) {
                let why = format!("`{}` does not start with `{prefix}`", l.group_id);
                return Err((field("group_id"), why));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        r#"{
  "format": 1,
  "namespace": "acme.shop",
  "services": [
    {
      "service": "acme.shop.orders",
      "topics": [
        { "name": "acme.shop.orders.events", "partitions": 6, "config": {} },
        { "name": "acme.shop.orders.private.saga", "partitions": 6, "config": { "cleanup.policy": "compact" } }
      ],
      "events": [
        { "type": "acme.shop.orders.order_placed.v1", "name": "order_placed", "version": 1, "kind": "fact", "topic": "acme.shop.orders.events" }
      ],
      "listeners": [
        { "name": "place-order", "group_id": "acme.shop.orders-place-order", "topic": "acme.shop.orders.commands", "types": ["acme.shop.orders.place_order.v1"] }
      ]
    }
  ]
}"#
        .to_owned()
    }

    #[test]
    fn a_manifest_reads_back_as_written() {
        let m = Manifest::parse(&sample()).unwrap();
        assert_eq!(
            m.services[0].topics[1].config,
            [("cleanup.policy".to_owned(), "compact".to_owned())]
        );
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
        assert_eq!(m.file_name(), "acme.shop.json");
    }

    /// A change to the sample (from, to), the field its error names, and a word of the reason.
    type Bad = (&'static str, &'static str, &'static str, &'static str);

    /// Bad changes to the sample's top level and topics.
    fn bad_topics() -> [Bad; 8] {
        [
            (
                "\"acme.shop.orders.events\", \"partitions\": 6",
                "\"acme.shop.orders.Events\", \"partitions\": 6",
                "services[0].topics[0].name",
                "Events",
            ),
            (
                "\"acme.shop.orders.events\", \"partitions\": 6",
                "\"acme.shop.billing.events\", \"partitions\": 6",
                "services[0].topics[0].name",
                "not a topic of",
            ),
            (
                "\"partitions\": 6, \"config\": {}",
                "\"partitions\": 0, \"config\": {}",
                "services[0].topics[0].partitions",
                "at least 1",
            ),
            ("\"format\": 1", "\"format\": 7", "format", "format 7"),
            (
                "\"namespace\": \"acme.shop\"",
                "\"namespace\": \"acme.shed\"",
                "services[0].service",
                "not in namespace",
            ),
            (
                "\"kind\": \"fact\"",
                "\"kind\": \"rumour\"",
                "services[0].events[0].kind",
                "rumour",
            ),
            (
                "\"group_id\": \"acme.shop.orders-place-order\"",
                "\"group_id\": \"place-order\"",
                "services[0].listeners[0].group_id",
                "does not start with",
            ),
            (
                "\"partitions\": 6, \"config\": {}",
                "\"partitions\": 6, \"config\": {}, \"size\": 1",
                "services[0].topics[0].size",
                "unknown field",
            ),
        ]
    }

    /// Bad changes to the sample's events, listeners and names.
    fn bad_events() -> [Bad; 6] {
        [
            (
                "\"topic\": \"acme.shop.orders.events\" }",
                "\"topic\": \"acme.shop.orders.results\" }",
                "services[0].events[0].topic",
                "travels on `acme.shop.orders.events`",
            ),
            (
                "\"name\": \"order_placed\"",
                "\"name\": \"order_taken\"",
                "services[0].events[0].type",
                "with name `order_taken`",
            ),
            (
                "\"kind\": \"fact\", \"topic\": \"acme.shop.orders.events\" }",
                "\"kind\": \"fact\", \"topic\": \"acme.shop.orders.events\", \"subject\": \"../../etc/passwd\" }",
                "services[0].events[0].subject",
                "not a registry subject",
            ),
            (
                "{ \"name\": \"acme.shop.orders.private.saga\"",
                "{ \"name\": \"acme.shop.orders.events\"",
                "services[0].topics[1].name",
                "listed twice",
            ),
            (
                "\"topic\": \"acme.shop.orders.commands\"",
                "\"topic\": \"acme.shop.orders\"",
                "services[0].listeners[0].topic",
                "acme.shop.orders",
            ),
            (
                "\"service\": \"acme.shop.orders\"",
                "\"service\": \"acme.shop.Orders\"",
                "services[0].service",
                "Orders",
            ),
        ]
    }

    /// Each bad input, the field the error names, and a word of the reason.
    #[test]
    fn bad_input_names_the_field() {
        for (from, to, field, why) in bad_topics().into_iter().chain(bad_events()) {
            let text = sample().replacen(from, to, 1);
            assert_ne!(text, sample(), "{from}");
            let (f, w) = Manifest::parse(&text).unwrap_err();
            assert_eq!(f, field, "{to}: {w}");
            assert!(w.contains(why), "{to}: {w}");
        }
        let (f, w) = Manifest::parse("[]").unwrap_err();
        assert_eq!(f, ".");
        assert!(w.contains("older atoll"), "{w}");
    }

    #[test]
    fn the_namespace_is_the_first_two_segments() {
        assert_eq!(namespace_of("acme.shop.orders"), "acme.shop");
        assert_eq!(namespace_of("acme.shop.orders.events"), "acme.shop");
        assert_eq!(namespace_of("acme"), "acme");
    }
}
