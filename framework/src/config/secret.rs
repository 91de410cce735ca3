//! [`Secret`]: the one type of every password, token and private key in the configuration.
//!
//! A secret is read from the configuration (inline, or from a file: Kubernetes and Docker
//! mount secrets as files) and shown nowhere: its `Debug` and its serialization write
//! `[redacted]`, it has no `Display`, and the only way to its text is [`Secret::expose`],
//! called where a client is configured with it. The text is zeroed when the secret is dropped
//! (the `secrecy` crate). So a configuration can be logged, printed by a CLI or put in an error
//! without a second thought.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret shows instead of itself.
pub const REDACTED: &str = "[redacted]";

/// A password, token or private key, from the configuration (inline, or from a file: see
/// [`Secret::resolve`]): its `Debug` and its serialization write `[redacted]`, it has no
/// `Display`, and [`Secret::expose`] is the only way to its text. The text is zeroed when the
/// secret is dropped.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// A secret holding `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(SecretString::from(text.into()))
    }

    /// The secret's text, for configuring a client with it. Never log or format it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Reads a secret from the file at `path` (a mounted Kubernetes or Docker secret): its
    /// whole content without one trailing line break. The error names the file, never
    /// what it holds.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let mut text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(format!("`{}` is empty", path.display()));
        }
        Ok(Self::new(text))
    }

    /// The secret given inline (`inline`, under `key`) or in a file (`file`, under
    /// `<key>_file`): at most one of the two; `None` when neither is set.
    pub fn resolve(
        key: &str,
        inline: Option<&Secret>,
        file: Option<&Path>,
    ) -> Result<Option<Self>, String> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(format!(
                "{key} and {key}_file are both set: give the secret one way"
            )),
            (Some(s), None) => Ok(Some(s.clone())),
            (None, Some(path)) => Self::from_file(path)
                .map(Some)
                .map_err(|e| format!("{key}_file: {e}")),
            (None, None) => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

/// Writes `[redacted]`: a serialized configuration holds no secret (and cannot be read back
/// with its secrets).
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// Reads text, and numbers and booleans as their text (`password = 12345678` in TOML). What
/// is not a scalar is an error that names its kind, never its content.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret (text)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
        }
        d.deserialize_any(Text)
    }
}

/// Secret settings given in the environment, with their text as it is, as `(key, text)`
/// (`store.password`, …) for the configuration to take over figment's reading: figment reads
/// an `ATOLL_*` value as a TOML-like value (`007` a number, `[x]` an array, `"x"` unquoted),
/// which would change a password, or put it in an error message when it is not text.
///
/// A variable is a secret setting when its last key is `password`, `token`,
/// `client_secret` or `key_password`, when it is an OTLP header, or a librdkafka property
/// whose name holds a secret.
pub(crate) fn secrets_in_env(
    vars: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    const SECRET_KEYS: &[&str] = &["password", "token", "client_secret", "key_password"];
    vars.filter_map(|(name, value)| {
        let rest = name.strip_prefix("ATOLL_")?;
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let last = path.last()?;
        let secret = match path
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["telemetry", "otlp_headers", _] => true,
            ["kafka", "properties", property] => {
                super::is_secret_property(&super::property_name(property))
            }
            _ => SECRET_KEYS.contains(&last.as_str()),
        };
        secret.then(|| (path.join("."), value))
    })
    .collect()
}

/// Serializes an optional URL as [`redact_url`] shows it (`#[serde(serialize_with)]`).
pub(crate) fn serialize_shown_url<S: Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    url.as_deref().map(redact_url).serialize(s)
}

/// Query parameters whose values are secrets (`password`, `sslpassword`, `token`, …).
fn secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token", "apikey", "api_key"]
        .iter()
        .any(|s| name.contains(s))
}

