//! The process: services, their listeners, the shared producer, and the broker they use.

pub(crate) mod broker;
mod control;
pub(crate) mod shutdown;
pub(crate) mod status;
mod tiers;
pub(crate) mod wait;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::config::client::{ClientHooks, Clients, TokenProvider};
use crate::config::kafka::{client_config, principal, set_default};
use crate::config::oidc::OidcTokens;
use crate::config::TokenSource;

use crate::app::broker::{create_topics_with, EmbeddedBroker};
use crate::codec::registry::DevRegistry;
use crate::codec::Codec;
use crate::config::listener::{names_listener, MAX_RETRY_TIERS};
use crate::config::listener::{
    DeliveryMode, ListenerConfig, ListenerSettings, OrderingMode, RetryMode,
};
use crate::config::{Config, Registry};
use crate::consume::consumer;
use crate::consume::consumer::{Assignment, ListenerThread};
use crate::consume::env::{Counters, Group, Io, ListenerEnv, Mode, Setup};
use crate::consume::holds::Holds;
use crate::consume::routing::{Inbox, Routes};
use crate::contract::codec::CodecKind;
use crate::contract::retry_topic::Tier;
use crate::contract::service::{add_retry_tiers, owned_topics, Service, TopicSpec};
use crate::contract::topic::ServiceId;
use crate::error::{Error, Result};
use crate::handler::context::Client;
use crate::handler::delivery::{Delivery, Outboxed};
use crate::handler::hooks::HookRuntime;
use crate::handler::layer::{AnyLayer, HandlerLayer, Scope, ServiceLayer};
use crate::handler::listener::{all_listeners, is_inbox, Calls, Handlers, Listener};
use crate::handler::transaction::StoreTx;
use crate::ops::health::Health;
use crate::ops::http::{Endpoints, Server};
use crate::ops::metrics::Metrics;
use crate::ops::stats::ListenerStats;
use crate::produce::{Events, ProduceMetrics, Producer};
use crate::store::driver::Driver;
use crate::store::view;
use crate::store::{Store, StoreSlot, Watch};
use atoll_naming::check_table;

/// What the runtime needs to start a service's listeners.
struct StartEnv<'a> {
    clients: &'a Clients,
    producer: &'a Producer,
    codec: &'a Arc<Codec>,
    process: &'a str,
    config: &'a Config,
    stop: &'a CancellationToken,
    runtime: &'a tokio::runtime::Handle,
    metrics: &'a Metrics,
    health: &'a Health,
    store: Option<&'a Store>,
    /// The operator's holds on partitions, which the listeners obey.
    holds: &'a Arc<Holds>,
    /// The layers given for the services' handlers, in the order given.
    layers: &'a [Arc<dyn AnyLayer>],
    /// The retry tiers found on the broker, by service: their records are read even when no
    /// listener's ladder has them any more.
    retry_tiers: &'a BTreeMap<ServiceId, BTreeSet<u64>>,
}

trait ErasedService: Send {
    fn id(&self) -> ServiceId;
    fn codec(&self) -> CodecKind;
    /// The topics it owns or consumes, with the retry tiers of its listeners' ladders as
    /// `config` resolves them.
    fn topics(&self, config: &Config) -> Vec<TopicSpec>;
    /// The retry delays its listeners use together, as `config` resolves their settings;
    /// `Err` when a listener's settings cannot work, or past [`MAX_RETRY_TIERS`].
    fn retry_delays(&self, config: &Config) -> Result<BTreeSet<u64>>;
    /// Starts the service's listeners, adding their threads to `threads` as they start: on
    /// an error, those already started are there for the caller to stop and join.
    fn start(&self, env: &StartEnv<'_>, threads: &mut Vec<ListenerThread>) -> Result<()>;
    fn listener_names(&self) -> Vec<&'static str>;
    /// Whether any listener handles its records in a database transaction.
    fn transactional(&self) -> bool;
    /// The views its listeners build: group, topic, tables.
    fn views(&self) -> Result<Vec<ViewDecl>>;
}

/// A listener that builds a view: its consumer group, its topic and the view's tables.
struct ViewDecl {
    group: String,
    topic: String,
    tables: &'static [&'static str],
}

struct Registered<S>(Arc<S>);

/// What every listener of one service shares.
struct Shared {
    routes: Arc<Routes>,
    /// `ce_source` of what the service produces.
    source: Arc<str>,
    /// The service's codec.
    codec: Arc<Codec>,
    /// The process's clients, named after the process and the service.
    clients: Clients,
}

/// The process's clients as service `S`'s: the process name leads the client id, and so the
/// member id the range assignor orders members by (a restarted process gets the same
/// partitions back); a configured process name is the static member id.
fn service_clients<S: Service>(env: &StartEnv<'_>) -> Clients {
    let service = &env.config.service;
    env.clients.with(|c| {
        c.set("client.id", format!("{}-{}", env.process, S::ID));
        if let (Some(name), true) = (&service.process_name, service.static_membership) {
            c.set("group.instance.id", name);
        }
    })
}

