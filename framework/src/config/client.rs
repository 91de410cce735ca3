//! What every Kafka client of a process shares beyond its properties ([`ClientHooks`]): where
//! its log goes, what an authentication failure does, and where OAUTHBEARER tokens come from.
//!
//! - **Logs.** librdkafka repeats a failing connection's error at every reconnect (a wrong
//!   password: every `reconnect.backoff.max.ms`, from every client of the process). Warnings
//!   and errors pass a [`LogGate`]: a line shows once per minute per distinct text (digits
//!   aside), with how many like it were held back since.
//! - **Authentication.** A failed TLS handshake or SASL login is logged as
//!   `authentication failed for <principal> at <bootstrap>: <the broker's reason>` and reported
//!   (to the process's health: not ready) until a client connects again. Nothing is consumed or
//!   committed meanwhile: no connection, no fetch. No panic, no exit: librdkafka keeps trying,
//!   so a rotated secret or a mended ACL heals the process without a restart.
//! - **OAUTHBEARER.** librdkafka asks for a token before the first login and again when 80 % of
//!   the token's lifetime has passed; every atoll client answers from one [`TokenProvider`]
//!   (an async function run on the process's runtime): the application's (a company IdP, AWS
//!   MSK IAM), or atoll's OpenID Connect client with `kafka.security.sasl.oidc`. A token less
//!   than half through its life is shared by all the process's clients. A client that makes a
//!   blocking call before it is first polled polls once first, so that its first token is
//!   asked for; the admin client is never polled (rust-rdkafka), so topics cannot be created
//!   with OAUTHBEARER.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use super::secret::Secret;
use crate::error::BoxError;

/// An OAUTHBEARER token, as a [`TokenProvider`] gives it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OAuthToken {
    /// The token (a JWT, for most providers).
    pub token: Secret,
    /// The principal the token stands for (shown in messages).
    pub principal: String,
    /// When the token stops being valid; it is asked for again before.
    pub expires_at: SystemTime,
}

impl OAuthToken {
    /// A token for `principal`, valid until `expires_at`.
    pub fn new(
        token: impl Into<Secret>,
        principal: impl Into<String>,
        expires_at: SystemTime,
    ) -> Self {
        Self {
            token: token.into(),
            principal: principal.into(),
            expires_at,
        }
    }
}

/// Gives the process's Kafka clients their OAUTHBEARER tokens: any
/// `Fn() -> impl Future<Output = Result<OAuthToken, BoxError>>`, registered with
/// [`App::oauth_token_provider`](crate::App::oauth_token_provider).
pub trait TokenProvider: Send + Sync + 'static {
    /// A fresh token.
    fn token(&self) -> BoxFuture<'static, Result<OAuthToken, BoxError>>;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<OAuthToken, BoxError>> + Send + 'static,
{
    fn token(&self) -> BoxFuture<'static, Result<OAuthToken, BoxError>> {
        Box::pin(self())
    }
}

/// How long a client waits for the token provider before its login fails for now (librdkafka
/// asks again).
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the process's clients can log in, as the hooks report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// A login or TLS handshake failed: the message says for whom, where and why.
    Refused(String),
    /// A client is connected to a broker (logged in, where a login is asked for).
    Granted,
}

/// The part of every Kafka client's context that is the same for all (see the
/// [module documentation](self)). Cheap to clone.
#[derive(Clone)]
pub(crate) struct ClientHooks(Arc<Inner>);

struct Inner {
    principal: String,
    bootstrap: String,
    tokens: Option<(Arc<dyn TokenProvider>, tokio::runtime::Handle)>,
    /// The last token the provider gave, and when.
    token: Mutex<Option<(OAuthToken, SystemTime)>>,
    report: Box<dyn Fn(Access) + Send + Sync>,
    gate: Mutex<LogGate>,
}

