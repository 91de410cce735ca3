//! `kafka.security.*`: how the process's Kafka clients prove who they are and protect the
//! connection (see `docs/security.md`).
//!
//! ```toml
//! [kafka.security]
//! protocol = "sasl_ssl"                    # plaintext | ssl | sasl_plaintext | sasl_ssl
//! ca_file = "/etc/kafka/ca.pem"            # the CA that signed the brokers' certificates
//!
//! [kafka.security.sasl]
//! mechanism = "SCRAM-SHA-512"              # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER | GSSAPI
//! username = "orders"
//! password_file = "/run/secrets/kafka"     # or password = "…"
//! ```
//!
//! The section is checked when the configuration is loaded ([`KafkaSecurity::resolve`]): keys
//! that do not fit the protocol, a missing password, a certificate file that cannot be read
//! are errors naming the key and the file. Left as it is, the section says nothing and
//! `kafka.properties` alone decides. It becomes librdkafka properties
//! ([`Resolved::properties`], a pure function with a table test); a property that
//! `kafka.properties` also sets is an error rather than a silent override.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// `kafka.security.*`: the protocol, TLS files and SASL login of every Kafka client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaSecurity {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: SecurityProtocol,
    /// PEM file of the certificate authority that signed the brokers' certificates (default:
    /// the system's trusted authorities). TLS protocols only.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client's certificate, for mutual TLS (with [`key_file`](Self::key_file)).
    pub certificate_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The private key's password, when it is encrypted.
    pub key_password: Option<Secret>,
    /// A file holding the private key's password (instead of `key_password`).
    pub key_password_file: Option<PathBuf>,
    /// Whether the broker's certificate must name the host connected to (default `true`;
    /// turn off only for brokers whose certificates name no usable host).
    pub verify_hostname: bool,
    /// The SASL login, for the `sasl_*` protocols.
    pub sasl: Option<SaslConfig>,
}

impl Default for KafkaSecurity {
    fn default() -> Self {
        Self {
            protocol: SecurityProtocol::default(),
            ca_file: None,
            certificate_file: None,
            key_file: None,
            key_password: None,
            key_password_file: None,
            verify_hostname: true,
            sasl: None,
        }
    }
}

/// `kafka.security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SecurityProtocol {
    /// No TLS, no SASL.
    #[default]
    #[serde(alias = "PLAINTEXT")]
    Plaintext,
    /// TLS, optionally with a client certificate (mutual TLS).
    #[serde(alias = "SSL")]
    Ssl,
    /// SASL without TLS (the password crosses the network in clear with PLAIN).
    #[serde(alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// SASL over TLS: what managed clusters ask for.
    #[serde(alias = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name of the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// `kafka.security.sasl.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SaslConfig {
    /// The SASL mechanism.
    pub mechanism: SaslMechanism,
    /// The user (PLAIN, SCRAM).
    #[serde(default)]
    pub username: Option<String>,
    /// The user's password (PLAIN, SCRAM).
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the user's password (instead of `password`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// OAUTHBEARER tokens fetched by atoll from an OpenID Connect provider (client
    /// credentials). Without it,
    /// OAUTHBEARER tokens come from the application's token provider
    /// ([`App::oauth_token_provider`](crate::App::oauth_token_provider)).
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// GSSAPI: the brokers' Kerberos service name (default `kafka`).
    #[serde(default)]
    pub kerberos_service_name: Option<String>,
    /// GSSAPI: the client's Kerberos principal.
    #[serde(default)]
    pub kerberos_principal: Option<String>,
    /// GSSAPI: the keytab file of the client's principal.
    #[serde(default)]
    pub kerberos_keytab: Option<PathBuf>,
}

/// `kafka.security.sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// User and password, sent as they are (use it over TLS only).
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
    /// Bearer tokens: from an OpenID Connect provider, or the application's token provider.
    #[serde(rename = "OAUTHBEARER", alias = "oauthbearer")]
    OAuthBearer,
    /// Kerberos (needs atoll's `gssapi` cargo feature).
    #[serde(rename = "GSSAPI", alias = "gssapi")]
    Gssapi,
}

impl SaslMechanism {
    /// librdkafka's name of the mechanism.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer => "OAUTHBEARER",
            Self::Gssapi => "GSSAPI",
        }
    }
}

