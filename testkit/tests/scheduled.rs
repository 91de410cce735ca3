//! Scheduled commands under kills: two replicas of the alarm service (`probe::Alarm`) on one
//! PostgreSQL schedule, replace and cancel alarms while they are killed (SIGKILL) five times,
//! the last time both at once and left down for 10 s, so that alarms fall due with no process
//! alive. Every alarm not cancelled rings once, at its last setting, never before it is due;
//! no cancelled or replaced setting rings; the schedule and the outbox end empty.
//!
//! On noida-db with static membership, as `replicas.rs` (a restarted process takes its
//! partitions back at once). `ALARMS` sizes it (600 in the suite).
//!
//! And, with `atoll::testing` on SQLite: scheduling, replacing and cancelling by key, and the
//! places a handler may not schedule from.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use atoll::contract::owned_topics;
use atoll::envelope::{header_str, Outgoing};
use atoll::Event;
use atoll_testkit::probe::{Alarm, CancelAlarm, Ring, SetAlarm};
use atoll_testkit::replicas::Replicas;
use atoll_testkit::{read_topic, Tansu};
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Message;

const PROBE: &str = env!("CARGO_BIN_EXE_probe");
const KEYS: u32 = 40;
/// The most due records a pass of the relay moves to the outbox.
const PROMOTE_BATCH: usize = 500;

/// What becomes of alarm `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Rings once, `after_ms` after it was set.
    Rings { after_ms: u64 },
    /// Set to ring much later, then set again (version 2) to ring after `after_ms`.
    Replaced { after_ms: u64 },
    /// Set to ring in 45–50 s, and cancelled right after.
    Cancelled,
}

struct Plan {
    fates: Vec<Fate>,
}

impl Plan {
    fn new(alarms: u32, rng: &mut rand::rngs::StdRng) -> Self {
        let fates = (0..alarms)
            .map(|i| {
                let after_ms = rng.random_range(2_000..20_000);
                match i {
                    i if i % 7 == 3 => Fate::Cancelled,
                    i if i % 10 == 5 => Fate::Replaced { after_ms },
                    _ => Fate::Rings { after_ms },
                }
            })
            .collect();
        Self { fates }
    }

    fn id(i: usize) -> (String, u32) {
        let i = u32::try_from(i).unwrap();
        (format!("k{}", i % KEYS), i / KEYS)
    }

    /// The alarms that ring, each with the version that rings.
    fn rings(&self) -> HashMap<(String, u32), u32> {
        self.fates
            .iter()
            .enumerate()
            .filter_map(|(i, fate)| match fate {
                Fate::Rings { .. } => Some((Self::id(i), 1)),
                Fate::Replaced { .. } => Some((Self::id(i), 2)),
                Fate::Cancelled => None,
            })
            .collect()
    }