impl std::fmt::Debug for ClientHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHooks")
            .field("principal", &self.0.principal)
            .field("bootstrap", &self.0.bootstrap)
            .field("tokens", &self.0.tokens.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientHooks {
    /// Hooks for clients logging in as `principal` at `bootstrap`, reporting their access to
    /// `report`, with OAUTHBEARER tokens from `tokens` (run on `runtime`).
    pub(crate) fn new(
        principal: String,
        bootstrap: String,
        tokens: Option<(Arc<dyn TokenProvider>, tokio::runtime::Handle)>,
        report: impl Fn(Access) + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(Inner {
            principal,
            bootstrap,
            tokens,
            token: Mutex::new(None),
            report: Box::new(report),
            gate: Mutex::new(LogGate::new(Duration::from_secs(60), 512)),
        }))
    }

    /// Hooks that report to nobody and have no token provider: for tools and helpers.
    pub(crate) fn detached(principal: String, bootstrap: String) -> Self {
        Self::new(principal, bootstrap, None, |_| {})
    }

    /// Forwards a librdkafka log line of `client` to `tracing` (target `librdkafka`), warnings
    /// and errors through the gate.
    pub(crate) fn log(&self, client: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel::*;
        let gated = matches!(level, Emerg | Alert | Critical | Error | Warning);
        let suppressed = match gated {
            true => match self.admit(&format!("{facility} {message}")) {
                Some(n) => n,
                None => return,
            },
            false => 0,
        };
        match level {
            Emerg | Alert | Critical | Error => {
                tracing::error!(target: "librdkafka", client, facility, suppressed, "{message}")
            }
            Warning => {
                tracing::warn!(target: "librdkafka", client, facility, suppressed, "{message}")
            }
            Notice | Info => tracing::info!(target: "librdkafka", client, facility, "{message}"),
            Debug => tracing::debug!(target: "librdkafka", client, facility, "{message}"),
        }
    }

    /// Handles an error librdkafka reported for `client`: an authentication failure is logged
    /// as such and reported; the end of a partition is no error; anything else is logged as a
    /// warning (both through the gate).
    pub(crate) fn error(&self, client: &str, error: &KafkaError, reason: &str) {
        // The end of a partition, for a reader that asked to be told (`enable.partition.eof`):
        // news, not an error.
        let eof = Some(rdkafka::error::RDKafkaErrorCode::PartitionEOF);
        if matches!(error, KafkaError::PartitionEOF(_)) || error.rdkafka_error_code() == eof {
            return;
        }
        if is_authentication(error, reason) {
            let message = format!(
                "authentication failed for {} at {}: {}",
                self.0.principal,
                self.0.bootstrap,
                broker_reason(reason)
            );
            if let Some(suppressed) = self.admit(&message) {
                tracing::error!(client, suppressed, "{message}");
            }
            (self.0.report)(Access::Refused(message));
        } else if let Some(suppressed) = self.admit(&format!("{error} {reason}")) {
            tracing::warn!(client, %error, reason, suppressed, "kafka client error");
        }
    }

    /// A client of the process is connected to a broker (from its statistics).
    pub(crate) fn connected(&self) {
        (self.0.report)(Access::Granted);
    }

    /// An OAUTHBEARER token from the application's provider, in librdkafka's terms.
    pub(crate) fn token(&self) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        let Some((provider, runtime)) = &self.0.tokens else {
            return Err("OAUTHBEARER needs a token: register a token provider \
                        (App::oauth_token_provider) or set kafka.security.sasl.oidc"
                .into());
        };
        let token = match self.shared_token() {
            Some(token) => token,
            None => match ask(provider.as_ref(), runtime) {
                Ok(token) => {
                    let fetched = SystemTime::now();
                    *self.0.token.lock() = Some((token.clone(), fetched));
                    tracing::debug!(principal = token.principal, "OAUTHBEARER token refreshed");
                    token
                }
                Err(e) => {
                    if let Some(suppressed) = self.admit(&e) {
                        tracing::error!(suppressed, "{e}");
                    }
                    return Err(e.into());
                }
            },
        };
        let lifetime_ms = token
            .expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Ok(rdkafka::client::OAuthToken {
            token: token.token.expose().to_owned(),
            principal_name: token.principal,
            lifetime_ms,
        })
    }

    /// The token another client of the process got, while less than half its life has
    /// passed: every client asks at 80 % of its token's life, and one answer serves them all.
    fn shared_token(&self) -> Option<OAuthToken> {
        let shared = self.0.token.lock();
        let (token, fetched) = shared.as_ref()?;
        fresh(*fetched, token.expires_at, SystemTime::now()).then(|| token.clone())
    }

    /// `Some(lines held back since)` when a line keyed `key` may show now.
    fn admit(&self, key: &str) -> Option<u64> {
        let mut gate = self.0.gate.lock();
        match gate.admit(key, Instant::now()) {
            Gate::Show { suppressed } => Some(suppressed),
            Gate::Hide => None,
        }
    }
}