/// Checks `listeners` (distinct names, valid groups, what each takes) and resolves their
/// settings; the routes between them (inboxes, the retry topics' readers). `on_broker` are
/// the retry tiers of the service found on the broker: read with those of the ladders.
fn routes_and_configs<S: Service>(
    listeners: &[Listener<S>],
    config: &Config,
    on_broker: &BTreeSet<u64>,
) -> Result<(Routes, Vec<ListenerConfig>)> {
    let mut routes = Routes::default();
    let mut configs = Vec::with_capacity(listeners.len());
    for (i, l) in listeners.iter().enumerate() {
        if listeners[..i].iter().any(|o| o.name() == l.name()) {
            return Err(Error::Declaration(format!(
                "service `{}` declares listener `{}` twice",
                S::ID,
                l.name()
            )));
        }
        l.group_id()?;
        l.declaration().map_err(|why| {
            Error::Declaration(format!(
                "listener `{}` of `{}` cannot take what it takes: {why}",
                l.name(),
                S::ID
            ))
        })?;
        if is_inbox::<S>(l.topic()) {
            let inbox = routes
                .inboxes
                .entry(l.topic().clone())
                .or_insert_with(|| Inbox {
                    types: HashSet::new(),
                    designated: l.name(),
                });
            inbox.types.extend(l.ce_types());
        }
        let resolved = listener_config(config, l.name(), l.settings())?;
        check_modes(l, &resolved)?;
        check_group_protocol(l.name(), &resolved, config)?;
        if resolved.retry == RetryMode::NonBlocking {
            routes.retry_designated.get_or_insert(l.name());
            routes.retry_readers.insert(l.name());
        }
        configs.push(resolved);
    }
    let ladders = retry_delays(S::ID, &configs)?;
    let strays: Vec<u64> = on_broker.difference(&ladders).copied().collect();
    if !strays.is_empty() {
        tracing::info!(
            service = %S::ID,
            delays_ms = ?strays,
            "retry tiers in no listener's ladder are read for the records waiting there; delete them once their lag is 0"
        );
    }
    routes.tiers = ladders.into_iter().chain(strays).collect();
    // Someone reads the retry topic even when no listener uses it any more: records left
    // there by a listener since set to `strict`, or renamed, are dead-lettered.
    if routes.retry_designated.is_none() {
        routes.retry_designated = listeners.first().map(Listener::name);
    }
    Ok((routes, configs))
}

/// The retry delays (ms) the `non_blocking` listeners among `configs` use together, one tier
/// each; `Err` past [`MAX_RETRY_TIERS`].
fn retry_delays(service: ServiceId, configs: &[ListenerConfig]) -> Result<BTreeSet<u64>> {
    let delays: BTreeSet<u64> = configs
        .iter()
        .filter(|c| c.retry == RetryMode::NonBlocking)
        .flat_map(ListenerConfig::retry_ladder)
        .collect();
    if delays.len() > MAX_RETRY_TIERS {
        return Err(Error::Config(format!(
            "the listeners of `{service}` use {} retry delays together ({delays:?} ms), more \
             than {MAX_RETRY_TIERS}: each is a topic and a consumer per non_blocking listener; \
             share delays between listeners (longer delays: ctx.schedule)",
            delays.len()
        )));
    }
    Ok(delays)
}

/// `Err` naming the property when `kafka.properties` sets one that listener `name`'s group
/// protocol does not take: librdkafka would refuse to create its consumer, with a message that
/// names neither the listener nor the setting that chose the protocol.
fn check_group_protocol(name: &str, listener: &ListenerConfig, config: &Config) -> Result<()> {
    let protocol = listener.group_protocol;
    match protocol
        .refuses()
        .iter()
        .find(|p| config.kafka.properties.contains_key(**p))
    {
        Some(property) => Err(Error::Config(format!(
            "listener `{name}` uses the `{}` group protocol (group_protocol), which takes no \
             `{property}`: the broker's group settings decide it; remove it from \
             kafka.properties, or keep the listener on `classic`",
            protocol.property()
        ))),
        None => Ok(()),
    }
}

/// `Err` when `l`'s modes cannot work together: a saga retries in order; exactly once
/// neither goes through the retry topic nor runs in the store's transaction.
fn check_modes<S: Service>(l: &Listener<S>, config: &ListenerConfig) -> Result<()> {
    if l.hooks().is_some() && config.retry == RetryMode::NonBlocking {
        return Err(Error::Config(format!(
            "listener `{}` runs a saga, whose inputs are handled in order: its retry mode must be `strict`",
            l.name()
        )));
    }
    if l.calls() == Calls::Batch {
        check_set(l, config)?;
    }
    if config.delivery != DeliveryMode::ExactlyOnce {
        return Ok(());
    }
    let why = if config.retry == RetryMode::NonBlocking {
        "its retry mode is `non_blocking`: a record sent to the retry topic and then handled again after an aborted transaction would be there twice, and so would its outputs; use `strict`"
    } else if l.is_transactional() {
        "its handler takes `Tx`: the store's transaction and outbox already make its effects happen once; drop one of the two"
    } else {
        return Ok(());
    };
    Err(Error::Config(format!(
        "listener `{}` cannot be `exactly_once`: {why}",
        l.name()
    )))
}

/// `Err` when set-based listener `l` would never be given more than one record a call: its
/// records come in batches of a partition, one after another, with `partition` ordering only.
fn check_set<S: Service>(l: &Listener<S>, config: &ListenerConfig) -> Result<()> {
    if config.ordering == OrderingMode::Partition {
        return Ok(());
    }
    Err(Error::Config(format!(
        "listener `{}` takes a `Batch`, whose records come in batches of a partition, one after another: its ordering must be `partition`",
        l.name()
    )))
}

