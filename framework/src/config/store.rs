//! `store.*`: where a service keeps its state, and how long atoll keeps its inbox.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::{redact_url, Secret};

/// `store.*`: the database of the process's services.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The database: `postgres://user@host:port/db` (`ATOLL_STORE__URL`) or `sqlite://path`.
    /// Unset: the SQLite file at [`path`](Self::path). TLS to PostgreSQL is set in the URL:
    /// `?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem` (and `sslcert`, `sslkey` for a
    /// client certificate). Shown and serialized without its password.
    #[serde(serialize_with = "super::secret::serialize_shown_url")]
    pub url: Option<String>,
    /// The database user's password, so that the URL need not hold it.
    pub password: Option<Secret>,
    /// A file holding the password (instead of `password`).
    pub password_file: Option<PathBuf>,
    /// The SQLite file used when no `url` is set (created when missing).
    pub path: PathBuf,
    /// Connections in the pool on PostgreSQL (SQLite, one writer per file, gets one).
    pub max_connections: u32,
    /// How long to wait for a connection, in ms.
    pub connect_timeout_ms: u64,
    /// Inbox rows (the records a transactional listener has handled) older than this many
    /// hours are pruned; a record redelivered later than that is handled again.
    pub inbox_retention_hours: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            password: None,
            password_file: None,
            path: PathBuf::from("atoll.db"),
            max_connections: 8,
            connect_timeout_ms: 5_000,
            inbox_retention_hours: 7 * 24,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("path", &self.path)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("inbox_retention_hours", &self.inbox_retention_hours)
            .finish()
    }
}

impl StoreConfig {
    /// The password given by `password` or `password_file`, if any.
    pub fn password(&self) -> Result<Option<Secret>, String> {
        Secret::resolve(
            "store.password",
            self.password.as_ref(),
            self.password_file.as_deref(),
        )
    }

    /// The database URL: `url`, or the SQLite file at `path`.
    pub fn database_url(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.path.display()),
        }
    }

    /// The connection timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The inbox retention.
    pub fn inbox_retention(&self) -> Duration {
        Duration::from_secs(self.inbox_retention_hours.saturating_mul(3600))
    }

    /// `Err` naming the key when a value cannot work.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(url) = &self.url {
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
            {
                return Err(format!(
                    "store.url must be a postgres:// or sqlite: URL, e.g. postgres://user@host:5432/db; got `{}`",
                    redact_url(url)
                ));
            }
        }
        self.password()?;
        if self.max_connections == 0 {
            return Err("store.max_connections must be greater than 0".into());
        }
        if self.inbox_retention_hours == 0 {
            return Err("store.inbox_retention_hours must be greater than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_every_password() {
        let cases = [
            (
                "postgres://atoll:p@ss@db:5432/shop",
                "postgres://atoll:[redacted]@db:5432/shop",
            ),
            (
                "postgres://atoll@db/shop?password=hunter2&sslmode=require",
                "postgres://atoll@db/shop?password=[redacted]&sslmode=require",
            ),
            // A query value holding `@`: the form is in doubt.
            (
                "postgres://orders@db/x?password=a@b",
                "postgres://[redacted]",
            ),
            ("postgres://u:1234/x@host/db", "postgres://[redacted]"),
            ("postgres://u:pa?ss@host/db", "postgres://[redacted]"),
            (
                "postgres://db/shop?sslmode=verify-full&sslpassword=k3y",
                "postgres://db/shop?sslmode=verify-full&sslpassword=[redacted]",
            ),
            (
                "https://key:sec/ret?x@registry.example.com:8081",
                "https://[redacted]",
            ),
            (
                "https://key:s3cret@registry.example.com:8081/",
                "https://key:[redacted]@registry.example.com:8081/",
            ),
            ("mailto:someone@example.com", "[redacted]"),
            ("postgres://:s3cret@db/x", "postgres://:[redacted]@db/x"),
            ("postgres://u//x:p\x02//../a@h/db", "postgres://[redacted]"),
            ("postgres://u:p\tw@db/x", "postgres://[redacted]"),
            ("sqlite://atoll.db?mode=rwc", "sqlite://atoll.db?mode=rwc"),
            ("postgres://db/shop", "postgres://db/shop"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn sqlite_by_default_and_urls_checked() {
        let c = StoreConfig::default();
        assert_eq!(c.database_url(), "sqlite://atoll.db?mode=rwc");
        assert_eq!(c.inbox_retention(), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(c.check(), Ok(()));
        let bad = StoreConfig {
            url: Some("mysql://root:secret@db/x".into()),
            ..StoreConfig::default()
        };
        let e = bad.check().unwrap_err();
        assert!(
            e.contains("store.url") && e.contains("root:[redacted]@db/x") && !e.contains("secret"),
            "{e}"
        );
        let pg = StoreConfig {
            url: Some("postgres://atoll@127.0.0.1:5432/shop".into()),
            ..StoreConfig::default()
        };
        assert_eq!(pg.check(), Ok(()));
        assert_eq!(pg.database_url(), "postgres://atoll@127.0.0.1:5432/shop");
    }
}
