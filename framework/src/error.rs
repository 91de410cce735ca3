//! Errors of the library, and the error handlers return.

use std::fmt;

use rdkafka::error::KafkaError;

use crate::contract::topic::TopicNameError;
use crate::contract::ContractError;

/// A boxed error, as handlers may return any error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with atoll's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the atoll runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; the message names the key.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The schema registry failed or is unreachable (transient: retried).
    #[error("schema registry: {0}")]
    Registry(String),
    /// A schema is invalid, missing from the registry, or incompatible (permanent).
    #[error("schema: {0}")]
    Schema(String),
    /// A topic, service or listener name breaks the naming convention.
    #[error(transparent)]
    TopicName(#[from] TopicNameError),
    /// An event could not be encoded.
    #[error("cannot encode `{ce_type}`: {source}")]
    Encode {
        /// The event's CloudEvents type.
        ce_type: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// The broker rejected or failed a produce.
    #[error("producing to `{topic}` failed: {source}")]
    Produce {
        /// The target topic.
        topic: String,
        /// Why.
        source: KafkaError,
    },
    /// A Kafka client operation failed.
    #[error("{what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// Why.
        source: KafkaError,
    },
    /// Creating a topic failed.
    #[error("cannot create topic `{topic}`: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// The embedded broker could not be started.
    #[error("embedded broker: {0}")]
    Embedded(String),
    /// A declaration is inconsistent: a service registered twice, two listeners with one
    /// name, a listener override naming no listener.
    #[error("{0}")]
    Declaration(String),
    /// An event's contract could not be derived or written (its Avro schema, a contract file).
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// A thread of the runtime could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// Which thread.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A saga's state could not be restored or is not available yet.
    #[error("saga: {0}")]
    Saga(String),
    /// The store (the service's database) failed; transient when the database was
    /// unreachable or the transaction lost a conflict (serialization failure, deadlock, busy).
    #[error("store: {what}: {source}")]
    Store {
        /// What was being done.
        what: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A migration failed: the start stops.
    #[error("migration `{name}` failed: {source}")]
    Migration {
        /// The migration (`atoll 1: inbox and outbox`, or the application's version and name).
        name: String,
        /// The database's answer.
        source: sqlx::Error,
    },
}

/// Whether retrying `e` later may succeed: the database unreachable or going away (a failover),
/// the pool or the server out of connections, or the transaction a victim of a conflict.
///
/// PostgreSQL's SQLSTATEs (appendix A of its manual): class `08` (connection exceptions),
/// `40001` serialization failure and `40P01` deadlock, `53300` too many connections, `55P03`
/// lock not available, `57P01`–`57P03` administrator or crash shutdown and "cannot connect
/// now" (a server starting or stopping). SQLite's result codes: `5` `BUSY`, `6` `LOCKED`, and
/// their extended codes `261`, `517`. A protocol or TLS error is a connection cut mid-exchange.
pub(crate) fn sql_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || matches!(
                    code.as_ref(),
                    "40001"
                        | "40P01"
                        | "53300"
                        | "55P03"
                        | "57P01"
                        | "57P02"
                        | "57P03"
                        | "5"
                        | "6"
                        | "261"
                        | "517"
                )
        }),
        _ => false,
    }
}

/// What a failed database operation `what` (e.g. "writing the outbox") becomes: for
/// `map_err`.
pub(crate) fn store_error(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |source| Error::Store {
        what: what.into(),
        source,
    }
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode::{
            InvalidMessage, InvalidMessageSize, MessageSizeTooLarge,
        };
        match self {
            Self::Produce {
                source: KafkaError::MessageProduction(code),
                ..
            } => !matches!(
                code,
                MessageSizeTooLarge | InvalidMessageSize | InvalidMessage
            ),
            Self::Produce { .. } | Self::Kafka { .. } | Self::Registry(_) => true,
            Self::Store { source, .. } => sql_is_transient(source),
            _ => false,
        }
    }

    /// Whether a produce failed because the record is larger than the client or the broker
    /// accepts (`message.max.bytes`): sending it again cannot succeed.
    pub(crate) fn is_too_large(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode::{InvalidMessageSize, MessageSizeTooLarge};
        matches!(
            self,
            Self::Produce {
                source: KafkaError::MessageProduction(MessageSizeTooLarge | InvalidMessageSize),
                ..
            }
        )
    }

    /// A Kafka client operation's failure. A refused configuration property's value is left
    /// out: librdkafka's message repeats it, and it may be a password (a misspelt
    /// `sasl.password`, say).
    pub(crate) fn kafka(what: impl Into<String>, source: KafkaError) -> Self {
        let source = match source {
            KafkaError::ClientConfig(result, description, key, _) => {
                KafkaError::ClientConfig(result, description, key, "[redacted]".to_owned())
            }
            other => other,
        };
        Self::Kafka {
            what: what.into(),
            source,
        }
    }
}

/// Whether a handler failure may heal by retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Retry: the failure may heal (a timeout, an unavailable dependency).
    Transient,
    /// Dead-letter now: retrying cannot help (invalid business input).
    Permanent,
}

