//! `schema_registry.*`: where the Schema Registry is, and how to reach it (https with a custom
//! CA; basic auth with an API key and secret, or a bearer token).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::{redact_url, Secret};

/// `schema_registry.*`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SchemaRegistryConfig {
    /// The registry's base URL (`https://registry.example.com`). Unset with
    /// `service.codec = avro` and the embedded broker: an in-process development registry is
    /// started. Shown and serialized without a password it may hold.
    #[serde(serialize_with = "super::secret::serialize_shown_url")]
    pub url: Option<String>,
    /// Whether producers register their schemas (default `true`, for development). With
    /// `false`, producing an event whose subject is missing fails with a permanent error.
    pub auto_register: bool,
    /// How subjects are named (default `topic_record_name`).
    pub subject_strategy: crate::contract::codec::SubjectStrategy,
    /// The most bytes decoding one Avro record may allocate for one string, byte array,
    /// array or map (default 64 MiB): a record declaring more (a few bytes can declare
    /// millions of `null` items) is bad input, dead-lettered. Process-wide.
    pub max_allocation_bytes: usize,
    /// PEM file of the certificate authority that signed the registry's certificate (default:
    /// the system's trusted authorities).
    pub ca_file: Option<PathBuf>,
    /// Basic auth user (Confluent Cloud: the API key).
    pub username: Option<String>,
    /// Basic auth password (Confluent Cloud: the API secret).
    pub password: Option<Secret>,
    /// A file holding the basic auth password (instead of `password`).
    pub password_file: Option<PathBuf>,
    /// A bearer token (instead of basic auth).
    pub token: Option<Secret>,
    /// A file holding the bearer token (instead of `token`).
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("auto_register", &self.auto_register)
            .field("subject_strategy", &self.subject_strategy)
            .field("max_allocation_bytes", &self.max_allocation_bytes)
            .field("ca_file", &self.ca_file)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("token", &self.token)
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl Default for SchemaRegistryConfig {
    fn default() -> Self {
        Self {
            url: None,
            auto_register: true,
            subject_strategy: crate::contract::codec::SubjectStrategy::default(),
            max_allocation_bytes: 64 * 1024 * 1024,
            ca_file: None,
            username: None,
            password: None,
            password_file: None,
            token: None,
            token_file: None,
        }
    }
}

/// How requests to the registry prove who sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// Not at all.
    None,
    /// Basic auth.
    Basic {
        /// The user (API key).
        username: String,
        /// The password (API secret).
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

/// A registry checked and its secrets read: where it is, which CA to trust, how to log in.
/// Shown without a password its URL may hold.
#[derive(Clone, PartialEq, Eq)]
pub struct Registry {
    url: String,
    ca_file: Option<PathBuf>,
    auth: RegistryAuth,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.shown())
            .field("ca_file", &self.ca_file)
            .field("auth", &self.auth)
            .finish()
    }
}

impl Registry {
    /// A registry at `url` trusting the system's CAs and asking no login (the development
    /// registry).
    pub fn open(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            auth: RegistryAuth::None,
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL for messages: without a password it may hold.
    pub fn shown(&self) -> String {
        redact_url(&self.url)
    }

    /// How requests log in.
    pub fn auth(&self) -> &RegistryAuth {
        &self.auth
    }

    /// An HTTP client builder trusting the configured CA, with a `timeout` per request (the
    /// login is added per request: see [`auth`](Self::auth)).
    pub fn client(&self, timeout: Duration) -> Result<reqwest::ClientBuilder, String> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(ca) = &self.ca_file {
            builder = builder.add_root_certificate(certificate(ca)?);
        }
        Ok(builder)
    }

    /// As [`client`](Self::client), blocking (for command-line tools).
    pub fn blocking_client(&self, timeout: Duration) -> Result<reqwest::blocking::Client, String> {
        let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
        if let Some(ca) = &self.ca_file {
            builder = builder.add_root_certificate(certificate(ca)?);
        }
        builder
            .build()
            .map_err(|e| format!("schema registry {}: {e}", self.shown()))
    }