    /// Sends every alarm's commands, one alarm every `pace`.
    fn send(&self, bootstrap: &str, pace: Duration) {
        let producer = atoll_testkit::raw_producer(bootstrap);
        let send = |key: &str, ce_type: &str, payload: Vec<u8>| {
            let (headers, _) = Outgoing::new(ce_type, "test").headers();
            let record = BaseRecord::to("acme.test.alarm.commands")
                .key(key)
                .payload(&payload)
                .headers(headers);
            atoll_testkit::send_waiting(&producer, record);
            producer.poll(Duration::ZERO);
        };
        let set = |key: &str, n: u32, version: u32, after_ms: u64| {
            let cmd = SetAlarm {
                key: key.to_owned(),
                n,
                version,
                after_ms,
            };
            send(key, SetAlarm::ce_type(), serde_json::to_vec(&cmd).unwrap());
        };
        for (i, fate) in self.fates.iter().enumerate() {
            let (key, n) = Self::id(i);
            match *fate {
                Fate::Rings { after_ms } => set(&key, n, 1, after_ms),
                Fate::Replaced { after_ms } => {
                    set(&key, n, 1, 600_000);
                    set(&key, n, 2, after_ms);
                }
                Fate::Cancelled => {
                    set(&key, n, 1, 45_000 + u64::from(n) * 100);
                    let cancel = CancelAlarm {
                        key: key.clone(),
                        n,
                    };
                    send(
                        &key,
                        CancelAlarm::ce_type(),
                        serde_json::to_vec(&cancel).unwrap(),
                    );
                }
            }
            std::thread::sleep(pace);
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    }
}

/// One row of `rings`: key, number, version, times rung, when first rung; and when the alarm
/// was due (from `alarms`).
type RingRow = (String, i64, i64, i64, i64, i64);

async fn rang(pool: &sqlx::AnyPool) -> Vec<RingRow> {
    sqlx::query_as(
        "SELECT r.k, r.n, r.version, r.times, r.rang_ms, a.due_ms
         FROM rings r JOIN alarms a ON a.k = r.k AND a.n = r.n",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default()
}

async fn count(pool: &sqlx::AnyPool, table: &str) -> i64 {
    sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .map_or(-1, |(n,)| n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_commands_survive_five_kills_none_lost_or_sent_twice() {
    let alarms = std::env::var("ALARMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let plan = Plan::new(alarms, &mut rng);
    let expected = plan.rings();
    let broker = Tansu::builder().transactions(true).start();
    let settings = [("ATOLL_SERVICE__STATIC_MEMBERSHIP", "true")];
    let topics = owned_topics::<Alarm>();
    let mut run = Replicas::start(broker, PROBE, "alarm", &["a0", "a1"], topics, &settings).await;

    let bootstrap = run.broker.bootstrap();
    let sender = std::thread::spawn(move || plan.send(&bootstrap, Duration::from_millis(10)));
    // Kills 1–4: one replica each, restarted at once; kill 5: both, down for 10 s.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..5_000))).await;
        let i = rng.random_range(0..run.procs.len());
        run.kill_and_restart(i);
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..5_000))).await;
    for p in &mut run.procs {
        p.kill();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    for i in 0..run.procs.len() {
        run.procs[i] = run.spawn(i);
    }
    sender.join().unwrap();

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&run.url).await.unwrap();
    // Every alarm rings within 4 minutes, and the schedule and the outbox empty.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut rows = rang(&pool).await;
    while (rows.len() < expected.len()
        || count(&pool, "atoll_schedule").await != 0
        || count(&pool, "atoll_outbox").await != 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rows = rang(&pool).await;
    }
    let left = (
        count(&pool, "atoll_schedule").await,
        count(&pool, "atoll_outbox").await,
    );
    assert_eq!(
        left,
        (0, 0),
        "schedule and outbox rows left\n{}",
        run.logs()
    );

    // 1. Each alarm that rings rang once, at its last version; none else rang.
    let mut wrong = Vec::new();
    for (k, n, version, times, rang_ms, due_ms) in &rows {
        let id = (k.clone(), u32::try_from(*n).unwrap());
        match expected.get(&id) {
            Some(v) if i64::from(*v) == *version && *times == 1 => {}
            _ => wrong.push(format!("{id:?} v{version} ×{times}")),
        }
        // 3. Never before it was due (1 s for the clocks of the process and the database).
        if rang_ms + 1_000 < *due_ms {
            wrong.push(format!("{id:?} rang {} ms early", due_ms - rang_ms));
        }
    }
    assert!(
        wrong.is_empty() && rows.len() == expected.len(),
        "{} of {} alarms rang; wrong: {wrong:?}\n{}",
        rows.len(),
        expected.len(),
        run.logs()
    );

    // 2. On the topic: one ring command per alarm, none of a replaced or cancelled setting;
    // copies of one command (same ce_id) only from a kill between a publish and its delete.
    let b = run.broker.bootstrap();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(
            &b,
            "acme.test.alarm.commands",
            usize::MAX,
            Duration::from_secs(20),
        )
    })
    .await
    .unwrap();
    let mut ids: HashMap<(String, u32), HashSet<String>> = HashMap::new();
    let mut copies = 0;
    let mut seen = HashSet::new();
    for m in &records {
        if header_str(m, "ce_type") != Some(Ring::ce_type()) {
            continue;
        }
        let ring: Ring = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let id = header_str(m, "ce_id").unwrap().to_owned();
        assert!(
            header_str(m, "atoll_scheduled_for").is_some()
                && header_str(m, "atoll_schedule_key")
                    == Some(Alarm::key(&ring.key, ring.n).as_str()),
            "a ring carries its schedule's headers"
        );
        assert_eq!(
            expected.get(&(ring.key.clone(), ring.n)),
            Some(&ring.version),
            "only the last setting of an alarm not cancelled rings: {ring:?}"
        );
        if !seen.insert(id.clone()) {
            copies += 1;
        }
        ids.entry((ring.key, ring.n)).or_default().insert(id);
    }
    let twice: Vec<_> = ids.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "alarms sent as two commands: {twice:?}");
    assert_eq!(ids.len(), expected.len(), "one command per alarm");
    println!(
        "{alarms} alarms ({} ring), 5 kills of 2 replicas: {copies} ring commands published twice",
        expected.len()
    );
    assert!(
        copies <= 5 * PROMOTE_BATCH,
        "at most a relay's batch published again per kill: {copies}"
    );
    pool.close().await;
    run.stop();
}

