//! Listeners: a service's handler table, and how one decodes a record and calls its handler.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::codec::DecodeError;
use crate::config::listener::{ListenerConfig, ListenerSettings, RetryMode};
use crate::config::DeliveryMode;
use crate::contract::event::EventKind;
use crate::contract::service::{
    add_retry_tiers, owned_topics, Delivery, ListenerDescription, Service, ServiceDescription,
};
use crate::contract::topic::{PrivateTopic, TopicKind, TopicName, TopicNameError};
use crate::error::HandlerError;
use crate::handler::context::Context;
use crate::handler::hooks::PartitionHooks;
use crate::handler::input::{one_topic, Input};
use crate::handler::layer::{self, Handling, HeaderList, ServiceLayer};
use crate::handler::output::Output;
use crate::store::driver::Driver;

/// The listeners of a service's sagas: implemented by `#[event_service]` (none unless it lists
/// `sagas = […]`).
pub trait SagaListeners: Service {
    /// One listener per saga, in declaration order.
    fn saga_listeners() -> Vec<Listener<Self>> {
        Vec::new()
    }
}

/// The listeners of a service: implemented by `#[handlers]` on an `impl` block.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no handlers",
    label = "no `#[atoll::handlers]` impl block for `{Self}`",
    note = "add `#[atoll::handlers]` on an `impl {Self} {{ … }}` block whose methods carry `#[listener(name = \"…\")]`"
)]
pub trait Handlers: SagaListeners {
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

/// `Err` when a set-based handler (it takes a [`Batch`](super::batch::Batch)) returns outputs:
/// they would be the batch's first record's, and their number would depend on how records
/// happened to be batched.
fn set_returns_nothing<O: 'static>(set: bool) -> Result<(), String> {
    if set && std::any::TypeId::of::<O>() != std::any::TypeId::of::<()>() {
        return Err(
            "it takes a `Batch` and returns outputs: a set-based handler returns `HandlerResult`, each record's outputs go through its own context (`record.ctx.emit(…)`)"
                .to_owned(),
        );
    }
    Ok(())
}

/// How a listener's handler takes records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Calls {
    /// One record per call.
    Each,
    /// A store batch's records per call (it takes a [`Batch`](super::batch::Batch)): one
    /// record when handled alone.
    Batch,
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
    /// `Err` saying why the types it takes cannot be one listener's (checked at start).
    declared: Result<(), String>,
    settings: ListenerSettings,
    handler: Arc<HandlerFn<S>>,
    hooks: Option<Arc<dyn PartitionHooks>>,
    /// The driver each record's database transaction runs on, when it runs in one (its
    /// handler takes `Tx`).
    transaction: Option<Driver>,
    /// How its handler takes records: one per call, or a batch per call (it takes a
    /// [`Batch`](super::batch::Batch)).
    calls: Calls,
    /// The tables of the view it builds, if it builds one.
    view: &'static [&'static str],
    /// The commands it sends, by type, where the code says (a saga's steps).
    sends: Vec<&'static str>,
    /// Its handler wrapped in the layers given for it (see [`super::layer`]); `None`: called
    /// directly.
    layered: Option<Handling<S>>,
}