/// `kafka.security.sasl.oidc.*`: OAUTHBEARER tokens fetched by atoll from an OpenID Connect
/// token endpoint with the client-credentials grant, and fetched again before they expire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OidcConfig {
    /// The token endpoint (`https://idp.example.com/oauth2/token`).
    pub token_endpoint_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// A file holding the client secret (instead of `client_secret`).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The scope to ask for, if the provider needs one.
    #[serde(default)]
    pub scope: Option<String>,
    /// PEM file of the certificate authority that signed the endpoint's certificate (default:
    /// the system's trusted authorities).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// An OpenID Connect client-credentials login, checked and with its secret read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcLogin {
    /// The token endpoint.
    pub token_endpoint_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// The scope asked for.
    pub scope: Option<String>,
    /// The endpoint's certificate authority.
    pub ca_file: Option<PathBuf>,
}

/// A property value: plain text, or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Shown in messages as it is.
    Text(String),
    /// Never shown.
    Secret(Secret),
}

impl Value {
    /// The text librdkafka is given.
    pub fn expose(&self) -> &str {
        match self {
            Self::Text(t) => t,
            Self::Secret(s) => s.expose(),
        }
    }
}

/// Where OAUTHBEARER tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// No OAUTHBEARER.
    None,
    /// atoll fetches them from an OpenID Connect provider.
    Oidc(OidcLogin),
    /// The application's token provider.
    Application,
}

/// `kafka.security` checked, its secret files read: what librdkafka is told, and who the
/// process is to the brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    properties: Vec<(&'static str, Value)>,
    principal: String,
    tokens: TokenSource,
}

impl Resolved {
    /// The librdkafka properties, in a stable order.
    pub fn properties(&self) -> &[(&'static str, Value)] {
        &self.properties
    }

    /// Who the process is to the brokers, for messages: the SASL user, the OAuth client, the
    /// client certificate, or `anonymous`.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Where OAUTHBEARER tokens come from.
    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }
}

impl KafkaSecurity {
    /// Checks the section and reads its secret files; `Err` names the key (`kafka.security.…`)
    /// and, for a file, its path.
    pub fn resolve(&self) -> Result<Resolved, String> {
        let mut properties = Vec::new();
        if *self == Self::default() {
            // Untouched: `kafka.properties` alone decides (plaintext unless it says otherwise).
            return Ok(Resolved {
                properties,
                principal: "anonymous".to_owned(),
                tokens: TokenSource::None,
            });
        }
        let mut set = |name: &'static str, value: Value| properties.push((name, value));
        let protocol = self.protocol;
        set("security.protocol", Value::Text(protocol.as_str().into()));
        let certificate = self.tls(&mut set)?;
        let (principal, tokens) = match (&self.sasl, protocol.sasl()) {
            (None, false) => (certificate.unwrap_or_else(|| "anonymous".to_owned()), TokenSource::None),
            (None, true) => {
                return Err(format!(
                    "kafka.security.protocol `{}` needs kafka.security.sasl (its mechanism and login)",
                    protocol.as_str()
                ))
            }
            (Some(_), false) => {
                return Err(format!(
                    "kafka.security.sasl is set, but kafka.security.protocol is `{}`: use `sasl_plaintext` or `sasl_ssl`",
                    protocol.as_str()
                ))
            }
            (Some(sasl), true) => sasl.resolve(&mut set)?,
        };
        Ok(Resolved {
            properties,
            principal,
            tokens,
        })
    }

