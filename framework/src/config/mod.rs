//! Configuration (see `docs/configuration.md`): defaults ← `atoll.toml` (path from `ATOLL_CONFIG`) ←
//! environment `ATOLL_*`, nested with `__`.
//!
//! ```text
//! ATOLL_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092      # unset: embedded broker
//! ATOLL_KAFKA__PROPERTIES__SECURITY_PROTOCOL=sasl_ssl  # any librdkafka property; `_` → `.`
//! ATOLL_SERVICE__PROCESS_NAME=orders-0               # static group membership
//! ATOLL_LISTENER__HANDLER_TIMEOUT_MS=30000
//! ```
//!
//! librdkafka property names contain dots, which environment variable names cannot; in the
//! environment write them with `_` (`SESSION_TIMEOUT_MS` → `session.timeout.ms`). In
//! `atoll.toml` write them as they are, quoted: `"session.timeout.ms" = 6000`. The one
//! librdkafka property with an underscore in its name, `log_level`, is kept as it is.

pub(crate) mod client;
pub(crate) mod kafka;
pub(crate) mod listener;
pub(crate) mod oidc;
pub(crate) mod registry;
pub(crate) mod secret;
pub(crate) mod security;
pub(crate) mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
pub use client::{OAuthToken, TokenProvider};
pub use listener::{
    DeliveryMode, GroupProtocol, ListenerConfig, ListenerSettings, OrderingMode, RetryMode,
    StartFrom,
};
pub use registry::{Registry, RegistryAnswer, RegistryAuth, SchemaRegistryConfig};
pub use secret::{redact_url, Secret, REDACTED};
pub use security::{
    KafkaSecurity, OidcConfig, OidcLogin, SaslConfig, SaslMechanism, SecurityProtocol, TokenSource,
};
pub use store::StoreConfig;

/// The environment variable naming the config file.
pub const CONFIG_PATH_VAR: &str = "ATOLL_CONFIG";

/// The whole configuration of an atoll process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Broker connection.
    pub kafka: KafkaConfig,
    /// Process identity.
    pub service: ServiceConfig,
    /// Defaults for every listener.
    pub listener: ListenerConfig,
    /// Per-listener overrides, by listener name (`_` also matches `-`).
    pub listeners: BTreeMap<String, ListenerSettings>,
    /// Schema Registry (Avro).
    pub schema_registry: SchemaRegistryConfig,
    /// HTTP endpoints (health, metrics).
    pub http: HttpConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// The services' database.
    pub store: StoreConfig,
    /// Sagas' state.
    pub saga: SagaConfig,
    /// The status record each process publishes for the operator console.
    pub status: StatusConfig,
    /// The operator console's actions.
    pub console: ConsoleConfig,
}

/// `kafka.*`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// `host:port,…`; unset starts the embedded broker.
    pub bootstrap_servers: Option<String>,
    /// TLS and SASL (see [`KafkaSecurity`] and `docs/security.md`).
    pub security: KafkaSecurity,
    /// librdkafka properties passed through to every client (timeouts, tuning, and any
    /// setting `security` has no key for). The values of secret ones (`sasl.password`,
    /// `ssl.key.password`, …) are shown and serialized as `[redacted]`.
    #[serde(
        deserialize_with = "properties",
        serialize_with = "redacted_properties"
    )]
    pub properties: BTreeMap<String, String>,
    /// Whether to create missing declared topics at start (needs the broker's permission to
    /// create topics). Default `true`; turn off where topics are provisioned by operators.
    pub create_topics: bool,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("security", &self.security)
            .field("properties", &shown_properties(&self.properties))
            .field("create_topics", &self.create_topics)
            .finish()
    }
}

/// Whether the librdkafka property `name` holds a secret (a password, a client secret, a
/// private key, the OAUTHBEARER configuration).
pub(crate) fn is_secret_property(name: &str) -> bool {
    name.contains("password")
        || name.contains("secret")
        || name.contains("passphrase")
        || name.contains("private.key")
        || matches!(name, "ssl.key.pem" | "ssl_key" | "sasl.oauthbearer.config")
}

