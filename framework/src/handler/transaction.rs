//! The transaction of a transactional listener's record: the handler's own SQL runs in it
//! (through the [`Tx`] extractor), and so do the record's inbox row and the records the
//! handler produces, which wait in the outbox until the commit.

use parking_lot::Mutex;
use std::sync::Arc;

use sqlx::{AnyConnection, Execute};
use tokio::sync::{MappedMutexGuard, MutexGuard, OwnedMappedMutexGuard, OwnedMutexGuard};

use super::context::{Context, FromContext, Meta};
use super::delivery::{Outboxed, Sink};
use crate::codec::Codec;
use crate::contract::service::Service;
use crate::error::{store_error, Result};
use crate::produce::Producer;
use crate::store::driver::{Driver, OpenTx, TxDriver};
use crate::store::outbox::{self, Committed, NewRow, OutboxRecord, Route, Routed};
use crate::store::schedule::{self, ScheduleOp, Scheduler};
use crate::store::{inbox, Store};

/// A record's open transaction and the outbox rows its handler produced.
#[derive(Debug)]
pub(crate) struct TxCell {
    tx: Arc<tokio::sync::Mutex<Option<OpenTx>>>,
    /// A handler's slot of the pool (see `Store::handler_slot`), released once the
    /// transaction ended (committed, or the cell dropped); none for a transaction begun
    /// outside a listener.
    slot: Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    outbox: Mutex<Vec<OutboxRecord>>,
    /// What the handler asked of the schedule, in order (applied at the commit).
    schedule: Mutex<Vec<ScheduleOp>>,
    /// The record being handled (see [`source`]); none outside listeners.
    source: Option<String>,
}

/// What one handled record's cell leaves for the commit.
struct CellOutput<'a> {
    source: Option<&'a str>,
    records: Vec<OutboxRecord>,
    schedule: Vec<ScheduleOp>,
}

/// How the outbox names the record whose handling wrote a row: its consumer group and inbox id.
pub(crate) fn source(group: &str, id: &str) -> String {
    format!("{group} {id}")
}

impl TxCell {
    pub(crate) fn new(
        tx: OpenTx,
        source: Option<String>,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Arc<Self> {
        Arc::new(Self {
            tx: Arc::new(tokio::sync::Mutex::new(Some(tx))),
            slot: Mutex::new(slot),
            outbox: Mutex::default(),
            schedule: Mutex::default(),
            source,
        })
    }

    /// Adds a record to publish once the transaction commits.
    pub(crate) fn push(&self, record: OutboxRecord) {
        self.outbox.lock().push(record);
    }

    /// Adds a change to the schedule, applied when the transaction commits.
    pub(crate) fn schedule(&self, op: ScheduleOp) {
        self.schedule.lock().push(op);
    }

    /// The transaction, once its handlers are done, and the handler slot it held (given back
    /// when dropped, so once the transaction ended, committed or not).
    async fn end(&self) -> (OpenTx, Option<tokio::sync::OwnedSemaphorePermit>) {
        let tx = self
            .tx
            .lock()
            .await
            .take()
            .expect("a transaction is finished once");
        (tx, self.slot.lock().take())
    }

    /// What the handler left for the commit: its outbox records and schedule changes.
    fn output(&self) -> CellOutput<'_> {
        CellOutput {
            source: self.source.as_deref(),
            records: std::mem::take(&mut *self.outbox.lock()),
            schedule: std::mem::take(&mut *self.schedule.lock()),
        }
    }
}

/// Begins the transaction of the record `meta` describes on `store`, on `driver`, and claims
/// its inbox row for `group`: `None` when the group handled the event before (the record is to
/// be skipped).
pub(crate) async fn begin(
    store: &Store,
    driver: Driver,
    group: &str,
    meta: &Meta,
) -> Result<Option<Arc<TxCell>>> {
    let slot = store.handler_slot().await;
    let mut tx = store.begin(driver).await?;
    let event = inbox::EventId {
        source: meta.source.as_deref().unwrap_or_default(),
        id: &meta.id,
    };
    if !inbox::claim(&mut tx.conn(), group, event, store.legacy_inbox_before()).await? {
        return Ok(None);
    }
    Ok(Some(TxCell::new(
        tx,
        Some(source(group, &meta.id)),
        Some(slot),
    )))
}

