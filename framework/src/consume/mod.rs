//! The consume layer: a record's path from the broker to its commit.
//!
//! ```text
//! consumer (poll thread) → routing → worker (ordering, in-flight bound)
//!     → handler → outputs acknowledged → watermark → committer (commit thread)
//! ```
//!
//! [`retry`] decides what follows a failed attempt (a pure core); the worker carries the
//! decision out: sleep and try again, re-publish to the retry topic ([`retry_topic`]) or
//! dead-letter ([`dead_letter`]).

pub(crate) mod close;
pub(crate) mod committer;
pub(crate) mod consumer;
pub(crate) mod dead_letter;
pub(crate) mod lanes;
pub(crate) mod parked;
pub(crate) mod received;
pub(crate) mod retry;
pub(crate) mod retry_topic;
pub(crate) mod routing;
pub(crate) mod watermark;
pub(crate) mod worker;
