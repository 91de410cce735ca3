//! Tests against an external cluster (`ATOLL_TEST_BOOTSTRAP`) take turns, each on an empty
//! cluster.
//!
//! A tansu per test isolates tests by construction. One cluster shared by every test does
//! not: services have fixed topic names and consumer groups (`<service>-<listener>`), so two
//! tests running at once would read each other's records, and a test reading a topic from its
//! start would see what an earlier test left. So against an external cluster:
//! - the tests of one process take turns: a `Turn` is held by each [`crate::Tansu`] until it
//!   is dropped (a second `Tansu` made by the same thread joins the turn it holds);
//! - the first `Tansu` of a turn empties the cluster: every topic whose name does not start
//!   with `_` (Kafka's `__consumer_offsets`, Confluent's `_schemas` stay) is deleted, which
//!   also drops the offsets committed for it (Kafka since KIP-496 and tansu alike), and then
//!   every consumer group is deleted. Groups with members still alive are left; their
//!   offsets went with the topics. When there were groups, the turn then waits out a session
//!   timeout, so that members of processes the last test killed are gone before the next
//!   ones join.
//!
//! Test binaries run one after another (`cargo test`), so processes do not overlap. Point
//! `ATOLL_TEST_BOOTSTRAP` only at a throwaway cluster: the tests empty it.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// Who holds the cluster: a thread and how many `Tansu`s it made in its turn.
#[derive(Debug, Default)]
struct Holder {
    thread: Option<ThreadId>,
    count: usize,
}

static HOLDER: Mutex<Holder> = Mutex::new(Holder {
    thread: None,
    count: 0,
});
static RELEASED: Condvar = Condvar::new();

fn holder() -> MutexGuard<'static, Holder> {
    // A panic never happens while the lock is held, but a poisoned lock must not turn one
    // failed test into failures of all that follow.
    HOLDER.lock().unwrap_or_else(|e| e.into_inner())
}

/// A test's turn on the external cluster, ended on drop.
#[derive(Debug)]
pub(crate) struct Turn(());

impl Turn {
    /// Waits until no other thread holds the cluster, then takes it; the first take of a
    /// turn empties the cluster at `bootstrap`.
    ///
    /// # Panics
    /// When the cluster cannot be emptied (it does not answer, or a topic stays).
    pub(crate) fn take(bootstrap: &str) -> Self {
        let (turn, first) = Self::join();
        if first {
            // On failure `turn` is dropped while unwinding, so the next test gets its turn.
            empty(bootstrap);
        }
        turn
    }

    /// Waits until no other thread holds the cluster, then takes it; `true` when this starts
    /// the thread's turn (rather than joining the turn it holds).
    fn join() -> (Self, bool) {
        let me = std::thread::current().id();
        let mut h = holder();
        while h.thread.is_some_and(|t| t != me) {
            h = RELEASED.wait(h).unwrap_or_else(|e| e.into_inner());
        }
        h.thread = Some(me);
        h.count += 1;
        (Self(()), h.count == 1)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut h = holder();
        h.count = h.count.saturating_sub(1);
        if h.count == 0 {
            h.thread = None;
            RELEASED.notify_all();
        }
    }
}

/// Whether the harness deletes `topic` when emptying a cluster: not internal ones (`__…`),
/// nor a platform's own (`_schemas`, `_confluent-…`).
fn disposable(topic: &str) -> bool {
    !topic.starts_with('_')
}

/// Deletes the cluster's disposable topics, waits until metadata no longer lists them, and
/// deletes its consumer groups. Runs on a thread of its own, as the caller may be inside a
/// tokio runtime.
fn empty(bootstrap: &str) {
    let bootstrap = bootstrap.to_owned();
    let done = std::thread::spawn(move || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(empty_async(&bootstrap))
    })
    .join();
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("cannot empty the external cluster for this test: {e}"),
        Err(_) => panic!("emptying the external cluster panicked"),
    }
}

async fn empty_async(bootstrap: &str) -> Result<(), String> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let timeout = Duration::from_secs(10);

    let topics = disposable_topics(&consumer, timeout)?;
    if !topics.is_empty() {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        for result in admin
            .delete_topics(&names, &options)
            .await
            .map_err(|e| format!("delete topics: {e}"))?
        {
            // A topic that is already gone is what we want.
            if let Err((topic, code)) = result {
                if code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
                    return Err(format!("delete topic {topic}: {code}"));
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = disposable_topics(&consumer, timeout)?;
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("topics still listed 30 s after deletion: {left:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let groups = consumer
        .fetch_group_list(None, timeout)
        .map_err(|e| format!("list groups: {e}"))?;
    let names: Vec<&str> = groups.groups().iter().map(|g| g.name()).collect();
    if !names.is_empty() {
        // Groups with live members (of a process another test left running) refuse; their
        // offsets went with the topics, so they are harmless.
        let _ = admin.delete_groups(&names, &options).await;
        // A member of a process the last test killed is still in its group until its session
        // times out (tansu drops it only then, at the next member's join or heartbeat): had
        // the next test's processes joined before, the dead member would have been given
        // partitions too.
        tokio::time::sleep(session_timeout() + Duration::from_millis(500)).await;
    }
    Ok(())
}

/// The session timeout of the harness's clients (see [`crate::TANSU_PROPERTIES`]).
fn session_timeout() -> Duration {
    crate::TANSU_PROPERTIES
        .iter()
        .find(|(k, _)| *k == "session.timeout.ms")
        .and_then(|(_, v)| v.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

fn disposable_topics(consumer: &BaseConsumer, timeout: Duration) -> Result<Vec<String>, String> {
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| format!("metadata: {e}"))?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|t| disposable(t))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_topics_the_harness_deletes() {
        for (topic, deleted) in [
            ("acme.shop.orders.events", true),
            ("acme.shop.orders.private.dlq", true),
            ("probe.commands", true),
            ("__consumer_offsets", false),
            ("__transaction_state", false),
            ("_schemas", false),
            ("_confluent-command", false),
        ] {
            assert_eq!(disposable(topic), deleted, "{topic}");
        }
    }

    #[test]
    fn a_thread_joins_its_own_turn_and_others_wait() {
        let (outer, first) = Turn::join();
        assert!(first, "the first take starts a turn");
        let (inner, first) = Turn::join();
        assert!(!first, "the same thread joins its turn");
        let (tx, rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            let (turn, first) = Turn::join();
            tx.send(first).unwrap();
            drop(turn);
        });
        drop(inner);
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "another thread took the cluster during this thread's turn"
        );
        drop(outer);
        let first = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("another thread takes the cluster once the turn ends");
        assert!(first, "its take starts a turn of its own");
        other.join().unwrap();
        assert!(holder().thread.is_none());
    }
}
