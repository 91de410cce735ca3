//! Waiting for what the process needs from outside: the cluster at start (to create topics),
//! and the schema registry. While one cannot be reached, or refuses the login, or the
//! permission, the process stays up and not ready, saying why, and tries again with a growing
//! pause: a crash would only restart it into the same wait, and a mended network, secret or
//! ACL heals it without a restart.
//!
//! The start waits for the cluster ([`until_ok`]); it does not wait for the registry
//! ([`watch_registry`]): records that need it wait for it one by one (their decoding is
//! retried without spending their attempts), and the others go on meanwhile.

use std::future::Future;
use std::time::Duration;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{Registry, RegistryAnswer};
use crate::error::{Error, Result};
use crate::ops::health::{Condition, Health};

/// Runs `attempt` until it succeeds or fails for good (`waits` says which failures may mend);
/// `why` words a failure for the readiness answer and the log.
pub(crate) async fn until_ok<F, Fut>(
    health: &Health,
    mut attempt: F,
    waits: impl Fn(&Error) -> bool,
    why: impl Fn(&Error) -> String,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut delays = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).iter();
    loop {
        match attempt().await {
            Ok(()) => {
                health.waiting(None);
                return Ok(());
            }
            Err(e) if waits(&e) => {
                let why = why(&e);
                tracing::warn!(error = why, "not started yet; retrying");
                health.waiting(Some(format!("starting: {why}")));
                tokio::time::sleep(delays.next_delay()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Asks the registry, logged in, until it answers (see [`Registry::check`]): meanwhile the
/// process is not ready, saying why (unreachable, `401`, a wrong base URL).
pub(crate) async fn watch_registry(
    registry: Registry,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut delays = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).iter();
    loop {
        let why = match registry.check().await {
            RegistryAnswer::Ready => None,
            RegistryAnswer::Forbidden(why) => {
                // Logged in: the key may read and write subjects without reading /config.
                tracing::warn!("{why}; going on");
                None
            }
            RegistryAnswer::Failed(why) => Some(why),
        };
        let Some(why) = why else {
            health.condition(Condition::Registry, None);
            return;
        };
        tracing::warn!(
            error = why,
            "the schema registry cannot be used yet; retrying"
        );
        health.condition(Condition::Registry, Some(why));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delays.next_delay()) => {}
        }
    }
}
