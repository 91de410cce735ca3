//! atoll's own tables, created by versioned migrations at start: the inbox (records a
//! transactional listener has handled), the outbox (records waiting to be published) and the
//! schedule (records waiting until they are due).
//!
//! Applied migrations are recorded in `atoll_schema`; on PostgreSQL an advisory lock makes
//! concurrent starts of several processes wait for each other.

use sqlx::{AnyConnection, Connection};

use super::Backend;
use crate::error::{Error, Result};

/// One step of atoll's schema.
struct Migration {
    version: i64,
    name: &'static str,
    postgres: &'static [&'static str],
    sqlite: &'static [&'static str],
}

impl Migration {
    fn statements(&self, backend: Backend) -> &'static [&'static str] {
        match backend {
            Backend::Postgres => self.postgres,
            Backend::Sqlite => self.sqlite,
        }
    }
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "inbox and outbox",
        postgres: &[
            "CREATE TABLE atoll_inbox (
            consumer_group TEXT NOT NULL,
            ce_id TEXT NOT NULL,
            received_at BIGINT NOT NULL,
            PRIMARY KEY (consumer_group, ce_id))",
            "CREATE INDEX atoll_inbox_received_at ON atoll_inbox (received_at)",
            "CREATE TABLE atoll_outbox (
            id BIGSERIAL PRIMARY KEY,
            topic TEXT NOT NULL,
            record_partition INTEGER,
            record_key BYTEA,
            payload BYTEA NOT NULL,
            headers BYTEA NOT NULL,
            ce_id TEXT NOT NULL,
            created_at BIGINT NOT NULL)",
        ],
        sqlite: &[
            "CREATE TABLE atoll_inbox (
            consumer_group TEXT NOT NULL,
            ce_id TEXT NOT NULL,
            received_at INTEGER NOT NULL,
            PRIMARY KEY (consumer_group, ce_id))",
            "CREATE INDEX atoll_inbox_received_at ON atoll_inbox (received_at)",
            "CREATE TABLE atoll_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            record_partition INTEGER,
            record_key BLOB,
            payload BLOB NOT NULL,
            headers BLOB NOT NULL,
            ce_id TEXT NOT NULL,
            created_at INTEGER NOT NULL)",
        ],
    },
    Migration {
        version: 2,
        name: "views",
        postgres: &[VIEWS],
        sqlite: &[VIEWS],
    },
    Migration {
        version: 3,
        name: "outbox rows know their record",
        postgres: &[OUTBOX_SOURCE, OUTBOX_SOURCE_INDEX],
        sqlite: &[OUTBOX_SOURCE, OUTBOX_SOURCE_INDEX],
    },
    Migration {
        version: 4,
        name: "outbox claims, failures and dead letters",
        postgres: &[
            "ALTER TABLE atoll_outbox ADD COLUMN available_at BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE atoll_outbox ADD COLUMN claimed_by BIGINT",
            "ALTER TABLE atoll_outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE atoll_outbox ADD COLUMN last_error TEXT",
            "ALTER TABLE atoll_outbox ADD COLUMN dead_letter_topic TEXT",
            OUTBOX_KEY_INDEX,
            OUTBOX_FAILING_INDEX,
            "CREATE TABLE atoll_outbox_dead (
            id BIGINT PRIMARY KEY,
            topic TEXT NOT NULL,
            record_partition INTEGER,
            record_key BYTEA,
            payload BYTEA NOT NULL,
            headers BYTEA NOT NULL,
            ce_id TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            source TEXT,
            attempts INTEGER NOT NULL,
            error TEXT NOT NULL,
            failed_at BIGINT NOT NULL)",
        ],
        sqlite: &[
            "ALTER TABLE atoll_outbox ADD COLUMN available_at INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE atoll_outbox ADD COLUMN claimed_by INTEGER",
            "ALTER TABLE atoll_outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE atoll_outbox ADD COLUMN last_error TEXT",
            "ALTER TABLE atoll_outbox ADD COLUMN dead_letter_topic TEXT",
            OUTBOX_KEY_INDEX,
            OUTBOX_FAILING_INDEX,
            "CREATE TABLE atoll_outbox_dead (
            id INTEGER PRIMARY KEY,
            topic TEXT NOT NULL,
            record_partition INTEGER,
            record_key BLOB,
            payload BLOB NOT NULL,
            headers BLOB NOT NULL,
            ce_id TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            source TEXT,
            attempts INTEGER NOT NULL,
            error TEXT NOT NULL,
            failed_at INTEGER NOT NULL)",
        ],
    },
    Migration {
        version: 5,
        name: "the inbox knows each event's source",
        postgres: &[
            "ALTER TABLE atoll_inbox ADD COLUMN ce_source TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE atoll_inbox DROP CONSTRAINT atoll_inbox_pkey",
            "ALTER TABLE atoll_inbox ADD PRIMARY KEY (consumer_group, ce_source, ce_id)",
        ],
        // SQLite cannot change a table's primary key: a new table takes the rows over.
        sqlite: &[
            "CREATE TABLE atoll_inbox_v5 (
            consumer_group TEXT NOT NULL,
            ce_source TEXT NOT NULL,
            ce_id TEXT NOT NULL,
            received_at INTEGER NOT NULL,
            PRIMARY KEY (consumer_group, ce_source, ce_id))",
            "INSERT INTO atoll_inbox_v5 (consumer_group, ce_source, ce_id, received_at)
            SELECT consumer_group, '', ce_id, received_at FROM atoll_inbox",
            "DROP TABLE atoll_inbox",
            "ALTER TABLE atoll_inbox_v5 RENAME TO atoll_inbox",
            "CREATE INDEX atoll_inbox_received_at ON atoll_inbox (received_at)",
        ],
    },
    Migration {
        version: 6,
        name: "the outbox is a queue",
        postgres: &[
            OUTBOX_NO_SOURCE_INDEX,
            // A safety net beside atoll's own vacuums (see `outbox::vacuum`): by dead rows,
            // not by a share of the (small) live ones, and unthrottled. No vacuum truncates
            // the table: that takes a lock every writer waits for, and a queue's table grows
            // back at once.
            "ALTER TABLE atoll_outbox SET (autovacuum_vacuum_scale_factor = 0,
             autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_cost_delay = 0,
             vacuum_truncate = false)",
        ],
        sqlite: &[OUTBOX_NO_SOURCE_INDEX],
    },
    Migration {
        version: 7,
        name: "scheduled commands",
        postgres: &[
            "CREATE TABLE atoll_schedule (
            id BIGSERIAL PRIMARY KEY,
            service TEXT NOT NULL,
            schedule_key TEXT NOT NULL,
            topic TEXT NOT NULL,
            record_partition INTEGER,
            record_key BYTEA,
            payload BYTEA NOT NULL,
            headers BYTEA NOT NULL,
            ce_id TEXT NOT NULL,
            due_at BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            source TEXT,
            dead_letter_topic TEXT NOT NULL,
            UNIQUE (service, schedule_key))",
            SCHEDULE_DUE_INDEX,
        ],
        sqlite: &[
            "CREATE TABLE atoll_schedule (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            service TEXT NOT NULL,
            schedule_key TEXT NOT NULL,
            topic TEXT NOT NULL,
            record_partition INTEGER,
            record_key BLOB,
            payload BLOB NOT NULL,
            headers BLOB NOT NULL,
            ce_id TEXT NOT NULL,
            due_at INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            source TEXT,
            dead_letter_topic TEXT NOT NULL,
            UNIQUE (service, schedule_key))",
            SCHEDULE_DUE_INDEX,
        ],
    },
];

