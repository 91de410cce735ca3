//! `store.*`: where a service keeps its state, and how long atoll keeps its inbox.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `store.*`: the database of the process's services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The database: `postgres://user:password@host:port/db` (`ATOLL_STORE__URL`) or
    /// `sqlite://path`. Unset: the SQLite file at [`path`](Self::path).
    pub url: Option<String>,
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
            path: PathBuf::from("atoll.db"),
            max_connections: 8,
            connect_timeout_ms: 5_000,
            inbox_retention_hours: 7 * 24,
        }
    }
}

impl StoreConfig {
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
                    redact(url)
                ));
            }
        }
        if self.max_connections == 0 {
            return Err("store.max_connections must be greater than 0".into());
        }
        if self.inbox_retention_hours == 0 {
            return Err("store.inbox_retention_hours must be greater than 0".into());
        }
        Ok(())
    }
}

/// `url` without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            e.contains("store.url") && e.contains("root:***@db/x") && !e.contains("secret"),
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
