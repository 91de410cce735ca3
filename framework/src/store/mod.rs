//! The store layer: the database a service keeps its state in, on sqlx — PostgreSQL in
//! production (`store.url = postgres://…`), a SQLite file when no URL is set (zero setup).
//!
//! At start atoll connects, creates its own tables ([`schema`]) and runs the application's
//! migrations (sqlx's migrator). Handlers reach the database through the store; a
//! transactional listener's writes, its record's inbox row and the records it produces (the
//! outbox) commit in one transaction.

pub(crate) mod driver;
pub(crate) mod inbox;
pub(crate) mod outbox;
pub(crate) mod schedule;
pub(crate) mod schema;
pub(crate) mod sizes;
pub(crate) mod view;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

use tokio_util::sync::CancellationToken;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AnyPool, PgPool};

use crate::config::secret::redact_url;
use crate::config::store::StoreConfig;
use crate::error::{store_error, Error, Result};
use crate::ops::health::{Condition, Health};
use crate::ops::metrics::{Metrics, OutboxMetrics};
use crate::produce::Producer;
use driver::{Driver, OpenTx};
use outbox::inflight::InFlight;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite (a file; one process).
    Sqlite,
}

impl Backend {
    fn of(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(Error::Config(format!(
                "store.url must be a postgres:// or sqlite: URL; got `{}`",
                redact_url(url)
            )))
        }
    }

    /// SQL for the database's clock, in milliseconds since the Unix epoch. Leases and backoffs
    /// of outbox rows are kept in it: every process on the database then reads one clock.
    ///
    /// It reads the clock once per statement (PostgreSQL's `statement_timestamp()`, SQLite's
    /// `'now'`): a relay's claim asks "is this row's lease over?" of many rows, and a clock
    /// read per row (`clock_timestamp()`) could see a lease still running for a key's oldest
    /// row and over for its newer rows, which the relay would then claim past it.
    pub(crate) fn now_ms_sql(self) -> &'static str {
        match self {
            Self::Postgres => "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)",
            Self::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        }
    }

    /// SQL for the database's clock as a row is written, in milliseconds since the Unix epoch:
    /// where a lease ends. Not [`now_ms_sql`](Self::now_ms_sql): a claim that ran for seconds
    /// would otherwise write leases already that much shorter. (SQLite's statements are short
    /// and its clock is read once per statement either way.)
    pub(crate) fn clock_ms_sql(self) -> &'static str {
        match self {
            Self::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Self::Sqlite => self.now_ms_sql(),
        }
    }

    /// SQL for "`id` is one of the ids bound as parameter `$param`" (see
    /// [`id_list`](Self::id_list)): one statement text whatever the number of ids, so the
    /// database prepares it once.
    pub(crate) fn id_in(self, param: usize) -> String {
        match self {
            Self::Postgres => format!("id = ANY(CAST(string_to_array(${param}, ',') AS BIGINT[]))"),
            Self::Sqlite => format!("id IN (SELECT value FROM json_each(${param}))"),
        }
    }

    /// `ids` as the one parameter [`id_in`](Self::id_in) takes.
    pub(crate) fn id_list(self, ids: &[i64]) -> String {
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        match self {
            Self::Postgres => list,
            Self::Sqlite => format!("[{list}]"),
        }
    }

    /// SQL from `FROM` on for the outbox rows of topic `$1` whose key is one of the keys bound
    /// as `$3` (see [`key_list`](Self::key_list)), at most `$2` of each key: one statement
    /// text whatever the number of keys.
    ///
    /// On PostgreSQL each key is one lookup in the `(topic, record_key, id)` index (a lateral
    /// join), whatever the planner's statistics say. With the keys as a set to semi-join, it
    /// planned from the statistics a vacuum of the emptied table had left (no rows) and walked
    /// every row of the topic in the index for each batch: half a second to two seconds per
    /// batch at 20,000 rows, with the batch's row locks held meanwhile.
    pub(crate) fn outbox_rows_of_keys(self) -> &'static str {
        match self {
            Self::Postgres => {
                "FROM unnest(string_to_array($3, ',')) AS k CROSS JOIN LATERAL (
                     SELECT id, claimed_by, available_at, attempts FROM atoll_outbox
                     WHERE topic = $1 AND record_key = decode(substr(k, 2), 'hex') LIMIT $2
                 ) AS o"
            }
            Self::Sqlite => {
                "FROM atoll_outbox WHERE topic = $1
                 AND record_key IN (SELECT unhex(substr(value, 2)) FROM json_each($3))"
            }
        }
    }

    /// SQL for "`id` is one of the ids `subquery` selects", written so that the rows are
    /// found by their ids: on PostgreSQL the subquery runs once and its ids are looked up in
    /// the primary key (`= ANY(ARRAY(…))`), where `IN (…)` let the planner join it with a walk
    /// of the whole table when its statistics said the table was empty.
    pub(crate) fn id_among(self, subquery: &str) -> String {
        match self {
            Self::Postgres => format!("id = ANY(ARRAY({subquery}))"),
            Self::Sqlite => format!("id IN ({subquery})"),
        }
    }

    /// `keys` as the parameter [`outbox_rows_of_keys`](Self::outbox_rows_of_keys) takes: each
    /// in hex after a `x` (so that an empty key is an element too).
    pub(crate) fn key_list(self, keys: &[&[u8]]) -> String {
        use std::fmt::Write as _;
        let hex = |k: &[u8]| {
            k.iter().fold(String::from("x"), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
        };
        let list = keys.iter().map(|k| hex(k));
        match self {
            Self::Postgres => list.collect::<Vec<_>>().join(","),
            Self::Sqlite => format!(
                "[{}]",
                list.map(|h| format!("\"{h}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// A connected, migrated store: a pool of database connections.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// The native pool of a PostgreSQL store, for handlers taking `Tx<Postgres>`: it opens
    /// connections only once one asks for one, up to the handlers' slots.
    postgres: Option<PgPool>,
    /// The connections handlers' transactions may hold at a time (see [`handler_slots`]).
    handler_slots: Arc<tokio::sync::Semaphore>,
    backend: Backend,
    inflight: Arc<InFlight>,
    /// See [`inbox::legacy_before`].
    legacy_inbox: Arc<AtomicI64>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Connects to the configured database and creates (or updates) atoll's tables.
    ///
    /// # Errors
    /// [`Error::Store`] when the database cannot be reached (naming it, without its password);
    /// [`Error::Migration`] naming the migration that failed and the database's message.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        config.check().map_err(Error::Config)?;
        let url = config.database_url();
        let backend = Backend::of(&url)?;
        sqlx::any::install_default_drivers();
        let mut options: AnyConnectOptions = url.parse().map_err(|source| Error::Store {
            what: format!("reading store.url {}", redact_url(&url)),
            source,
        })?;
        if let Some(password) = config.password().map_err(Error::Config)? {
            options
                .database_url
                .set_password(Some(password.expose()))
                .map_err(|()| {
                    Error::Config(format!(
                        "store.password is set, but store.url {} takes no password",
                        redact_url(&url)
                    ))
                })?;
        }
        // SQLite has one writer for the whole file: with one connection, transactions queue
        // in the pool, in order, instead of polling the file's lock.
        let connections = match backend {
            Backend::Postgres => config.max_connections,
            Backend::Sqlite => 1,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            // A broken connection fails its query, which is retried: no ping per acquire.
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Commits append to a write-ahead log, synced at checkpoints: a
                        // commit survives the process's crash (not the machine's), at a
                        // fraction of the cost of syncing each one. PostgreSQL is the store
                        // for production.
                        sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .acquire_timeout(config.connect_timeout())
            .connect_with(options)
            .await
            .map_err(|source| Error::Store {
                what: format!("connecting to {}", redact_url(&url)),
                source,
            })?;
        let slots = handler_slots(connections);
        let postgres = match backend {
            Backend::Postgres => Some(native_pool(config, &url, slots)?),
            Backend::Sqlite => None,
        };
        let store = Self {
            pool,
            postgres,
            handler_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            backend,
            inflight: Arc::default(),
            legacy_inbox: Arc::default(),
        };
        let mut conn = store.acquire().await?;
        schema::migrate(&mut conn, backend).await?;
        drop(conn);
        store.check_legacy_inbox().await?;
        Ok(store)
    }

    /// Runs the application's migrations (`sqlx::migrate!("./migrations")`).
    ///
    /// # Errors
    /// [`Error::Migration`] naming the migration that failed and the database's message.
    pub async fn migrate(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        migrator.run(&self.pool).await.map_err(|e| {
            let name = match &e {
                sqlx::migrate::MigrateError::ExecuteMigration(_, version) => {
                    migrator.iter().find(|m| m.version == *version).map_or_else(
                        || version.to_string(),
                        |m| format!("{version}: {}", m.description),
                    )
                }
                _ => "application migrations".to_owned(),
            };
            Error::Migration {
                name,
                source: sqlx::Error::Migrate(Box::new(e)),
            }
        })
    }

    /// What this process is publishing from the outbox (the task writing the broker's
    /// answers runs from the first call on).
    pub(crate) fn inflight(&self) -> Arc<InFlight> {
        self.inflight.start(self);
        self.inflight.clone()
    }

    /// At shutdown, once the producer flushed: deletes the rows the broker acknowledged and
    /// gives back the others, so that none is published again.
    pub(crate) async fn finish_publishing(&self) {
        self.inflight().drain(self, Duration::from_secs(5)).await;
    }

    /// When the inbox learnt sources, while rows written before are left (0 once none is).
    pub(crate) fn legacy_inbox_before(&self) -> i64 {
        self.legacy_inbox.load(Ordering::Relaxed)
    }

    /// Reads whether inbox rows written before it learnt sources are left.
    async fn check_legacy_inbox(&self) -> Result<()> {
        let before = inbox::legacy_before(self).await?;
        self.legacy_inbox.store(before, Ordering::Relaxed);
        Ok(())
    }

    /// The connection pool, for queries outside a listener.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The native PostgreSQL pool (sqlx's `Postgres` driver, the one `Tx<Postgres>` runs
    /// on); `None` on SQLite.
    pub fn postgres(&self) -> Option<&PgPool> {
        self.postgres.as_ref()
    }

    /// Begins a transaction on `driver`'s pool.
    ///
    /// # Errors
    /// [`Error::Store`] when no connection is had; [`Error::Config`] for the native
    /// PostgreSQL driver on a SQLite store (refused at start for listeners).
    pub(crate) async fn begin(&self, driver: Driver) -> Result<OpenTx> {
        let begun = "beginning a transaction";
        match (driver, &self.postgres) {
            (Driver::Any, _) => Ok(OpenTx::Any(
                self.pool.begin().await.map_err(store_error(begun))?,
            )),
            (Driver::Postgres, Some(pool)) => Ok(OpenTx::Postgres(
                pool.begin().await.map_err(store_error(begun))?,
            )),
            (Driver::Postgres, None) => Err(Error::Config(needs_postgres(driver))),
        }
    }

    /// Which database it is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Waits for one of the connections a handler's transaction may hold: the transaction
    /// holds the slot until it ends.
    pub(crate) async fn handler_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.handler_slots
            .clone()
            .acquire_owned()
            .await
            .expect("the handler slots are never closed")
    }

    async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        self.pool
            .acquire()
            .await
            .map_err(store_error("acquiring a connection"))
    }
}

/// The native PostgreSQL pool of the store at `url`: `slots` connections at most (only
/// handlers' transactions use it), opened when first asked for.
fn native_pool(config: &StoreConfig, url: &str, slots: usize) -> Result<PgPool> {
    let mut options: PgConnectOptions = url.parse().map_err(|source| Error::Store {
        what: format!("reading store.url {}", redact_url(url)),
        source,
    })?;
    if let Some(password) = config.password().map_err(Error::Config)? {
        options = options.password(password.expose());
    }
    Ok(PgPoolOptions::new()
        .max_connections(u32::try_from(slots).unwrap_or(u32::MAX))
        .test_before_acquire(false)
        .acquire_timeout(config.connect_timeout())
        .connect_lazy_with(options))
}

/// Why a transaction of `driver` cannot run on a SQLite store.
pub(crate) fn needs_postgres(driver: Driver) -> String {
    format!(
        "`{}` runs on sqlx's native PostgreSQL driver: store.url must be a postgres:// URL \
         (a handler for PostgreSQL and SQLite takes `Tx`)",
        driver.tx_type()
    )
}

/// Connections held back from handlers' transactions, for the rest of the process: the outbox
/// relay and its deletes, HTTP routes, queries of the application's own.
const RESERVED: u32 = 2;

/// How many of a pool's `connections` handlers' transactions may hold at a time: all but
/// [`RESERVED`], and at least one. A transactional handler holds its connection for its whole
/// run, so without a bound the handlers in flight (up to `max_in_flight` per listener) take
/// every connection and the relay and the routes wait behind them.
fn handler_slots(connections: u32) -> usize {
    let reserved = RESERVED.min(connections.saturating_sub(1));
    usize::try_from(connections - reserved).unwrap_or(1).max(1)
}

/// The store as HTTP routes see it: empty until the store is open (the HTTP server answers
/// probes from the start of the process, before the database is reached).
#[derive(Debug, Clone, Default)]
pub(crate) struct StoreSlot(Arc<OnceLock<Store>>);

impl StoreSlot {
    /// Makes `store`, if the process has one, available to the routes.
    pub(crate) fn set(&self, store: Option<&Store>) {
        if let Some(store) = store {
            let _ = self.0.set(store.clone());
        }
    }
}

/// An HTTP route of the service (see `App::routes`) takes the store as an axum extractor:
/// `async fn order(store: Store, Path(id): Path<String>)`. Until the store is open (or in a
/// process without one) the route answers 503.
impl<S: Send + Sync> FromRequestParts<S> for Store {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<StoreSlot>()
            .and_then(|slot| slot.0.get().cloned())
            .ok_or((
                StatusCode::SERVICE_UNAVAILABLE,
                "the service's store is not open",
            ))
    }
}

/// The variable of the crash test hook (see [`crash_point`]).
pub(crate) const CRASH_AFTER_COMMITS: &str = "ATOLL_TEST_CRASH_AFTER_COMMITS";

/// A test hook for the crash the relay exists for: with `ATOLL_TEST_CRASH_AFTER_COMMITS=n` in
/// its environment, the process aborts right after its n-th committed transaction, before that
/// transaction's outbox rows are published. Without the variable it does nothing.
pub(crate) fn crash_point() {
    static LEFT: OnceLock<Option<AtomicU64>> = OnceLock::new();
    let left = LEFT.get_or_init(|| {
        std::env::var(CRASH_AFTER_COMMITS)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(AtomicU64::new)
    });
    if let Some(left) = left {
        if left.fetch_sub(1, Ordering::SeqCst) == 1 {
            eprintln!("{CRASH_AFTER_COMMITS}: aborting after a commit, before its publish");
            std::process::abort();
        }
    }
}

/// How often the relay looks for outbox rows without waiting to be woken (rows another
/// process gave back, or leases that ran out).
const RELAY_EVERY: Duration = Duration::from_secs(1);
/// How many rows the relay claims at a time.
const RELAY_BATCH: i64 = 500;
/// How often old inbox rows are pruned, and how many per statement.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_BATCH: i64 = 10_000;

/// What the store's background work reports to.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    health: Arc<Health>,
    metrics: Arc<OutboxMetrics>,
}

impl Watch {
    /// Reports to the app's `health` and its outbox `metrics`.
    pub(crate) fn new(health: &Arc<Health>, metrics: &Metrics) -> Self {
        Self {
            health: health.clone(),
            metrics: metrics.outbox(),
        }
    }
}

/// The store's background work until `stop`: the outbox relay (woken by the commit path, or
/// every second), which first moves the due scheduled records to the outbox, and the pruning
/// of inbox rows older than `retention`.
pub(crate) async fn background(
    store: Store,
    producer: Producer,
    retention: Duration,
    watch: Watch,
    stop: CancellationToken,
) {
    let inflight = store.inflight();
    let mut relay = tokio::time::interval(RELAY_EVERY);
    relay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = inflight.relay_woken() => relay_all(&store, &producer, &watch, &stop).await,
            _ = relay.tick() => relay_all(&store, &producer, &watch, &stop).await,
            _ = prune.tick() => prune_inbox(&store, now_ms().saturating_sub(retention_ms)).await,
        }
    }
}

