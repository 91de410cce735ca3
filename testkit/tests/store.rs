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
    assert_eq!(schema_versions(&store).await, [1]);
    table_is_empty(&store, "atoll_inbox").await;
    table_is_empty(&store, "atoll_outbox").await;
    // A restart finds everything in place.
    let again = Store::connect(&config).await.expect("restart");
    assert_eq!(schema_versions(&again).await, [1]);
}

#[tokio::test]
async fn sqlite_is_the_zero_setup_default() {
    let dir = tempdir("sqlite-default");
    let config = sqlite_config(&dir);
    let store = Store::connect(&config).await.expect("sqlite store");
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(config.path.is_file(), "the file is created");
    assert_eq!(schema_versions(&store).await, [1]);
    table_is_empty(&store, "atoll_outbox").await;
    drop(store);
    let again = Store::connect(&config).await.expect("reopened");
    assert_eq!(schema_versions(&again).await, [1]);
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