    /// Checks the TLS settings and adds their properties; the client certificate's principal,
    /// with mutual TLS.
    fn tls(&self, set: &mut impl FnMut(&'static str, Value)) -> Result<Option<String>, String> {
        let key = |k: &str| format!("kafka.security.{k}");
        let protocol = self.protocol;
        let tls_files = [
            ("ca_file", &self.ca_file),
            ("certificate_file", &self.certificate_file),
            ("key_file", &self.key_file),
            ("key_password_file", &self.key_password_file),
        ];
        if !protocol.tls() {
            let given = tls_files
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| *k)
                .chain(self.key_password.as_ref().map(|_| "key_password"))
                .chain((!self.verify_hostname).then_some("verify_hostname"))
                .collect::<Vec<_>>();
            if let Some(first) = given.first() {
                return Err(format!(
                    "{} is a TLS setting, but kafka.security.protocol is `{}`: use `ssl` or `sasl_ssl`",
                    key(first),
                    protocol.as_str()
                ));
            }
        }
        for (k, path) in &tls_files[..3] {
            if let Some(path) = path {
                readable(path).map_err(|e| format!("{}: {e}", key(k)))?;
            }
        }
        let principal = match (&self.certificate_file, &self.key_file) {
            (Some(cert), Some(_)) => Some(format!("the client certificate {}", cert.display())),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(format!(
                    "{} and {} go together (mutual TLS needs both)",
                    key("certificate_file"),
                    key("key_file")
                ))
            }
        };
        let key_password = Secret::resolve(
            &key("key_password"),
            self.key_password.as_ref(),
            self.key_password_file.as_deref(),
        )?;
        if key_password.is_some() && self.key_file.is_none() {
            let (password, file) = (key("key_password"), key("key_file"));
            return Err(format!("{password} is set without {file}"));
        }
        if let Some(ca) = &self.ca_file {
            set("ssl.ca.location", path_value(ca));
        }
        if let (Some(cert), Some(private)) = (&self.certificate_file, &self.key_file) {
            set("ssl.certificate.location", path_value(cert));
            set("ssl.key.location", path_value(private));
        }
        if let Some(p) = key_password {
            set("ssl.key.password", Value::Secret(p));
        }
        if protocol.tls() {
            let algorithm = if self.verify_hostname {
                "https"
            } else {
                "none"
            };
            set(
                "ssl.endpoint.identification.algorithm",
                Value::Text(algorithm.into()),
            );
        }
        Ok(principal)
    }
}

impl SaslConfig {
    /// Adds the mechanism's properties; returns the principal and the token source.
    fn resolve(
        &self,
        set: &mut impl FnMut(&'static str, Value),
    ) -> Result<(String, TokenSource), String> {
        let mechanism = self.mechanism;
        set("sasl.mechanisms", Value::Text(mechanism.as_str().into()));
        self.check_applies()?;
        match mechanism {
            SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                self.login(set)
            }
            SaslMechanism::OAuthBearer => match &self.oidc {
                None => Ok((
                    "the token provider's principal".to_owned(),
                    TokenSource::Application,
                )),
                Some(oidc) => oidc.resolve(),
            },
            SaslMechanism::Gssapi => self.kerberos(set),
        }
    }

    /// `Err` naming a setting the mechanism does not use.
    fn check_applies(&self) -> Result<(), String> {
        let mechanism = self.mechanism;
        let not_for = |k: &str, given: bool| -> Result<(), String> {
            match given {
                true => Err(format!(
                    "kafka.security.sasl.{k} does not apply to SASL mechanism {}",
                    mechanism.as_str()
                )),
                false => Ok(()),
            }
        };
        let login = matches!(
            mechanism,
            SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512
        );
        let kerberos = self.kerberos_service_name.is_some()
            || self.kerberos_principal.is_some()
            || self.kerberos_keytab.is_some();
        if !login {
            not_for("username", self.username.is_some())?;
            let password = self.password.is_some() || self.password_file.is_some();
            not_for("password", password)?;
        }
        if mechanism != SaslMechanism::OAuthBearer {
            not_for("oidc", self.oidc.is_some())?;
        }
        if mechanism != SaslMechanism::Gssapi {
            not_for("kerberos_*", kerberos)?;
        }
        Ok(())
    }

    /// A username and password (PLAIN, SCRAM).
    fn login(
        &self,
        set: &mut impl FnMut(&'static str, Value),
    ) -> Result<(String, TokenSource), String> {
        let key = |k: &str| format!("kafka.security.sasl.{k}");
        let mechanism = self.mechanism.as_str();
        let user = self
            .username
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| format!("{} is needed for {mechanism}", key("username")))?;
        let password = Secret::resolve(
            &key("password"),
            self.password.as_ref(),
            self.password_file.as_deref(),
        )?
        .ok_or_else(|| {
            let (password, file) = (key("password"), key("password_file"));
            format!("{password} (or {file}) is needed for {mechanism}")
        })?;
        set("sasl.username", Value::Text(user.clone()));
        set("sasl.password", Value::Secret(password));
        Ok((user, TokenSource::None))
    }

