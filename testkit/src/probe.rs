//! The probe service run by the `probe` binary, and its command.
//!
//! Behaviour, from the environment: `PROBE_DELAY_MS` (sleep per record), `PROBE_FAIL` (an id
//! whose handling fails transiently, forever). Every handled record prints a line
//! `handled <listener> <id> <partition> <offset>` on standard output.

use std::io::Write;
use std::time::Duration;

use atoll::{event_service, handlers, Batch, Context, Event, HandlerError, HandlerResult, Meta};
use serde::{Deserialize, Serialize};

/// The probe service: `acme.test.probe`, 6 partitions.
#[event_service(company = "acme", namespace = "test", name = "probe", partitions = 6)]
#[derive(Debug, Default)]
pub struct Probe {
    /// Sleep per record.
    pub delay: Duration,
    /// An id that fails forever.
    pub fail: Option<String>,
}

/// A unit of work.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "work", version = 1, service = Probe)]
pub struct Work {
    /// Unique id; also the key.
    #[event(key)]
    pub id: String,
}

impl Probe {
    /// Configured from `PROBE_DELAY_MS` and `PROBE_FAIL`.
    pub fn from_env() -> Self {
        let delay = std::env::var("PROBE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self {
            delay: Duration::from_millis(delay),
            fail: std::env::var("PROBE_FAIL").ok(),
        }
    }

    async fn work(&self, meta: &Meta, work: &Work) -> HandlerResult {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.fail.as_deref() == Some(work.id.as_str()) {
            return Err(HandlerError::transient(format!(
                "configured to fail on {}",
                work.id
            )));
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "handled {} {} {} {}",
            meta.listener, work.id, meta.partition, meta.offset
        )?;
        out.flush()?;
        Ok(())
    }
}

#[handlers]
impl Probe {
    /// The main listener.
    #[listener(name = "work")]
    async fn on_work(&self, meta: Meta, work: Work) -> HandlerResult {
        self.work(&meta, &work).await
    }

    /// A second listener of the same command: its own consumer group.
    #[listener(name = "audit")]
    async fn on_audit(&self, meta: Meta, work: Work) -> HandlerResult {
        self.work(&meta, &work).await
    }
}

/// The pipeline service: `acme.test.pipeline`, 4 partitions. Its `relay` listener is
/// exactly-once: each `item` command becomes two `relayed` facts naming the command's
/// partition and offset, committed with the command's offset in one Kafka transaction. Run by
/// the `probe` binary with `PROBE_SERVICE=pipeline` (`PROBE_DELAY_MS` applies; with
/// `PROBE_POISON_EVERY=n`, every `n`-th item of a key, numbers `n-1`, `2n-1`, …, fails for good
/// and is dead-lettered).
#[event_service(
    company = "acme",
    namespace = "test",
    name = "pipeline",
    partitions = 4
)]
#[derive(Debug, Default)]
pub struct Pipeline {
    /// Sleep per record.
    pub delay: Duration,
    /// Every `n`-th item of a key fails for good.
    pub poison_every: Option<u32>,
}

/// An input of the pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "item", version = 1, service = Pipeline)]
pub struct Item {
    /// The key.
    #[event(key)]
    pub key: String,
    /// Its number within the key.
    pub n: u32,
}

/// An output of the pipeline: one of the two written per item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
#[event(fact, name = "relayed", version = 1, service = Pipeline)]
pub struct Relayed {
    /// The item's key.
    #[event(key)]
    pub key: String,
    /// The item's number.
    pub n: u32,
    /// Which of the item's two outputs (0 or 1).
    pub part: u8,
    /// The item's partition.
    pub partition: i32,
    /// The item's offset.
    pub offset: i64,
}

impl Pipeline {
    /// Configured from `PROBE_DELAY_MS` and `PROBE_POISON_EVERY`.
    pub fn from_env() -> Self {
        Self {
            delay: Probe::from_env().delay,
            poison_every: std::env::var("PROBE_POISON_EVERY")
                .ok()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0),
        }
    }
}

#[handlers]
impl Pipeline {
    /// Two outputs per item, exactly once.
    #[listener(name = "relay", delivery = "exactly_once")]
    async fn relay(&self, ctx: Context<Self>, item: Item) -> HandlerResult {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self
            .poison_every
            .is_some_and(|every| item.n % every == every - 1)
        {
            return Err(HandlerError::permanent(format!(
                "item {}/{} is poison",
                item.key, item.n
            )));
        }
        let meta = ctx.meta().clone();
        for part in 0..2 {
            ctx.emit(Relayed {
                key: item.key.clone(),
                n: item.n,
                part,
                partition: meta.partition,
                offset: meta.offset,
            })
            .await?;
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "handled {} {}/{} {} {}",
            meta.listener, item.key, item.n, meta.partition, meta.offset
        )?;
        out.flush()?;
        Ok(())
    }
}

