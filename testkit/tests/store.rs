//! The store on a real PostgreSQL (a throwaway server per test) and on SQLite: atoll's tables
//! created at start, concurrent starts, the application's migrations, and the errors a
//! failing migration and an unreachable database give.

use atoll::config::StoreConfig;
use atoll::{Backend, Error, Store};
use atoll_testkit::Postgres;

fn pg_config(url: String) -> StoreConfig {
    let mut c = StoreConfig::default();
    c.url = Some(url);
    c
}

fn sqlite_config(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::default();
    c.path = dir.join("store.db");
    c
}

async fn schema_versions(store: &Store) -> Vec<i64> {
    sqlx::query_as::<_, (i64,)>("SELECT version FROM atoll_schema ORDER BY version")
        .fetch_all(store.pool())
        .await
        .expect("atoll_schema is readable")
        .into_iter()
        .map(|(v,)| v)
        .collect()
}

/// atoll's own migrations: inbox and outbox, views, outbox rows naming their record, outbox
/// claims and dead letters, inbox rows naming the event's source, scheduled commands.
const ATOLL_VERSIONS: [i64; 7] = [1, 2, 3, 4, 5, 6, 7];

async fn table_is_empty(store: &Store, table: &str) {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{table} exists: {e}"));
    assert_eq!(n, 0, "{table}");
}

#[tokio::test]
async fn postgres_gets_atolls_tables_once_even_when_processes_start_together() {
    let pg = Postgres::start();
    let config = pg_config(pg.database("shop"));
    // Three processes starting at once: the advisory lock serialises the migrations.
    let (a, b, c) = tokio::join!(
        Store::connect(&config),
        Store::connect(&config),
        Store::connect(&config)
    );
    let store = a.expect("first");
    b.expect("second");
    c.expect("third");
    assert_eq!(store.backend(), Backend::Postgres);
    assert_eq!(schema_versions(&store).await, ATOLL_VERSIONS);
    table_is_empty(&store, "atoll_inbox").await;
    table_is_empty(&store, "atoll_outbox").await;
    table_is_empty(&store, "atoll_views").await;
    table_is_empty(&store, "atoll_schedule").await;
    // A restart finds everything in place.
    let again = Store::connect(&config).await.expect("restart");
    assert_eq!(schema_versions(&again).await, ATOLL_VERSIONS);
}