/// `properties` with the values of secret ones replaced by `[redacted]`.
fn shown_properties(properties: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    properties
        .iter()
        .map(|(k, v)| match is_secret_property(k) {
            true => (k.as_str(), REDACTED),
            false => (k.as_str(), v.as_str()),
        })
        .collect()
}

fn redacted_properties<S: serde::Serializer>(
    properties: &BTreeMap<String, String>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    shown_properties(properties).serialize(s)
}

impl KafkaConfig {
    /// The librdkafka properties `kafka.security` stands for, its secret files read; `Err`
    /// names the key, and a property that `kafka.properties` sets too.
    pub fn security_properties(&self) -> std::result::Result<security::Resolved, String> {
        let resolved = self.security.resolve()?;
        if let Some((name, _)) = resolved
            .properties()
            .iter()
            .find(|(name, _)| self.properties.contains_key(*name))
        {
            return Err(format!(
                "kafka.properties sets `{name}`, which kafka.security sets too: keep one"
            ));
        }
        Ok(resolved)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if let Some(servers) = &self.bootstrap_servers {
            if servers.trim().is_empty() || servers.split(',').any(|s| !s.contains(':')) {
                return Err(format!(
                    "kafka.bootstrap_servers `{servers}` must be a comma-separated list of host:port"
                ));
            }
        }
        if self.properties.contains_key("group.protocol") {
            return Err(
                "kafka.properties sets group.protocol: set listener.group_protocol \
                        (`classic` or `consumer`) for every listener, or \
                        listeners.<name>.group_protocol for one, instead"
                    .into(),
            );
        }
        if self.properties.contains_key("auto.offset.reset") {
            return Err(
                "kafka.properties sets auto.offset.reset: set listener.start_from \
                        (`earliest` or `latest`) for every listener, or \
                        listeners.<name>.start_from for one, instead"
                    .into(),
            );
        }
        if self
            .properties
            .get("sasl.oauthbearer.method")
            .is_some_and(|m| m.eq_ignore_ascii_case("oidc"))
        {
            return Err(
                "kafka.properties sets sasl.oauthbearer.method = oidc, which needs \
                        librdkafka's libcurl: atoll fetches OpenID Connect tokens itself; set \
                        kafka.security.sasl.oidc (token_endpoint_url, client_id, client_secret) \
                        instead"
                    .into(),
            );
        }
        self.security_properties().map(drop)
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: None,
            security: KafkaSecurity::default(),
            properties: BTreeMap::new(),
            create_topics: true,
        }
    }
}

/// `service.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// The process name: static group membership when set; `<host name>-<pid>` and dynamic
    /// membership when not.
    pub process_name: Option<String>,
    /// Whether a configured process name becomes `group.instance.id` (static membership:
    /// a restart within `session.timeout.ms` causes no rebalance). Default `true`.
    ///
    /// Turn it off for brokers without working static membership (tansu 0.6 answers the
    /// heartbeats of static members with `UNKNOWN_MEMBER_ID`). The process name still makes
    /// the assignment stable then: it prefixes the client id, and with it the member id that
    /// the range assignor orders members by, so a restarted process gets the same partitions
    /// back after one rebalance.
    pub static_membership: bool,
    /// The codec every service of the process produces with, overriding their declarations
    /// (`#[event_service(codec = "avro")]`; JSON when neither says). Records are decoded by
    /// their `content-type`, whatever this says.
    pub codec: Option<crate::contract::codec::CodecKind>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            process_name: None,
            static_membership: true,
            codec: None,
        }
    }
}

/// `http.*`: the health and metrics endpoints (see [`guide::operations`](crate::guide::operations)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Address to serve `/health/live`, `/health/ready` and `/metrics` on; off when unset.
    pub addr: Option<SocketAddr>,
    /// `/health/live` fails once a listener's poll loop has not come round for this long
    /// (default 60,000 ms; longer than `listener.drain_timeout_ms`, which a revocation may
    /// spend inside one poll).
    pub stalled_after_ms: u64,
    /// How long a client may take to send a request's headers before its connection is
    /// closed (default 10,000 ms): a client trickling headers cannot hold connections open.
    pub header_read_timeout_ms: u64,
    /// The largest request body a route reads (default 1 MiB); larger ones are answered
    /// `413 Payload Too Large`.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: None,
            stalled_after_ms: 60_000,
            header_read_timeout_ms: 10_000,
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl HttpConfig {
    /// [`header_read_timeout_ms`](Self::header_read_timeout_ms) as a duration.
    pub fn header_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.header_read_timeout_ms)
    }

    /// [`stalled_after_ms`](Self::stalled_after_ms) as a duration.
    pub fn stalled_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.stalled_after_ms)
    }
}

