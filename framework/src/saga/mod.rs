//! Orchestrated sagas over reply topics.
//!
//! A saga is a typed value (its data) and a list of [`Step`]s. Each step sends an action
//! command whose handler replies to the service's `private.reply` topic; the reply decides
//! whether the saga goes on or fails. When a step fails or times out, the compensations of the
//! steps already done run in reverse order (a timed-out step is compensated too: it may have
//! acted even though its reply is late). Compensations must be idempotent.
//!
//! ```text
//! start → step 1 action → reply ok → step 2 action → reply failed
//!                                  → step 1 compensation → reply → failed(reason)
//! ```
//!
//! Durability: every transition is written to the service's compacted `private.saga` topic,
//! keyed by `<saga>/<id>`, before its command is sent, and the input that caused it is committed
//! only after both were acknowledged. All inputs of one saga (its start, its replies and its
//! timeouts) arrive on one partition of `private.reply`, so the process that owns that partition
//! is the saga's only writer; on assignment it restores the partition's saga states and re-arms
//! their timeouts. A killed process therefore resumes its sagas wherever they were.
//!
//! Requests carry a deterministic `ce_id` (`<saga>/<id>@<version>`) and ask for the reply on
//! the saga's partition (`atoll_reply_partition`). A reply is matched against the pending
//! request by its `ce_causationid`: a late reply (its step timed out) or a duplicate reply is
//! ignored and logged, so nothing advances a saga twice.
//!
//! ```
//! use atoll::{event_service, handlers, Context, Event, HandlerResult, Saga, Step};
//! use serde::{Deserialize, Serialize};
//!
//! #[event_service(company = "acme", namespace = "shop", name = "stock")]
//! pub struct Stock;
//! #[handlers] impl Stock {}
//!
//! #[derive(Debug, Serialize, Deserialize, Event)]
//! #[event(command, name = "reserve", version = 1, service = Stock, reply = Reserved)]
//! pub struct Reserve { #[event(key)] pub order_id: String }
//!
//! #[derive(Debug, Serialize, Deserialize, Event)]
//! #[event(reply, name = "reserved", version = 1, service = Stock)]
//! pub struct Reserved { pub ok: bool }
//!
//! #[derive(Debug, Serialize, Deserialize, Event)]
//! #[event(command, name = "release", version = 1, service = Stock, reply = Released)]
//! pub struct Release { #[event(key)] pub order_id: String }
//!
//! #[derive(Debug, Serialize, Deserialize, Event)]
//! #[event(reply, name = "released", version = 1, service = Stock)]
//! pub struct Released {}
//!
//! #[event_service(company = "acme", namespace = "shop", name = "orders", sagas = [Checkout])]
//! pub struct Orders;
//! #[handlers] impl Orders {}
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub struct Checkout { pub order_id: String }
//!
//! impl Saga for Checkout {
//!     const NAME: &'static str = "checkout";
//!
//!     fn id(&self) -> String {
//!         self.order_id.clone()
//!     }
//!
//!     fn steps() -> Vec<Step<Self>> {
//!         vec![Step::new(
//!             "reserve",
//!             |c: &Checkout| Reserve { order_id: c.order_id.clone() },
//!             |_: &mut Checkout, r: Reserved| if r.ok { Ok(()) } else { Err("no stock".into()) },
//!         )
//!         .compensate(|c: &Checkout| Release { order_id: c.order_id.clone() })]
//!     }
//!
//!     async fn completed(self, _ctx: Context<Orders>) -> HandlerResult {
//!         Ok(())
//!     }
//!
//!     async fn failed(self, _ctx: Context<Orders>, _reason: String) -> HandlerResult {
//!         Ok(())
//!     }
//! }
//! ```

mod engine;
mod resident;
pub(crate) mod state;

use parking_lot::Mutex;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Codec, DecodeError};
use crate::config::listener::ListenerSettings;
use crate::contract::event::{Command, Event, Request};
use crate::contract::service::Service;
use crate::contract::topic::TopicName;
use crate::handler::context::{json, Context, Encoded, Record};
use crate::handler::listener::{HandlerResult, Listener};
use futures::future::BoxFuture;

/// Ties a saga to the one service that lists it in `#[event_service(…, sagas = […])]`, which
/// implements this for it: a saga is declared once, there.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not listed as a saga of any service",
    label = "not in any `#[event_service(…, sagas = […])]`",
    note = "list it in the declaration of the service that runs it: `#[event_service(…, sagas = [{Self}])]`"
)]
pub trait DeclaredSaga {
    /// The service that runs the saga.
    type Service: Service;
}

