//! The consume layer: a record's path from the broker to its commit.
//!
//! ```text
//! consumer (poll thread) → routing → worker (ordering, in-flight bound)
//!     → handler → outputs acknowledged → watermark → committer (commit thread)
//! ```
//!
//! [`retry`] decides what follows a failed attempt (a pure core); the worker carries the
//! decision out: sleep and try again, re-publish to the retry topic or dead-letter (their
//! headers are contracts: [`crate::contract::retry_topic`], [`crate::contract::dead_letter`]).

pub(crate) mod batch;
pub(crate) mod close;
pub(crate) mod committer;
pub(crate) mod consumer;
pub(crate) mod due;
pub(crate) mod env;
pub(crate) mod holds;
pub(crate) mod lanes;
pub(crate) mod orphan;
pub(crate) mod outcome;
pub(crate) mod parked;
pub(crate) mod received;
pub(crate) mod retry;
pub(crate) mod routing;
pub(crate) mod watermark;
pub(crate) mod worker;
pub(crate) mod write;