/// The error a handler returns: a cause and whether it is [transient](FailureKind::Transient).
///
/// `?` converts any error into a **transient** failure (atoll's own errors keep their
/// classification); mark a permanent one with [`HandlerError::permanent`] or
/// [`ResultExt::permanent`].
///
/// ```
/// use atoll::{HandlerError, HandlerResult, ResultExt};
/// fn parse(qty: &str) -> HandlerResult<u32> {
///     let n: u32 = qty.parse().permanent()?;
///     if n == 0 {
///         return Err(HandlerError::permanent("quantity must be positive"));
///     }
///     Ok(n)
/// }
/// assert!(parse("x").unwrap_err().is_permanent());
/// assert!(parse("0").unwrap_err().is_permanent());
/// ```
pub struct HandlerError {
    kind: FailureKind,
    source: BoxError,
}

impl HandlerError {
    /// A failure that retrying may heal.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self {
            kind: FailureKind::Transient,
            source: source.into(),
        }
    }

    /// A failure that retrying cannot heal: the record is dead-lettered.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            source: source.into(),
        }
    }

    /// Transient or permanent.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// Whether this failure is permanent.
    pub fn is_permanent(&self) -> bool {
        self.kind == FailureKind::Permanent
    }

    /// The cause.
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// The database error behind this failure, if it is one (a handler's `?` on a query).
    pub(crate) fn sql_error(&self) -> Option<&sqlx::Error> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*self.source);
        while let Some(e) = cause {
            if let Some(sql) = e.downcast_ref::<sqlx::Error>() {
                return Some(sql);
            }
            if let Some(Error::Store { source, .. }) = e.downcast_ref::<Error>() {
                return Some(source);
            }
            cause = e.source();
        }
        None
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        let source: BoxError = Box::new(e);
        let kind = match source.downcast_ref::<Error>() {
            Some(e) if !e.is_transient() => FailureKind::Permanent,
            _ => FailureKind::Transient,
        };
        Self { kind, source }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

/// Marks the error of a `Result` as transient or permanent.
pub trait ResultExt<T> {
    /// The error, if any, is transient.
    fn transient(self) -> Result<T, HandlerError>;
    /// The error, if any, is permanent.
    fn permanent(self) -> Result<T, HandlerError>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn transient(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::transient)
    }

    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database's error with a code, as a driver reports it.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "error"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    #[test]
    fn which_database_errors_are_waited_out() {
        let db = |code| sqlx::Error::Database(Box::new(Coded(code)));
        for (error, transient, what) in [
            (db("08000"), true, "connection exception"),
            (db("08006"), true, "connection failure"),
            (db("08001"), true, "cannot establish a connection"),
            (db("08P01"), true, "protocol violation"),
            (db("40001"), true, "serialization failure"),
            (db("40P01"), true, "deadlock"),
            (db("53300"), true, "too many connections"),
            (db("55P03"), true, "lock not available"),
            (db("57P01"), true, "administrator shutdown (a failover)"),
            (db("57P02"), true, "crash shutdown"),
            (db("57P03"), true, "cannot connect now"),
            (db("5"), true, "SQLite busy"),
            (db("517"), true, "SQLite busy snapshot"),
            (db("23505"), false, "unique violation: the handler's error"),
            (db("42P01"), false, "undefined table: a bug"),
            (db("22P02"), false, "invalid text: bad input"),
            (
                sqlx::Error::Protocol("unexpected end".into()),
                true,
                "a cut mid-message",
            ),
            (sqlx::Error::PoolTimedOut, true, "the pool exhausted"),
            (
                sqlx::Error::RowNotFound,
                false,
                "no row: the handler's error",
            ),
        ] {
            assert_eq!(sql_is_transient(&error), transient, "{what}: {error}");
        }
    }

    fn io() -> std::io::Error {
        std::io::Error::other("disk on fire")
    }

    #[test]
    fn a_refused_property_value_is_not_shown() {
        use rdkafka::types::RDKafkaConfRes;
        let refused = KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
            "No such configuration property: \"sasl.pasword\"".into(),
            "sasl.pasword".into(),
            "hunter2".into(),
        );
        let e = Error::kafka("creating the producer", refused).to_string();
        assert!(e.contains("sasl.pasword") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn question_mark_is_transient() {
        let f = || -> Result<(), HandlerError> { Err(io())? };
        let e = f().unwrap_err();
        assert_eq!(e.kind(), FailureKind::Transient);
        assert_eq!(e.to_string(), "disk on fire");
    }

    #[test]
    fn atoll_errors_keep_their_class() {
        let e: HandlerError = Error::Config("x".into()).into();
        assert!(e.is_permanent());
        let e: HandlerError = Error::kafka("commit", KafkaError::Canceled).into();
        assert!(!e.is_permanent());
    }

    #[test]
    fn ext_marks_either_way() {
        let r: Result<(), std::io::Error> = Err(io());
        assert!(r.permanent().unwrap_err().is_permanent());
        let r: Result<(), &str> = Err("nope");
        assert!(!r.transient().unwrap_err().is_permanent());
    }
}