/// Commits a handled record's transaction with the outbox rows its handler produced: their
/// ids and records, to publish, and whether this process sends them from memory (claimed in
/// the transaction) or the relay does.
pub(crate) async fn commit(cell: &TxCell, to: &Outboxed) -> Result<Committed> {
    let (tx, _slot) = cell.end().await;
    commit_rows(tx, to, vec![cell.output()]).await
}

/// Applies the schedule changes and writes the outbox rows of the records handled in `tx`
/// (`handled`: each record's output, in offset order) and commits it: one route for the rows
/// (see [`outbox::route`]), claimed by this process when it sends them itself, after the older
/// rows of their keys it took over.
async fn commit_rows(
    mut tx: OpenTx,
    to: &Outboxed,
    handled: Vec<CellOutput<'_>>,
) -> Result<Committed> {
    // Every record's rows, in order, and how many are each record's.
    let mut all = Vec::new();
    let mut counts = Vec::with_capacity(handled.len());
    for out in handled {
        if !out.schedule.is_empty() {
            let by = Scheduler {
                service: &to.service,
                source: out.source,
                dead_letters: &to.dead_letters,
            };
            schedule::apply(&mut tx.conn(), to.store.backend(), by, &out.schedule).await?;
        }
        counts.push((out.source, out.records.len()));
        all.extend(out.records);
    }
    let inflight = to.store.inflight();
    let backend = to.store.backend();
    let claimed_at = std::time::Instant::now();
    let Routed { route, older } = match all.is_empty() {
        true => Routed {
            route: Route::Direct,
            older: Vec::new(),
        },
        false => outbox::route(&mut tx.conn(), backend, &all, &inflight).await?,
    };
    let mut new_rows = Vec::with_capacity(all.len());
    let mut left = all.iter();
    for (source, n) in counts {
        new_rows.extend(
            left.by_ref()
                .take(n)
                .map(|record| NewRow { record, source }),
        );
    }
    let ids = outbox::insert(
        &mut tx.conn(),
        backend,
        &new_rows,
        &to.dead_letters,
        route,
        inflight.direct,
    )
    .await?;
    tx.commit().await.map_err(store_error("committing"))?;
    crate::store::crash_point();
    // The older rows it took over go first.
    let (mut older_ids, mut records): (Vec<i64>, Vec<OutboxRecord>) = older.into_iter().unzip();
    older_ids.extend(ids);
    records.extend(all);
    Ok(Committed {
        ids: older_ids,
        records,
        route,
        claimed_at,
    })
}

/// The one database transaction of a batch of a partition's records: it claims their inbox
/// rows first, in one statement; each record's handler then runs in it in turn, with a cell of
/// its own (its outbox rows, its source); one `COMMIT` ends it.
#[derive(Debug)]
pub(crate) struct BatchTx {
    /// The transaction and the handler slot it holds.
    shared: Arc<TxCell>,
}

impl BatchTx {
    /// Begins the batch's transaction on `driver`, once one of the handlers' slots of the
    /// pool is free.
    pub(crate) async fn begin(store: &Store, driver: Driver) -> Result<Self> {
        let slot = store.handler_slot().await;
        let tx = store.begin(driver).await?;
        Ok(Self {
            shared: TxCell::new(tx, None, Some(slot)),
        })
    }