/// The process's Kafka client configuration and its [`ClientHooks`]: every client of the
/// process is made from it, so that each one logs, reports and gets tokens alike.
#[derive(Clone)]
pub(crate) struct Clients {
    config: ClientConfig,
    hooks: ClientHooks,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: std::collections::BTreeMap<&str, &str> = self
            .config
            .config_map()
            .into_iter()
            .map(|(k, v)| match super::is_secret_property(k) {
                true => (k, super::REDACTED),
                false => (k, v),
            })
            .collect();
        f.debug_struct("Clients")
            .field("config", &shown)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl Clients {
    /// Clients configured by `config`, with `hooks`.
    pub(crate) fn new(config: ClientConfig, hooks: ClientHooks) -> Self {
        Self { config, hooks }
    }

    /// The shared configuration.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The shared hooks.
    pub(crate) fn hooks(&self) -> &ClientHooks {
        &self.hooks
    }

    /// The same clients with `change` made to the configuration.
    pub(crate) fn with(&self, change: impl FnOnce(&mut ClientConfig)) -> Self {
        let mut config = self.config.clone();
        change(&mut config);
        Self {
            config,
            hooks: self.hooks.clone(),
        }
    }

    /// A client named `name` (in logs) with no callbacks of its own: a consumer, producer or
    /// admin client of `rdkafka` with the [`Hooked`] context.
    pub(crate) fn create<T: FromClientConfigAndContext<Hooked>>(
        &self,
        name: &str,
    ) -> KafkaResult<T> {
        T::from_config_and_context(
            &self.config,
            Hooked {
                name: name.to_owned(),
                hooks: self.hooks.clone(),
            },
        )
    }
}

/// The context of a client with no callbacks of its own: its log, errors and tokens go
/// through the process's [`ClientHooks`].
pub(crate) struct Hooked {
    name: String,
    hooks: ClientHooks,
}

impl ClientContext for Hooked {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.hooks.log(&self.name, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.hooks.error(&self.name, &error, reason);
    }

    fn stats(&self, _: Statistics) {}

    fn generate_oauth_token(
        &self,
        _: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.hooks.token()
    }
}

impl ConsumerContext for Hooked {}

impl ProducerContext for Hooked {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Whether a client's statistics show a broker connection up (logged in where a login is
/// asked for); the internal and logical brokers librdkafka lists are not connections.
pub(crate) fn connected(statistics: &Statistics) -> bool {
    statistics
        .brokers
        .values()
        .any(|b| b.state == "UP" && !matches!(b.source.as_str(), "internal" | "logical"))
}

/// A token from `provider`, run on `runtime`, waiting at most [`TOKEN_TIMEOUT`] (then the ask
/// is dropped); `Err` saying why not.
fn ask(
    provider: &dyn TokenProvider,
    runtime: &tokio::runtime::Handle,
) -> Result<OAuthToken, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let asked = provider.token();
    let task = runtime.spawn(async move {
        let _ = tx.send(asked.await);
    });
    let answer = rx.recv_timeout(TOKEN_TIMEOUT);
    task.abort();
    match answer {
        Ok(answer) => answer.map_err(|e| format!("the OAUTHBEARER token provider failed: {e}")),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "the OAUTHBEARER token provider gave no token within {} s",
            TOKEN_TIMEOUT.as_secs()
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(
            "the OAUTHBEARER token provider's task ended without a token (the runtime is stopping)"
                .to_owned(),
        ),
    }
}

/// Whether a token fetched at `fetched`, expiring at `expires`, has less than half its life
/// behind it at `now`.
fn fresh(fetched: SystemTime, expires: SystemTime, now: SystemTime) -> bool {
    let life = expires.duration_since(fetched).unwrap_or_default();
    let lived = now.duration_since(fetched).unwrap_or_default();
    lived < life / 2
}

/// Whether `error` says a TLS handshake or a SASL login failed: librdkafka's authentication
/// and SSL errors, and a transport failure that OpenSSL explains (the broker's TLS alert, e.g.
/// `certificate required` when mutual TLS finds no client certificate).
fn is_authentication(error: &KafkaError, reason: &str) -> bool {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SSL
            | RDKafkaErrorCode::SaslAuthenticationFailed,
        ) => true,
        // Not a TLS connection merely closed ("unexpected eof"): a handshake or an alert.
        Some(RDKafkaErrorCode::BrokerTransportFailure) => {
            reason.contains("SSL routines")
                && ["alert", "certificate", "handshake"]
                    .iter()
                    .any(|w| reason.contains(w))
        }
        _ => false,
    }
}