#[tokio::test]
async fn sqlite_is_the_zero_setup_default() {
    let dir = tempdir("sqlite-default");
    let config = sqlite_config(&dir);
    let store = Store::connect(&config).await.expect("sqlite store");
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(config.path.is_file(), "the file is created");
    assert_eq!(schema_versions(&store).await, ATOLL_VERSIONS);
    table_is_empty(&store, "atoll_outbox").await;
    drop(store);
    let again = Store::connect(&config).await.expect("reopened");
    assert_eq!(schema_versions(&again).await, ATOLL_VERSIONS);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_applications_migrations_run_and_a_failing_one_names_itself() {
    let pg = Postgres::start();
    let store = Store::connect(&pg_config(pg.database("app")))
        .await
        .expect("store");
    let dir = tempdir("migrations");
    std::fs::write(
        dir.join("1_stock.sql"),
        "CREATE TABLE stock (sku TEXT PRIMARY KEY, qty BIGINT NOT NULL);",
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
    store.migrate(&migrator).await.expect("first migration");
    sqlx::query("INSERT INTO stock (sku, qty) VALUES ('apple', 3)")
        .execute(store.pool())
        .await
        .expect("the application's table exists");

    std::fs::write(
        dir.join("2_broken.sql"),
        "ALTER TABLE no_such_table ADD COLUMN x INT;",
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
    let err = store.migrate(&migrator).await.unwrap_err();
    assert!(matches!(err, Error::Migration { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("2: broken") && text.contains("no_such_table"),
        "names the migration and the database's message: {text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_unreachable_database_is_a_transient_error_that_names_it_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = pg_config(format!("postgres://atoll:s3cret@127.0.0.1:{port}/shop"));
    config.connect_timeout_ms = 500;
    let err = Store::connect(&config).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(err.is_transient(), "{err:?}");
}

fn tempdir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "atoll-store-{what}-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

mod outage {
    use std::time::{Duration, Instant};

    use atoll::config::Config;
    use atoll::{event_service, handlers, App, Event, HandlerResult, Tx};
    use atoll_testkit::Postgres;
    use serde::{Deserialize, Serialize};

    #[event_service(company = "acme", namespace = "test", name = "counter", partitions = 1)]
    pub(crate) struct Counter;

    #[derive(Debug, Serialize, Deserialize, Event)]
    #[event(command, name = "bump", version = 1, service = Counter)]
    pub(crate) struct Bump {
        #[event(key)]
        pub(crate) key: String,
    }

    #[handlers]
    impl Counter {
        #[listener(name = "bump", max_attempts = 2, backoff_ms = 50, max_backoff_ms = 200)]
        async fn bump(&self, mut tx: Tx, cmd: Bump) -> HandlerResult {
            sqlx::query("UPDATE counts SET n = n + 1 WHERE k = $1")
                .bind(&cmd.key)
                .execute(&mut *tx)
                .await?;
            Ok(())
        }
    }

    async fn count(running: &atoll::Running) -> Option<i64> {
        sqlx::query_as::<_, (i64,)>("SELECT n FROM counts WHERE k = 'a'")
            .fetch_one(running.store()?.pool())
            .await
            .ok()
            .map(|(n,)| n)
    }

    async fn wait_for(running: &atoll::Running, n: i64, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if count(running).await == Some(n) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_outage_is_waited_out_not_dead_lettered() {
        let pg = Postgres::start();
        let dir = super::tempdir("outage");
        std::fs::write(
            dir.join("1_counts.sql"),
            "CREATE TABLE counts (k TEXT PRIMARY KEY, n BIGINT NOT NULL); INSERT INTO counts VALUES ('a', 0);",
        )
        .unwrap();
        let mut config = Config::default();
        config.store.url = Some(pg.database("counter"));
        config.store.connect_timeout_ms = 300;
        let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
        let running = App::new(config)
            .service(Counter)
            .migrations(migrator)
            .start()
            .await
            .expect("start");
        let client = running.client("test");
        client.send(&Bump { key: "a".into() }).await.unwrap();
        assert!(wait_for(&running, 1, 20).await, "the first bump is handled");

        pg.stop();
        client.send(&Bump { key: "a".into() }).await.unwrap();
        // Far more than the listener's two attempts would take: the outage spends no budget.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stats = running.stats();
        assert_eq!(
            stats[0].dead_lettered, 0,
            "nothing dead-lettered: {stats:?}"
        );
        assert!(
            stats[0].retries >= 2,
            "retried while the database was away: {stats:?}"
        );

        pg.restart();
        assert!(
            wait_for(&running, 2, 30).await,
            "handled once the database is back"
        );
        assert_eq!(running.stats()[0].dead_lettered, 0);
        running.shutdown().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Transactional handlers that hold their connections do not starve the rest of the process:
/// with more handlers in flight than the pool has connections, a query of the process's own (an
/// HTTP route's, the outbox relay's) still gets one.
mod pool {
    use std::time::{Duration, Instant};

    use atoll::config::{Config, OrderingMode};
    use atoll::{event_service, handlers, App, Event, HandlerResult, Tx};
    use atoll_testkit::Postgres;
    use serde::{Deserialize, Serialize};

    #[event_service(company = "acme", namespace = "test", name = "slow", partitions = 1)]
    pub(crate) struct Slow;

    #[derive(Debug, Serialize, Deserialize, Event)]
    #[event(command, name = "hold", version = 1, service = Slow)]
    pub(crate) struct Hold {
        #[event(key)]
        pub(crate) key: String,
    }

    #[handlers]
    impl Slow {
        #[listener(name = "hold")]
        async fn hold(&self, mut tx: Tx, cmd: Hold) -> HandlerResult {
            sqlx::query("INSERT INTO held (k) VALUES ($1)")
                .bind(&cmd.key)
                .execute(&mut *tx)
                .await?;
            // Holds the transaction's connection.
            HOLDING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok(())
        }
    }

    /// Handlers that ran their insert and hold their transaction.
    static HOLDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_holding_connections_leave_the_process_a_connection() {
        let pg = Postgres::start();
        let dir = super::tempdir("pool");
        std::fs::write(
            dir.join("1_held.sql"),
            "CREATE TABLE held (k TEXT NOT NULL);",
        )
        .unwrap();
        let mut config = Config::default();
        config.store.url = Some(pg.database("slow"));
        config.store.max_connections = 4;
        config.store.connect_timeout_ms = 1_000;
        config.listener.ordering = OrderingMode::Key;
        config.listener.max_in_flight = 16;
        let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
        let running = App::new(config)
            .service(Slow)
            .migrations(migrator)
            .start()
            .await
            .expect("start");
        let client = running.client("test");
        for k in 0..12 {
            client
                .send(&Hold {
                    key: format!("k{k}"),
                })
                .await
                .unwrap();
        }
        let pool = running.store().unwrap().pool().clone();
        // Until the handlers hold all they can.
        let deadline = Instant::now() + Duration::from_secs(20);
        while HOLDING.load(std::sync::atomic::Ordering::SeqCst) < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let answer = sqlx::query_as::<_, (i32,)>("SELECT 1")
            .fetch_one(&pool)
            .await;
        assert!(
            answer.is_ok(),
            "a query beside {} handlers holding connections got none in {:?}: {answer:?}",
            12,
            started.elapsed()
        );
        running.shutdown().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}

mod test_bed {
    use atoll::testing::TestBed;
    use atoll::{event_service, handlers, Context, Event, HandlerError, HandlerResult, Store, Tx};
    use serde::{Deserialize, Serialize};

    #[event_service(company = "acme", namespace = "test", name = "wallet", partitions = 1)]
    pub(crate) struct Wallet;

    #[derive(Debug, Serialize, Deserialize, Event)]
    #[event(command, name = "deposit", version = 1, service = Wallet)]
    pub(crate) struct Deposit {
        #[event(key)]
        pub(crate) id: String,
        pub(crate) cents: i64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
    #[event(fact, name = "deposited", version = 1, service = Wallet)]
    pub(crate) struct Deposited {
        #[event(key)]
        pub(crate) id: String,
        pub(crate) cents: i64,
    }

    #[handlers]
    impl Wallet {
        #[listener(name = "deposit")]
        async fn deposit(&self, ctx: Context<Self>, mut tx: Tx, cmd: Deposit) -> HandlerResult {
            sqlx::query("UPDATE wallets SET cents = cents + $1 WHERE id = $2")
                .bind(cmd.cents)
                .bind(&cmd.id)
                .execute(&mut *tx)
                .await?;
            ctx.emit(Deposited {
                id: cmd.id,
                cents: cmd.cents,
            })
            .await?;
            if cmd.cents < 0 {
                return Err(HandlerError::permanent("negative deposit"));
            }
            Ok(())
        }
    }

    async fn cents(store: &Store) -> i64 {
        let (c,): (i64,) = sqlx::query_as("SELECT cents FROM wallets WHERE id = 'w'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        c
    }

    #[tokio::test]
    async fn a_test_bed_runs_transactional_handlers_on_sqlite() {
        let dir = super::tempdir("testbed");
        let store = Store::connect(&super::sqlite_config(&dir)).await.unwrap();
        transactional_handlers_on(store).await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_test_bed_runs_transactional_handlers_on_postgres() {
        let pg = atoll_testkit::Postgres::start();
        let store = Store::connect(&super::pg_config(pg.database("wallet")))
            .await
            .unwrap();
        transactional_handlers_on(store).await;
    }

    /// A write and its fact commit and are published; a failure after writing leaves nothing.
    async fn transactional_handlers_on(store: Store) {
        sqlx::query("CREATE TABLE wallets (id TEXT PRIMARY KEY, cents BIGINT NOT NULL)")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO wallets VALUES ('w', 0)")
            .execute(store.pool())
            .await
            .unwrap();
        let bed = TestBed::new(Wallet).with_store(store.clone());
        bed.handle(Deposit {
            id: "w".into(),
            cents: 40,
        })
        .await
        .unwrap();
        assert_eq!(cents(&store).await, 40);
        assert_eq!(
            bed.emitted::<Deposited>(),
            [Deposited {
                id: "w".into(),
                cents: 40
            }],
            "published from the outbox"
        );
        // A failure after the write rolls the write and the fact back.
        let err = bed
            .handle(Deposit {
                id: "w".into(),
                cents: -5,
            })
            .await
            .unwrap_err();
        assert!(err.is_permanent());
        assert_eq!(cents(&store).await, 40);
        assert_eq!(bed.emitted::<Deposited>().len(), 1);
        let (outbox,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM atoll_outbox")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(outbox, 0);
    }

    /// A wallet on sqlx's native PostgreSQL driver: its handler binds an array, which the
    /// `Any` driver cannot.
    mod native {
        use atoll::testing::TestBed;
        use atoll::{event_service, handlers, Context, Event, HandlerResult, Store, Tx};
        use serde::{Deserialize, Serialize};
        use sqlx::Postgres;

        #[event_service(company = "acme", namespace = "test", name = "purse", partitions = 1)]
        pub(crate) struct Purse;

        #[derive(Debug, Serialize, Deserialize, Event)]
        #[event(command, name = "split", version = 1, service = Purse)]
        pub(crate) struct Split {
            #[event(key)]
            pub(crate) purse: String,
            pub(crate) ids: Vec<String>,
            pub(crate) cents: i64,
        }

        #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
        #[event(fact, name = "split_done", version = 1, service = Purse)]
        pub(crate) struct SplitDone {
            #[event(key)]
            pub(crate) first: String,
            pub(crate) wallets: u64,
        }

        #[handlers]
        impl Purse {
            #[listener(name = "split")]
            async fn split(
                &self,
                ctx: Context<Self>,
                mut tx: Tx<Postgres>,
                cmd: Split,
            ) -> HandlerResult {
                let done = sqlx::query(
                    "INSERT INTO purses (id, cents) SELECT id, $2 FROM UNNEST($1::text[]) AS id
                     ON CONFLICT (id) DO UPDATE SET cents = purses.cents + excluded.cents",
                )
                .bind(&cmd.ids)
                .bind(cmd.cents)
                .execute(&mut *tx)
                .await?;
                ctx.emit(SplitDone {
                    first: cmd.ids[0].clone(),
                    wallets: done.rows_affected(),
                })
                .await?;
                Ok(())
            }
        }

        /// The array statement runs in the record's transaction and its fact leaves through
        /// the outbox.
        #[tokio::test]
        async fn a_handler_on_the_native_postgres_driver_binds_arrays_in_its_transaction() {
            let pg = atoll_testkit::Postgres::start();
            let store = Store::connect(&super::super::pg_config(pg.database("purse")))
                .await
                .unwrap();
            sqlx::query("CREATE TABLE purses (id TEXT PRIMARY KEY, cents BIGINT NOT NULL)")
                .execute(store.postgres().expect("a PostgreSQL store's native pool"))
                .await
                .unwrap();
            let bed = TestBed::new(Purse).with_store(store.clone());
            let split = || Split {
                purse: "s".into(),
                ids: vec!["p".into(), "q".into(), "r".into()],
                cents: 5,
            };
            bed.handle(split()).await.unwrap();
            let (total,): (i64,) = sqlx::query_as("SELECT SUM(cents)::BIGINT FROM purses")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(total, 15);
            assert_eq!(
                bed.emitted::<SplitDone>(),
                [SplitDone {
                    first: "p".into(),
                    wallets: 3
                }]
            );
            let (outbox,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM atoll_outbox")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(outbox, 0, "published and deleted");
        }

        /// On SQLite there is no native PostgreSQL driver: the listener says so, with what
        /// to take instead, and nothing is written.
        #[tokio::test]
        async fn a_native_postgres_handler_on_sqlite_says_what_it_needs() {
            let dir = super::super::tempdir("purse-sqlite");
            let store = Store::connect(&super::super::sqlite_config(&dir))
                .await
                .unwrap();
            let bed = TestBed::new(Purse).with_store(store.clone());
            let err = bed
                .handle(Split {
                    purse: "s".into(),
                    ids: vec!["p".into()],
                    cents: 1,
                })
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("listener `split`")
                    && text.contains("`Tx<Postgres>`")
                    && text.contains("postgres://"),
                "{text}"
            );
            assert!(bed.emitted::<SplitDone>().is_empty());
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[tokio::test]
    #[should_panic(expected = "give the test bed a store")]
    async fn a_transactional_listener_without_a_store_says_what_to_do() {
        let bed = TestBed::new(Wallet);
        let _ = bed
            .handle(Deposit {
                id: "w".into(),
                cents: 1,
            })
            .await;
    }
}