mod bed {
    use std::time::{Duration, SystemTime};

    use atoll::config::StoreConfig;
    use atoll::testing::TestBed;
    use atoll::{event_service, handlers, Context, Event, HandlerResult, ScheduleKey, Store, Tx};
    use serde::{Deserialize, Serialize};

    #[event_service(company = "acme", namespace = "test", name = "reminders")]
    #[derive(Debug, Default)]
    struct Reminders;

    /// Nudge `id` in `minutes`.
    #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    #[event(command, name = "plan", version = 1, service = Reminders)]
    struct Plan {
        #[event(key)]
        id: String,
        minutes: u64,
    }

    /// Take `id`'s nudge back.
    #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    #[event(command, name = "forget", version = 1, service = Reminders)]
    struct Forget {
        #[event(key)]
        id: String,
    }

    /// The scheduled command.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
    #[event(command, name = "nudge", version = 1, service = Reminders)]
    struct Nudge {
        #[event(key)]
        id: String,
        minutes: u64,
    }

    /// Schedules from a listener without a transaction.
    #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    #[event(command, name = "careless", version = 1, service = Reminders)]
    struct Careless {
        #[event(key)]
        id: String,
    }

    /// Schedules from a view's listener.
    #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    #[event(command, name = "viewed", version = 1, service = Reminders)]
    struct Viewed {
        #[event(key)]
        id: String,
    }

    /// A command without a key.
    #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    #[event(command, name = "keyless", version = 1, service = Reminders)]
    struct Keyless {
        n: u32,
    }

    /// Schedules a keyless command (by its type's key: none).
    #[derive(Debug, Clone, Serialize, Deserialize, Event)]
    #[event(command, name = "plan_keyless", version = 1, service = Reminders)]
    struct PlanKeyless {
        #[event(key)]
        id: String,
    }

    #[handlers]
    impl Reminders {
        #[listener(name = "plan")]
        async fn plan(&self, ctx: Context<Self>, _tx: Tx, cmd: Plan) -> HandlerResult<()> {
            let nudge = Nudge {
                id: cmd.id,
                minutes: cmd.minutes,
            };
            ctx.schedule(nudge, Duration::from_secs(cmd.minutes * 60))
                .await?;
            Ok(())
        }

        #[listener(name = "forget")]
        async fn forget(&self, ctx: Context<Self>, _tx: Tx, cmd: Forget) -> HandlerResult<()> {
            ctx.cancel(&ScheduleKey::of::<Nudge>(&cmd.id)).await?;
            Ok(())
        }

        #[listener(name = "nudge")]
        async fn nudge(&self, _cmd: Nudge) -> HandlerResult<()> {
            Ok(())
        }

        #[listener(name = "careless")]
        async fn careless(&self, ctx: Context<Self>, cmd: Careless) -> HandlerResult<()> {
            let nudge = Nudge {
                id: cmd.id,
                minutes: 1,
            };
            ctx.schedule(nudge, Duration::from_secs(60)).await?;
            Ok(())
        }

        #[listener(name = "viewed", view = "nudge_view")]
        async fn viewed(&self, ctx: Context<Self>, _tx: Tx, cmd: Viewed) -> HandlerResult<()> {
            let nudge = Nudge {
                id: cmd.id,
                minutes: 1,
            };
            ctx.schedule(nudge, Duration::from_secs(60)).await?;
            Ok(())
        }

        #[listener(name = "keyless")]
        async fn keyless(&self, _cmd: Keyless) -> HandlerResult<()> {
            Ok(())
        }

        #[listener(name = "plan-keyless")]
        async fn plan_keyless(
            &self,
            ctx: Context<Self>,
            _tx: Tx,
            _cmd: PlanKeyless,
        ) -> HandlerResult<()> {
            ctx.schedule(Keyless { n: 1 }, Duration::from_secs(60))
                .await?;
            Ok(())
        }
    }