/// `saga.*`: how long sagas' state is kept, and how long its restore may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SagaConfig {
    /// How long an ended (completed or failed) saga's state is kept before a tombstone removes
    /// it from `private.saga` (compaction then drops it). Until then a repeated start of the
    /// same saga is ignored, and late replies to it are recognised. Default 7 days.
    pub retention_ms: u64,
    /// How long one restore of a partition's saga state may read before it gives up for now
    /// (the partition's next record continues where it stopped; a restore never starts
    /// again from scratch). Default 60,000 ms.
    pub restore_timeout_ms: u64,
    /// How many running or compensating sagas of one saga type this process holds at most
    /// (each is held whole in memory; ended ones are held reduced and do not count). A start
    /// past the cap is dead-lettered with the cause, to be replayed once sagas ended or the cap
    /// was raised. Default 100,000.
    pub max_live: usize,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            retention_ms: 7 * 24 * 3_600_000,
            restore_timeout_ms: 60_000,
            max_live: 100_000,
        }
    }
}

/// `console.*`: what the operator console (`atoll console`, or served inside a service) lets
/// its users do. Without a token it only shows; with one, its actions (redriving dead letters)
/// ask for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsoleConfig {
    /// The token the console's actions ask for (a secret: shown and serialized as
    /// `[redacted]`).
    pub token: Option<Secret>,
    /// A file holding the token instead (a mounted secret).
    pub token_file: Option<PathBuf>,
}

impl ConsoleConfig {
    /// The token, from `token` or `token_file`; `None` when neither is set.
    ///
    /// # Errors
    /// Both are set, or the file cannot be read or is empty (the message names the file, never
    /// what it holds).
    pub fn token(&self) -> std::result::Result<Option<Secret>, String> {
        let token = Secret::resolve(
            "console.token",
            self.token.as_ref(),
            self.token_file.as_deref(),
        )?;
        match token {
            // An empty token (a template's unset variable, say) would let anyone act.
            Some(t) if t.expose().trim().is_empty() => Err(
                "console.token is empty: give a token, or unset it to keep the console read-only"
                    .into(),
            ),
            token => Ok(token),
        }
    }
}

/// `status.*`: the status record each process publishes on its services' `private.status`
/// topics (see [`crate::contract::status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StatusConfig {
    /// How often, in milliseconds (default 5,000); `0` publishes none.
    pub interval_ms: u64,
    /// The application's build, shown with the process (its version or commit, say).
    pub build: Option<String>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            interval_ms: 5_000,
            build: None,
        }
    }
}

impl StatusConfig {
    /// How often to publish, if at all.
    pub fn interval(&self) -> Option<std::time::Duration> {
        (self.interval_ms > 0).then(|| std::time::Duration::from_millis(self.interval_ms))
    }
}

/// `telemetry.*`: how [`telemetry::init`](crate::ops::telemetry::init) sets up logs and traces.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TelemetryConfig {
    /// Log lines as human-readable text (default) or one JSON object per line.
    pub log_format: LogFormat,
    /// Which logs to write, as a `tracing` filter (`info`, `atoll=debug,warn`, …); `RUST_LOG`
    /// wins when set; unset: the application's default.
    pub log_filter: Option<String>,
    /// An OpenTelemetry collector's OTLP/HTTP endpoint (`https://collector:4318`): traces are
    /// exported to its `/v1/traces`, and `traceparent` is written on every record produced.
    /// Unset: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended), as OpenTelemetry SDKs read them;
    /// off when none is set. Shown and serialized without a password it may hold.
    #[serde(serialize_with = "secret::serialize_shown_url")]
    pub otlp_endpoint: Option<String>,
    /// PEM file of the certificate authority that signed the collector's certificate (default:
    /// the system's trusted authorities).
    pub otlp_ca_file: Option<PathBuf>,
    /// Headers sent with every export, e.g. `authorization = "Bearer …"`; their values are
    /// secrets. `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k=v`) is read too, and wins for a header
    /// both name (as the OpenTelemetry exporter merges them).
    pub otlp_headers: BTreeMap<String, Secret>,
}