/// Scheduled records by when they are due, for the move of the due ones to the outbox (see
/// `schedule::promote`).
const SCHEDULE_DUE_INDEX: &str = "CREATE INDEX atoll_schedule_due ON atoll_schedule (due_at, id)";

/// No query looks rows up by their source: the index only cost every insert and delete.
const OUTBOX_NO_SOURCE_INDEX: &str = "DROP INDEX IF EXISTS atoll_outbox_source";

/// A key's rows in order: for the check that no older row of a key is held (see
/// `outbox::route` and the relay's claim).
const OUTBOX_KEY_INDEX: &str =
    "CREATE INDEX atoll_outbox_key ON atoll_outbox (topic, record_key, id)";
/// The rows that failed at least once, for the readiness probe (few, so a partial index).
const OUTBOX_FAILING_INDEX: &str =
    "CREATE INDEX atoll_outbox_failing ON atoll_outbox (id) WHERE attempts > 0";

/// The record (consumer group and inbox id) whose handling wrote an outbox row: the dead letter
/// of a row that can never be published names its group.
const OUTBOX_SOURCE: &str = "ALTER TABLE atoll_outbox ADD COLUMN source TEXT";
const OUTBOX_SOURCE_INDEX: &str = "CREATE INDEX atoll_outbox_source ON atoll_outbox (source)";

/// The views the listeners of a store's processes feed (see [`super::view`]).
const VIEWS: &str = "CREATE TABLE atoll_views (
    consumer_group TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    view_tables TEXT NOT NULL,
    registered_at BIGINT NOT NULL)";

/// The key of the advisory lock concurrent starts take on PostgreSQL ("atoll" in ASCII).
const LOCK_KEY: i64 = 0x61_74_6f_6c_6c;

/// Brings atoll's tables up to the newest version, in one transaction (both databases run DDL
/// transactionally); on PostgreSQL under an advisory lock, so processes starting together wait
/// for the first instead of racing it.
pub(crate) async fn migrate(conn: &mut AnyConnection, backend: Backend) -> Result<()> {
    let failed = |name: &str| {
        let name = name.to_owned();
        move |source| Error::Migration { name, source }
    };
    let mut tx = conn.begin().await.map_err(failed("atoll schema"))?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(failed("atoll schema lock"))?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS atoll_schema (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(failed("atoll schema"))?;
    for m in MIGRATIONS {
        let name = format!("atoll {}: {}", m.version, m.name);
        let applied: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM atoll_schema WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed(&name))?;
        if applied.is_some() {
            continue;
        }
        for statement in m.statements(backend) {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(failed(&name))?;
        }
        sqlx::query("INSERT INTO atoll_schema (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(super::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(failed(&name))?;
        tracing::info!(migration = name, "store migrated");
    }
    tx.commit().await.map_err(failed("atoll schema"))
}