    /// `request` with the login added (reqwest marks its header sensitive: left out of
    /// `Debug`).
    pub fn login<R: Login>(&self, request: R) -> R {
        match &self.auth {
            RegistryAuth::None => request,
            RegistryAuth::Basic { username, password } => {
                request.basic(username, password.expose())
            }
            RegistryAuth::Bearer(token) => request.bearer(token.expose()),
        }
    }

    /// Asks the registry for its configuration (`GET /config`), logged in, and says what
    /// it came to, without a secret.
    pub async fn check(&self) -> RegistryAnswer {
        let timeout = Duration::from_secs(10);
        let built = self
            .client(timeout)
            .and_then(|b| b.build().map_err(|e| e.to_string()));
        let client = match built {
            Ok(client) => client,
            Err(e) => return RegistryAnswer::Failed(e),
        };
        let url = format!("{}/config", self.url.trim_end_matches('/'));
        let shown = self.shown();
        let answer = match self.login(client.get(&url)).send().await {
            Ok(answer) => answer,
            Err(e) => {
                return RegistryAnswer::Failed(format!(
                    "schema registry {shown} is unreachable: {}",
                    chain(&e)
                ))
            }
        };
        let status = answer.status();
        match status.as_u16() {
            200..=299 => RegistryAnswer::Ready,
            401 => RegistryAnswer::Failed(format!(
                "schema registry {shown} answered {status} (check schema_registry.username and password, or token)"
            )),
            403 => RegistryAnswer::Forbidden(format!(
                "schema registry {shown} answered {status} to GET /config: logged in, but not allowed to read the configuration"
            )),
            404 => RegistryAnswer::Failed(format!(
                "schema registry {shown} answered {status} to GET /config: is schema_registry.url the registry's base URL?"
            )),
            _ => RegistryAnswer::Failed(format!("schema registry {shown} answered {status}")),
        }
    }
}

/// What [`Registry::check`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAnswer {
    /// The registry answered, the login accepted.
    Ready,
    /// Logged in, but not allowed to read the configuration: the login may still be allowed
    /// what the process needs (subjects).
    Forbidden(String),
    /// Unreachable, refused, or not a registry: why.
    Failed(String),
}

/// An error and its sources, `: `-separated (reqwest's own message hides the TLS reason).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A request a login can be added to: reqwest's, async or blocking.
pub trait Login {
    /// With basic auth.
    fn basic(self, username: &str, password: &str) -> Self;
    /// With a bearer token.
    fn bearer(self, token: &str) -> Self;
}

impl Login for reqwest::RequestBuilder {
    fn basic(self, username: &str, password: &str) -> Self {
        self.basic_auth(username, Some(password))
    }

    fn bearer(self, token: &str) -> Self {
        self.bearer_auth(token)
    }
}

impl Login for reqwest::blocking::RequestBuilder {
    fn basic(self, username: &str, password: &str) -> Self {
        self.basic_auth(username, Some(password))
    }

    fn bearer(self, token: &str) -> Self {
        self.bearer_auth(token)
    }
}

/// Reads the PEM certificate at `path`, set by `key`; `Err` names the key and the file.
pub(crate) fn pem_certificate(key: &str, path: &Path) -> Result<reqwest::Certificate, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("{key}: cannot read `{}`: {e}", path.display()))?;
    reqwest::Certificate::from_pem(&pem)
        .map_err(|e| format!("{key}: `{}` is not a PEM certificate: {e}", path.display()))
}

fn certificate(path: &Path) -> Result<reqwest::Certificate, String> {
    pem_certificate("schema_registry.ca_file", path)
}

