//! The dead-letter contract: a dead-lettered record goes to `<service>.private.dlq` with its key,
//! value and headers preserved, plus the `atoll_dlq_*` headers named here, which say where it
//! came from and why it failed (see `docs/architecture.md#failure-handling-and-dead-letters`).

use std::fmt;

/// `atoll_dlq_original_topic`.
pub const ORIGINAL_TOPIC: &str = "atoll_dlq_original_topic";
/// `atoll_dlq_original_partition`.
pub const ORIGINAL_PARTITION: &str = "atoll_dlq_original_partition";
/// `atoll_dlq_original_offset`.
pub const ORIGINAL_OFFSET: &str = "atoll_dlq_original_offset";
/// `atoll_dlq_listener`.
pub const LISTENER: &str = "atoll_dlq_listener";
/// `atoll_dlq_attempts`.
pub const ATTEMPTS: &str = "atoll_dlq_attempts";
/// `atoll_dlq_error_kind`.
pub const ERROR_KIND: &str = "atoll_dlq_error_kind";
/// `atoll_dlq_error`.
pub const ERROR: &str = "atoll_dlq_error";
/// `atoll_dlq_failed_at`.
pub const FAILED_AT: &str = "atoll_dlq_failed_at";
/// `atoll_dlq_payload_omitted`: present when the record was too large for the DLQ. Its value
/// is the original payload's size in bytes; the dead letter's payload is then a JSON pointer
/// to the original record, `{"topic": …, "partition": …, "offset": …}`, and its original
/// headers are left out.
pub const PAYLOAD_OMITTED: &str = "atoll_dlq_payload_omitted";

/// Why a record was dead-lettered: the value of `atoll_dlq_error_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterKind {
    /// The payload did not decode into the event type.
    Decode,
    /// `ce_type` is missing, or no type this listener knows.
    UnknownType,
    /// The handler failed.
    Handler,
    /// The handler panicked.
    Panic,
    /// The handler exceeded its time budget.
    Timeout,
}

impl DeadLetterKind {
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::Decode,
        Self::UnknownType,
        Self::Handler,
        Self::Panic,
        Self::Timeout,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::UnknownType => "unknown_type",
            Self::Handler => "handler",
            Self::Panic => "panic",
            Self::Timeout => "timeout",
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
