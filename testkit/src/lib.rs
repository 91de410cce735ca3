//! Test harness of atoll.
//!
//! - [`Tansu`] starts a real Kafka-protocol broker (tansu) on a free loopback port and stops it
//!   when dropped. When tansu is not installed the test **fails** with a message saying how to
//!   install it: a test that needs a broker never passes without one. [`Tansu::builder`]
//!   starts it with a [`FaultProxy`] in front (delays, blackholes, cut connections: see
//!   [`proxy`]) and/or with SQLite storage that survives [`Tansu::restart`].
//! - [`Postgres`] starts a throwaway PostgreSQL server the same way, for tests with state.
//! - [`read_topic`] and [`header`] read what services wrote.
//! - The `probe` binary is a small service whose behaviour is set by environment variables,
//!   for tests that need several processes, kills and restarts ([`process::Proc`] can also
//!   pause and resume them).
//!
//! # Against a real Kafka cluster
//!
//! When `ATOLL_TEST_BOOTSTRAP` (see [`BOOTSTRAP_ENV`]) is set, e.g. to `localhost:9092`,
//! [`Tansu::start`] and [`TansuOptions::start`] start no broker: [`Tansu::bootstrap`] (and
//! so [`Tansu::config`] and [`Tansu::env`]) return that address, and each `Tansu` still has
//! its own scratch directory for stores. A cluster the harness does not run cannot be faulted
//! or restarted: [`Tansu::proxy`] returns `None` and [`Tansu::restart`] panics; tests that need
//! them can check [`Tansu::is_external`]. The tests of a process then take turns, each on an
//! emptied cluster (see [`external`]): **point it only at a throwaway cluster.**

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// tansu 0.6 answers the heartbeats of static group members with `UNKNOWN_MEMBER_ID`, so
/// processes under test use dynamic membership (see `ServiceConfig::static_membership`).
pub const STATIC_MEMBERSHIP: bool = false;

/// Client properties for tansu (see `tests/tansu_limitations.rs` for the two workarounds):
/// - fast group joins (see `docs/architecture.md#brokers`);
/// - one record per batch, because tansu 0.6 cannot fetch from an offset inside a record
///   batch: a consumer resuming mid-batch would skip records;
/// - records are never given up (`message.timeout.ms=0`), because an idempotent producer
///   that gives records up bumps its epoch, and tansu 0.6 on SQLite storage then fails every
///   produce request until restarted. A broker outage delays records instead.
pub const TANSU_PROPERTIES: &[(&str, &str)] = &[
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "500"),
    ("batch.num.messages", "1"),
    ("message.timeout.ms", "0"),
];

/// The environment variable that points the tests at an existing Kafka cluster instead of a
/// tansu per test (see the [crate documentation](crate)).
pub const BOOTSTRAP_ENV: &str = "ATOLL_TEST_BOOTSTRAP";

/// A tansu broker process on a free loopback port (or, with `ATOLL_TEST_BOOTSTRAP`, an
/// external cluster), stopped when dropped.
#[derive(Debug)]
pub struct Tansu {
    /// The broker process; `None` against an external cluster (or in the middle of a restart).
    child: Option<Child>,
    /// The tansu binary; `None` against an external cluster.
    bin: Option<PathBuf>,
    /// The port tansu listens on (behind the proxy when there is one; 0 when external).
    port: u16,
    /// What clients connect to, and what tansu advertises: tansu's own address, the proxy's,
    /// or `ATOLL_TEST_BOOTSTRAP`.
    bootstrap: String,
    /// Whether tansu keeps its data in `<scratch>/tansu.db`.
    sqlite: bool,
    /// Whether the process is noida-db (a broker with Kafka transactions) instead of tansu.
    transactions: bool,
    /// The fault proxy in front of tansu, if any.
    proxy: Option<FaultProxy>,
    /// stunnel in front of tansu, terminating TLS, if any.
    front: Option<Stunnel>,
    /// Whether tansu asks clients to log in (SASL SCRAM), after its users were created.
    authentication: bool,
    /// A scratch directory for the stores of the processes on this broker, removed on drop.
    scratch: PathBuf,
    /// Against an external cluster, this test's turn on it (see [`external`]).
    turn: Option<external::Turn>,
}