impl fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field(
                "otlp_endpoint",
                &self.otlp_endpoint.as_deref().map(redact_url),
            )
            .field("otlp_ca_file", &self.otlp_ca_file)
            .field("otlp_headers", &self.otlp_headers)
            .finish()
    }
}

/// `telemetry.log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, with the fields of its spans.
    Json,
}

/// Accepts strings, numbers and booleans as property values; maps `_` in keys to `.`.
fn properties<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            };
            (property_name(&k), v)
        })
        .collect())
}

/// One figment error as "key `a.b`: what is wrong (from where)".
fn describe(e: &figment::Error) -> String {
    let key = e.path.join(".").to_lowercase();
    let from = e
        .metadata
        .as_ref()
        .map(|m| format!(" (from {})", m.name))
        .unwrap_or_default();
    if key.is_empty() {
        format!("{}{from}", e.kind)
    } else {
        format!("key `{key}`: {}{from}", e.kind)
    }
}

/// librdkafka properties whose names hold an underscore (kept as they are).
const UNDERSCORED: &[&str] = &["log_level"];

/// `session_timeout_ms` → `session.timeout.ms`; names in [`UNDERSCORED`] stay as they are.
pub(crate) fn property_name(key: &str) -> String {
    let key = key.to_lowercase();
    if UNDERSCORED.contains(&key.as_str()) {
        key
    } else {
        key.replace('_', ".")
    }
}

/// The prefix, after `ATOLL_`, of the variables atoll's test harness and tools read
/// (`ATOLL_TEST_BOOTSTRAP`, `ATOLL_TEST_NODE_MODULES`, …): never configuration, so that a service
/// started beside them does not take them for unknown keys.
pub(crate) const TEST_VARS: &str = "TEST_";

/// Whether the `ATOLL_` variable `key` (the rest of its name) is not configuration: the
/// configuration file's path, or a test setting.
fn is_reserved(key: &str) -> bool {
    key.eq_ignore_ascii_case("config")
        || key
            .get(..TEST_VARS.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(TEST_VARS))
}

impl Config {
    /// Loads defaults ← `atoll.toml` (or the file named by `ATOLL_CONFIG`) ← `ATOLL_*`.
    pub fn load() -> Result<Self> {
        let path = std::env::var_os(CONFIG_PATH_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("atoll.toml"));
        if std::env::var_os(CONFIG_PATH_VAR).is_some() && !path.exists() {
            return Err(Error::Config(format!(
                "{CONFIG_PATH_VAR} names `{}`, which does not exist",
                path.display()
            )));
        }
        Self::from_figment(Self::figment(&path))
    }

    /// The layered providers, for callers that add their own.
    pub fn figment(path: &std::path::Path) -> Figment {
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .merge(
                Env::prefixed("ATOLL_")
                    .filter(|key| !is_reserved(key.as_str()))
                    .split("__"),
            );
        // Secrets in the environment as they are written (see `secrets_in_env`).
        secret::secrets_in_env(std::env::vars())
            .into_iter()
            .fold(figment, |f, (key, text)| {
                f.merge(Serialized::default(&key, text))
            })
    }