/// Implemented for each saga of service `S` by `#[event_service(…, sagas = […])]`: the sagas
/// a handler of `S` may start.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a saga of service `{S}`, so `{S}` cannot start it",
    label = "not listed in `{S}`'s `sagas = […]`",
    note = "add it to the service's declaration, `#[event_service(…, sagas = [{Self}])]`, or start it from the service that lists it"
)]
pub trait SagaOf<S: Service>: Saga + DeclaredSaga<Service = S> {}

/// A saga: its data, its steps and what happens at its end.
///
/// List it in its service's declaration, `#[event_service(…, sagas = [Checkout])]`, and
/// nowhere else; start one from a handler with [`Context::start_saga`]. The saga runs as listener `<NAME>-saga` on the
/// service's `private.reply` topic (consumer group `<service>-<NAME>-saga`; its settings can be
/// overridden under `listeners.<NAME>-saga`, but its retry mode must stay `strict`: a saga's
/// inputs are handled in order).
pub trait Saga:
    DeclaredSaga + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
    /// The saga's name, a topic-name segment (`[a-z0-9_-]`).
    const NAME: &'static str;

    /// The saga id, unique among sagas of this name (e.g. the order id).
    fn id(&self) -> String;

    /// The steps, in order.
    fn steps() -> Vec<Step<Self>>;

    /// How long each step (and its compensation) waits for its reply, unless the step says
    /// otherwise with [`Step::timeout`]; 30 s unless the saga says otherwise.
    const STEP_TIMEOUT: Duration = Duration::from_secs(30);

    /// Runs once when every step succeeded: emit the outcome as a fact.
    fn completed(self, ctx: Context<Self::Service>) -> impl Future<Output = HandlerResult> + Send;

    /// Runs once when the saga failed and its compensations ran: emit the outcome as a fact.
    fn failed(
        self,
        ctx: Context<Self::Service>,
        reason: String,
    ) -> impl Future<Output = HandlerResult> + Send;

    /// The saga listener's settings (configuration under `listeners.<NAME>-saga` still
    /// overrides them). By default a transient failure (the broker unreachable while restoring
    /// or writing state) is retried without limit: dead-lettering a saga's input would strand
    /// the saga. Bad input (a reply that does not decode) is still dead-lettered at once.
    fn settings() -> ListenerSettings {
        ListenerSettings {
            max_attempts: Some(0),
            ..ListenerSettings::default()
        }
    }
}

type Make<D> = Arc<dyn Fn(&D) -> Outbound + Send + Sync>;
/// What a decoded reply does to the saga's data: `Ok` goes on, `Err(reason)` fails the saga.
pub(crate) type Verdict<D> = Box<dyn FnOnce(&mut D) -> Result<(), String> + Send>;
/// Decodes a step's reply (content type, payload) into its verdict.
type Judge<D> = Arc<
    dyn for<'a> Fn(
            &'a Codec,
            Option<&'a str>,
            &'a [u8],
        ) -> BoxFuture<'a, Result<Verdict<D>, DecodeError>>
        + Send
        + Sync,
>;

fn judge<D, F>(f: F) -> Judge<D>
where
    F: for<'a> Fn(
            &'a Codec,
            Option<&'a str>,
            &'a [u8],
        ) -> BoxFuture<'a, Result<Verdict<D>, DecodeError>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(f)
}

/// A command a step sends.
pub(crate) type Outbound = Box<dyn OutboundCommand>;

/// A command of any type, encoded when sent.
pub(crate) trait OutboundCommand: Send + Sync {
    /// The command as a record for `ctx`'s service.
    fn record<'a>(
        &'a self,
        codec: &'a Codec,
    ) -> BoxFuture<'a, (TopicName, Option<String>, &'static str, Encoded)>;
}

impl<C: Command> OutboundCommand for C {
    fn record<'a>(
        &'a self,
        codec: &'a Codec,
    ) -> BoxFuture<'a, (TopicName, Option<String>, &'static str, Encoded)> {
        Box::pin(async move {
            let topic = C::topic();
            let payload = codec.encode(&topic, self).await;
            (topic, self.key(), C::ce_type(), payload)
        })
    }
}

fn outbound<C: Command>(command: C) -> Outbound {
    Box::new(command)
}

