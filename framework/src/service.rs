//! Services: the islands that own topics, and the listeners they declare.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::codec::DecodeError;
use crate::context::Context;
use crate::error::HandlerError;
use crate::event::{Event, EventKind, ListenableBy, Output};
use crate::policy::ListenerSettings;
use crate::saga::PartitionHooks;
use crate::topic::{ServiceId, TopicKind, TopicName, TopicNameError};

/// A service: implemented by `#[event_service]` on the service struct.
pub trait Service: Send + Sync + Sized + 'static {
    /// The service's identity.
    const ID: ServiceId;
    /// How many partitions the service's topics get when atoll creates them.
    const PARTITIONS: i32;
    /// The codec the service produces with (`#[event_service(codec = "avro")]`); configuration
    /// (`service.codec`) overrides it.
    const CODEC: crate::codec::CodecKind = crate::codec::CodecKind::Json;

    /// The listeners of the service's sagas (`#[event_service(…, sagas = […])]`).
    fn sagas() -> Vec<Listener<Self>> {
        Vec::new()
    }
}

/// The listeners of a service: implemented by `#[handlers]` on an `impl` block.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no handlers",
    label = "no `#[atoll::handlers]` impl block for `{Self}`",
    note = "add `#[atoll::handlers]` on an `impl {Self} {{ … }}` block whose methods carry `#[listener(name = \"…\")]`"
)]
pub trait Handlers: Service {
    /// The declared listeners, in declaration order.
    fn listeners() -> Vec<Listener<Self>>;
}

/// What a handler returns.
pub type HandlerResult<T = ()> = Result<T, HandlerError>;

pub(crate) type HandlerFn<S> = dyn for<'a> Fn(Arc<S>, Context<S>, &'a [u8]) -> BoxFuture<'a, Result<(), CallError>>
    + Send
    + Sync;

/// Why a handler call failed: its input did not decode, or the handler failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Bad input (dead-lettered as `decode`).
    Decode(String),
    /// The handler (or what it produced) failed.
    Handler(HandlerError),
    /// The input could not be decoded yet (the schema registry is unreachable): retried
    /// without limit, never dead-lettered, since the record itself is fine.
    Unavailable(String),
}

impl From<HandlerError> for CallError {
    fn from(e: HandlerError) -> Self {
        Self::Handler(e)
    }
}

/// Fixes a handler closure's signature (higher-ranked over the payload's lifetime).
pub(crate) fn handler_fn<S, F>(f: F) -> Arc<HandlerFn<S>>
where
    F: for<'a> Fn(Arc<S>, Context<S>, &'a [u8]) -> BoxFuture<'a, Result<(), CallError>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(f)
}

/// One listener: a name, the event type it handles and its handler.
///
/// Built by `#[handlers]`; each listener is its own consumer group.
pub struct Listener<S> {
    name: &'static str,
    /// The types it handles; the first is its own.
    types: Vec<&'static str>,
    kind: EventKind,
    topic: TopicName,
    partitions: i32,
    settings: ListenerSettings,
    handler: Arc<HandlerFn<S>>,
    hooks: Option<Arc<dyn PartitionHooks>>,
    extra_topics: Vec<TopicSpec>,
}

impl<S> Clone for Listener<S> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            types: self.types.clone(),
            kind: self.kind,
            topic: self.topic.clone(),
            partitions: self.partitions,
            settings: self.settings.clone(),
            handler: self.handler.clone(),
            hooks: self.hooks.clone(),
            extra_topics: self.extra_topics.clone(),
        }
    }
}