impl<S: Handlers> Registered<S> {
    /// Starts `listener`'s consumers: on its topic, and on the retry topic when it reads it.
    fn spawn_listener(
        &self,
        env: &StartEnv<'_>,
        shared: &Shared,
        listener: Listener<S>,
        config: ListenerConfig,
        threads: &mut Vec<ListenerThread>,
    ) -> Result<()> {
        if let Some(hooks) = listener.hooks() {
            hooks.started(HookRuntime {
                producer: env.producer.clone(),
                clients: Some(env.clients.clone()),
                source: shared.source.clone(),
                runtime: env.runtime.clone(),
                stop: env.stop.clone(),
                saga: env.config.saga.clone(),
                sagas_live: env.metrics.sagas_live(S::ID, listener.name()),
            });
        }
        let metrics = env
            .metrics
            .listener(S::ID, listener.name(), &listener.group_id()?);
        let permits = crate::consume::lanes::Permits::new(config.max_in_flight);
        let delivery = delivery_of(&listener, &config, env)?;
        let mut modes = vec![(Mode::Main, listener.topic().clone())];
        if shared.routes.retry_designated == Some(listener.name())
            || config.retry == RetryMode::NonBlocking
        {
            let tiers = shared.routes.tiers.iter().map(|ms| Tier::Ms(*ms));
            for tier in std::iter::once(Tier::Legacy).chain(tiers) {
                modes.push((Mode::Retry(tier), tier.topic(S::ID)));
            }
        }
        for (mode, topic) in modes {
            let suffix = match mode {
                Mode::Main => String::new(),
                Mode::Retry(tier) => format!(" ({})", tier.name()),
            };
            let health = env
                .health
                .consumer(format!("{}/{}{suffix}", S::ID, listener.name()));
            let lenv = Arc::new(ListenerEnv {
                svc: self.0.clone(),
                listener: listener.clone(),
                setup: Setup {
                    config: config.clone(),
                    topic,
                    group: Group::new(listener.group_id()?, mode),
                    routes: shared.routes.clone(),
                    source: shared.source.clone(),
                    process: env.process.to_owned(),
                },
                io: Io {
                    producer: env.producer.clone(),
                    codec: shared.codec.clone(),
                    clients: shared.clients.clone(),
                    delivery: delivery.clone(),
                    stop: env.stop.clone(),
                    holds: env.holds.clone(),
                },
                counters: Counters {
                    finished: Default::default(),
                    metrics: metrics.clone(),
                    permits: permits.clone(),
                    health: health.clone(),
                    retry_groups: Default::default(),
                },
            });
            threads.push(consumer::spawn(lenv, env.runtime.clone(), health)?);
        }
        Ok(())
    }
}

impl<S: Handlers> ErasedService for Registered<S> {
    fn id(&self) -> ServiceId {
        S::ID
    }

    fn codec(&self) -> CodecKind {
        S::CODEC
    }

    fn topics(&self, config: &Config) -> Vec<TopicSpec> {
        let mut topics = owned_topics::<S>();
        for l in all_listeners::<S>() {
            if !topics.iter().any(|t| &t.name == l.topic()) {
                topics.push(TopicSpec::plain(l.topic().clone(), l.partitions()));
            }
        }
        // Settings that cannot work are refused at start, before any topic is made.
        let delays = self.retry_delays(config).unwrap_or_else(|e| {
            tracing::warn!(service = %S::ID, error = %e, "its retry tiers are left out of its topics");
            BTreeSet::new()
        });
        add_retry_tiers(&mut topics, S::ID, delays);
        topics
    }

    fn retry_delays(&self, config: &Config) -> Result<BTreeSet<u64>> {
        let configs = all_listeners::<S>()
            .iter()
            .map(|l| listener_config(config, l.name(), l.settings()))
            .collect::<Result<Vec<_>>>()?;
        retry_delays(S::ID, &configs)
    }

    fn start(&self, env: &StartEnv<'_>, threads: &mut Vec<ListenerThread>) -> Result<()> {
        let layers: Vec<&ServiceLayer<S>> = env
            .layers
            .iter()
            .filter_map(|l| l.as_any().downcast_ref())
            .collect();
        let listeners = all_listeners::<S>()
            .into_iter()
            .map(|l| l.with_layers(self.0.clone(), &layers))
            .collect::<Result<Vec<_>, String>>()
            .map_err(Error::Declaration)?;
        let on_broker = env.retry_tiers.get(&S::ID).cloned().unwrap_or_default();
        let (routes, configs) = routes_and_configs(&listeners, env.config, &on_broker)?;
        let shared = Shared {
            routes: Arc::new(routes),
            source: S::ID.to_string().into(),
            codec: Arc::new(
                env.codec
                    .producing(env.config.service.codec.unwrap_or(S::CODEC))?,
            ),
            clients: service_clients::<S>(env),
        };
        for (listener, config) in listeners.into_iter().zip(configs) {
            self.spawn_listener(env, &shared, listener, config, threads)?;
        }
        Ok(())
    }

    fn listener_names(&self) -> Vec<&'static str> {
        all_listeners::<S>().iter().map(Listener::name).collect()
    }

    fn transactional(&self) -> bool {
        all_listeners::<S>().iter().any(Listener::is_transactional)
    }

    fn views(&self) -> Result<Vec<ViewDecl>> {
        let mut views = Vec::new();
        for l in all_listeners::<S>() {
            if l.view_tables().is_empty() {
                continue;
            }
            let fail = |why: String| {
                Error::Declaration(format!(
                    "listener `{}` of `{}` builds a view: {why}",
                    l.name(),
                    S::ID
                ))
            };
            if !l.is_transactional() {
                return Err(fail(
                    "its handler must take `Tx`, so that the view's rows and the record's inbox row commit together".into(),
                ));
            }
            if let Some(why) = l.view_tables().iter().find_map(|t| check_table(t).err()) {
                return Err(fail(why));
            }
            views.push(ViewDecl {
                group: l.group_id()?,
                topic: l.topic().to_string(),
                tables: l.view_tables(),
            });
        }
        Ok(views)
    }
}

/// Checks that no migration version is in two sets, and lets each set ignore the rows of
/// migrations it does not know in the history: another set's, of this process or of another
/// service sharing the database.
fn distinct_migrations(sets: &mut [sqlx::migrate::Migrator]) -> Result<()> {
    let mut seen = BTreeMap::new();
    for (i, set) in sets.iter().enumerate() {
        for m in set.iter() {
            match seen.insert(m.version, (i, m.description.clone())) {
                Some((set, first)) if set != i => {
                    return Err(Error::Declaration(format!(
                        "migration {} (`{}`) and migration {} (`{first}`) of another set share a version: number each set's migrations apart",
                        m.version, m.description, m.version
                    )));
                }
                _ => {}
            }
        }
    }
    for set in sets {
        set.set_ignore_missing(true);
    }
    Ok(())
}