/// The bulk service: `acme.test.bulk`, 4 partitions, the pipeline's relay as a batch listener:
/// its `relay` listener takes a `Batch` of items, exactly once, and turns each into two
/// `relayed` facts naming the item's partition and offset (the pipeline's JSON), all committed
/// with the batch's offsets in one Kafka transaction. Run by the `probe` binary with
/// `PROBE_SERVICE=bulk`.
#[event_service(company = "acme", namespace = "test", name = "bulk", partitions = 4)]
#[derive(Debug, Default)]
pub struct Bulk;

/// An input of the bulk service (an [`Item`]'s JSON).
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "item", version = 1, service = Bulk)]
pub struct BulkItem {
    /// The key.
    #[event(key)]
    pub key: String,
    /// Its number within the key.
    pub n: u32,
}

/// An output of the bulk service (a [`Relayed`]'s JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
#[event(fact, name = "relayed", version = 1, service = Bulk)]
pub struct BulkRelayed {
    /// The item's key.
    #[event(key)]
    pub key: String,
    /// The item's number.
    pub n: u32,
    /// Which of the item's two outputs (0 or 1).
    pub part: u8,
    /// The item's partition.
    pub partition: i32,
    /// The item's offset.
    pub offset: i64,
}

#[handlers]
impl Bulk {
    /// Two outputs per item, a batch at a time, exactly once.
    #[listener(name = "relay", delivery = "exactly_once", batch_wait_ms = 20)]
    async fn relay(&self, batch: Batch<Self, BulkItem>) -> HandlerResult {
        tracing::info!(records = batch.len(), "bulk batch");
        let mut out = String::new();
        for record in batch {
            let meta = record.meta().clone();
            for part in 0..2 {
                record
                    .ctx
                    .emit(BulkRelayed {
                        key: record.event.key.clone(),
                        n: record.event.n,
                        part,
                        partition: meta.partition,
                        offset: meta.offset,
                    })
                    .await?;
            }
            out.push_str(&format!(
                "handled {} {}/{} {} {}\n",
                meta.listener, record.event.key, record.event.n, meta.partition, meta.offset
            ));
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }
}

/// The journey service: `acme.test.journey`, 2 partitions, running saga [`Trek`]: reserve, then
/// load, both answered by [`Depot`]; a completed trek emits [`TrekDone`]. Run by the `probe`
/// binary with `PROBE_SERVICE=journey`; its saga's listener is `trek-saga` (made exactly-once
/// with `ATOLL_LISTENERS__TREK-SAGA__DELIVERY=exactly_once`). The depot runs elsewhere.
#[event_service(
    company = "acme",
    namespace = "test",
    name = "journey",
    partitions = 2,
    sagas = [Trek]
)]
#[derive(Debug, Default)]
pub struct Journey;

/// Starts trek `id`.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "plan_trek", version = 1, service = Journey)]
pub struct PlanTrek {
    /// The trek's id; also the key.
    #[event(key)]
    pub id: String,
}

/// Trek `id` ended with both steps done.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(fact, name = "trek_done", version = 1, service = Journey)]
pub struct TrekDone {
    /// The trek's id.
    #[event(key)]
    pub id: String,
    /// Whether both steps succeeded (`false`: the trek failed and was compensated).
    pub ok: bool,
}

/// The journey's saga: two steps at the depot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trek {
    /// The trek's id.
    pub id: String,
}

impl atoll::Saga for Trek {
    const NAME: &'static str = "trek";

    fn id(&self) -> String {
        self.id.clone()
    }

    fn steps() -> Vec<atoll::Step<Self>> {
        vec![
            atoll::Step::new(
                "reserve",
                |t: &Trek| Reserve { id: t.id.clone() },
                |_: &mut Trek, _: Reserved| Ok(()),
            )
            .timeout(Duration::from_secs(120)),
            atoll::Step::new(
                "load",
                |t: &Trek| Load { id: t.id.clone() },
                |_: &mut Trek, _: Loaded| Ok(()),
            )
            .timeout(Duration::from_secs(120)),
        ]
    }

    async fn completed(self, ctx: Context<Journey>) -> HandlerResult {
        ctx.emit(TrekDone {
            id: self.id,
            ok: true,
        })
        .await?;
        Ok(())
    }