/// Relays until a pass finds fewer rows than it could take and no more scheduled records are
/// due, then shows what keeps failing on the readiness probe. Each pass first moves a batch of
/// due scheduled records into the outbox, so that a backlog of them (after an outage) is
/// published as it is moved, not moved whole first.
async fn relay_all(store: &Store, producer: &Producer, watch: &Watch, stop: &CancellationToken) {
    loop {
        let promoted = promote_due(store, watch).await;
        match outbox::relay::relay_once(store, producer, RELAY_BATCH, &watch.metrics).await {
            Ok(pass) => {
                if pass.claimed > 0 {
                    tracing::info!(
                        rows = pass.published,
                        failed = pass.failed,
                        dead_lettered = pass.dead_lettered,
                        "outbox relay published rows"
                    );
                }
                let full = pass.claimed == RELAY_BATCH as usize || promoted == RELAY_BATCH as u64;
                if !full || stop.is_cancelled() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay failed; trying again");
                break;
            }
        }
    }
    match outbox::relay::failing(store).await {
        Ok(why) => watch.health.condition(Condition::Outbox, why),
        Err(e) => tracing::warn!(error = %e, "reading the outbox's failing rows failed"),
    }
}

/// Moves a batch of the scheduled records that are due into the outbox, for the relay to
/// publish next: how many.
async fn promote_due(store: &Store, watch: &Watch) -> u64 {
    match schedule::promote(store, RELAY_BATCH).await {
        Ok(moved) => {
            watch.metrics.promoted.inc_by(moved);
            if moved > 0 {
                tracing::debug!(records = moved, "due scheduled records moved to the outbox");
            }
            moved
        }
        Err(e) => {
            tracing::warn!(error = %e, "moving due scheduled records failed; trying again");
            0
        }
    }
}