    /// Extracts and checks a configuration.
    pub fn from_figment(figment: Figment) -> Result<Self> {
        let config: Config = figment.extract().map_err(|e| {
            let e = e.into_iter().map(|e| describe(&e)).collect::<Vec<_>>();
            Error::Config(e.join("; "))
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if let Some(name) = &self.service.process_name {
            let ok = !name.is_empty()
                && name.len() <= 200
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(Error::Config(format!(
                    "service.process_name `{name}` must be 1 to 200 characters of letters, digits, `.`, `_` or `-`"
                )));
            }
        }
        if self.saga.restore_timeout_ms == 0 {
            return Err(Error::Config(
                "saga.restore_timeout_ms must be above 0".to_owned(),
            ));
        }
        if self.saga.max_live == 0 {
            return Err(Error::Config("saga.max_live must be above 0".to_owned()));
        }
        if self.http.stalled_after_ms == 0 {
            return Err(Error::Config(
                "http.stalled_after_ms must be above 0".to_owned(),
            ));
        }
        if self.http.header_read_timeout_ms == 0 {
            return Err(Error::Config(
                "http.header_read_timeout_ms must be above 0".to_owned(),
            ));
        }
        if let Some(url) = &self.telemetry.otlp_endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "telemetry.otlp_endpoint `{}` must be an http:// or https:// URL (OTLP over HTTP, e.g. http://collector:4318)",
                    redact_url(url)
                )));
            }
        }
        if let Some(ca) = &self.telemetry.otlp_ca_file {
            std::fs::File::open(ca).map_err(|e| {
                Error::Config(format!(
                    "telemetry.otlp_ca_file: cannot read `{}`: {e}",
                    ca.display()
                ))
            })?;
        }
        self.kafka.check().map_err(Error::Config)?;
        self.schema_registry.resolve().map_err(Error::Config)?;
        self.store.check().map_err(Error::Config)?;
        self.listener.check("listener").map_err(Error::Config)?;
        for (name, over) in &self.listeners {
            self.listener
                .merged(over)
                .check(&format!("listeners.{name}"))
                .map_err(Error::Config)?;
        }
        Ok(())
    }
}