impl<S> fmt::Debug for Listener<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("types", &self.types)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl<S: Service> Listener<S> {
    /// A listener for event `E` that calls `handler`.
    ///
    /// A reply listener consumes this service's own `private.reply` topic; any other listener
    /// consumes the event owner's topic.
    pub fn new<E, H, F, O>(name: &'static str, handler: H) -> Self
    where
        E: ListenableBy<S>,
        H: Fn(Arc<S>, Context<S>, E) -> F + Send + Sync + 'static,
        F: Future<Output = HandlerResult<O>> + Send + 'static,
        O: Output,
    {
        let topic = match E::KIND {
            EventKind::Reply => S::ID.reply(),
            _ => E::topic(),
        };
        let handler = Arc::new(handler);
        Self {
            name,
            types: vec![E::ce_type()],
            kind: E::KIND,
            topic,
            partitions: <E::Service as Service>::PARTITIONS,
            settings: ListenerSettings::default(),
            handler: handler_fn(move |svc, ctx: Context<S>, payload: &[u8]| {
                let handler = handler.clone();
                Box::pin(async move {
                    let content_type = ctx.meta().content_type.as_deref();
                    let event: E = match ctx.codec().decode(content_type, payload).await {
                        Ok(event) => event,
                        Err(DecodeError::Bad(why)) => return Err(CallError::Decode(why)),
                        Err(DecodeError::Unavailable(why)) => {
                            return Err(CallError::Unavailable(why))
                        }
                    };
                    let out = handler(svc, ctx.clone(), event).await?;
                    out.send(&ctx).await.map_err(HandlerError::from)?;
                    Ok(())
                })
            }),
            hooks: None,
            extra_topics: Vec::new(),
        }
    }

    /// A listener on the service's `private.reply` topic handling `types` with its own handler
    /// and partition hooks (a saga), which owns `topic` besides.
    pub(crate) fn custom(
        name: &'static str,
        types: Vec<&'static str>,
        handler: Arc<HandlerFn<S>>,
        hooks: Arc<dyn PartitionHooks>,
        topic: TopicSpec,
    ) -> Self {
        Self {
            name,
            types,
            kind: EventKind::Reply,
            topic: S::ID.reply(),
            partitions: S::PARTITIONS,
            settings: ListenerSettings::default(),
            handler,
            hooks: Some(hooks),
            extra_topics: vec![topic],
        }
    }

    /// These settings replace the `listener.*` defaults for this listener (configuration
    /// under `listeners.<name>` still overrides them).
    #[must_use]
    pub fn with_settings(mut self, settings: ListenerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// What the listener sets in code.
    pub fn settings(&self) -> &ListenerSettings {
        &self.settings
    }

    /// The listener's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The CloudEvents type it handles (a saga's listener handles several: this is its
    /// start type).
    pub fn ce_type(&self) -> &'static str {
        self.types[0]
    }

    /// Every CloudEvents type it handles.
    pub fn ce_types(&self) -> &[&'static str] {
        &self.types
    }

    /// Its partition hooks, for listeners with partition-bound state (sagas).
    pub(crate) fn hooks(&self) -> Option<&Arc<dyn PartitionHooks>> {
        self.hooks.as_ref()
    }

    /// Topics it owns besides those of every service (a saga's state topic).
    pub fn extra_topics(&self) -> &[TopicSpec] {
        &self.extra_topics
    }

    /// Whether it handles a fact or a command.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The topic it consumes.
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// The partition count the topic's owner declares.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The consumer group, `<company>.<namespace>.<service>-<listener>`.
    pub fn group_id(&self) -> Result<String, TopicNameError> {
        S::ID.group_id(self.name)
    }

    /// Decodes `payload` and runs the handler.
    pub(crate) fn call<'a>(
        &self,
        svc: Arc<S>,
        ctx: Context<S>,
        payload: &'a [u8],
    ) -> BoxFuture<'a, Result<(), CallError>> {
        (self.handler)(svc, ctx, payload)
    }
}

/// A topic a service declares, with what atoll creates it with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicSpec {
    /// The topic.
    #[serde(serialize_with = "ser_topic")]
    pub name: TopicName,
    /// Partition count.
    pub partitions: i32,
    /// Topic configuration (`cleanup.policy`, …).
    pub config: Vec<(String, String)>,
}

fn ser_topic<Ser: serde::Serializer>(t: &TopicName, s: Ser) -> Result<Ser::Ok, Ser::Error> {
    s.serialize_str(t.as_str())
}

/// The topics service `S` owns: `events`, `commands`, `private.dlq`, `private.retry`,
/// `private.reply`, and `private.saga` (compacted) when it runs sagas.
pub fn owned_topics<S: Service>() -> Vec<TopicSpec> {
    let spec = |name| TopicSpec {
        name,
        partitions: S::PARTITIONS,
        config: Vec::new(),
    };
    let mut topics = vec![
        spec(S::ID.events()),
        spec(S::ID.commands()),
        spec(S::ID.dlq()),
        spec(S::ID.retry()),
        spec(S::ID.reply()),
    ];
    for t in S::sagas().iter().flat_map(|l| l.extra_topics().to_vec()) {
        if !topics.contains(&t) {
            topics.push(t);
        }
    }
    topics
}

/// Every listener of `S`: its handlers, then its sagas.
pub(crate) fn all_listeners<S: Handlers>() -> Vec<Listener<S>> {
    let mut all = S::listeners();
    all.extend(S::sagas());
    all
}

/// The CloudEvents type of `E`, computed once per type by the derive.
#[doc(hidden)]
pub fn ce_type_of<E: Event>() -> String {
    let id = <E::Service as Service>::ID;
    format!("{id}.{}.v{}", E::NAME, E::VERSION)
}

/// Whether `topic` is an inbox of service `S`: its `commands` or its `private.reply`, topics
/// only it reads and whose every type it must understand.
pub(crate) fn is_inbox<S: Service>(topic: &TopicName) -> bool {
    let inbox = match topic.kind() {
        TopicKind::Commands => true,
        TopicKind::Private(name) => name == "reply",
        _ => false,
    };
    inbox && topic.service_prefix() == S::ID.to_string()
}

/// What a service declares, for generated topic listings and tooling.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceDescription {
    /// `<company>.<namespace>.<service>`.
    pub service: String,
    /// The topics it owns.
    pub topics: Vec<TopicSpec>,
    /// Its listeners.
    pub listeners: Vec<ListenerDescription>,
}

/// One listener of a [`ServiceDescription`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListenerDescription {
    /// Listener name.
    pub name: String,
    /// Consumer group.
    pub group_id: String,
    /// The topic it consumes.
    pub topic: String,
    /// The CloudEvents type it handles.
    pub ce_type: String,
}

/// Describes service `S`: its topics and listeners.
pub fn describe<S: Handlers>() -> Result<ServiceDescription, TopicNameError> {
    let listeners = all_listeners::<S>()
        .iter()
        .map(|l| {
            Ok(ListenerDescription {
                name: l.name().to_owned(),
                group_id: l.group_id()?,
                topic: l.topic().to_string(),
                ce_type: l.ce_type().to_owned(),
            })
        })
        .collect::<Result<_, TopicNameError>>()?;
    Ok(ServiceDescription {
        service: S::ID.to_string(),
        topics: owned_topics::<S>(),
        listeners,
    })
}
