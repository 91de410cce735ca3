//! Interceptors: [tower] layers around a service's handlers, for what runs around every call
//! without being written into each handler (an authorisation check on a header, a tenant
//! scope, a timeout, a concurrency limit, metrics).
//!
//! A listener's handler is a [`tower::Service`] of [`Incoming`] records; the layers given to
//! [`App::layer`](crate::App::layer) (every listener of a service, its sagas' reply listeners
//! included) and [`App::listener_layer`](crate::App::listener_layer) (one listener) wrap it,
//! the first given outermost, as `tower::ServiceBuilder` stacks them. A layer's error is the
//! record's failure: a [`HandlerError`] keeps its kind (`HandlerError::permanent(…).into()`
//! dead-letters the record at once), and so does an atoll error; any other error (tower's
//! timeout elapsing) is transient and retried. The record's offset is committed only after the
//! stack's answer, as ever.
//!
//! Each listener gets a stack of its own: a `tower::limit::ConcurrencyLimitLayer` given for a
//! service limits each listener apart (`GlobalConcurrencyLimitLayer` shares one limit). The
//! listener's `handler_timeout_ms` bounds the whole stack, a wait for a permit included. What
//! atoll decides before the handler (a repeat its inbox knows, a record of a type the listener
//! does not take) never reaches the layers. `atoll::testing` calls handlers without them.
//!
//! Why tower: its layers are the Rust ecosystem's middleware (axum, tonic and hyper share
//! them), so `tower::timeout`, `tower::limit` and a company's own layers apply to handlers
//! unchanged; Watermill's middlewares and Spring Kafka's `RecordInterceptor` play the same part
//! in their ecosystems. [`from_fn`] writes one as an async function, as
//! `axum::middleware::from_fn` does. A listener without layers calls its handler directly:
//! layers cost a copy of the record's payload and headers, and a boxed call, only where they
//! are used.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service as TowerService, ServiceExt};

use super::context::{Context, Meta};
use super::listener::{CallError, HandlerFn};
use crate::contract::service::Service;
use crate::contract::topic::ServiceId;
use crate::error::{BoxError, HandlerError};

/// A record's headers, copied for the layers: names and values (`None`: a null value).
pub(crate) type HeaderList = Vec<(String, Option<Vec<u8>>)>;

/// One record on its way to its handler, as a layer sees it: its metadata, headers and
/// payload, and the context its handler will produce through.
pub struct Incoming<S> {
    ctx: Context<S>,
    payload: Vec<u8>,
    headers: HeaderList,
}

impl<S: Service> Incoming<S> {
    /// The record's metadata (listener, topic, partition, offset, key, CloudEvents headers).
    pub fn meta(&self) -> &Meta {
        self.ctx.meta()
    }

    /// The context the handler produces through.
    pub fn context(&self) -> &Context<S> {
        &self.ctx
    }

    /// The record's value, undecoded.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The value of header `name` (the first, if several), `None` when absent or null.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// [`header`](Self::header) as UTF-8; `None` when it is not.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.header(name)?).ok()
    }

    /// Every header, in the record's order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }
}

impl<S: Service> fmt::Debug for Incoming<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("meta", self.meta())
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// A layered handler of service `S`, boxed: what every layer wraps and returns.
pub type Handling<S> = BoxCloneSyncService<Incoming<S>, (), BoxError>;