    /// Claims the inbox rows of `events` for `group`: for each, `true` when it was not
    /// handled before.
    pub(crate) async fn claim(
        &self,
        store: &Store,
        group: &str,
        events: &[inbox::EventId<'_>],
    ) -> Result<Vec<bool>> {
        let mut tx = lock(&self.shared).await;
        inbox::claim_all(&mut tx.conn(), store.backend(), group, events).await
    }

    /// Gives back the inbox rows of `events`, claimed but not handled (the batch's time ran
    /// out before them).
    pub(crate) async fn unclaim(
        &self,
        store: &Store,
        group: &str,
        events: &[inbox::EventId<'_>],
    ) -> Result<()> {
        let mut tx = lock(&self.shared).await;
        inbox::unclaim_all(&mut tx.conn(), store.backend(), group, events).await
    }

    /// The cell of the record `meta` describes, for `group`: the batch's transaction, the
    /// record's own outbox rows.
    pub(crate) fn cell(&self, group: &str, meta: &Meta) -> Arc<TxCell> {
        Arc::new(TxCell {
            tx: self.shared.tx.clone(),
            outbox: Mutex::default(),
            schedule: Mutex::default(),
            source: Some(source(group, &meta.id)),
            slot: Mutex::new(None),
        })
    }

    /// Waits until no handler holds the transaction (a `Tx` kept past its handler's return).
    pub(crate) async fn idle(&self) {
        drop(self.shared.tx.lock().await);
    }

    /// Commits the batch with the outbox rows of the records handled in it (`handled`: their
    /// cells, in offset order).
    pub(crate) async fn commit(self, to: &Outboxed, handled: &[Arc<TxCell>]) -> Result<Committed> {
        let (tx, _slot) = self.shared.end().await;
        let outputs = handled.iter().map(|cell| cell.output()).collect();
        commit_rows(tx, to, outputs).await
    }
}

/// The record's database transaction, as a handler argument: a listener whose handler takes
/// it is transactional.
///
/// Its SQL, the record's inbox row (so a redelivered record is skipped) and everything the
/// handler emits, sends, replies or returns (written to the outbox, published after the
/// commit) commit together when the handler returns `Ok`, and roll back when it fails. It is
/// the transaction's connection, as sqlx's `Transaction` is: run queries on `&mut *tx`, or
/// with [`execute`](Self::execute).
///
/// ```ignore
/// #[listener(name = "reserve-stock")]
/// async fn reserve(&self, mut tx: Tx, cmd: ReserveStock) -> HandlerResult<(StockReserved, StockReservation)> {
///     sqlx::query("UPDATE stock SET qty = qty - $1 WHERE sku = $2 AND qty >= $1")
///         .bind(cmd.qty)
///         .bind(&cmd.sku)
///         .execute(&mut *tx)
///         .await?;
///     let reserved = StockReserved { order_id: cmd.order_id.clone() }; // to the outbox
///     Ok((reserved, StockReservation { order_id: cmd.order_id, reserved: true, reason: None }))
/// }
/// ```
///
/// `D` is the sqlx driver it runs on (see [`TxDriver`]):
/// - `Tx` (sqlx's `Any`): the same handler runs on PostgreSQL and on SQLite, as `store.url`
///   says, with the types both know (integers, floats, text, bytes);
/// - `Tx<sqlx::Postgres>`: sqlx's native PostgreSQL driver, a `PgConnection`: every
///   PostgreSQL type (arrays for one `UNNEST` statement over many rows, JSON, UUIDs, times)
///   and no conversion of each argument and column. The service then needs a PostgreSQL
///   store: on SQLite it is refused at start.
///
/// A handler takes it once, and holds it only while it runs: the transaction commits once the
/// handler returned (a `Tx` kept past that, in a spawned task, holds the commit up).
pub struct Tx<D: TxDriver = sqlx::Any> {
    conn: OwnedMappedMutexGuard<Option<OpenTx>, D::Connection>,
}

impl<D: TxDriver> std::fmt::Debug for Tx<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").finish_non_exhaustive()
    }
}

impl<D: TxDriver> std::ops::Deref for Tx<D> {
    type Target = D::Connection;

    fn deref(&self) -> &D::Connection {
        &self.conn
    }
}

impl<D: TxDriver> std::ops::DerefMut for Tx<D> {
    fn deref_mut(&mut self) -> &mut D::Connection {
        &mut self.conn
    }
}

impl<D: TxDriver> Tx<D>
where
    for<'c> &'c mut D::Connection: sqlx::Executor<'c, Database = D>,
{
    /// Runs `query` in the transaction: `tx.execute(sqlx::query("…").bind(…)).await?`.
    ///
    /// # Errors
    /// The database's.
    pub async fn execute<'q, E>(
        &mut self,
        query: E,
    ) -> std::result::Result<D::QueryResult, sqlx::Error>
    where
        E: 'q + Execute<'q, D>,
    {
        sqlx::Executor::execute(&mut *self.conn, query).await
    }
}

