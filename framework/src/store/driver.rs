//! Which sqlx driver a transaction runs on: a handler says it by the type it takes, `Tx` (sqlx's
//! `Any`: one handler for PostgreSQL and SQLite) or `Tx<Postgres>` (sqlx's native PostgreSQL
//! driver).
//!
//! Why both. `Any` lets one service run on SQLite in development and on PostgreSQL in
//! production, but it knows only the types every database has (integers, floats, text, bytes)
//! and converts every argument and column on the way. The native driver binds arrays (one
//! `UNNEST` statement for a whole batch), JSON, UUIDs and times, and converts nothing. A
//! transaction's own statements (its inbox row, its outbox rows) run on whichever driver its
//! handler chose, in the same transaction ([`on_conn`]); the rest of the process (the relay,
//! the routes, the schema) runs on the `Any` pool.

use sqlx::{AnyConnection, PgConnection};

/// The sqlx driver of a transaction (see [`TxDriver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Driver {
    /// sqlx's `Any`: PostgreSQL or SQLite, as `store.url` says; the types both know.
    Any,
    /// sqlx's native PostgreSQL driver: every PostgreSQL type; `store.url` must be PostgreSQL.
    Postgres,
}

impl Driver {
    /// How a handler taking a transaction of this driver writes it (for messages).
    pub(crate) fn tx_type(self) -> &'static str {
        match self {
            Self::Any => "Tx",
            Self::Postgres => "Tx<Postgres>",
        }
    }
}

/// A sqlx database a [`Tx`](crate::Tx) can run on: `sqlx::Any` (the default) or
/// `sqlx::Postgres`.
pub trait TxDriver: sqlx::Database + sealed::Sealed {
    /// Which one it is.
    const DRIVER: Driver;
}

impl TxDriver for sqlx::Any {
    const DRIVER: Driver = Driver::Any;
}

impl TxDriver for sqlx::Postgres {
    const DRIVER: Driver = Driver::Postgres;
}

pub(crate) mod sealed {
    use super::OpenTx;

    /// Only atoll's drivers: the connection of an open transaction of the driver.
    pub trait Sealed: sqlx::Database {
        /// The transaction's connection; `None` when it runs on another driver.
        fn connection(tx: &mut OpenTx) -> Option<&mut Self::Connection>;
    }

    impl Sealed for sqlx::Any {
        fn connection(tx: &mut OpenTx) -> Option<&mut Self::Connection> {
            match tx {
                OpenTx::Any(tx) => Some(&mut **tx),
                OpenTx::Postgres(_) => None,
            }
        }
    }

    impl Sealed for sqlx::Postgres {
        fn connection(tx: &mut OpenTx) -> Option<&mut Self::Connection> {
            match tx {
                OpenTx::Postgres(tx) => Some(&mut **tx),
                OpenTx::Any(_) => None,
            }
        }
    }
}

/// An open transaction on the store, of either driver.
#[derive(Debug)]
pub enum OpenTx {
    /// On sqlx's `Any` driver.
    Any(sqlx::Transaction<'static, sqlx::Any>),
    /// On sqlx's native PostgreSQL driver.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl OpenTx {
    /// Its connection, for atoll's own statements in it.
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Self::Any(tx) => Conn::Any(tx),
            Self::Postgres(tx) => Conn::Postgres(tx),
        }
    }

    /// Commits it.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Any(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }
}

/// A connection atoll runs its own statements on, of either driver (see [`on_conn`]).
#[derive(Debug)]
pub(crate) enum Conn<'a> {
    Any(&'a mut AnyConnection),
    Postgres(&'a mut PgConnection),
}

impl<'a> From<&'a mut AnyConnection> for Conn<'a> {
    fn from(conn: &'a mut AnyConnection) -> Self {
        Self::Any(conn)
    }
}

impl<'a> From<&'a mut PgConnection> for Conn<'a> {
    fn from(conn: &'a mut PgConnection) -> Self {
        Self::Postgres(conn)
    }
}

/// Runs `$body` with `$c` bound to the connection of `$conn` (a `&mut Conn`), whichever driver
/// it is: the body is written once and compiled for each driver, so a statement and the types
/// it binds and reads must suit both (query into tuples; sqlx's `FromRow` does the rest).
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::store::driver::Conn::Any($c) => {
                let $c: &mut ::sqlx::AnyConnection = &mut **$c;
                $body
            }
            $crate::store::driver::Conn::Postgres($c) => {
                let $c: &mut ::sqlx::PgConnection = &mut **$c;
                $body
            }
        }
    };
}
pub(crate) use on_conn;