    async fn failed(self, ctx: Context<Journey>, _reason: String) -> HandlerResult {
        ctx.emit(TrekDone {
            id: self.id,
            ok: false,
        })
        .await?;
        Ok(())
    }
}

#[handlers]
impl Journey {
    /// Starts the trek.
    #[listener(name = "plan")]
    async fn plan(&self, ctx: Context<Self>, cmd: PlanTrek) -> HandlerResult {
        ctx.start_saga(Trek { id: cmd.id }).await?;
        Ok(())
    }
}

/// The depot service, `acme.test.depot`: answers the journey's steps.
#[event_service(company = "acme", namespace = "test", name = "depot")]
#[derive(Debug, Default)]
pub struct Depot;

/// The trek's first step.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "reserve", version = 1, service = Depot, reply = Reserved)]
pub struct Reserve {
    /// The trek's id; also the key.
    #[event(key)]
    pub id: String,
}

/// The answer to [`Reserve`].
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(reply, name = "reserved", version = 1, service = Depot)]
pub struct Reserved {}

/// The trek's second step.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "load", version = 1, service = Depot, reply = Loaded)]
pub struct Load {
    /// The trek's id; also the key.
    #[event(key)]
    pub id: String,
}

/// The answer to [`Load`].
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(reply, name = "loaded", version = 1, service = Depot)]
pub struct Loaded {}

#[handlers]
impl Depot {
    /// Answers the first step.
    #[listener(name = "reserve")]
    async fn reserve(&self, _cmd: Reserve) -> HandlerResult<Reserved> {
        Ok(Reserved {})
    }

    /// Answers the second step.
    #[listener(name = "load")]
    async fn load(&self, _cmd: Load) -> HandlerResult<Loaded> {
        Ok(Loaded {})
    }
}

/// The tally service: `acme.test.tally`, 4 partitions, a transactional listener on the store.
/// Each `add` command counts one for its key (an upsert of `tallies`) and emits an `added`
/// fact carrying the command's number, in one transaction with the command's inbox row. Run by
/// the `probe` binary with `PROBE_SERVICE=tally` (and `ATOLL_STORE__URL`); its table comes
/// from [`Tally::migrations`].
#[event_service(company = "acme", namespace = "test", name = "tally", partitions = 4)]
#[derive(Debug, Default)]
pub struct Tally;

/// Count one for `key`; `n` numbers the commands of a key, from 0.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "add", version = 1, service = Tally)]
pub struct Add {
    /// The key.
    #[event(key)]
    pub key: String,
    /// The command's number within its key.
    pub n: u32,
}

/// `key` was counted for its command number `n`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
#[event(fact, name = "added", version = 1, service = Tally)]
pub struct Added {
    /// The key.
    #[event(key)]
    pub key: String,
    /// The command's number within its key.
    pub n: u32,
}

impl Tally {
    /// The `tallies` table (key, count).
    pub fn migrations() -> sqlx::migrate::Migrator {
        use sqlx::migrate::{Migration, MigrationType, Migrator};
        use sqlx::SqlSafeStr;
        let sql = "CREATE TABLE tallies (k TEXT PRIMARY KEY, n BIGINT NOT NULL)";
        Migrator::with_migrations(vec![Migration::new(
            1,
            "tallies".into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )])
    }
}

#[handlers]
impl Tally {
    /// Counts, and says so, in one transaction.
    #[listener(name = "add")]
    async fn add(&self, mut tx: atoll::Tx<sqlx::Postgres>, cmd: Add) -> HandlerResult<Added> {
        sqlx::query(
            "INSERT INTO tallies (k, n) VALUES ($1, 1)
             ON CONFLICT (k) DO UPDATE SET n = tallies.n + 1",
        )
        .bind(&cmd.key)
        .execute(&mut *tx)
        .await?;
        Ok(Added {
            key: cmd.key,
            n: cmd.n,
        })
    }
}

/// The alarm service: `acme.test.alarm`, 4 partitions, on a PostgreSQL store. `set` schedules
/// a [`Ring`] under the alarm's key (`alarm/<key>/<n>`: setting it again replaces it) or
/// cancels it, and `ring` counts each ring in `rings`, in one transaction with its
/// inbox row (a repeat is dropped there and never counted). `set` keeps when each alarm is due
/// in `alarms`. Run by the `probe` binary with `PROBE_SERVICE=alarm` (and
/// `ATOLL_STORE__URL`); its tables come from [`Alarm::migrations`].
#[event_service(company = "acme", namespace = "test", name = "alarm", partitions = 4)]
#[derive(Debug, Default)]
pub struct Alarm;