/// A handler's failure as a layer's error: a [`HandlerError`] (`.into()` makes one a
/// [`BoxError`]), or the record's input that did not decode.
#[derive(Debug)]
pub struct Failed(CallError);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            CallError::Decode(why) => write!(f, "the record does not decode: {why}"),
            CallError::Unavailable(why) => write!(f, "the record cannot be decoded yet: {why}"),
            CallError::Handler(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for Failed {}

impl From<HandlerError> for BoxError {
    fn from(e: HandlerError) -> Self {
        Box::new(Failed(CallError::Handler(e)))
    }
}

/// The record's failure that a layered stack's error means: a handler's own (with its kind);
/// a layer's atoll error, with its kind (as `?` in a handler gives it); any other error of a
/// layer, transient.
pub(crate) fn call_error(e: BoxError) -> CallError {
    match e.downcast::<Failed>() {
        Ok(failed) => failed.0,
        Err(other) => match other.downcast::<crate::error::Error>() {
            Ok(atoll) => CallError::Handler(HandlerError::from(*atoll)),
            Err(other) => CallError::Handler(HandlerError::transient(other)),
        },
    }
}

/// The innermost service: decodes the record and calls the handler.
struct Handler<S> {
    svc: Arc<S>,
    handler: Arc<HandlerFn<S>>,
}

impl<S> Clone for Handler<S> {
    fn clone(&self) -> Self {
        Self {
            svc: self.svc.clone(),
            handler: self.handler.clone(),
        }
    }
}

impl<S: Service> TowerService<Incoming<S>> for Handler<S> {
    type Response = ();
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: Incoming<S>) -> Self::Future {
        let (svc, handler) = (self.svc.clone(), self.handler.clone());
        Box::pin(async move {
            let Incoming { ctx, payload, .. } = incoming;
            handler(svc, ctx, &payload)
                .await
                .map_err(|e| Box::new(Failed(e)) as BoxError)
        })
    }
}

/// Runs a layered stack on one record.
pub(crate) async fn run<S: Service>(
    stack: &Handling<S>,
    ctx: Context<S>,
    payload: &[u8],
    headers: HeaderList,
) -> Result<(), CallError> {
    let incoming = Incoming {
        ctx,
        payload: payload.to_vec(),
        headers,
    };
    stack.clone().oneshot(incoming).await.map_err(call_error)
}

/// Which listeners of a service a layer wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every one.
    All,
    /// The one of this name.
    Listener(&'static str),
}

/// A layer given for service `S`, boxed.
pub(crate) struct ServiceLayer<S> {
    pub(crate) scope: Scope,
    wrap: Arc<dyn Fn(Handling<S>) -> Handling<S> + Send + Sync>,
}

/// A layer given for some service, as the app keeps it.
pub(crate) trait AnyLayer: Send + Sync {
    /// The service it is for.
    fn service(&self) -> ServiceId;
    /// The one listener it wraps; `None`: every one.
    fn listener(&self) -> Option<&'static str>;
    /// Itself, to be downcast to its service's [`ServiceLayer`].
    fn as_any(&self) -> &dyn Any;
}

impl<S: Service> AnyLayer for ServiceLayer<S> {
    fn service(&self) -> ServiceId {
        S::ID
    }

    fn listener(&self) -> Option<&'static str> {
        match self.scope {
            Scope::All => None,
            Scope::Listener(name) => Some(name),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A tower layer that can wrap service `S`'s handlers: its service takes [`Incoming`] records,
/// answers `()` or a [`BoxError`], and is cheap to clone and shared across tasks. Every such
/// layer is one (`tower::timeout::TimeoutLayer`, [`from_fn`]'s, a company's own).
pub trait HandlerLayer<S>: Send + Sync + 'static {
    /// `inner` wrapped in this layer, boxed.
    fn wrap(&self, inner: Handling<S>) -> Handling<S>;
}

impl<S, L> HandlerLayer<S> for L
where
    S: Service,
    L: Layer<Handling<S>> + Send + Sync + 'static,
    L::Service:
        TowerService<Incoming<S>, Response = (), Error = BoxError> + Clone + Send + Sync + 'static,
    <L::Service as TowerService<Incoming<S>>>::Future: Send + 'static,
{
    fn wrap(&self, inner: Handling<S>) -> Handling<S> {
        BoxCloneSyncService::new(self.layer(inner))
    }
}

impl<S: Service> ServiceLayer<S> {
    /// `layer` for the listeners of `S` in `scope`.
    pub(crate) fn new(scope: Scope, layer: impl HandlerLayer<S>) -> Self {
        Self {
            scope,
            wrap: Arc::new(move |inner| layer.wrap(inner)),
        }
    }
}

/// `handler` of `listener`, wrapped in the `layers` (of `S`, in the order given) whose scope
/// takes it, the first outermost; `None` when none does.
pub(crate) fn stack<S: Service>(
    svc: Arc<S>,
    handler: Arc<HandlerFn<S>>,
    listener: &'static str,
    layers: &[&ServiceLayer<S>],
) -> Option<Handling<S>> {
    let mine: Vec<_> = layers
        .iter()
        .filter(|l| l.scope == Scope::All || l.scope == Scope::Listener(listener))
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut stack = BoxCloneSyncService::new(Handler { svc, handler });
    for layer in mine.into_iter().rev() {
        stack = (layer.wrap)(stack);
    }
    Some(stack)
}

/// A layer from an async function of the record and the rest of the stack, as
/// `axum::middleware::from_fn` makes one:
///
/// ```
/// use atoll::layer::{from_fn, Incoming, Next};
/// use atoll::{BoxError, HandlerError, Service};
///
/// /// Commands from anyone but the orders service are dead-lettered, unhandled.
/// async fn orders_only<S: Service>(record: Incoming<S>, next: Next<S>) -> Result<(), BoxError> {
///     if record.meta().source.as_deref() != Some("acme.shop.orders") {
///         return Err(HandlerError::permanent("not sent by acme.shop.orders").into());
///     }
///     next.run(record).await
/// }
/// # fn f<S: Service>() { let _ = from_fn(orders_only::<S>); }
/// ```
pub fn from_fn<F>(f: F) -> FromFn<F> {
    FromFn { f: Arc::new(f) }
}

/// The layer [`from_fn`] makes.
pub struct FromFn<F> {
    f: Arc<F>,
}

impl<F> Clone for FromFn<F> {
    fn clone(&self) -> Self {
        Self { f: self.f.clone() }
    }
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

impl<F, S> Layer<Handling<S>> for FromFn<F> {
    type Service = FromFnService<F, S>;