/// The open transaction of `cell`.
async fn lock(cell: &TxCell) -> MappedMutexGuard<'_, OpenTx> {
    MutexGuard::map(cell.tx.lock().await, |tx| {
        tx.as_mut()
            .expect("the transaction is used only until it is committed")
    })
}

impl<S, D: TxDriver> FromContext<S> for Tx<D> {
    const TRANSACTION: Option<Driver> = Some(D::DRIVER);

    fn from_context(ctx: &Context<S>) -> Self {
        let cell = ctx
            .tx_cell()
            .expect("a handler that takes `Tx` runs in a transactional listener");
        // Nobody holds it before the handler runs: only a second `Tx` argument would.
        let guard = cell
            .tx
            .clone()
            .try_lock_owned()
            .expect("a handler takes `Tx` once");
        let conn = OwnedMutexGuard::map(guard, |tx| {
            let tx = tx
                .as_mut()
                .expect("the transaction is used only until it is committed");
            D::connection(tx).expect("a listener's transactions run on its handler's driver")
        });
        Self { conn }
    }
}

/// A transaction on the store outside any listener (an HTTP endpoint, a scheduled job), for
/// service `S`: its SQL and what it emits or sends through [`context`](Self::context) (to the
/// outbox) commit together, and [`commit`](Self::commit) publishes them. Dropped without a
/// commit, it rolls back and publishes nothing. Open one with
/// [`Running::transaction`](crate::Running::transaction).
pub struct StoreTx<S> {
    ctx: Context<S>,
    cell: Arc<TxCell>,
    outbox: Arc<Outboxed>,
}

impl<S> std::fmt::Debug for StoreTx<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTx")
            .field("context", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl<S: Service> StoreTx<S> {
    pub(crate) async fn begin(
        store: &Store,
        producer: Producer,
        codec: Arc<Codec>,
        source: Arc<str>,
    ) -> Result<Self> {
        let tx = store.begin(Driver::Any).await?;
        let cell = TxCell::new(tx, None, None);
        // A new flow: the transaction's own id correlates what it produces.
        let id = uuid::Uuid::now_v7().to_string();
        let meta = Meta {
            correlation_id: id.clone(),
            id,
            ..Meta::default()
        };
        let outbox = Arc::new(
            Outboxed::new::<S>(store.clone(), producer.clone(), Driver::Any)
                .expect("every store runs `Any` transactions"),
        );
        let sink = Arc::new(Sink::Outbox(cell.clone(), outbox.clone()));
        let ctx = Context::new(producer, codec, source, Arc::new(meta), sink);
        Ok(Self { ctx, cell, outbox })
    }

    /// The transaction's connection, for `sqlx` queries (a listener's [`Tx`] is its connection itself).
    pub async fn conn(&self) -> MappedMutexGuard<'_, AnyConnection> {
        MappedMutexGuard::map(lock(&self.cell).await, |tx| match tx {
            OpenTx::Any(tx) => &mut **tx,
            OpenTx::Postgres(_) => unreachable!("a store transaction is begun on `Any`"),
        })
    }

    /// Emits facts of `S` and sends commands within the transaction (to its outbox).
    pub fn context(&self) -> &Context<S> {
        &self.ctx
    }

    /// Commits, then publishes what was emitted or sent and waits for the broker (or, when
    /// older rows of their keys are still in the outbox, leaves them to the relay, which
    /// publishes them after those).
    ///
    /// # Errors
    /// When the transaction does not commit. Once it committed its outputs can no longer be
    /// lost: a publish that fails is left to the relay (and logged), not returned, so that a
    /// caller does not run the transaction again.
    pub async fn commit(self) -> Result<()> {
        let committed = commit(&self.cell, &self.outbox).await?;
        let (store, producer) = (&self.outbox.store, &self.outbox.producer);
        outbox::publish(store, producer, &committed).await;
        Ok(())
    }
}
