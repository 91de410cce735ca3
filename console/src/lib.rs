//! # atoll console
//!
//! The operator console of atoll services: one web page of every service's processes (alive
//! or stale), listeners (lag in records and seconds with its trend, throughput, p99 handling
//! time, failures, dead letters, live sagas), each listener's partitions with their owners,
//! committed and end offsets and blocked or paused state, its last failures with their cause,
//! the store's outbox and inbox, and each service's dead letters. For whoever gives its token,
//! it redrives dead letters to their original topic ([`dlq`] is the engine, shared with
//! `atoll dlq`) and holds a listener's partition, or lifts the hold (a record on the service's
//! `private.control` topic, see `atoll::contract::control`).
//!
//! It reads nothing but the cluster: every process publishes its status on its service's
//! `private.status` topic (see `atoll::contract::status`), and the console reads those
//! topics. `atoll console` serves it; a service serves it inside its own HTTP server by
//! nesting [`Console::router`] into [`atoll::App::routes`]:
//!
//! ```no_run
//! # fn f(app: atoll::App, client: rdkafka::ClientConfig) -> Result<atoll::App, atoll_console::StartError> {
//! let console = atoll_console::Console::from_config(&client, "/console", app.config())?;
//! let app = app.routes(axum::Router::new().nest("/console", console.router()));
//! # Ok(app) }
//! ```
//!
//! Built on axum (the routes), maud (pages rendered on the server, every value escaped), htmx
//! (each page refreshes its content in place) and uPlot (the charts): no front-end build, and
//! every figure is in the page's HTML, readable by a script or a test.

mod dead_letters;
pub mod dlq;
mod fleet;
pub mod groups;
mod guard;
mod holds;
mod offsets;
mod pages;
mod sagas;
mod server;
mod source;
mod times;
mod topology;

use std::sync::Arc;

use parking_lot::Mutex;

pub use fleet::{Fleet, ListenerView, Liveness, Point, ProcessView, ServiceView, Trend, HISTORY};
pub use source::{Source, SourceError, DISCOVER_EVERY};

/// A running console: the reader of the status topics, what it read, and the connection its
/// dead-letter pages use.
#[derive(Debug)]
pub struct Console {
    fleet: Arc<Mutex<Fleet>>,
    base: String,
    kafka: Arc<dlq::Kafka>,
    guard: Arc<guard::Guard>,
    redriving: Arc<tokio::sync::Mutex<()>>,
    /// Decodes Avro payloads, when a schema registry is configured.
    codec: Option<Arc<atoll::codec::Codec>>,
    _source: Source,
}

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The status reader cannot be made.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The dead-letter connection cannot be made.
    #[error(transparent)]
    Dlq(#[from] dlq::DlqError),
    /// The configuration is wrong (the token's file, the schema registry).
    #[error("{0}")]
    Config(String),
    /// The schema registry's client cannot be made.
    #[error(transparent)]
    Codec(#[from] atoll::Error),
}

impl Console {
    /// Starts reading the cluster `client` reaches (address and security, as the services
    /// have them); the pages will be served under `base` (`""` at the root, or the path the
    /// router is nested at, without a trailing `/`). With a `token` (`console.token`), its
    /// actions ask for it; without one, the console only shows.
    ///
    /// # Errors
    /// The clients cannot be made from `client`.
    pub fn start(
        client: &rdkafka::ClientConfig,
        base: &str,
        token: Option<atoll::config::Secret>,
    ) -> Result<Self, StartError> {
        let fleet = Arc::new(Mutex::new(Fleet::default()));
        let source = Source::start(client, fleet.clone())?;
        Ok(Self {
            fleet,
            base: base.trim_end_matches('/').to_owned(),
            kafka: Arc::new(dlq::Kafka::new(client)?),
            guard: Arc::new(guard::Guard::new(token)),
            redriving: Arc::default(),
            codec: None,
            _source: source,
        })
    }

    /// As [`start`](Self::start), with what `config` says: the token (`console.token` or
    /// `console.token_file`) and the schema registry (`schema_registry.*`) whose schemas decode
    /// Avro dead letters.
    ///
    /// # Errors
    /// The clients cannot be made, the token's file cannot be read, or the registry's settings
    /// are wrong.
    pub fn from_config(
        client: &rdkafka::ClientConfig,
        base: &str,
        config: &atoll::config::Config,
    ) -> Result<Self, StartError> {
        let token = config.console.token().map_err(StartError::Config)?;
        let mut console = Self::start(client, base, token)?;
        let registry = config
            .schema_registry
            .resolve()
            .map_err(StartError::Config)?;
        if let Some(registry) = registry {
            let json = atoll::codec::CodecKind::Json;
            let codec = atoll::codec::Codec::new(json, Some(&registry), &config.schema_registry)?;
            console.codec = Some(Arc::new(codec));
        }
        Ok(console)
    }

    /// The pages' routes, to serve at the base path given to [`start`](Self::start). The
    /// console reads the cluster as long as this `Console` lives.
    pub fn router(&self) -> axum::Router {
        server::routes(server::Shared {
            fleet: self.fleet.clone(),
            base: self.base.clone(),
            kafka: self.kafka.clone(),
            guard: self.guard.clone(),
            redriving: self.redriving.clone(),
            codec: self.codec.clone(),
        })
    }

    /// Whether its actions are open (to whoever gives its token); else it only shows.
    pub fn acts(&self) -> bool {
        self.guard.acts()
    }

    /// Every service as the console sees it now.
    pub fn services(&self) -> Vec<ServiceView> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.fleet.lock().services(now)
    }
}