/// librdkafka's reason without the broker it names first (`sasl_ssl://host:port/1: `).
fn broker_reason(reason: &str) -> &str {
    match reason.split_once(": ") {
        Some((broker, why)) if broker.contains("://") && !broker.contains(' ') => why,
        _ => reason,
    }
}

/// Whether a line shows: once per window per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Show it, saying how many like it were held back since it last showed.
    Show {
        /// Lines held back.
        suppressed: u64,
    },
    /// Hold it back.
    Hide,
}

/// Rate-limits log lines: a line shows when no line like it (the same text, digits aside)
/// showed within the window; the others are counted. Holds at most `cap` keys, forgetting the
/// longest-shown first.
#[derive(Debug)]
pub(crate) struct LogGate {
    window: Duration,
    cap: usize,
    /// When each key last showed, and how many were held back since.
    seen: HashMap<String, (Instant, u64)>,
}

impl LogGate {
    /// A gate showing each line once per `window`, remembering up to `cap` lines.
    pub(crate) fn new(window: Duration, cap: usize) -> Self {
        Self {
            window,
            cap,
            seen: HashMap::new(),
        }
    }

    /// Whether the line `text` shows at `now`. Lines alike but for their digits, or for
    /// librdkafka's trailing `(after 3ms in state …, 2 identical error(s) suppressed)`, are
    /// one line.
    pub(crate) fn admit(&mut self, text: &str, now: Instant) -> Gate {
        let text = text.split(" (after ").next().unwrap_or(text);
        let mut key = String::with_capacity(text.len());
        for c in text.chars() {
            match c.is_ascii_digit() {
                true if key.ends_with('#') => {}
                true => key.push('#'),
                false => key.push(c),
            }
        }
        if let Some((shown, held)) = self.seen.get_mut(&key) {
            if now.saturating_duration_since(*shown) < self.window {
                *held += 1;
                return Gate::Hide;
            }
            let suppressed = std::mem::take(held);
            *shown = now;
            return Gate::Show { suppressed };
        }
        if self.seen.len() >= self.cap {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, (shown, _))| *shown)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.seen.remove(&k);
            }
        }
        self.seen.insert(key, (now, 0));
        Gate::Show { suppressed: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_once_per_window_with_what_it_held_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut gate = LogGate::new(s(60), 2);
        let a = "Connect to ipv4#127.0.0.1:9092 failed (after 3ms in state CONNECT)";
        let a_again = "Connect to ipv4#127.0.0.1:9092 failed (after 12ms in state CONNECT, \
                       1 identical error(s) suppressed)";
        let cases: &[(&str, u64, Gate)] = &[
            (a, 0, Gate::Show { suppressed: 0 }),
            (a_again, 1, Gate::Hide),
            (a, 59, Gate::Hide),
            ("another line", 59, Gate::Show { suppressed: 0 }),
            (a, 60, Gate::Show { suppressed: 2 }),
            (a, 61, Gate::Hide),
            // A third key: the longest-shown ("another line") is forgotten.
            ("a third", 62, Gate::Show { suppressed: 0 }),
            ("another line", 63, Gate::Show { suppressed: 0 }),
        ];
        for (i, (text, at, want)) in cases.iter().enumerate() {
            assert_eq!(
                gate.admit(text, t0 + s(*at)),
                *want,
                "step {i}: {text} at {at} s"
            );
        }
    }

    #[test]
    fn authentication_failures_name_who_where_and_why() {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let hooks = {
            let reports = reports.clone();
            ClientHooks::new("alice".into(), "127.0.0.1:9092".into(), None, move |a| {
                reports.lock().push(a)
            })
        };
        let error = KafkaError::Global(RDKafkaErrorCode::Authentication);
        let reason = "sasl_plaintext://127.0.0.1:9092/bootstrap: SASL authentication error: \
                      SASL SCRAM authentication failed: broker responded with invalid-proof";
        hooks.error("producer", &error, reason);
        hooks.error(
            "producer",
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "down",
        );
        let refused = "ssl://127.0.0.1:9093/bootstrap: Connect to ipv4#127.0.0.1:9093 failed: \
                       Connection refused";
        let transport = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        hooks.error("producer", &transport, refused);
        let alert = "ssl://127.0.0.1:9093/bootstrap: Receive failed: error:0A00045C:SSL \
                     routines::tlsv13 alert certificate required: SSL alert number 116";
        hooks.error("producer", &transport, alert);
        let closed = "ssl://127.0.0.1:9093/1: Disconnected: error:0A000126:SSL \
                      routines::unexpected eof while reading";
        hooks.error("producer", &transport, closed);
        hooks.connected();
        assert_eq!(
            *reports.lock(),
            [
                Access::Refused(
                    "authentication failed for alice at 127.0.0.1:9092: SASL authentication \
                     error: SASL SCRAM authentication failed: broker responded with invalid-proof"
                        .into()
                ),
                Access::Refused(
                    "authentication failed for alice at 127.0.0.1:9092: Receive failed: \
                     error:0A00045C:SSL routines::tlsv13 alert certificate required: SSL alert \
                     number 116"
                        .into()
                ),
                Access::Granted
            ]
        );
        assert_eq!(broker_reason("no prefix"), "no prefix");
        let provider = "Failed to acquire SASL OAUTHBEARER token: the token endpoint \
                        http://idp/token answered 401: {}";
        assert_eq!(broker_reason(provider), provider);
    }

    #[test]
    fn a_token_is_shared_while_less_than_half_its_life_has_passed() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        let cases = [
            (s(0), s(100), true),
            (s(49), s(100), true),
            (s(50), s(100), false),
            (s(80), s(100), false),
            (s(1), s(0), false),
        ];
        for (lived, life, want) in cases {
            assert_eq!(
                fresh(t0, t0 + life, t0 + lived),
                want,
                "{lived:?} of {life:?}"
            );
        }
        assert!(
            fresh(t0, t0 + s(10), t0 - s(5)),
            "a clock set back counts no time lived"
        );
    }

    #[test]
    fn tokens_come_from_the_provider_on_the_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let expires = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let provider: Arc<dyn TokenProvider> = Arc::new(move || async move {
            Ok::<_, BoxError>(OAuthToken::new("jwt", "svc-orders", expires))
        });
        let hooks = ClientHooks::new(
            "p".into(),
            "b".into(),
            Some((provider, runtime.handle().clone())),
            |_| {},
        );
        let t = hooks.token().unwrap();
        assert_eq!(
            (t.token.as_str(), t.principal_name.as_str(), t.lifetime_ms),
            ("jwt", "svc-orders", 2_000_000_000_000)
        );
        let failing: Arc<dyn TokenProvider> =
            Arc::new(|| async { Err::<OAuthToken, BoxError>("the IdP said no".into()) });
        let hooks = ClientHooks::new(
            "p".into(),
            "b".into(),
            Some((failing, runtime.handle().clone())),
            |_| {},
        );
        let e = hooks.token().err().unwrap().to_string();
        assert!(e.contains("token provider failed: the IdP said no"), "{e}");
        let e = ClientHooks::detached("p".into(), "b".into())
            .token()
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("App::oauth_token_provider"), "{e}");
    }
}