/// Sets alarm `n` of `key` to ring `after_ms` from now, at `version` (a later version
/// replaces it).
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "set_alarm", version = 1, service = Alarm)]
pub struct SetAlarm {
    /// The key.
    #[event(key)]
    pub key: String,
    /// The alarm's number within its key.
    pub n: u32,
    /// Which setting of the alarm this is, from 1.
    pub version: u32,
    /// How long from now it rings.
    pub after_ms: u64,
}

/// Cancels alarm `n` of `key`.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "cancel_alarm", version = 1, service = Alarm)]
pub struct CancelAlarm {
    /// The key.
    #[event(key)]
    pub key: String,
    /// The alarm's number within its key.
    pub n: u32,
}

/// Alarm `n` of `key`, set at `version`, rings: the scheduled command.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "ring", version = 1, service = Alarm)]
pub struct Ring {
    /// The key.
    #[event(key)]
    pub key: String,
    /// The alarm's number within its key.
    pub n: u32,
    /// The setting that rang.
    pub version: u32,
}

impl Alarm {
    /// The schedule key of alarm `n` of `key`.
    pub fn key(key: &str, n: u32) -> atoll::ScheduleKey {
        atoll::ScheduleKey::new(format!("alarm/{key}/{n}"))
    }

    /// The `alarms` table (when each alarm is due, by the process's clock) and the `rings`
    /// table (how often each alarm rang, at which version, when first).
    pub fn migrations() -> sqlx::migrate::Migrator {
        use sqlx::migrate::{Migration, MigrationType, Migrator};
        use sqlx::SqlSafeStr;
        let sql =
            "CREATE TABLE alarms (k TEXT NOT NULL, n BIGINT NOT NULL, version BIGINT NOT NULL,
                due_ms BIGINT NOT NULL, PRIMARY KEY (k, n));
            CREATE TABLE rings (k TEXT NOT NULL, n BIGINT NOT NULL, version BIGINT NOT NULL,
                times BIGINT NOT NULL, rang_ms BIGINT NOT NULL, PRIMARY KEY (k, n))";
        Migrator::with_migrations(vec![Migration::new(
            1,
            "alarms".into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )])
    }
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(now.unwrap_or_default().as_millis()).unwrap_or(i64::MAX)
}

/// The alarm commands the `set` listener takes, in their order on the partition: a cancel
/// handled by another listener could run before the setting it cancels.
#[derive(Debug, atoll::Events)]
pub enum AlarmCommand {
    /// Set (or set again).
    Set(SetAlarm),
    /// Cancel.
    Cancel(CancelAlarm),
}

#[handlers]
impl Alarm {
    /// Schedules the ring and notes when it is due, or takes it back.
    #[listener(name = "set")]
    async fn set(
        &self,
        ctx: Context<Self>,
        mut tx: atoll::Tx<sqlx::Postgres>,
        cmd: AlarmCommand,
    ) -> HandlerResult<()> {
        let cmd = match cmd {
            AlarmCommand::Set(cmd) => cmd,
            AlarmCommand::Cancel(cmd) => {
                ctx.cancel(&Self::key(&cmd.key, cmd.n)).await?;
                return Ok(());
            }
        };
        let after = Duration::from_millis(cmd.after_ms);
        let due = now_ms() + i64::try_from(cmd.after_ms).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO alarms (k, n, version, due_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (k, n) DO UPDATE SET version = $3, due_ms = $4",
        )
        .bind(&cmd.key)
        .bind(i64::from(cmd.n))
        .bind(i64::from(cmd.version))
        .bind(due)
        .execute(&mut *tx)
        .await?;
        let ring = Ring {
            key: cmd.key.clone(),
            n: cmd.n,
            version: cmd.version,
        };
        ctx.schedule_keyed(Self::key(&cmd.key, cmd.n), ring, after)
            .await?;
        Ok(())
    }

    /// Counts the ring.
    #[listener(name = "ring")]
    async fn ring(&self, mut tx: atoll::Tx<sqlx::Postgres>, cmd: Ring) -> HandlerResult<()> {
        sqlx::query(
            "INSERT INTO rings (k, n, version, times, rang_ms) VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT (k, n) DO UPDATE SET times = rings.times + 1",
        )
        .bind(&cmd.key)
        .bind(i64::from(cmd.n))
        .bind(i64::from(cmd.version))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}