/// TLS in front of the broker ([`TansuOptions::tls`]): the server's certificate, and for
/// mutual TLS the authority whose certificates clients must show.
#[derive(Debug, Clone)]
pub struct TlsFront {
    /// The certificate stunnel presents.
    pub server: Pair,
    /// With `Some`, clients must show a certificate this authority signed.
    pub clients_signed_by: Option<PathBuf>,
}

/// A SASL SCRAM user of the broker ([`TansuOptions::user`]).
#[derive(Debug, Clone)]
struct User {
    name: String,
    password: String,
    /// tansu's name of the mechanism: `scram256` or `scram512`.
    mechanism: &'static str,
}

/// How to start a [`Tansu`] broker: `Tansu::builder().proxy(true).sqlite(true).start()`.
/// By default (as [`Tansu::start`]): in-memory storage, no proxy.
#[derive(Debug, Clone, Default)]
pub struct TansuOptions {
    proxy: bool,
    own: bool,
    sqlite: bool,
    transactions: bool,
    tls: Option<TlsFront>,
    users: Vec<User>,
}

impl TansuOptions {
    /// Whether to put a [`FaultProxy`] in front of the broker. tansu then listens on an
    /// internal port and advertises the proxy's address, so every connection of every client
    /// (bootstrap, and the broker addresses from metadata) goes through the proxy:
    /// [`Tansu::bootstrap`] is the proxy's address and [`Tansu::proxy`] controls it.
    pub fn proxy(mut self, on: bool) -> Self {
        self.proxy = on;
        self
    }

    /// Whether the test needs a broker no other test shares: one that leaves the broker in a
    /// state later tests would trip over (a group member tansu never evicts, say). The
    /// harness's own broker always is; an external cluster (`ATOLL_TEST_BOOTSTRAP`) is not, so
    /// such a test fails there, saying so.
    pub fn own(mut self, on: bool) -> Self {
        self.own = on;
        self
    }

    /// Whether tansu keeps its data in a SQLite file in the scratch directory (default: in
    /// memory), so that topics, records and committed offsets survive [`Tansu::restart`].
    pub fn sqlite(mut self, on: bool) -> Self {
        self.sqlite = on;
        self
    }

    /// Whether the broker must implement Kafka transactions, which tansu 0.6 does not (its
    /// consumers receive nothing written in one; see `tests/tansu_limitations.rs`). Then
    /// noida-db runs instead (installed by `scripts/install-noida`, or `$NOIDA_BIN`): committed
    /// transactions reach consumers, aborted ones are hidden from `read_committed` consumers,
    /// offsets sent in a transaction commit with it, and a producer is fenced by a newer one
    /// with its `transactional.id`. It keeps data in memory only, does not fence by consumer
    /// group generation (KIP-447), and takes neither a proxy nor SQLite storage.
    pub fn transactions(mut self, on: bool) -> Self {
        self.transactions = on;
        self
    }

    /// Puts stunnel in front of the broker, terminating TLS with `front.server` (and, for
    /// mutual TLS, refusing clients without a certificate `front.clients_signed_by` signed).
    /// tansu advertises stunnel's address, so every connection of every client is TLS:
    /// [`Tansu::bootstrap`] is stunnel's address. Not with a proxy.
    pub fn tls(mut self, front: TlsFront) -> Self {
        self.tls = Some(front);
        self
    }

    /// Adds a SASL SCRAM user (`sha` 256 or 512) and makes the broker ask every client to log
    /// in: tansu starts on SQLite storage without authentication, the users are created with
    /// `tansu user create`, and it starts again with `--authentication` on the same database.
    /// (tansu 0.6 cannot create a user once authentication is on.)
    pub fn user(mut self, name: &str, password: &str, sha: u16) -> Self {
        let mechanism = match sha {
            256 => "scram256",
            512 => "scram512",
            other => panic!("SCRAM-SHA-{other}: tansu has SCRAM-SHA-256 and SCRAM-SHA-512"),
        };
        self.users.push(User {
            name: name.to_owned(),
            password: password.to_owned(),
            mechanism,
        });
        self.sqlite = true;
        self
    }