    async fn bed(name: &str) -> (TestBed<Reminders>, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("atoll-scheduled-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = StoreConfig::default();
        config.path = dir.join("store.db");
        let store = Store::connect(&config).await.expect("a SQLite store");
        (TestBed::new(Reminders).with_store(store), dir)
    }

    fn plan(id: &str, minutes: u64) -> Plan {
        Plan {
            id: id.into(),
            minutes,
        }
    }

    #[tokio::test]
    async fn a_command_is_kept_until_due_replaced_by_its_key_and_cancelled() {
        let (bed, dir) = bed("replace").await;
        let before = SystemTime::now();
        bed.handle(plan("a", 15)).await.unwrap();
        bed.handle(plan("b", 30)).await.unwrap();
        // Nothing is sent before it is due.
        assert!(bed.sent::<Nudge>().is_empty());
        let pending = bed.scheduled().await.unwrap();
        let keys: Vec<&str> = pending.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            ["acme.test.reminders.nudge/a", "acme.test.reminders.nudge/b"]
        );
        let due = pending[0].due.duration_since(before).unwrap();
        assert!(
            due >= Duration::from_secs(899) && due < Duration::from_secs(960),
            "due in 15 minutes: {due:?}"
        );
        assert!(
            pending[0].record.envelope.correlation_id.is_some(),
            "it carries the flow's correlation id"
        );
        // Planned again: replaced, not added.
        bed.handle(plan("a", 45)).await.unwrap();
        // Cancelled: gone; cancelling what is not pending is no error.
        bed.handle(Forget { id: "b".into() }).await.unwrap();
        bed.handle(Forget { id: "none".into() }).await.unwrap();
        let pending = bed.scheduled().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].record.decode::<Nudge>().minutes, 45);
        // Its time come, it is sent once, with its schedule's headers.
        assert_eq!(bed.run_scheduled().await.unwrap(), 1);
        assert_eq!(
            bed.sent::<Nudge>(),
            [Nudge {
                id: "a".into(),
                minutes: 45
            }]
        );
        assert!(bed.scheduled().await.unwrap().is_empty());
        assert_eq!(bed.run_scheduled().await.unwrap(), 0);
        assert_eq!(bed.sent::<Nudge>().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// On PostgreSQL one process moves due commands at a time (so a key's commands enter the
    /// outbox in due order): while another holds the promoters' lock, nothing moves; once it
    /// lets go, everything does.
    #[tokio::test]
    async fn a_promoter_moves_nothing_while_another_holds_the_lock() {
        let pg = atoll_testkit::Postgres::start();
        let mut config = StoreConfig::default();
        config.url = Some(pg.database("promote"));
        let store = Store::connect(&config).await.expect("a PostgreSQL store");
        let bed = TestBed::new(Reminders).with_store(store.clone());
        bed.handle(plan("a", 1)).await.unwrap();
        // Another promoter, in its transaction ("atollsch", as the store's promoter takes it).
        let mut other = store.pool().begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(0x61_74_6f_6c_6c_73_63_68_i64)
            .execute(&mut *other)
            .await
            .unwrap();
        assert_eq!(bed.run_scheduled().await.unwrap(), 1, "made due");
        assert!(bed.sent::<Nudge>().is_empty(), "moved past the lock");
        assert_eq!(bed.scheduled().await.unwrap().len(), 1);
        other.rollback().await.unwrap();
        bed.run_scheduled().await.unwrap();
        assert_eq!(bed.sent::<Nudge>().len(), 1);
        assert!(bed.scheduled().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn scheduling_outside_a_transaction_in_a_view_or_without_a_key_is_a_permanent_error() {
        let (bed, dir) = bed("refused").await;
        let err = bed.handle(Careless { id: "c".into() }).await.unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(
            err.to_string().contains("needs a transactional listener"),
            "{err}"
        );
        let err = bed.handle(Viewed { id: "v".into() }).await.unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("view's listener"), "{err}");
        let err = bed
            .handle(PlanKeyless { id: "k".into() })
            .await
            .unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert!(err.to_string().contains("schedule_keyed"), "{err}");
        // Nothing was scheduled by any of them.
        assert!(bed.scheduled().await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