/// One step of a saga: an action command, the reply that judges it, an optional compensation
/// and a timeout.
pub struct Step<D> {
    name: &'static str,
    action: Make<D>,
    reply_type: &'static str,
    judge: Judge<D>,
    compensation: Option<(Make<D>, &'static str)>,
    /// Its own timeout; `None`: the saga's [`Saga::STEP_TIMEOUT`].
    timeout: Option<Duration>,
    /// The types of the commands it sends: its action's, then its compensation's.
    commands: Vec<&'static str>,
}

impl<D> std::fmt::Debug for Step<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("reply_type", &self.reply_type)
            .field("compensated", &self.compensation.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<D: 'static> Step<D> {
    /// A step named `name` that sends `action(&data)` and judges its reply (the command's
    /// declared [`Request::Reply`]) with `on_reply(&mut data, reply)`: `Ok(())` goes on,
    /// `Err(reason)` fails the saga (and runs the compensations of the steps before this one).
    /// `on_reply` may update the data.
    pub fn new<C: Request>(
        name: &'static str,
        action: impl Fn(&D) -> C + Send + Sync + 'static,
        on_reply: impl Fn(&mut D, C::Reply) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        let on_reply = Arc::new(on_reply);
        Self {
            name,
            action: Arc::new(move |d| outbound(action(d))),
            reply_type: C::Reply::ce_type(),
            judge: judge(
                move |codec: &Codec, content_type: Option<&str>, payload: &[u8]| {
                    let on_reply = on_reply.clone();
                    Box::pin(async move {
                        let reply: C::Reply = codec.decode(content_type, payload).await?;
                        let verdict: Verdict<D> = Box::new(move |d: &mut D| on_reply(d, reply));
                        Ok(verdict)
                    })
                },
            ),
            compensation: None,
            timeout: None,
            commands: vec![C::ce_type()],
        }
    }

    /// Undoes the step by sending `compensation(&data)`; its reply (the command's declared
    /// [`Request::Reply`]), whatever its content, means it is done. A compensation that times
    /// out is sent again.
    #[must_use]
    pub fn compensate<C: Request>(
        mut self,
        compensation: impl Fn(&D) -> C + Send + Sync + 'static,
    ) -> Self {
        let make: Make<D> = Arc::new(move |d| outbound(compensation(d)));
        self.compensation = Some((make, C::Reply::ce_type()));
        self.commands.truncate(1);
        self.commands.push(C::ce_type());
        self
    }

    /// How long the step (and its compensation) waits for a reply, instead of the saga's
    /// [`Saga::STEP_TIMEOUT`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The step's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Leaks each distinct string once: the few per-saga names and types that must be `'static`.
fn interned(s: String) -> &'static str {
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock();
    if let Some(s) = seen.get(s.as_str()) {
        return s;
    }
    let s: &'static str = Box::leak(s.into_boxed_str());
    seen.insert(s);
    s
}

fn internal_type<D: Saga>(what: &str) -> &'static str {
    let id = <D::Service as Service>::ID;
    interned(format!("{id}.{}_saga_{what}.v1", D::NAME.replace('-', "_")))
}

/// The `ce_type` of saga `D`'s start records.
pub(crate) fn start_type<D: Saga>() -> &'static str {
    internal_type::<D>("started")
}

/// The `ce_type` of saga `D`'s timeout records.
pub(crate) fn timeout_type<D: Saga>() -> &'static str {
    internal_type::<D>("timed_out")
}

/// The `ce_type` of saga `D`'s state records.
pub(crate) fn state_type<D: Saga>() -> &'static str {
    internal_type::<D>("state")
}

/// The listener that runs saga `D` (used by the code `#[event_service(sagas = […])]`
/// generates).
pub fn saga_listener<S: Service, D: Saga + DeclaredSaga<Service = S>>() -> Listener<S> {
    let name = interned(format!("{}-saga", D::NAME));
    engine::listener::<D>(name)
}

impl<S: Service> Context<S> {
    /// Starts saga `D` (see [`Saga`]) for `saga.id()`: the saga's listener takes it from there.
    /// Starting a saga whose id already exists does nothing (it is logged), so a redelivered
    /// handler starts nothing twice. Only the sagas listed in `S`'s declaration compile here.
    pub async fn start_saga<D: SagaOf<S>>(&self, saga: D) -> crate::error::Result<()> {
        self.produce(Record {
            key: Some(saga.id().into_bytes()),
            ce_type: start_type::<D>(),
            payload: json(start_type::<D>(), &saga),
            ..Record::default_for(S::ID.reply())
        })
        .await?;
        Ok(())
    }
}

impl<D> Step<D> {
    /// The types of the commands the step sends: its action's, then its compensation's.
    pub(crate) fn commands(&self) -> &[&'static str] {
        &self.commands
    }

    pub(crate) fn types(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.reply_type).chain(self.compensation.as_ref().map(|c| c.1))
    }
}

/// The event types the saga's listener handles.
pub(crate) fn types<D: Saga>(steps: &[Step<D>]) -> Vec<&'static str> {
    let mut types = vec![start_type::<D>(), timeout_type::<D>()];
    for t in steps.iter().flat_map(Step::types) {
        if !types.contains(&t) {
            types.push(t);
        }
    }
    types
}