    /// Starts the broker with these options.
    ///
    /// # Panics
    /// As [`Tansu::start`]; with [`TansuOptions::transactions`] also when noida-db is not
    /// installed, or with a proxy or SQLite storage asked for.
    pub fn start(self) -> Tansu {
        Tansu::start_with(self)
    }
}

/// Where the noida-db binary is: `$NOIDA_BIN`, or `~/.local/share/atoll/noida-db` (where
/// `scripts/install-noida` links it).
pub fn noida_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NOIDA_BIN") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".local/share/atoll/noida-db");
    p.is_file().then_some(p)
}

/// Where the tansu binary is: `$TANSU_BIN`, `PATH`, or `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = Path::new(&home).join(".cargo/bin/tansu");
        p.is_file().then_some(p)
    })
}

/// [`tansu_binary`], once an install of tansu in progress has ended: `scripts/install-tansu`
/// holds `~/.cargo/.atoll-install-tansu.lock` while it builds (`.ci/run` builds tansu while
/// the tests that need no broker run; those that need it wait here).
fn tansu_binary_once_installed() -> Option<PathBuf> {
    tansu_binary().or_else(|| {
        let lock = Path::new(&std::env::var_os("HOME")?).join(".cargo/.atoll-install-tansu.lock");
        if !lock.is_file() {
            return None;
        }
        eprintln!("waiting for the install of tansu in progress (it holds {lock:?})…");
        // `flock` waits until the install lets go of the lock, then runs `true`.
        let waited = std::process::Command::new("flock")
            .arg(&lock)
            .arg("true")
            .status();
        if let Err(e) = waited {
            eprintln!("cannot wait for the install of tansu: {e}");
        }
        tansu_binary()
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ATOLL_TEST_BOOTSTRAP`, when set and not blank.
fn external_bootstrap() -> Option<String> {
    std::env::var(BOOTSTRAP_ENV)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Creates `dir` empty.
fn fresh_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("a scratch directory");
}

impl Tansu {
    /// Starts tansu with in-memory storage and no proxy (the same as
    /// `Tansu::builder().start()`). With `ATOLL_TEST_BOOTSTRAP` set, starts nothing (see the
    /// [crate documentation](crate)).
    ///
    /// # Panics
    /// When tansu is not installed or does not start: the test must not pass without a broker.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Options for starting tansu with a fault proxy in front and/or SQLite storage:
    /// `Tansu::builder().proxy(true).sqlite(true).start()`.
    pub fn builder() -> TansuOptions {
        TansuOptions::default()
    }

    fn start_with(options: TansuOptions) -> Self {
        if let Some(bootstrap) = external_bootstrap() {
            let needs = [
                (options.proxy, "a fault proxy in front of the broker"),
                (
                    options.own,
                    "no other test sharing it (it leaves the broker in a state later tests would trip over)",
                ),
                (options.tls.is_some(), "TLS (stunnel) in front of the broker"),
                (!options.users.is_empty(), "SCRAM users on a broker that checks logins"),
                (
                    options.transactions,
                    "Kafka transactions (it starts noida-db; whether an external cluster has them it cannot tell)",
                ),
            ];
            if let Some((_, what)) = needs.iter().find(|(needed, _)| *needed) {
                panic!(
                    "this test needs the harness's own broker, with {what}: {BOOTSTRAP_ENV} \
                     points the tests at an external cluster ({bootstrap}), which the harness \
                     cannot set up so; run it without {BOOTSTRAP_ENV}"
                );
            }
            let turn = external::Turn::take(&bootstrap);
            static EXTERNAL: AtomicUsize = AtomicUsize::new(0);
            let scratch = std::env::temp_dir().join(format!(
                "atoll-kafka-{}-{}",
                std::process::id(),
                EXTERNAL.fetch_add(1, Ordering::Relaxed)
            ));
            fresh_dir(&scratch);
            return Self {
                child: None,
                bin: None,
                port: 0,
                bootstrap,
                sqlite: false,
                transactions: false,
                proxy: None,
                front: None,
                authentication: false,
                scratch,
                turn: Some(turn),
            };
        }
        assert!(
            !(options.proxy && options.tls.is_some()),
            "a broker has either a fault proxy or TLS in front of it"
        );
        assert!(
            !options.transactions || (options.tls.is_none() && options.users.is_empty()),
            "the broker with transactions (noida-db) runs without TLS and without SCRAM users"
        );
        let bin = if options.transactions {
            assert!(
                !options.proxy && !options.sqlite,
                "the broker with transactions (noida-db) runs without a proxy and in memory"
            );
            noida_binary().unwrap_or_else(|| {
                panic!("noida-db is not installed; run `scripts/install-noida` (or set NOIDA_BIN): this test needs a broker with Kafka transactions")
            })
        } else {
            tansu_binary_once_installed().unwrap_or_else(|| {
                panic!("tansu is not installed; run `scripts/install-tansu` (or set TANSU_BIN; `.ci/run` installs it in the background, logging to target/install-tansu.log): this test needs a real broker")
            })
        };
        for _ in 0..3 {
            let port = free_port();
            let proxy = options
                .proxy
                .then(|| FaultProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
            let scratch =
                std::env::temp_dir().join(format!("atoll-tansu-{}-{port}", std::process::id()));
            fresh_dir(&scratch);
            let front = options
                .tls
                .as_ref()
                .map(|t| Stunnel::start(port, &t.server, t.clients_signed_by.as_deref(), &scratch));
            let bootstrap = match (&proxy, &front) {
                (Some(p), _) => p.addr().to_string(),
                (None, Some(f)) => f.addr(),
                (None, None) => format!("127.0.0.1:{port}"),
            };
            let mut broker = Self {
                child: None,
                bin: Some(bin.clone()),
                port,
                bootstrap,
                sqlite: options.sqlite,
                transactions: options.transactions,
                proxy,
                front,
                authentication: false,
                scratch,
                turn: None,
            };
            broker.spawn();
            if broker.wait_ready(Instant::now() + Duration::from_secs(15)) {
                broker.add_missing_indexes();
                if !options.users.is_empty() {
                    broker.create_users(&options.users);
                }
                return broker;
            }
        }
        panic!("the broker did not start listening");
    }

    /// Starts the tansu process on `self.port`, advertising `self.bootstrap`.
    fn spawn(&mut self) {
        let bin = self
            .bin
            .as_ref()
            .expect("a tansu process (not an external cluster)");
        let mut command = Command::new(bin);
        if self.transactions {
            let data = self.scratch.join("noida");
            command.args(["start", "--host", "127.0.0.1", "--only", "kafka"]);
            command.arg("--kafka-port").arg(self.port.to_string());
            command.arg("--data-dir").arg(data);
            self.run(command);
            return;
        }
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://{}", self.bootstrap);
        // Warnings and errors only, unless `TANSU_LOG` asks for more (a `RUST_LOG` filter).
        let filter = std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".to_owned());
        command.env("RUST_LOG", filter).args([
            "broker",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &advertised,
        ]);
        if self.authentication {
            command.arg("--authentication");
        }
        if self.sqlite {
            // tansu 0.6 resolves the file of a `sqlite://` URL against its working directory
            // (`sqlite:///abs/path` is relative too), hence `./tansu.db` run in the scratch dir.
            command
                .current_dir(&self.scratch)
                .args(["--storage-engine", "sqlite://./tansu.db"]);
        }
        self.run(command);
    }

    /// Runs the broker's `command`, its output (and a panic's message) going to
    /// `<scratch>/tansu.log`, appended across restarts; a failing test prints its tail (see
    /// `Drop`).
    fn run(&mut self, mut command: Command) {
        let bin = command.get_program().to_owned();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("a tansu log file in the scratch directory");
        let err = log.try_clone().expect("a second handle on the tansu log");
        let child = command
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.to_string_lossy()));
        self.child = Some(child);
    }

    /// The exit status of the tansu process, if it has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Indexes tansu 0.6's SQLite schema lacks, created once it listens (its tables exist
    /// then) and before any client writes (tansu's connections have no busy timeout). Without
    /// them every fetched record's headers are found by a scan of all headers, and compaction
    /// scans them once per deleted record: tansu slows as its database grows, to ~9 records/s
    /// at 25,000 records in the full chaos run. tansu's own DDL (`create table if not
    /// exists`) leaves them alone on a restart.
    fn add_missing_indexes(&self) {
        if !self.sqlite {
            return;
        }
        let db = self.scratch.join("tansu.db");
        let done = std::thread::spawn(move || {
            use sqlx::{ConnectOptions, Connection};
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&db)
                    .busy_timeout(Duration::from_secs(5))
                    .connect()
                    .await
                    .map_err(std::io::Error::other)?;
                for index in [
                    "CREATE INDEX IF NOT EXISTS harness_header_topition_offset_id ON header (topition, offset_id)",
                    "CREATE INDEX IF NOT EXISTS harness_watermark_topition ON watermark (topition)",
                ] {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(index))
                        .execute(&mut conn)
                        .await
                        .map_err(std::io::Error::other)?;
                }
                conn.close().await.map_err(std::io::Error::other)
            })
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("cannot add the missing indexes to tansu's database: {e}"),
            Err(_) => panic!("adding the missing indexes to tansu's database panicked"),
        }
    }

    /// Creates `users` on the running broker (which asks for no login yet), then starts it
    /// again on the same database asking every client to log in.
    fn create_users(&mut self, users: &[User]) {
        let bin = self.bin.clone().expect("a tansu process");
        let broker = format!("tcp://127.0.0.1:{}", self.port);
        for user in users {
            let out = Command::new(&bin)
                .args(["user", "create", "--broker", &broker, "--mechanism"])
                .args([user.mechanism, &user.name, &user.password])
                .output()
                .unwrap_or_else(|e| panic!("cannot run `tansu user create`: {e}"));
            assert!(
                out.status.success(),
                "tansu user create {}: {}{}",
                user.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.authentication = true;
        self.restart();
    }

    /// The port tansu itself listens on (plaintext, without login until users are created),
    /// behind any proxy or TLS front: for a second front of a test's own.
    pub fn listener_port(&self) -> u16 {
        self.port
    }

    /// stunnel in front of the broker: `Some` when started with [`TansuOptions::tls`].
    pub fn tls_front(&self) -> Option<&Stunnel> {
        self.front.as_ref()
    }

    /// Waits until tansu accepts connections on its port (true), exits, or `deadline` passes.
    fn wait_ready(&mut self, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            let up = TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if let Some(status) = self.exited() {
                eprintln!("tansu exited with {status} on port {}; retrying", self.port);
                return false;
            }
            if up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Kills the tansu process (SIGKILL) and reaps it.
    fn stop_process(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the broker (SIGKILL, like a crash) and starts it again on the same port, with the
    /// same storage and the same proxy, returning once it accepts connections. Data survives
    /// only with [`TansuOptions::sqlite`]; with in-memory storage the broker comes back empty.
    /// Connections to the old process (also through the proxy) are closed; clients reconnect.
    ///
    /// # Panics
    /// Against an external cluster (`ATOLL_TEST_BOOTSTRAP`), or when tansu does not listen
    /// again within 20 s (the port is retried while it may still be in use).
    pub fn restart(&mut self) {
        assert!(
            self.bin.is_some(),
            "Tansu::restart: {BOOTSTRAP_ENV} is set, so the tests run against an external \
             cluster, which the harness cannot restart"
        );
        assert!(
            !self.transactions,
            "Tansu::restart: the broker with transactions keeps its data in memory only"
        );
        self.stop_process();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.spawn();
            if self.wait_ready(deadline) {
                self.add_missing_indexes();
                return;
            }
            self.stop_process();
            assert!(
                Instant::now() < deadline,
                "tansu did not listen again on port {} after a restart",
                self.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The fault proxy in front of the broker: `Some` when started with
    /// [`TansuOptions::proxy`], `None` otherwise and against an external cluster.
    pub fn proxy(&self) -> Option<&FaultProxy> {
        self.proxy.as_ref()
    }

    /// Whether this is an external cluster (`ATOLL_TEST_BOOTSTRAP`), which the harness
    /// neither runs, faults nor restarts.
    pub fn is_external(&self) -> bool {
        self.turn.is_some()
    }

    /// What clients bootstrap from: `127.0.0.1:<port>` of tansu, or of its proxy when there is
    /// one, or the value of `ATOLL_TEST_BOOTSTRAP`.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Where the broker's output goes: tansu's log and, should it panic, the panic.
    pub fn log_path(&self) -> PathBuf {
        self.scratch.join("tansu.log")
    }

    /// The last `lines` lines of the broker's output (empty against an external cluster).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A SQLite file for a store of a process on this broker (`name`: e.g. the service),
    /// removed with the broker: runs on a fresh broker never share state.
    pub fn store_path(&self, name: &str) -> PathBuf {
        self.scratch.join(format!("{name}.db"))
    }

    /// An atoll configuration for this broker, with fast group joins and a fresh SQLite store.
    pub fn config(&self) -> atoll::config::Config {
        self.configure(atoll::config::Config::default())
    }

    /// As [`config`](Self::config), on top of the configuration file at `file` (e.g. its
    /// `[kafka.security]` section; what [`env`](Self::env) sets wins, as it would over a file
    /// named by `ATOLL_CONFIG`).
    ///
    /// # Panics
    /// When the file does not load.
    pub fn config_from(&self, file: &Path) -> atoll::config::Config {
        let figment = atoll::config::Config::figment(file);
        let loaded = atoll::config::Config::from_figment(figment)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        self.configure(loaded)
    }

    fn configure(&self, mut c: atoll::config::Config) -> atoll::config::Config {
        c.store.path = self.store_path("atoll");
        c.kafka.bootstrap_servers = Some(self.bootstrap());
        for (k, v) in TANSU_PROPERTIES {
            c.kafka.properties.insert((*k).into(), (*v).into());
        }
        c.service.static_membership = STATIC_MEMBERSHIP;
        c
    }

    /// An app with no services on this broker, after creating the probe's topics: for
    /// sending commands and raw records.
    pub async fn driver(&self) -> atoll::Running {
        atoll::App::new(self.config())
            .topics(atoll::contract::owned_topics::<probe::Probe>())
            .start()
            .await
            .expect("driver app")
    }

    /// Environment variables that point an atoll process at this broker, and its store at a
    /// fresh SQLite file shared by the processes given this environment (override
    /// `ATOLL_STORE__PATH` or `ATOLL_STORE__URL` to give one its own).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "ATOLL_STORE__PATH".to_owned(),
                self.store_path("atoll").display().to_string(),
            ),
            (
                "ATOLL_KAFKA__BOOTSTRAP_SERVERS".to_owned(),
                self.bootstrap(),
            ),
            (
                "ATOLL_SERVICE__STATIC_MEMBERSHIP".to_owned(),
                STATIC_MEMBERSHIP.to_string(),
            ),
        ];
        for (k, v) in TANSU_PROPERTIES {
            env.push((
                format!(
                    "ATOLL_KAFKA__PROPERTIES__{}",
                    k.replace('.', "_").to_uppercase()
                ),
                (*v).into(),
            ));
        }
        env
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop_process();
        if std::thread::panicking() && self.bin.is_some() {
            let tail = self.log_tail(40);
            if !tail.is_empty() {
                eprintln!("--- the last lines tansu wrote ---\n{tail}\n---");
            }
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// What a broker's time index answers: writes three records at T+1 s, T+2 s and T+3 s
/// (offsets 0, 1, 2; T an hour ago, within any retention) to a new one-partition topic `times`
/// (created by `create`), and asks for the first offset at or after T+2 s. Kafka answers
/// offset 1. Blocking.
pub fn time_index_answer(bootstrap: &str) -> rdkafka::Offset {
    use rdkafka::consumer::Consumer;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let t = now - 3_600_000;
    let producer = raw_producer(bootstrap);
    for at in [1_000, 2_000, 3_000] {
        send_waiting(
            &producer,
            rdkafka::producer::BaseRecord::<str, str>::to("times")
                .partition(0)
                .payload("x")
                .timestamp(t + at),
        );
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flushed");
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "time-index")
        .create()
        .expect("a consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("times", 0, rdkafka::Offset::Offset(t + 2_000))
        .expect("a partition");
    let found = consumer
        .offsets_for_times(tpl, Duration::from_secs(10))
        .expect("an answer");
    found.elements()[0].offset()
}

/// Creates `topics` with `partitions` each on the broker at `bootstrap`, failing with the
/// broker's answer when one is refused.
pub async fn create_topics(bootstrap: &str, topics: &[&str], partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("an admin client");
    let topics: Vec<_> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    for created in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("the broker answers")
    {
        created.expect("a topic created");
    }
}

/// What a broker gives a consumer of the next-generation group protocol (KIP-848,
/// `group.protocol = consumer`) subscribed to `topic` within 8 s: how many partitions it was
/// assigned, and the errors it heard. Kafka 4 assigns every partition of a topic to a lone
/// member. Blocking.
pub fn consumer_protocol_answer(bootstrap: &str, topic: &str) -> (usize, Vec<String>) {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kip848")
        .set("group.protocol", "consumer")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("subscribed");
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            errors.push(e.to_string());
        }
    }
    let assigned = consumer.assignment().expect("an assignment").count();
    (assigned, errors)
}

/// A producer for writing test input directly: idempotent, with [`TANSU_PROPERTIES`] (one
/// record per batch, which both test brokers need to serve a fetch from any offset).
pub fn raw_producer(bootstrap: &str) -> rdkafka::producer::BaseProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true");
    for (k, v) in TANSU_PROPERTIES {
        config.set(*k, *v);
    }
    config.create().expect("a producer")
}

/// Hands `record` to `producer`, polling while its queue is full.
pub fn send_waiting<K, P>(
    producer: &rdkafka::producer::BaseProducer,
    mut record: rdkafka::producer::BaseRecord<'_, K, P>,
) where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}

/// Reads `topic` from the beginning of every partition until `n` records were read or
/// `timeout` passed, as a `read_committed` consumer.
pub fn read_topic(bootstrap: &str, topic: &str, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    // As atoll's own consumers: records of open or aborted transactions are not read.
    read_topic_as("read_committed", bootstrap, topic, n, timeout)
}

/// As [`read_topic`], with `isolation.level` `isolation`: `read_uncommitted` reads the records
/// of open and aborted transactions too.
pub fn read_topic_as(
    isolation: &str,
    bootstrap: &str,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "atoll-testkit-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("reader");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

pub use atoll::envelope::header_str as header;

/// The committed offsets of `group` on `topic`'s partitions `0..partitions`.
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Offset> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements().iter().map(|e| e.offset()).collect()
}

/// The payload of a record as UTF-8.
pub fn text(m: &OwnedMessage) -> &str {
    m.payload()
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or("")
}

pub mod browser;
pub mod external;
pub mod pki;
pub mod postgres;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod replicas;
pub mod stunnel;

pub use pki::{Pair, Pki};
pub use postgres::Postgres;
pub use proxy::{Direction, FaultProxy};
pub use stunnel::Stunnel;