/// Deletes inbox rows received before `before`, a batch at a time.
async fn prune_inbox(store: &Store, before: i64) {
    loop {
        match inbox::prune(store, before, PRUNE_BATCH).await {
            Ok(n) if n as i64 == PRUNE_BATCH => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "pruning the inbox failed; trying later");
                return;
            }
        }
    }
    if let Err(e) = store.check_legacy_inbox().await {
        tracing::warn!(error = %e, "reading the inbox failed; trying later");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store on a fresh SQLite file named after the test, and its folder.
    pub(crate) async fn sqlite(name: &str) -> (Store, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("atoll-store-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = StoreConfig {
            path: dir.join("s.db"),
            ..StoreConfig::default()
        };
        (Store::connect(&config).await.unwrap(), dir)
    }

    fn event<'a>(source: &'a str, id: &'a str) -> inbox::EventId<'a> {
        inbox::EventId { source, id }
    }

    #[test]
    fn handlers_leave_connections_to_the_rest_of_the_process() {
        #[rustfmt::skip]
        let cases = [
            // connections, handler slots, why
            (8, 6, "the default: two held back"),
            (3, 1, "three: one for handlers"),
            (2, 1, "two: one each"),
            (1, 1, "one (SQLite): shared, handlers queue with the rest"),
            (100, 98, "many"),
        ];
        for (connections, slots, why) in cases {
            assert_eq!(handler_slots(connections), slots, "{why}");
        }
    }

    #[tokio::test]
    async fn the_inbox_claims_once_per_group_and_event_and_prunes_old_rows() {
        let (store, dir) = sqlite("inbox").await;
        let mut tx = store.pool().begin().await.unwrap();
        for (group, source, id, first, why) in [
            ("g1", "s", "e1", true, "a first delivery"),
            ("g1", "s", "e1", false, "a repeat"),
            ("g2", "s", "e1", true, "another group"),
            // Two producers may reuse an id: the event is the pair.
            ("g1", "t", "e1", true, "the same id from another source"),
            ("g1", "", "e1", true, "the same id without a source"),
            ("g1", "", "e1", false, "a repeat without a source"),
        ] {
            let claimed = inbox::claim(
                &mut driver::Conn::from(&mut *tx),
                group,
                event(source, id),
                0,
            )
            .await
            .unwrap();
            assert_eq!(claimed, first, "{why}");
        }
        tx.commit().await.unwrap();
        sqlx::query("DELETE FROM atoll_inbox WHERE ce_source <> 's'")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE atoll_inbox SET received_at = 5 WHERE consumer_group = 'g1'")
            .execute(store.pool())
            .await
            .unwrap();
        // Only g1's row is older than the cut-off.
        assert_eq!(inbox::prune(&store, 10, 1).await.unwrap(), 1);
        assert_eq!(
            inbox::prune(&store, 10, 1).await.unwrap(),
            0,
            "g2's row is new"
        );
        let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM atoll_inbox")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(left, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_batch_claims_its_events_in_one_statement() {
        let (store, dir) = sqlite("claim-all").await;
        let mut tx = store.pool().begin().await.unwrap();
        let mut conn = driver::Conn::from(&mut *tx);
        assert!(inbox::claim(&mut conn, "g", event("s", "old"), 0)
            .await
            .unwrap());
        let events = [
            event("s", "e1"),
            event("s", "old"),
            event("t", "e1"),
            event("s", "e1"),
            event("", "e2"),
        ];
        let fresh = inbox::claim_all(&mut conn, Backend::Sqlite, "g", &events)
            .await
            .unwrap();
        assert_eq!(
            fresh,
            [true, false, true, false, true],
            "new; handled before; another source's; twice in the batch; no source"
        );
        let again = inbox::claim_all(&mut conn, Backend::Sqlite, "g", &events[..1])
            .await
            .unwrap();
        assert_eq!(again, [false], "claimed by the batch");
        let other = inbox::claim_all(&mut conn, Backend::Sqlite, "h", &events[..1])
            .await
            .unwrap();
        assert_eq!(other, [true], "another group's");
        // Claimed, then not handled after all: given back, and only those.
        inbox::unclaim_all(&mut conn, Backend::Sqlite, "g", &events[..3])
            .await
            .unwrap();
        let again = inbox::claim_all(&mut conn, Backend::Sqlite, "g", &events)
            .await
            .unwrap();
        assert_eq!(
            again,
            [true, true, true, false, false],
            "given back: e1, old, t/e1"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn rows_from_before_the_inbox_knew_sources_still_count_until_pruned() {
        let (store, dir) = sqlite("legacy").await;
        assert_eq!(store.legacy_inbox_before(), 0, "a new store has none");
        // As migration 5 left a row of the version before: no source, received before it.
        sqlx::query("INSERT INTO atoll_inbox VALUES ('g', '', 'e1', 1)")
            .execute(store.pool())
            .await
            .unwrap();
        store.check_legacy_inbox().await.unwrap();
        let before = store.legacy_inbox_before();
        assert!(before > 1, "{before}");
        let mut tx = store.pool().begin().await.unwrap();
        for (source, id, first, why) in [
            (
                "s",
                "e1",
                false,
                "handled before the upgrade, redelivered after it",
            ),
            ("s", "e2", true, "a new event"),
        ] {
            let claimed = inbox::claim(
                &mut driver::Conn::from(&mut *tx),
                "g",
                event(source, id),
                before,
            )
            .await
            .unwrap();
            assert_eq!(claimed, first, "{why}");
        }
        drop(tx);
        sqlx::query("DELETE FROM atoll_inbox")
            .execute(store.pool())
            .await
            .unwrap();
        store.check_legacy_inbox().await.unwrap();
        assert_eq!(store.legacy_inbox_before(), 0, "pruned: checked no more");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn sizes_count_the_waiting_outbox_rows_their_age_and_the_inbox() {
        let (store, dir) = sqlite("sizes").await;
        let empty = sizes::sizes(&store).await.unwrap();
        assert_eq!(
            (empty.outbox_rows, empty.oldest_ms, empty.inbox_rows),
            (0, None, 0)
        );
        let ten_seconds_ago = format!(
            "INSERT INTO atoll_outbox (topic, payload, headers, ce_id, created_at)
             VALUES ('t', x'00', x'00', 'e', {} - 10000)",
            Backend::Sqlite.now_ms_sql()
        );
        for _ in 0..2 {
            sqlx::query(sqlx::AssertSqlSafe(ten_seconds_ago.clone()))
                .execute(store.pool())
                .await
                .unwrap();
        }
        let mut tx = store.pool().begin().await.unwrap();
        inbox::claim(&mut driver::Conn::from(&mut *tx), "g", event("s", "e"), 0)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let two = sizes::sizes(&store).await.unwrap();
        assert_eq!((two.outbox_rows, two.inbox_rows), (2, 1));
        let age = two.oldest_ms.unwrap();
        assert!((10_000..60_000).contains(&age), "{age} ms");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_rolled_back_transaction_leaves_no_inbox_row() {
        let (store, dir) = sqlite("rollback").await;
        let mut tx = store.pool().begin().await.unwrap();
        assert!(
            inbox::claim(&mut driver::Conn::from(&mut *tx), "g", event("s", "e"), 0)
                .await
                .unwrap()
        );
        drop(tx);
        let mut tx = store.pool().begin().await.unwrap();
        assert!(
            inbox::claim(&mut driver::Conn::from(&mut *tx), "g", event("s", "e"), 0)
                .await
                .unwrap(),
            "claimable again"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
