//! Waiting at start for what the process needs from outside: the cluster (to create topics)
//! and the schema registry. While one cannot be reached, or refuses the login, or the
//! permission, the process stays up and not ready, saying why (`starting: …`), and tries
//! again with a growing pause: a crash would only restart it into the same wait, and a
//! mended network, secret or ACL heals it without a restart.

use std::future::Future;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::ops::health::Health;

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