impl<S> Clone for Listener<S> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            types: self.types.clone(),
            kind: self.kind,
            topic: self.topic.clone(),
            partitions: self.partitions,
            declared: self.declared.clone(),
            settings: self.settings.clone(),
            handler: self.handler.clone(),
            hooks: self.hooks.clone(),
            transaction: self.transaction,
            calls: self.calls,
            view: self.view,
            sends: self.sends.clone(),
            layered: self.layered.clone(),
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
    /// A listener for `E` (an event, or an enum of several of one topic: see [`Input`]) that
    /// calls `handler`.
    ///
    /// A reply listener consumes this service's own `private.reply` topic; any other listener
    /// consumes the events' owner's topic.
    pub fn new<E, H, F, O>(name: &'static str, handler: H) -> Self
    where
        E: Input<S>,
        H: Fn(Arc<S>, Context<S>, E) -> F + Send + Sync + 'static,
        F: Future<Output = HandlerResult<O>> + Send + 'static,
        O: Output<S>,
    {
        let (first, others) = E::types();
        let declared = one_topic(&first, &others).and_then(|()| set_returns_nothing::<O>(E::SET));
        let types = std::iter::once(first.ce_type)
            .chain(others.iter().map(|t| t.ce_type))
            .collect();
        let topic = match first.kind {
            EventKind::Reply => S::ID.reply(),
            _ => first.topic,
        };
        let handler = Arc::new(handler);
        Self {
            name,
            types,
            kind: first.kind,
            topic,
            partitions: first.partitions,
            declared,
            settings: ListenerSettings::default(),
            handler: handler_fn(move |svc, ctx: Context<S>, payload: &[u8]| {
                let handler = handler.clone();
                Box::pin(async move {
                    let event: E = match E::decode(&ctx, payload).await {
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
            transaction: None,
            calls: if E::SET { Calls::Batch } else { Calls::Each },
            view: &[],
            sends: Vec::new(),
            layered: None,
        }
    }

    /// A listener on the service's `private.reply` topic handling `types` with its own handler
    /// and partition hooks (a saga).
    pub(crate) fn custom(
        name: &'static str,
        types: Vec<&'static str>,
        handler: Arc<HandlerFn<S>>,
        hooks: Arc<dyn PartitionHooks>,
    ) -> Self {
        Self {
            name,
            types,
            kind: EventKind::Reply,
            topic: S::ID.reply(),
            partitions: S::PARTITIONS,
            declared: Ok(()),
            settings: ListenerSettings::default(),
            handler,
            hooks: Some(hooks),
            transaction: None,
            calls: Calls::Each,
            view: &[],
            sends: Vec::new(),
            layered: None,
        }
    }

    /// These settings replace the `listener.*` defaults for this listener (configuration
    /// under `listeners.<name>` still overrides them).
    #[must_use]
    pub fn with_settings(mut self, settings: ListenerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Makes each record's handling one database transaction on `driver` (set by
    /// `#[handlers]` when the handler takes a `Tx`): its SQL, its inbox row and its outputs
    /// (through the outbox) commit together. `None`: no transaction.
    #[must_use]
    pub fn transaction(mut self, driver: Option<Driver>) -> Self {
        self.transaction = driver;
        self
    }

    /// Declares that the listener builds a view in `tables` (set by `#[handlers]` from
    /// `view = "…"`): `atoll view rebuild` can empty them and replay the listener's topic from
    /// its start. A view's listener must be transactional.
    #[must_use]
    pub fn view(mut self, tables: &'static [&'static str]) -> Self {
        self.view = tables;
        self
    }

    /// The tables of the view it builds; empty when it builds none.
    pub fn view_tables(&self) -> &'static [&'static str] {
        self.view
    }

    /// Whether records are handled in a database transaction.
    pub fn is_transactional(&self) -> bool {
        self.transaction.is_some()
    }

    /// How its handler takes records.
    pub(crate) fn calls(&self) -> Calls {
        self.calls
    }

    /// The driver of its records' transactions; `None` when it is not transactional.
    pub fn driver(&self) -> Option<Driver> {
        self.transaction
    }

    /// What the listener sets in code.
    pub fn settings(&self) -> &ListenerSettings {
        &self.settings
    }

    /// Declares the commands the listener sends (by type), for the manifest and the ACLs it
    /// derives (set by `#[handlers]` from `sends = [Command, …]`, and by sagas for their
    /// steps). Added to those declared before; each type once.
    #[must_use]
    pub fn sending(mut self, sends: Vec<&'static str>) -> Self {
        for ce_type in sends {
            if !self.sends.contains(&ce_type) {
                self.sends.push(ce_type);
            }
        }
        self
    }

    /// The commands the listener is known to send, by type.
    pub fn sends(&self) -> &[&'static str] {
        &self.sends
    }

    /// `Err` saying why the event types it takes cannot be one listener's: they travel on
    /// different topics, or are of different kinds.
    pub fn declaration(&self) -> Result<(), String> {
        self.declared.clone()
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

    /// Wraps its handler, called on `svc`, in those of `layers` that take it (see
    /// [`super::layer`]).
    ///
    /// # Errors
    /// Why it cannot be: a set-based handler takes a batch per call, and a layer wraps one
    /// record's.
    pub(crate) fn with_layers(
        mut self,
        svc: Arc<S>,
        layers: &[&ServiceLayer<S>],
    ) -> Result<Self, String> {
        self.layered = layer::stack(svc, self.handler.clone(), self.name, layers);
        if self.layered.is_some() && self.calls == Calls::Batch {
            return Err(format!(
                "listener `{}` takes a `Batch`, and a layer wraps one record's call: give the layer to the service's other listeners by name (`App::listener_layer`)",
                self.name
            ));
        }
        Ok(self)
    }

    /// Decodes `payload` and runs the handler, through its layers if it has any (they see
    /// the record's `headers`).
    pub(crate) fn call<'a>(
        &'a self,
        svc: Arc<S>,
        ctx: Context<S>,
        payload: &'a [u8],
        headers: impl FnOnce() -> HeaderList,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        match &self.layered {
            Some(stack) => Box::pin(layer::run(stack, ctx, payload, headers())),
            None => (self.handler)(svc, ctx, payload),
        }
    }
}

/// Every listener of `S`: its handlers, then its sagas.
pub(crate) fn all_listeners<S: Handlers>() -> Vec<Listener<S>> {
    let mut all = S::listeners();
    all.extend(S::saga_listeners());
    all
}

/// Whether `topic` is an inbox of service `S`: its `commands` or its `private.reply`, topics
/// only it reads and whose every type it must understand.
pub(crate) fn is_inbox<S: Service>(topic: &TopicName) -> bool {
    let inbox =
        topic.kind() == &TopicKind::Commands || topic.private_kind() == Some(PrivateTopic::Reply);
    inbox && topic.service_prefix() == S::ID.to_string()
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
                types: l.ce_types().iter().map(|t| (*t).to_owned()).collect(),
                delivery: match l.settings().delivery {
                    Some(DeliveryMode::ExactlyOnce) => Delivery::ExactlyOnce,
                    _ => Delivery::AtLeastOnce,
                },
                sends: l.sends().iter().map(|t| (*t).to_owned()).collect(),
            })
        })
        .collect::<Result<_, TopicNameError>>()?;
    // The retry tiers of the ladders written in code (a ladder set only in configuration
    // has its tiers made at start, with `kafka.create_topics`).
    let mut topics = owned_topics::<S>();
    let delays = all_listeners::<S>()
        .iter()
        .map(|l| ListenerConfig::default().merged(l.settings()))
        .filter(|c| c.retry == RetryMode::NonBlocking)
        .flat_map(|c| c.retry_ladder())
        .collect::<std::collections::BTreeSet<_>>();
    add_retry_tiers(&mut topics, S::ID, delays);
    Ok(ServiceDescription {
        service: S::ID.to_string(),
        topics,
        listeners,
    })
}