/// How `listener`'s outputs leave: through the store when its handler takes `Tx`, else as its
/// `delivery` setting says.
fn delivery_of<S: Service>(
    listener: &Listener<S>,
    config: &ListenerConfig,
    env: &StartEnv<'_>,
) -> Result<Delivery> {
    if !listener.is_transactional() {
        return Ok(match config.delivery {
            DeliveryMode::AtLeastOnce => Delivery::AtLeastOnce,
            DeliveryMode::ExactlyOnce => Delivery::ExactlyOnce,
        });
    }
    let store = env.store.cloned().ok_or_else(|| {
        Error::Config(format!(
            "listener `{}` takes `Tx`, and the process has no store",
            listener.name()
        ))
    })?;
    let driver = listener.driver().unwrap_or(Driver::Any);
    let outbox = Outboxed::new::<S>(store, env.producer.clone(), driver)
        .map_err(|why| Error::Config(format!("listener `{}`: {why}", listener.name())))?;
    let outbox = match listener.view_tables() {
        [] => outbox,
        _ => outbox.for_view(),
    };
    Ok(Delivery::Transactional {
        group: listener.group_id()?,
        outbox: Arc::new(outbox),
    })
}

fn listener_config(config: &Config, name: &str, code: &ListenerSettings) -> Result<ListenerConfig> {
    let mut resolved = config.listener.merged(code);
    for (key, over) in &config.listeners {
        if names_listener(key, name) {
            resolved = resolved.merged(over);
        }
    }
    resolved
        .check(&format!("listener `{name}`"))
        .map_err(Error::Config)?;
    Ok(resolved)
}

/// An atoll process: register services, then [`run`](App::run) or [`start`](App::start).
///
/// ```no_run
/// # use atoll::{event_service, handlers, App};
/// # #[event_service(company = "acme", namespace = "shop", name = "orders")]
/// # struct Orders;
/// # #[handlers] impl Orders {}
/// # async fn f() -> atoll::Result<()> {
/// App::from_env()?.service(Orders).run().await
/// # }
/// ```
#[must_use]
pub struct App {
    config: Config,
    services: Vec<Box<dyn ErasedService>>,
    extra_topics: Vec<TopicSpec>,
    migrations: Vec<sqlx::migrate::Migrator>,
    routes: Option<axum::Router>,
    tokens: Option<Arc<dyn TokenProvider>>,
    layers: Vec<Arc<dyn AnyLayer>>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<ServiceId> = self.services.iter().map(|s| s.id()).collect();
        f.debug_struct("App")
            .field("config", &self.config)
            .field("services", &ids)
            .finish()
    }
}