    /// Kerberos, when atoll is built with it.
    fn kerberos(
        &self,
        set: &mut impl FnMut(&'static str, Value),
    ) -> Result<(String, TokenSource), String> {
        let key = |k: &str| format!("kafka.security.sasl.{k}");
        if !cfg!(feature = "gssapi") {
            return Err(format!(
                "{} GSSAPI (Kerberos) needs atoll built with its `gssapi` cargo feature",
                key("mechanism")
            ));
        }
        if let Some(keytab) = &self.kerberos_keytab {
            readable(keytab).map_err(|e| format!("{}: {e}", key("kerberos_keytab")))?;
            set("sasl.kerberos.keytab", path_value(keytab));
        }
        if let Some(name) = &self.kerberos_service_name {
            set("sasl.kerberos.service.name", Value::Text(name.clone()));
        }
        let who = match &self.kerberos_principal {
            Some(p) => {
                set("sasl.kerberos.principal", Value::Text(p.clone()));
                p.clone()
            }
            None => "the Kerberos principal".to_owned(),
        };
        Ok((who, TokenSource::None))
    }
}

impl OidcConfig {
    /// Checks the OpenID Connect client and reads its secret: tokens atoll fetches.
    fn resolve(&self) -> Result<(String, TokenSource), String> {
        let okey = |k: &str| format!("kafka.security.sasl.oidc.{k}");
        let url = &self.token_endpoint_url;
        let loopback = url::Url::parse(url).is_ok_and(|u| {
            u.scheme() == "http"
                && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
        });
        if !(url.starts_with("https://") || loopback) {
            return Err(format!(
                "{} `{}` must be an https:// URL (the client secret is sent to it; \
                 http only to a loopback address)",
                okey("token_endpoint_url"),
                super::secret::redact_url(url)
            ));
        }
        if let Some(ca) = &self.ca_file {
            readable(ca).map_err(|e| format!("{}: {e}", okey("ca_file")))?;
        }
        let secret = Secret::resolve(
            &okey("client_secret"),
            self.client_secret.as_ref(),
            self.client_secret_file.as_deref(),
        )?
        .ok_or_else(|| {
            let (secret, file) = (okey("client_secret"), okey("client_secret_file"));
            format!("{secret} (or {file}) is needed")
        })?;
        Ok((
            format!("the OAuth client {}", self.client_id),
            TokenSource::Oidc(OidcLogin {
                token_endpoint_url: self.token_endpoint_url.clone(),
                client_id: self.client_id.clone(),
                client_secret: secret,
                scope: self.scope.clone(),
                ca_file: self.ca_file.clone(),
            }),
        ))
    }
}

fn path_value(path: &Path) -> Value {
    Value::Text(path.display().to_string())
}

/// `Err` saying why the file at `path` cannot be read.
fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(r: &Resolved) -> Vec<(&'static str, &str)> {
        r.properties()
            .iter()
            .map(|(k, v)| match v {
                Value::Text(t) => (*k, t.as_str()),
                Value::Secret(_) => (*k, "<secret>"),
            })
            .collect()
    }

    fn sasl(mechanism: SaslMechanism) -> SaslConfig {
        SaslConfig {
            mechanism,
            username: None,
            password: None,
            password_file: None,
            oidc: None,
            kerberos_service_name: None,
            kerberos_principal: None,
            kerberos_keytab: None,
        }
    }

    fn login(mechanism: SaslMechanism) -> SaslConfig {
        SaslConfig {
            username: Some("alice".into()),
            password: Some(Secret::new("s3cret")),
            ..sasl(mechanism)
        }
    }

    /// A readable file to name as a certificate.
    fn file() -> PathBuf {
        let p = std::env::temp_dir().join(format!("atoll-security-{}.pem", std::process::id()));
        std::fs::write(&p, "-----BEGIN CERTIFICATE-----\n").unwrap();
        p
    }

    /// Name, section, the properties it becomes, the principal it names.
    type Case<'a> = (&'a str, KafkaSecurity, Vec<(&'a str, &'a str)>, &'a str);