    fn layer(&self, inner: Handling<S>) -> Self::Service {
        FromFnService {
            f: self.f.clone(),
            inner,
        }
    }
}

/// The rest of the stack, for a [`from_fn`] layer to hand the record on to.
pub struct Next<S> {
    inner: Handling<S>,
}

impl<S: Service> Next<S> {
    /// Hands `record` to the rest of the stack, and at last to the handler.
    pub async fn run(self, record: Incoming<S>) -> Result<(), BoxError> {
        self.inner.oneshot(record).await
    }
}

impl<S> fmt::Debug for Next<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").finish_non_exhaustive()
    }
}

/// The service of a [`from_fn`] layer.
pub struct FromFnService<F, S> {
    f: Arc<F>,
    inner: Handling<S>,
}

impl<F, S> fmt::Debug for FromFnService<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFnService").finish_non_exhaustive()
    }
}

impl<F, S> Clone for FromFnService<F, S> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<F, Fut, S> TowerService<Incoming<S>> for FromFnService<F, S>
where
    S: Service,
    F: Fn(Incoming<S>, Next<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    type Response = ();
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, record: Incoming<S>) -> Self::Future {
        let next = Next {
            inner: self.inner.clone(),
        };
        Box::pin((self.f)(record, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a stack's error comes back as: `decode`, or a handler failure and whether it is
    /// permanent.
    fn as_failure(e: BoxError) -> (&'static str, bool) {
        match call_error(e) {
            CallError::Decode(_) => ("decode", true),
            CallError::Unavailable(_) => ("unavailable", false),
            CallError::Handler(h) => ("handler", h.is_permanent()),
        }
    }

    #[test]
    fn a_layers_error_keeps_the_kind_it_was_given() {
        let cases: Vec<(BoxError, (&str, bool))> = vec![
            (HandlerError::permanent("refused").into(), ("handler", true)),
            (HandlerError::transient("later").into(), ("handler", false)),
            (
                Box::new(Failed(CallError::Decode("not JSON".into()))),
                ("decode", true),
            ),
            (
                Box::new(Failed(CallError::Unavailable("registry".into()))),
                ("unavailable", false),
            ),
            (
                Box::new(crate::error::Error::Config("bad".into())),
                ("handler", true),
            ),
            (
                Box::new(std::io::Error::other("elapsed")),
                ("handler", false),
            ),
        ];
        for (error, want) in cases {
            let shown = error.to_string();
            assert_eq!(as_failure(error), want, "{shown}");
        }
    }
}