impl App {
    /// An app with this configuration.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            services: Vec::new(),
            extra_topics: Vec::new(),
            migrations: Vec::new(),
            routes: None,
            tokens: None,
            layers: Vec::new(),
        }
    }

    /// Gives every Kafka client of the process its OAUTHBEARER tokens from `provider`, an
    /// async function returning a token and its expiry (a company IdP, AWS MSK IAM): it is
    /// called before the first login and again before each token expires (when 80 % of its
    /// lifetime has passed). Needed with `kafka.security.sasl.mechanism = "OAUTHBEARER"`
    /// unless `kafka.security.sasl.oidc` is set (see `docs/security.md`).
    ///
    /// ```no_run
    /// # async fn idp() -> Result<(String, std::time::SystemTime), atoll::BoxError> { todo!() }
    /// use atoll::config::OAuthToken;
    /// # fn f(app: atoll::App) -> atoll::App {
    /// app.oauth_token_provider(|| async {
    ///     let (jwt, expires_at) = idp().await?;
    ///     Ok(OAuthToken::new(jwt, "orders", expires_at))
    /// })
    /// # }
    /// ```
    pub fn oauth_token_provider(mut self, provider: impl TokenProvider) -> Self {
        self.tokens = Some(Arc::new(provider));
        self
    }

    /// An app configured from `atoll.toml` and `ATOLL_*` (see [`Config::load`]).
    pub fn from_env() -> Result<Self> {
        Ok(Self::new(Config::load()?))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Registers a service.
    pub fn service<S: Handlers>(mut self, service: S) -> Self {
        self.services.push(Box::new(Registered(Arc::new(service))));
        self
    }

    /// Wraps every handler of service `S` (each of its listeners' calls, one record each) in
    /// `layer`, a [tower] layer: an authorisation check, a tenant scope, a timeout (see
    /// [`crate::layer`]). Layers given first are outermost, and a service's layers wrap in the
    /// order given whether for the service or one listener. A listener that takes a `Batch`
    /// cannot be wrapped: name the others with [`listener_layer`](Self::listener_layer).
    ///
    /// ```no_run
    /// # use atoll::{event_service, handlers, App};
    /// # #[event_service(company = "acme", namespace = "shop", name = "payments")]
    /// # struct Payments;
    /// # #[handlers] impl Payments {}
    /// use std::time::Duration;
    /// # fn f(app: App) -> App {
    /// app.service(Payments)
    ///     .layer::<Payments, _>(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
    /// # }
    /// ```
    pub fn layer<S, L>(mut self, layer: L) -> Self
    where
        S: Handlers,
        L: HandlerLayer<S>,
    {
        let layer = ServiceLayer::<S>::new(Scope::All, layer);
        self.layers.push(Arc::new(layer));
        self
    }

    /// Wraps the handler of service `S`'s listener `listener` in `layer` (see
    /// [`layer`](Self::layer)); a start naming no listener of `S` fails.
    pub fn listener_layer<S, L>(mut self, listener: &'static str, layer: L) -> Self
    where
        S: Handlers,
        L: HandlerLayer<S>,
    {
        let layer = ServiceLayer::<S>::new(Scope::Listener(listener), layer);
        self.layers.push(Arc::new(layer));
        self
    }

    /// Runs the application's migrations (`sqlx::migrate!("./migrations")`) on the store at
    /// start, after atoll's own tables; a failing migration stops the start naming it.
    ///
    /// Call it once per set: each service of a process may bring its own. Sets that share a
    /// database must number their migrations apart (say 1000s for one service, 2000s for
    /// another): each set ignores the rows of migrations it does not know in the history, so
    /// services sharing a database, in one process or several, migrate side by side.
    pub fn migrations(mut self, migrator: sqlx::migrate::Migrator) -> Self {
        self.migrations.push(migrator);
        self
    }

    /// Serves `router`'s routes on `http.addr` beside the health and metrics endpoints, e.g. a
    /// query endpoint over a view. A route takes the service's [`Store`] as an extractor; it
    /// answers 503 until the store is open. Without `http.addr` they are not served.
    pub fn routes(mut self, router: axum::Router) -> Self {
        self.routes = Some(match self.routes.take() {
            Some(routes) => routes.merge(router),
            None => router,
        });
        self
    }

    /// Also creates these topics at start (e.g. every topic of a system, for a driver).
    pub fn topics(mut self, topics: impl IntoIterator<Item = TopicSpec>) -> Self {
        self.extra_topics.extend(topics);
        self
    }

    /// Every topic the registered services own or consume, and the extra ones, by name.
    pub fn declared_topics(&self) -> Vec<TopicSpec> {
        let mut by_name = BTreeMap::new();
        let all = self
            .services
            .iter()
            .flat_map(|s| s.topics(&self.config))
            .chain(self.extra_topics.clone());
        for t in all {
            by_name.entry(t.name.clone()).or_insert(t);
        }
        by_name.into_values().collect()
    }

    /// The service ids, once checked: none registered twice, and every `listeners.<name>` of
    /// the configuration names a listener of the process.
    fn checked_services(&self) -> Result<Vec<ServiceId>> {
        let mut ids: Vec<ServiceId> = self.services.iter().map(|s| s.id()).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Declaration(format!(
                "service `{}` is registered twice",
                w[0]
            )));
        }
        let names: Vec<&str> = self
            .services
            .iter()
            .flat_map(|s| s.listener_names())
            .collect();
        self.check_layers()?;
        for s in &self.services {
            s.retry_delays(&self.config)?;
        }
        if let Some(key) = self
            .config
            .listeners
            .keys()
            .find(|k| !names.iter().any(|n| names_listener(k, n)))
        {
            return Err(Error::Config(format!(
                "listeners.{key} names no listener of this process; its listeners are: {}",
                names.join(", ")
            )));
        }
        Ok(ids)
    }

    /// `Err` when a layer is for a service this app does not register, or names a listener
    /// its service does not have.
    fn check_layers(&self) -> Result<()> {
        for layer in &self.layers {
            let Some(service) = self.services.iter().find(|s| s.id() == layer.service()) else {
                return Err(Error::Declaration(format!(
                    "a layer is given for service `{}`, which this app does not register",
                    layer.service()
                )));
            };
            let names = service.listener_names();
            if let Some(name) = layer.listener().filter(|n| !names.contains(n)) {
                return Err(Error::Declaration(format!(
                    "a layer is given for listener `{name}` of `{}`, which has none of that name; its listeners are: {}",
                    layer.service(),
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The views every service's listeners build.
    fn all_views(&self) -> Result<Vec<(ServiceId, Vec<ViewDecl>)>> {
        self.services
            .iter()
            .map(|s| Ok((s.id(), s.views()?)))
            .collect()
    }

    /// Creates the declared topics that are missing: on the embedded broker always, on a
    /// cluster when `kafka.create_topics` says so (waiting, unready, while it cannot).
    async fn create_topics(
        &self,
        embedded: Option<&EmbeddedBroker>,
        clients: &Clients,
        health: &Health,
    ) -> Result<()> {
        let topics = self.declared_topics();
        match embedded {
            Some(broker) => topics.iter().try_for_each(|t| broker.create_topic(t)),
            None if self.config.kafka.create_topics => {
                create_topics_with(clients, &topics, health).await
            }
            None => Ok(()),
        }
    }

    /// The services' store, when a listener is transactional or the app has migrations.
    async fn store(
        &self,
        producer: &Producer,
        watch: Watch,
        stop: &CancellationToken,
        views: &[(ServiceId, Vec<ViewDecl>)],
    ) -> Result<Option<Store>> {
        let wants_store =
            !self.migrations.is_empty() || self.services.iter().any(|s| s.transactional());
        match wants_store {
            true => self
                .open_store(producer, watch, stop, views)
                .await
                .map(Some),
            false => Ok(None),
        }
    }

    /// Serves health, metrics and the app's routes on `http.addr`, if set.
    async fn serve(&mut self, endpoints: Endpoints, store: &StoreSlot) -> Result<Option<Server>> {
        let Some(addr) = self.config.http.addr else {
            return Ok(None);
        };
        let routes = self
            .routes
            .take()
            .map(|r| r.layer(axum::Extension(store.clone())));
        Server::endpoints(addr, &self.config.http, endpoints, routes)
            .await
            .map(Some)
    }

    /// Starts every service's listeners; on an error, whatever started stops first.
    async fn start_services(&self, env: &StartEnv<'_>) -> Result<Vec<ListenerThread>> {
        let mut threads = Vec::new();
        for s in &self.services {
            if let Err(e) = s.start(env, &mut threads) {
                env.stop.cancel();
                join_all(threads).await;
                return Err(e);
            }
        }
        Ok(threads)
    }

    /// The configured cluster, or the embedded broker without one.
    fn broker(&self) -> Result<(Option<EmbeddedBroker>, String)> {
        Ok(match &self.config.kafka.bootstrap_servers {
            Some(b) => (None, b.clone()),
            None => {
                let broker = EmbeddedBroker::start()?;
                let b = broker.bootstrap_servers().to_owned();
                tracing::info!(
                    bootstrap = b,
                    "no kafka.bootstrap_servers: started the embedded broker"
                );
                (Some(broker), b)
            }
        })
    }

    /// Every Kafka client's settings and hooks: the security section, and where OAUTHBEARER
    /// tokens come from (the app's provider or atoll's OpenID Connect client).
    fn clients(
        &self,
        bootstrap: &str,
        runtime: &tokio::runtime::Handle,
        health: &Arc<Health>,
    ) -> Result<Clients> {
        let config = client_config(&self.config, bootstrap)?;
        let security = self
            .config
            .kafka
            .security_properties()
            .map_err(Error::Config)?;
        let tokens: Option<Arc<dyn TokenProvider>> = match (security.tokens(), &self.tokens) {
            (TokenSource::Oidc(_), Some(_)) => {
                return Err(Error::Config(
                    "kafka.security.sasl.oidc is set and the app gives a token provider \
                     (App::oauth_token_provider): keep one"
                        .into(),
                ))
            }
            (TokenSource::Oidc(login), None) => Some(Arc::new(
                OidcTokens::new(login.clone()).map_err(Error::Config)?,
            )),
            (_, app) => app.clone(),
        };
        if needs_token_provider(&config) && self.config.kafka.create_topics {
            return Err(Error::Config(
                "kafka.create_topics with OAUTHBEARER: the admin client that creates topics \
                 cannot be given tokens (rust-rdkafka serves no token request of it); set \
                 kafka.create_topics = false and create the topics beforehand (`atoll apply` \
                 with another login, or the platform's tooling)"
                    .into(),
            ));
        }
        if needs_token_provider(&config) && tokens.is_none() {
            return Err(Error::Config(
                "kafka.security.sasl.mechanism OAUTHBEARER takes its tokens from \
                 App::oauth_token_provider, which this app does not give; or set \
                 kafka.security.sasl.oidc for atoll to fetch them from an OpenID Connect \
                 provider"
                    .into(),
            ));
        }
        let tokens = tokens.map(|p| (p, runtime.clone()));
        let health = health.clone();
        let hooks = ClientHooks::new(
            principal(&self.config),
            bootstrap.to_owned(),
            tokens,
            move |access| health.access(access),
        );
        Ok(Clients::new(config, hooks))
    }

    /// The configured schema registry, or, on the embedded broker, a development registry when
    /// a service produces Avro.
    async fn registry(&self, embedded: bool) -> Result<(Option<Registry>, Option<DevRegistry>)> {
        let configured = &self.config.schema_registry;
        let avro = |kind: CodecKind| kind == CodecKind::Avro;
        let wants_avro = match self.config.service.codec {
            Some(kind) => avro(kind),
            None => self.services.iter().any(|s| avro(s.codec())),
        };
        let dev_registry = match (&configured.url, wants_avro, embedded) {
            (None, true, true) => Some(DevRegistry::start().await?),
            _ => None,
        };
        let registry = match &dev_registry {
            Some(dev) => Some(Registry::open(dev.url())),
            None => configured.resolve().map_err(Error::Config)?,
        };
        Ok((registry, dev_registry))
    }

    /// `service.process_name`, else `<host>-<pid>`.
    fn process_name(&self) -> String {
        let configured = self.config.service.process_name.clone();
        configured.unwrap_or_else(default_process_name)
    }

    /// Connects (or starts the embedded broker), creates missing topics and starts every
    /// listener. Must be called within a multi-threaded Tokio runtime.
    pub async fn start(mut self) -> Result<Running> {
        let started_ms = crate::ops::status::now_ms();
        let ids = self.checked_services()?;
        let views = self.all_views()?;
        distinct_migrations(&mut self.migrations)?;
        let (embedded, bootstrap) = self.broker()?;
        let process = self.process_name();
        let health = Arc::new(Health::new(self.config.http.stalled_after()));
        let runtime = tokio::runtime::Handle::current();
        let clients = self.clients(&bootstrap, &runtime, &health)?;
        let metrics = Arc::new(Metrics::default());
        let producer = producer(&clients, &process, &health, metrics.produce())?;
        // Probes answer from here on: live, and not ready until every listener joined.
        let store_slot = StoreSlot::default();
        let endpoints = Endpoints {
            health: health.clone(),
            metrics: metrics.clone(),
            producer: producer.clone(),
        };
        let http = self.serve(endpoints, &store_slot).await?;
        self.create_topics(embedded.as_ref(), &clients, &health)
            .await?;
        let (registry, dev_registry) = self.registry(embedded.is_some()).await?;
        // The process's codec: clients produce with it; each service with its own choice.
        let codec = Arc::new(Codec::new(
            self.config.service.codec.unwrap_or_default(),
            registry.as_ref(),
            &self.config.schema_registry,
        )?);
        let stop = CancellationToken::new();
        if let (Some(registry), None) = (&registry, &dev_registry) {
            tokio::spawn(wait::watch_registry(
                registry.clone(),
                health.clone(),
                stop.clone(),
            ));
        }
        let store = self
            .store(&producer, Watch::new(&health, &metrics), &stop, &views)
            .await?;
        store_slot.set(store.as_ref());
        let holds = control::start(&clients, &ids, stop.clone()).await?;
        let retry_tiers = tiers::on_broker(&clients, &ids).await;
        let env = StartEnv {
            clients: &clients,
            producer: &producer,
            codec: &codec,
            process: &process,
            config: &self.config,
            stop: &stop,
            runtime: &runtime,
            metrics: &metrics,
            health: &health,
            store: store.as_ref(),
            holds: &holds,
            layers: &self.layers,
            retry_tiers: &retry_tiers,
        };
        let threads = self.start_services(&env).await?;
        let status = status::Publisher::spawn(&env, metrics.clone(), ids.clone(), started_ms);
        health.started();
        let services: Vec<String> = ids.iter().map(ToString::to_string).collect();
        tracing::info!(process, services = services.join(", "), "atoll started");
        Ok(Running {
            stop,
            threads,
            producer,
            codec,
            registry_url: registry.map(|r| r.url().to_owned()),
            _dev_registry: dev_registry,
            process,
            bootstrap,
            health,
            http,
            store,
            status,
            _embedded: embedded,
        })
    }

    /// Connects the store, runs atoll's and the application's migrations, and starts the
    /// outbox relay and the inbox pruning.
    async fn open_store(
        &self,
        producer: &Producer,
        watch: Watch,
        stop: &CancellationToken,
        views: &[(ServiceId, Vec<ViewDecl>)],
    ) -> Result<Store> {
        let store = Store::connect(&self.config.store).await?;
        for migrator in &self.migrations {
            store.migrate(migrator).await?;
        }
        for (service, decls) in views {
            let rows: Vec<(String, String, &[&str])> = decls
                .iter()
                .map(|v| (v.group.clone(), v.topic.clone(), v.tables))
                .collect();
            view::register(&store, &service.to_string(), &rows).await?;
        }
        tokio::spawn(crate::store::background(
            store.clone(),
            producer.clone(),
            self.config.store.inbox_retention(),
            watch,
            stop.clone(),
        ));
        Ok(store)
    }

    /// Starts, then runs until SIGTERM or Ctrl-C, then shuts down gracefully.
    ///
    /// Logs go to standard error unless the application installed a `tracing` subscriber
    /// first (see [`run_until`](Self::run_until)).
    pub async fn run(self) -> Result<()> {
        self.run_until(crate::app::shutdown::signal()).await
    }

    /// Starts, then runs until `shutdown` completes, then shuts down gracefully.
    ///
    /// Unless the application installed a `tracing` subscriber first, this installs atoll's
    /// ([`telemetry::init`](crate::telemetry::init) with `telemetry.*`: the `RUST_LOG` filter,
    /// else `telemetry.log_filter`, else `info`; text, or JSON with `telemetry.log_format`),
    /// so that the start, each listener's partitions and the shutdown are logged.
    ///
    /// A shutdown during the start (which waits while the cluster cannot be reached or
    /// refuses the login) ends it where it is: nothing was consumed yet.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let _logs = self.default_logs()?;
        let mut shutdown = std::pin::pin!(shutdown);
        let running = tokio::select! {
            running = self.start() => running?,
            () = &mut shutdown => {
                tracing::info!("stopped before the start completed");
                return Ok(());
            }
        };
        shutdown.await;
        running.shutdown().await;
        Ok(())
    }

    /// Starts, runs `job` with the running process (a demo's driver, a batch), then shuts
    /// down gracefully once it returns, or on SIGTERM or Ctrl-C first; the job's error is the
    /// result. Logs as [`run_until`](Self::run_until) does.
    pub async fn run_with(self, job: impl AsyncFnOnce(&Running) -> Result<()>) -> Result<()> {
        let _logs = self.default_logs()?;
        let running = self.start().await?;
        let done = tokio::select! {
            done = job(&running) => done,
            () = crate::app::shutdown::signal() => Ok(()),
        };
        running.shutdown().await;
        done
    }

    /// atoll's logs, unless the application installed a `tracing` subscriber: named after the
    /// first registered service.
    fn default_logs(&self) -> Result<Option<crate::ops::telemetry::Telemetry>> {
        if tracing::dispatcher::has_been_set() {
            return Ok(None);
        }
        let name = self
            .services
            .first()
            .map_or_else(|| "atoll".to_owned(), |s| s.id().to_string());
        crate::ops::telemetry::init(&self.config.telemetry, &name, "info").map(Some)
    }
}

/// The process's one producer: idempotent unless the configuration asks for what idempotence
/// cannot give, lingering 5 ms, named after the process.
fn producer(
    clients: &Clients,
    process: &str,
    health: &Arc<Health>,
    metrics: Arc<ProduceMetrics>,
) -> Result<Producer> {
    let mut pconf = clients.config().clone();
    set_default(&mut pconf, "linger.ms", "5");
    // Broker reachability (and a login that works again) come from the statistics.
    set_default(&mut pconf, "statistics.interval.ms", "5000");
    // A retried batch is neither duplicated nor reordered (a pass-through property can
    // turn it off for a broker without idempotent producers). Not where the configuration
    // asks for what idempotence cannot give (`acks` 0 or 1, more than 5 requests in flight):
    // the client would refuse to start.
    let compatible = !matches!(pconf.get("acks"), Some("0" | "1"))
        && pconf
            .get("max.in.flight.requests.per.connection")
            .and_then(|n| n.parse::<u32>().ok())
            .is_none_or(|n| n <= 5);
    if compatible {
        set_default(&mut pconf, "enable.idempotence", "true");
    }
    pconf.set("client.id", format!("atoll-{process}"));
    let events = {
        let health = health.clone();
        Events::new(
            clients.hooks().clone(),
            move |why| health.fatal(why),
            metrics.clone(),
        )
    };
    let producer: FutureProducer<Events> = pconf
        .create_with_context(events)
        .map_err(|e| Error::kafka("creating the producer", e))?;
    Ok(Producer::new(producer, metrics))
}

/// The process name when `service.process_name` is not set (see [`process_name_of`]).
fn default_process_name() -> String {
    static APPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let nth = APPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    process_name_of(host_name().as_deref(), std::process::id(), nth)
}

/// The host's name: `HOSTNAME` (which containers set), else the kernel's.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// `<host>-<pid>` for the process's first app (`-<n>` added for the n-th after it), in the
/// characters a process name may have. Two processes never share one, on one host or two (an
/// exactly-once listener's `transactional.id` is made from it, and two producers with one
/// fence each other), and a container's restart keeps it (the same host name, the same pid 1),
/// so a restarted exactly-once listener fences its previous instance's open transaction at
/// once.
fn process_name_of(host: Option<&str>, pid: u32, nth: usize) -> String {
    let host: String = host
        .unwrap_or_default()
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || "._-".contains(c) => c,
            _ => '-',
        })
        .take(160)
        .collect();
    let host = match host.trim_matches('-') {
        "" => "process",
        h => h,
    };
    match nth {
        0 => format!("{host}-{pid}"),
        n => format!("{host}-{pid}-{n}"),
    }
}

/// Whether clients made from `config` log in with OAUTHBEARER tokens that the application
/// must give (not fetched by librdkafka from an OpenID Connect provider).
fn needs_token_provider(config: &rdkafka::ClientConfig) -> bool {
    let oauth = config
        .get("sasl.mechanisms")
        .or_else(|| config.get("sasl.mechanism"))
        .is_some_and(|m| m.eq_ignore_ascii_case("OAUTHBEARER"));
    oauth
        && !config
            .get("sasl.oauthbearer.method")
            .is_some_and(|m| m.eq_ignore_ascii_case("oidc"))
}

async fn join_all(threads: Vec<ListenerThread>) {
    let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(ListenerThread::join))
        .await;
}

/// A started app. Dropping it without [`shutdown`](Running::shutdown) stops the listeners
/// without waiting for them.
pub struct Running {
    stop: CancellationToken,
    threads: Vec<ListenerThread>,
    producer: Producer,
    codec: Arc<Codec>,
    registry_url: Option<String>,
    _dev_registry: Option<DevRegistry>,
    process: String,
    bootstrap: String,
    health: Arc<Health>,
    http: Option<Server>,
    store: Option<Store>,
    /// The status publisher (see [`status`]), unless `status.interval_ms` is 0.
    status: Option<tokio::task::JoinHandle<()>>,
    _embedded: Option<EmbeddedBroker>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("process", &self.process)
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The broker's `bootstrap.servers` (the embedded one's when none was configured).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Decodes a payload of `content_type` as `E`, with this process's codecs (for drivers
    /// and tools that read topics themselves).
    pub async fn decode<E: crate::contract::event::Event>(
        &self,
        content_type: Option<&str>,
        payload: &[u8],
    ) -> Result<E> {
        self.codec
            .decode(content_type, payload)
            .await
            .map_err(|e| match e {
                crate::codec::DecodeError::Bad(why) => Error::Schema(why),
                crate::codec::DecodeError::Unavailable(why) => Error::Registry(why),
            })
    }

    /// The schema registry in use (configured, or the development one), if any.
    pub fn schema_registry_url(&self) -> Option<&str> {
        self.registry_url.as_deref()
    }

    /// Where the health and metrics endpoints listen (see [`guide::operations`](crate::guide::operations)), when `http.addr`
    /// is set: the port the system chose when it asked for port 0.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(Server::addr)
    }

    /// The process name (configured, or the random one).
    pub fn process_name(&self) -> &str {
        &self.process
    }

    /// Every listener's current assignment (of its own topic, not the retry topic).
    pub fn assignments(&self) -> Vec<Assignment> {
        self.threads
            .iter()
            .filter(|t| t.is_main())
            .map(ListenerThread::assignment)
            .collect()
    }

    /// Every listener's counters.
    pub fn stats(&self) -> Vec<ListenerStats> {
        self.threads
            .iter()
            .filter(|t| t.is_main())
            .map(ListenerThread::stats)
            .collect()
    }

    /// A client that sends commands with `ce_source` `<name>`.
    pub fn client(&self, name: &str) -> Client {
        Client::new(self.producer.clone(), self.codec.clone(), name.into())
    }

    /// The services' database, when the process uses one (a transactional listener, or
    /// migrations given to [`App::migrations`]): for queries outside listeners.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Opens a transaction on the store for service `S` outside any listener (an HTTP
    /// endpoint, a scheduled job): its SQL and what it emits or sends commit together, then
    /// are published (see [`StoreTx`]).
    ///
    /// # Errors
    /// [`Error::Config`] when the process has no store; [`Error::Store`] when the database
    /// cannot be reached.
    pub async fn transaction<S: Service>(&self) -> Result<StoreTx<S>> {
        let store = self.store.as_ref().ok_or_else(|| {
            Error::Config(
                "this process has no store: it opens one for transactional listeners or `App::migrations`"
                    .into(),
            )
        })?;
        StoreTx::begin(
            store,
            self.producer.clone(),
            self.codec.clone(),
            S::ID.to_string().into(),
        )
        .await
    }

    /// Stops fetching, lets in-flight records finish (up to `listener.drain_timeout_ms`),
    /// commits, and leaves the groups (unless membership is static); then flushes the
    /// producer. `/health/ready` fails from the start of it.
    pub async fn shutdown(mut self) {
        self.health.stopping();
        self.stop.cancel();
        join_all(std::mem::take(&mut self.threads)).await;
        // Its tombstones go out before the producer's last flush.
        if let Some(status) = self.status.take() {
            let _ = status.await;
        }
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        if let Some(store) = &self.store {
            store.finish_publishing().await;
        }
        if let Some(server) = self.http.take() {
            server.stop().await;
        }
        tracing::info!("atoll stopped");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::process_name_of;

    #[test]
    fn default_process_names_are_unique_per_process_and_stable_per_container() {
        for (host, pid, nth, name) in [
            (Some("orders-7d9f8-x2k1"), 1, 0, "orders-7d9f8-x2k1-1"),
            // The same container restarted: the same name (its predecessor is fenced).
            (Some("orders-7d9f8-x2k1"), 1, 0, "orders-7d9f8-x2k1-1"),
            // Another replica, or another process on the same host: another name.
            (Some("orders-7d9f8-q9z3"), 1, 0, "orders-7d9f8-q9z3-1"),
            (Some("laptop.local"), 4242, 0, "laptop.local-4242"),
            // A second app in the same process.
            (Some("laptop.local"), 4242, 1, "laptop.local-4242-1"),
            // Characters a process name may not have become `-`.
            (Some("my host:1"), 7, 0, "my-host-1-7"),
            (None, 7, 0, "process-7"),
            (Some("--"), 7, 0, "process-7"),
        ] {
            assert_eq!(process_name_of(host, pid, nth), name);
        }
        let long = "h".repeat(500);
        assert!(process_name_of(Some(&long), u32::MAX, usize::MAX).len() <= 200);
    }
}
