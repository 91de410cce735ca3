//! A bounded close: librdkafka's consumer close has no deadline of its own.
//!
//! Dropping a `BaseConsumer` that joined a group closes it: it revokes the assignment and
//! leaves the group, polling until librdkafka says it is closed. That wait can last forever
//! (seen on the embedded mock cluster: the revocation's unassign never returns during a
//! rebalance), and a listener's shutdown would hang with it. [`drop_within`] drops the value on
//! a thread of its own and waits at most a deadline; past it, the value is left to that thread
//! and the caller goes on.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Drops `value` on a new thread named `name`, waiting at most `deadline` for the drop to end.
/// Returns whether it ended in time; if not, the drop goes on in the background (or never
/// ends) and the thread is not joined. If no thread can be spawned, drops it here.
pub(crate) fn drop_within<T: Send + 'static>(value: T, deadline: Duration, name: String) -> bool {
    let (done, ended) = mpsc::channel::<()>();
    let spawned = thread::Builder::new().name(name).spawn(move || {
        drop(value);
        let _ = done.send(());
    });
    match spawned {
        Ok(_) => ended.recv_timeout(deadline).is_ok(),
        // The closure, and the value in it, came back dropped: the drop ran here.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    /// Sleeps for its duration when dropped, then marks itself dropped.
    struct SlowDrop(Duration, Arc<AtomicBool>);

    impl Drop for SlowDrop {
        fn drop(&mut self) {
            thread::sleep(self.0);
            self.1.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_quick_drop_ends_in_time() {
        let dropped = Arc::new(AtomicBool::new(false));
        let value = SlowDrop(Duration::ZERO, dropped.clone());
        assert!(drop_within(value, Duration::from_secs(10), "t".into()));
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_drop_past_the_deadline_is_left_behind() {
        let dropped = Arc::new(AtomicBool::new(false));
        let value = SlowDrop(Duration::from_secs(3), dropped.clone());
        let start = Instant::now();
        assert!(!drop_within(value, Duration::from_millis(100), "t".into()));
        // It returned at the deadline, not after the drop.
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(!dropped.load(Ordering::SeqCst));
    }
}