impl SchemaRegistryConfig {
    /// The configured registry, its secrets read; `None` without a `url`. `Err` names the key.
    pub fn resolve(&self) -> Result<Option<Registry>, String> {
        if self.max_allocation_bytes < 1024 {
            return Err(format!(
                "schema_registry.max_allocation_bytes {} is below 1024: no record would decode",
                self.max_allocation_bytes
            ));
        }
        let password = Secret::resolve(
            "schema_registry.password",
            self.password.as_ref(),
            self.password_file.as_deref(),
        )?;
        let token = Secret::resolve(
            "schema_registry.token",
            self.token.as_ref(),
            self.token_file.as_deref(),
        )?;
        let auth = match (&self.username, password, token) {
            (None, None, None) => RegistryAuth::None,
            (Some(username), password, None) => RegistryAuth::Basic {
                username: username.clone(),
                password: password.ok_or(
                    "schema_registry.username is set without schema_registry.password (or password_file)",
                )?,
            },
            (None, Some(_), _) => {
                return Err("schema_registry.password is set without schema_registry.username".into())
            }
            (None, None, Some(token)) => RegistryAuth::Bearer(token),
            (Some(_), _, Some(_)) => {
                return Err(
                    "schema_registry.username and schema_registry.token are both set: use basic auth or a bearer token"
                        .into(),
                )
            }
        };
        let Some(url) = &self.url else {
            if auth != RegistryAuth::None || self.ca_file.is_some() {
                return Err(
                    "schema_registry login or ca_file is set without schema_registry.url".into(),
                );
            }
            return Ok(None);
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "schema_registry.url `{}` must be an http:// or https:// URL",
                redact_url(url)
            ));
        }
        if let Some(ca) = &self.ca_file {
            certificate(ca)?;
        }
        Ok(Some(Registry {
            url: url.clone(),
            ca_file: self.ca_file.clone(),
            auth,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut SchemaRegistryConfig)) -> Result<Option<Registry>, String> {
        let mut c = SchemaRegistryConfig {
            url: Some("https://registry:8081".into()),
            ..SchemaRegistryConfig::default()
        };
        f(&mut c);
        c.resolve()
    }

    #[test]
    fn logins_checked() {
        let r = with(|_| {}).unwrap().unwrap();
        assert_eq!(r.auth(), &RegistryAuth::None);
        let r = with(|c| {
            c.username = Some("KEY".into());
            c.password = Some("s3cret".into());
        })
        .unwrap()
        .unwrap();
        assert!(matches!(r.auth(), RegistryAuth::Basic { username, .. } if username == "KEY"));
        let client = r.blocking_client(Duration::from_secs(1)).unwrap();
        let request = r
            .login(client.get("https://registry:8081/subjects"))
            .build()
            .unwrap();
        assert_eq!(
            request.headers()["authorization"].to_str().unwrap(),
            "Basic S0VZOnMzY3JldA=="
        );
        assert!(!format!("{request:?}").contains("S0VZ"), "{request:?}");
        let r = with(|c| c.token = Some("t0k".into())).unwrap().unwrap();
        let request = r
            .login(client.get("https://registry:8081/subjects"))
            .build()
            .unwrap();
        assert_eq!(
            request.headers()["authorization"].to_str().unwrap(),
            "Bearer t0k"
        );
        assert!(!format!("{r:?}").contains("t0k"));
        /// A part of the error, and what breaks the configuration.
        type Case = (&'static str, Box<dyn Fn(&mut SchemaRegistryConfig)>);
        let errors: [Case; 6] = [
            (
                "schema_registry.max_allocation_bytes",
                Box::new(|c| c.max_allocation_bytes = 10),
            ),
            (
                "without schema_registry.password",
                Box::new(|c| c.username = Some("K".into())),
            ),
            (
                "without schema_registry.username",
                Box::new(|c| c.password = Some("p".into())),
            ),
            (
                "both set",
                Box::new(|c| {
                    c.username = Some("K".into());
                    c.password = Some("p".into());
                    c.token = Some("t".into());
                }),
            ),
            (
                "must be an http",
                Box::new(|c| c.url = Some("registry:8081".into())),
            ),
            (
                "schema_registry.ca_file: cannot read `/nonexistent.pem`",
                Box::new(|c| c.ca_file = Some("/nonexistent.pem".into())),
            ),
        ];
        for (part, f) in errors {
            let e = with(f).unwrap_err();
            assert!(e.contains(part), "`{part}` not in: {e}");
        }
        let none = SchemaRegistryConfig::default().resolve().unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn the_url_is_shown_without_its_password() {
        let r = with(|c| c.url = Some("https://key:p@ss@registry:8081".into()))
            .unwrap()
            .unwrap();
        assert_eq!(r.shown(), "https://key:[redacted]@registry:8081/");
    }
}