    /// The TLS sections of [`each_setting_becomes_its_librdkafka_properties`], with `pem` as
    /// their files (`pem_s` its path as text).
    fn property_cases<'a>(pem: &Path, pem_s: &'a str) -> Vec<Case<'a>> {
        let tls = |protocol| KafkaSecurity {
            protocol,
            ca_file: Some(pem.to_owned()),
            ..KafkaSecurity::default()
        };
        vec![
            ("default", KafkaSecurity::default(), vec![], "anonymous"),
            (
                "tls with a CA",
                tls(SecurityProtocol::Ssl),
                vec![
                    ("security.protocol", "ssl"),
                    ("ssl.ca.location", pem_s),
                    ("ssl.endpoint.identification.algorithm", "https"),
                ],
                "anonymous",
            ),
            (
                "mutual tls, encrypted key, no host check",
                KafkaSecurity {
                    certificate_file: Some(pem.to_owned()),
                    key_file: Some(pem.to_owned()),
                    key_password: Some(Secret::new("k")),
                    verify_hostname: false,
                    ..tls(SecurityProtocol::Ssl)
                },
                vec![
                    ("security.protocol", "ssl"),
                    ("ssl.ca.location", pem_s),
                    ("ssl.certificate.location", pem_s),
                    ("ssl.key.location", pem_s),
                    ("ssl.key.password", "<secret>"),
                    ("ssl.endpoint.identification.algorithm", "none"),
                ],
                "the client certificate",
            ),
        ]
    }

    /// The SASL sections of [`property_cases`].
    fn sasl_property_cases<'a>(pem: &Path, pem_s: &'a str) -> Vec<Case<'a>> {
        let tls = |protocol| KafkaSecurity {
            protocol,
            ca_file: Some(pem.to_owned()),
            ..KafkaSecurity::default()
        };
        vec![
            (
                "scram over tls",
                KafkaSecurity {
                    sasl: Some(login(SaslMechanism::ScramSha512)),
                    ..tls(SecurityProtocol::SaslSsl)
                },
                vec![
                    ("security.protocol", "sasl_ssl"),
                    ("ssl.ca.location", pem_s),
                    ("ssl.endpoint.identification.algorithm", "https"),
                    ("sasl.mechanisms", "SCRAM-SHA-512"),
                    ("sasl.username", "alice"),
                    ("sasl.password", "<secret>"),
                ],
                "alice",
            ),
            (
                "plain without tls",
                KafkaSecurity {
                    protocol: SecurityProtocol::SaslPlaintext,
                    sasl: Some(login(SaslMechanism::Plain)),
                    ..KafkaSecurity::default()
                },
                vec![
                    ("security.protocol", "sasl_plaintext"),
                    ("sasl.mechanisms", "PLAIN"),
                    ("sasl.username", "alice"),
                    ("sasl.password", "<secret>"),
                ],
                "alice",
            ),
            (
                "oauthbearer from the application",
                KafkaSecurity {
                    protocol: SecurityProtocol::SaslPlaintext,
                    sasl: Some(sasl(SaslMechanism::OAuthBearer)),
                    ..KafkaSecurity::default()
                },
                vec![
                    ("security.protocol", "sasl_plaintext"),
                    ("sasl.mechanisms", "OAUTHBEARER"),
                ],
                "the token provider's principal",
            ),
            (
                "oauthbearer from an oidc provider",
                KafkaSecurity {
                    sasl: Some(SaslConfig {
                        oidc: Some(OidcConfig {
                            token_endpoint_url: "https://idp/token".into(),
                            client_id: "orders".into(),
                            client_secret: Some(Secret::new("c")),
                            client_secret_file: None,
                            scope: Some("kafka".into()),
                            ca_file: None,
                        }),
                        ..sasl(SaslMechanism::OAuthBearer)
                    }),
                    ..tls(SecurityProtocol::SaslSsl)
                },
                vec![
                    ("security.protocol", "sasl_ssl"),
                    ("ssl.ca.location", pem_s),
                    ("ssl.endpoint.identification.algorithm", "https"),
                    ("sasl.mechanisms", "OAUTHBEARER"),
                ],
                "the OAuth client orders",
            ),
        ]
    }

    #[test]
    fn each_setting_becomes_its_librdkafka_properties() {
        let pem = file();
        let pem_s = pem.display().to_string();
        let cases = property_cases(&pem, &pem_s)
            .into_iter()
            .chain(sasl_property_cases(&pem, &pem_s));
        for (name, security, want, principal) in cases {
            let r = security.resolve().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(shown(&r), want, "{name}");
            assert!(
                r.principal().starts_with(principal),
                "{name}: {}",
                r.principal()
            );
        }
    }

    /// The TLS sections of [`settings_that_cannot_work_name_their_key`], and what their errors
    /// say: `pem` is a readable file.
    fn refused_cases(pem: &Path) -> Vec<(&'static str, KafkaSecurity, &'static [&'static str])> {
        let missing = PathBuf::from("/nonexistent/ca.pem");
        vec![
            (
                "a CA without TLS",
                KafkaSecurity {
                    ca_file: Some(pem.to_owned()),
                    ..KafkaSecurity::default()
                },
                &["kafka.security.ca_file", "`ssl` or `sasl_ssl`"],
            ),
            (
                "an unreadable CA",
                KafkaSecurity {
                    protocol: SecurityProtocol::Ssl,
                    ca_file: Some(missing.clone()),
                    ..KafkaSecurity::default()
                },
                &["kafka.security.ca_file", "/nonexistent/ca.pem"],
            ),
            (
                "a certificate without its key",
                KafkaSecurity {
                    protocol: SecurityProtocol::Ssl,
                    certificate_file: Some(pem.to_owned()),
                    ..KafkaSecurity::default()
                },
                &["kafka.security.key_file", "go together"],
            ),
            (
                "sasl protocol without a login",
                KafkaSecurity {
                    protocol: SecurityProtocol::SaslSsl,
                    ..KafkaSecurity::default()
                },
                &["needs kafka.security.sasl"],
            ),
        ]
    }

    /// The SASL sections of [`refused_cases`].
    fn refused_sasl_cases() -> Vec<(&'static str, KafkaSecurity, &'static [&'static str])> {
        let missing = PathBuf::from("/nonexistent/ca.pem");
        vec![
            (
                "a login without a sasl protocol",
                KafkaSecurity {
                    protocol: SecurityProtocol::Ssl,
                    sasl: Some(login(SaslMechanism::Plain)),
                    ..KafkaSecurity::default()
                },
                &["kafka.security.sasl is set", "`sasl_ssl`"],
            ),
            (
                "scram without a password",
                KafkaSecurity {
                    protocol: SecurityProtocol::SaslPlaintext,
                    sasl: Some(SaslConfig {
                        username: Some("alice".into()),
                        ..sasl(SaslMechanism::ScramSha256)
                    }),
                    ..KafkaSecurity::default()
                },
                &["kafka.security.sasl.password", "SCRAM-SHA-256"],
            ),
            (
                "scram with an unreadable password file",
                KafkaSecurity {
                    protocol: SecurityProtocol::SaslPlaintext,
                    sasl: Some(SaslConfig {
                        username: Some("alice".into()),
                        password_file: Some(missing.clone()),
                        ..sasl(SaslMechanism::ScramSha256)
                    }),
                    ..KafkaSecurity::default()
                },
                &["kafka.security.sasl.password_file", "/nonexistent/ca.pem"],
            ),
            (
                "a password for oauthbearer",
                KafkaSecurity {
                    protocol: SecurityProtocol::SaslPlaintext,
                    sasl: Some(SaslConfig {
                        password: Some(Secret::new("p")),
                        ..sasl(SaslMechanism::OAuthBearer)
                    }),
                    ..KafkaSecurity::default()
                },
                &[
                    "kafka.security.sasl.password",
                    "does not apply",
                    "OAUTHBEARER",
                ],
            ),
        ]
    }

    #[test]
    fn settings_that_cannot_work_name_their_key() {
        let pem = file();
        let cases = refused_cases(&pem).into_iter().chain(refused_sasl_cases());
        for (name, security, parts) in cases {
            let e = security.resolve().unwrap_err();
            for part in parts {
                assert!(e.contains(part), "{name}: `{part}` not in: {e}");
            }
            assert!(!e.contains("s3cret"), "{name}: {e}");
        }
    }

    #[test]
    fn read_from_the_environment_spelling() {
        let raw = r#"{"protocol": "SASL_SSL", "sasl": {"mechanism": "scram-sha-512", "username": "a", "password": "p"}}"#;
        let s: KafkaSecurity = serde_json::from_str(raw).unwrap();
        assert_eq!(s.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(s.sasl.unwrap().mechanism, SaslMechanism::ScramSha512);
    }
}