#[cfg(test)]
// figment's `Jail` closures must return `figment::Error`, which is large.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use std::time::Duration;

    fn load_in(jail: &Jail) -> Result<Config> {
        Config::from_figment(Config::figment(&jail.directory().join("atoll.toml")))
    }

    #[test]
    fn the_consoles_token_is_set_once_and_never_empty() {
        let mut c = ConsoleConfig::default();
        assert_eq!(c.token(), Ok(None), "read-only");
        c.token = Some(Secret::new("  "));
        let e = c.token().unwrap_err();
        assert!(e.contains("console.token is empty"), "{e}");
        c.token = Some(Secret::new("t0ken"));
        assert_eq!(c.token().unwrap().unwrap().expose(), "t0ken");
        c.token_file = Some("/nowhere/token".into());
        let e = c.token().unwrap_err();
        assert!(e.contains("both set") && !e.contains("t0ken"), "{e}");
        assert!(!format!("{c:?}").contains("t0ken"));
    }

    #[test]
    fn where_a_new_group_starts_is_a_listener_setting_not_a_raw_property() {
        let mut c = Config::default();
        c.kafka
            .properties
            .insert("auto.offset.reset".into(), "latest".into());
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("listener.start_from"), "{e}");
        let mut c = Config::default();
        c.listener.start_from = StartFrom::Latest;
        assert!(c.check().is_ok());
    }

    #[test]
    fn the_group_protocol_is_a_listener_setting_not_a_raw_property() {
        let mut c = Config::default();
        c.kafka
            .properties
            .insert("group.protocol".into(), "consumer".into());
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("listener.group_protocol"), "{e}");
        let mut c = Config::default();
        c.listener.group_protocol = GroupProtocol::Consumer;
        assert!(c.check().is_ok());
    }

    #[test]
    fn defaults_mean_embedded_broker() {
        Jail::expect_with(|jail| {
            let c = load_in(jail).unwrap();
            assert_eq!(c, Config::default());
            assert!(c.kafka.bootstrap_servers.is_none());
            Ok(())
        });
    }

    #[test]
    fn env_overrides_file_and_maps_properties() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "atoll.toml",
                r#"
                [kafka]
                bootstrap_servers = "file:9092"
                [kafka.properties]
                "security.protocol" = "ssl"
                [listener]
                handler_timeout_ms = 5000
                "#,
            )?;
            jail.set_env("ATOLL_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092");
            jail.set_env("ATOLL_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000");
            jail.set_env("ATOLL_SERVICE__PROCESS_NAME", "orders-0");
            jail.set_env("ATOLL_KAFKA__PROPERTIES__LOG_LEVEL", "7");
            let c = load_in(jail).unwrap();
            assert_eq!(c.kafka.bootstrap_servers.as_deref(), Some("127.0.0.1:9092"));
            assert_eq!(c.kafka.properties["session.timeout.ms"], "6000");
            assert_eq!(c.kafka.properties["security.protocol"], "ssl");
            assert_eq!(c.kafka.properties["log_level"], "7");
            assert_eq!(c.service.process_name.as_deref(), Some("orders-0"));
            assert_eq!(c.listener.handler_timeout(), Duration::from_secs(5));
            Ok(())
        });
    }

    #[test]
    fn test_settings_are_not_configuration() {
        Jail::expect_with(|jail| {
            // What the test harness and the tools read: never the loader's.
            jail.set_env("ATOLL_TEST_BOOTSTRAP", "127.0.0.1:9092");
            jail.set_env("ATOLL_TEST_NODE_MODULES", "/opt/node_modules");
            jail.set_env("ATOLL_TEST_CRASH_AFTER_COMMITS", "20");
            let c = load_in(jail).unwrap();
            assert_eq!(c, Config::default());
            // A near miss is still an unknown key, named.
            jail.set_env("ATOLL_TESTS", "1");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("tests"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_HTTP__ADDR", "not-an-address");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("http.addr"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_KAFKA__BOOTSTRAP_SERVER", "typo:9092");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("bootstrap_server"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_SERVICE__PROCESS_NAME", "has space");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("service.process_name"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_KAFKA__BOOTSTRAP_SERVERS", "nohostport");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("kafka.bootstrap_servers"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_TELEMETRY__OTLP_ENDPOINT", "collector:4318");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("telemetry.otlp_endpoint"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_TELEMETRY__LOG_FORMAT", "xml");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("telemetry.log_format"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_HTTP__STALLED_AFTER_MS", "0");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("http.stalled_after_ms"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_LISTENER__MAX_BUFFERED", "0");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("listener.max_buffered"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn per_listener_overrides() {
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_LISTENERS__PLACE_ORDER__MAX_ATTEMPTS", "9");
            jail.set_env("ATOLL_LISTENERS__PLACE_ORDER__RETRY", "non_blocking");
            let c = load_in(jail).unwrap();
            let over = &c.listeners["place_order"];
            assert_eq!(over.max_attempts, Some(9));
            assert_eq!(over.retry, Some(RetryMode::NonBlocking));
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env(
                "ATOLL_LISTENERS__CHARGE__RETRY_TOPIC_DELAYS_MS",
                "[500, 2000]",
            );
            let c = load_in(jail).unwrap();
            assert_eq!(
                c.listeners["charge"].retry_topic_delays_ms,
                Some(vec![500, 2_000])
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_LISTENERS__CHARGE__RETRY_TOPIC_DELAYS_MS", "[50]");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("listeners.charge.retry_topic_delays_ms"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_LISTENERS__CHARGE__BACKOFF_MS", "0");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("listeners.charge.backoff_ms"), "{e}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_LISTENERS__CHARGE__RETRY", "sometimes");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(e.contains("listeners.charge.retry"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn secrets_from_the_environment_keep_their_text_and_never_show_in_errors() {
        Jail::expect_with(|jail| {
            jail.set_env("ATOLL_STORE__PASSWORD", "007");
            jail.set_env("ATOLL_SCHEMA_REGISTRY__URL", "https://registry");
            jail.set_env("ATOLL_SCHEMA_REGISTRY__USERNAME", "key");
            jail.set_env("ATOLL_SCHEMA_REGISTRY__PASSWORD", "[12345678]");
            let c = load_in(jail).unwrap();
            assert_eq!(c.store.password.as_ref().map(Secret::expose), Some("007"));
            let shown = format!("{c:?}");
            assert!(
                !shown.contains("007") && !shown.contains("12345678"),
                "{shown}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            // A mistake elsewhere: the error names the key, not a secret.
            jail.set_env("ATOLL_STORE__PASSWORD", "12345678");
            jail.set_env("ATOLL_STORE__MAX_CONNECTIONS", "many");
            let e = load_in(jail).unwrap_err().to_string();
            assert!(
                e.contains("store.max_connections") && !e.contains("12345678"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn missing_config_file_named_by_env_is_an_error() {
        Jail::expect_with(|jail| {
            jail.set_env(CONFIG_PATH_VAR, "nope.toml");
            let e = Config::load().unwrap_err().to_string();
            assert!(e.contains("nope.toml"), "{e}");
            Ok(())
        });
    }
}
