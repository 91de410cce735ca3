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

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// Query parameters whose values are secrets (`password`, `sslpassword`, `token`, …).
fn secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token", "apikey", "api_key"]
        .iter()
        .any(|s| name.contains(s))
}

/// `url` for messages: its password (everything between the user's `:` and the last `@`, so a
/// password holding `@`, `/` or `?` is hidden whole) and the values of secret query parameters
/// (`?password=`, `sslpassword`, `token`) replaced by `[redacted]`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority_and_path, query) = match rest.rfind('@') {
        // The login ends at the last `@`: what follows is host, path and query.
        Some(at) => {
            let (login, after) = (&rest[..at], &rest[at + 1..]);
            let shown_login = match login.split_once(':') {
                Some((user, _)) => format!("{user}:{REDACTED}"),
                None => login.to_owned(),
            };
            let (host, query) = after
                .split_once('?')
                .map_or((after, None), |(h, q)| (h, Some(q)));
            (format!("{shown_login}@{host}"), query)
        }
        None => {
            let (host, query) = rest
                .split_once('?')
                .map_or((rest, None), |(h, q)| (h, Some(q)));
            (host.to_owned(), query)
        }
    };
    let mut shown = format!("{scheme}://{authority_and_path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if secret_parameter(k) => format!("{k}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
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