/// `text` for messages, without a secret it may hold: a URL's password is shown as
/// `[redacted]` and so are the values of its secret query parameters (`?password=`,
/// `sslpassword`, `token`, …). A URL whose form is in doubt (it does not parse, or holds an
/// `@` past its host, as a password written unencoded can make it) is shown as its scheme and
/// `[redacted]`: showing less is the safe side.
pub fn redact_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return match text.contains('@') {
            true => REDACTED.to_owned(),
            false => text.to_owned(),
        };
    };
    let doubtful = || format!("{scheme}://{REDACTED}");
    // The login ends at the last `@` before the host; an `@` past the first `/`, `?` or `#`
    // after `://` (as written, before the parser resolves `..` away or drops tabs) means the
    // form is in doubt, and so do controls and spaces, which the parser drops.
    let authority_end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    if rest[authority_end..].contains('@') || text.chars().any(|c| c.is_control() || c == ' ') {
        return doubtful();
    }
    let Ok(url) = url::Url::parse(text) else {
        return doubtful();
    };
    let mut shown = url.clone();
    let password = url.password().is_some();
    if password && shown.set_password(None).is_err() {
        return doubtful();
    }
    if let Some(query) = url.query() {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if secret_parameter(k) => format!("{k}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect();
        shown.set_query(Some(&pairs.join("&")));
    }
    let mut shown = shown.to_string();
    if password {
        // The login is `user@`: the first `@` past the scheme, now that the password is gone.
        let start = shown.find("://").map_or(0, |i| i + 3);
        match shown[start..].find('@') {
            Some(at) => shown.insert_str(start + at, &format!(":{REDACTED}")),
            // No user: the login was the password alone.
            None => shown.insert_str(start, &format!(":{REDACTED}@")),
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_nowhere() {
        let s = Secret::new("hunter2");
        let shown = [
            format!("{s:?}"),
            format!("{:?}", Some(&s)),
            serde_json::to_string(&s).unwrap(),
        ];
        for text in shown {
            assert!(
                !text.contains("hunter2") && text.contains(REDACTED),
                "{text}"
            );
        }
        assert_eq!(s.expose(), "hunter2");
        let back: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn secret_settings_in_the_environment_are_kept_as_text() {
        let vars = [
            ("ATOLL_STORE__PASSWORD", "007"),
            ("ATOLL_SCHEMA_REGISTRY__TOKEN", "[abc]"),
            ("ATOLL_KAFKA__SECURITY__SASL__PASSWORD", "\"quoted\""),
            ("ATOLL_KAFKA__SECURITY__SASL__OIDC__CLIENT_SECRET", "1.50"),
            ("ATOLL_KAFKA__SECURITY__KEY_PASSWORD", "true"),
            ("ATOLL_TELEMETRY__OTLP_HEADERS__AUTHORIZATION", "Bearer 1"),
            ("ATOLL_KAFKA__PROPERTIES__SASL_PASSWORD", "{a=b}"),
            ("ATOLL_KAFKA__PROPERTIES__SESSION_TIMEOUT_MS", "6000"),
            ("ATOLL_STORE__PASSWORD_FILE", "/run/secrets/db"),
            ("ATOLL_STORE__URL", "postgres://db/x"),
            ("OTHER_PASSWORD", "x"),
        ];
        let got = secrets_in_env(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let want = [
            ("store.password", "007"),
            ("schema_registry.token", "[abc]"),
            ("kafka.security.sasl.password", "\"quoted\""),
            ("kafka.security.sasl.oidc.client_secret", "1.50"),
            ("kafka.security.key_password", "true"),
            ("telemetry.otlp_headers.authorization", "Bearer 1"),
            ("kafka.properties.sasl_password", "{a=b}"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn anything_but_text_is_read_as_text_or_refused_without_its_content() {
        for (json, text) in [("12345678", "12345678"), ("true", "true"), ("-3", "-3")] {
            let s: Secret = serde_json::from_str(json).unwrap();
            assert_eq!(s.expose(), text);
        }
        let e = serde_json::from_str::<Secret>(r#"["hunter2"]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a secret") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn read_from_a_file_or_inline_but_not_both() {
        let dir = std::env::temp_dir().join(format!("atoll-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases: &[(&str, &[u8], Result<&str, &str>)] = &[
            ("plain", b"s3cret", Ok("s3cret")),
            ("newline", b"s3cret\n", Ok("s3cret")),
            ("crlf", b"s3cret\r\n", Ok("s3cret")),
            ("inner", b"two\nlines\n", Ok("two\nlines")),
            ("empty", b"\n", Err("is empty")),
        ];
        for (name, content, want) in cases {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            let got = Secret::resolve("password", None, Some(&path));
            match want {
                Ok(text) => assert_eq!(got.unwrap().unwrap().expose(), *text, "{name}"),
                Err(part) => {
                    let e = got.unwrap_err();
                    assert!(
                        e.contains(part) && e.contains("password_file"),
                        "{name}: {e}"
                    );
                }
            }
        }
        let missing = dir.join("missing");
        let e = Secret::resolve("password", None, Some(&missing)).unwrap_err();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let inline = Secret::new("x");
        let e = Secret::resolve("password", Some(&inline), Some(&missing)).unwrap_err();
        assert!(e.contains("both set"), "{e}");
        assert_eq!(Secret::resolve("password", None, None), Ok(None));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
