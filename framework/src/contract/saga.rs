//! A saga's state as the saga engine writes it on the service's compacted
//! `<service>.private.saga` topic, keyed `<saga>/<id>`, one record per transition (a tombstone
//! once an ended saga's retention passed). The operator console reads it; so can any tool.

use serde::{Deserialize, Serialize};

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Waiting for the reply to a step's action.
    Running,
    /// Waiting for the reply to a step's compensation.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed or timed out, and the compensations ran.
    Failed,
}

/// Action or compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// A step's action.
    Action,
    /// A step's compensation.
    Compensation,
}

/// The request a saga waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pending {
    /// The command's `ce_id`; its reply's `ce_causationid`.
    pub request_id: String,
    /// Whether it is a step's action or its compensation.
    pub phase: Phase,
    /// The step's index in the saga's steps.
    pub step: usize,
    /// Unix milliseconds after which the request times out.
    pub deadline_ms: u64,
}

/// How a past request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Ended {
    /// Its reply came.
    Replied,
    /// It timed out first.
    TimedOut,
}

/// A request that no longer waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Past {
    /// The request's `ce_id`.
    pub request_id: String,
    /// How it ended.
    pub ended: Ended,
    /// Whether it was a step's action or its compensation (`None` in states written before
    /// atoll recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
}

/// One saga's state: the value of its record on `private.saga`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SagaState {
    /// `<saga>/<id>`: the record key.
    pub key: String,
    /// Grows by one per transition.
    pub version: u64,
    /// Where it is.
    pub status: Status,
    /// The user's saga data.
    pub data: serde_json::Value,
    /// Why the saga failed, once it fails.
    pub reason: Option<String>,
    /// The request it waits for, while it runs or compensates.
    pub pending: Option<Pending>,
    /// The requests that no longer wait, oldest first (the last 32).
    pub history: Vec<Past>,
    /// `ce_id` of the input that made this version: a redelivered input redoes its effects.
    pub input: String,
    /// The flow's correlation id.
    pub correlation_id: String,
    /// Unix milliseconds when the saga completed or failed; its state is removed (tombstoned)
    /// once the retention has passed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// The generation of the partition's owner that wrote this version (see
    /// `next_generation`): a restore prefers a later owner's state to a higher version, so a
    /// revoked owner's late write never wins over its successor's. 0 in states written before
    /// states carried it.
    #[serde(default)]
    pub generation: u64,
}

impl SagaState {
    /// What a restore orders a saga's states by: the writer's generation, then the version.
    pub fn rank(&self) -> (u64, u64) {
        (self.generation, self.version)
    }

    /// Whether this state, read after a state ranked `earlier` (see [`rank`](Self::rank)),
    /// replaces it: a revoked owner's late write does not replace its successor's. A state
    /// without a generation (written by a version of atoll before generations, as during a
    /// rolling upgrade or a rollback) is ordered by its version alone. The saga engine's
    /// restore and the operator console both take the latest state so.
    pub fn supersedes(&self, earlier: (u64, u64)) -> bool {
        if self.generation == 0 || earlier.0 == 0 {
            self.version >= earlier.1
        } else {
            self.rank() >= earlier
        }
    }
}
