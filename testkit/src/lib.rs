//! Test harness of atoll.
//!
//! - [`Tansu`] starts a real Kafka-protocol broker (tansu) on a free loopback port and stops it
//!   when dropped. When tansu is not installed the test **fails** with a message saying how to
//!   install it: a test that needs a broker never passes without one.
//! - [`Postgres`] starts a throwaway PostgreSQL server the same way, for tests with state.
//! - [`read_topic`] and [`header`] read what services wrote.
//! - The `probe` binary is a small service whose behaviour is set by environment variables,
//!   for tests that need several processes, kills and restarts.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// tansu 0.6 answers the heartbeats of static group members with `UNKNOWN_MEMBER_ID`, so
/// processes under test use dynamic membership (see `ServiceConfig::static_membership`).
pub const STATIC_MEMBERSHIP: bool = false;

/// Client properties for tansu: fast group joins (see `docs/architecture.md#brokers`), and one record per batch,
/// because tansu 0.6 cannot fetch from an offset inside a record batch (see
/// `tests/tansu_limitations.rs`): a consumer resuming mid-batch would skip records.
pub const TANSU_PROPERTIES: &[(&str, &str)] = &[
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "500"),
    ("batch.num.messages", "1"),
];

/// A tansu broker process on a free loopback port.
#[derive(Debug)]
pub struct Tansu {
    child: Child,
    port: u16,
    /// A scratch directory for the stores of the processes on this broker, removed on drop.
    scratch: PathBuf,
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Tansu {
    /// Starts tansu with in-memory storage.
    ///
    /// # Panics
    /// When tansu is not installed or does not start: the test must not pass without a broker.
    pub fn start() -> Self {
        let bin = tansu_binary().unwrap_or_else(|| {
            panic!("tansu is not installed; run `scripts/install-tansu` (or set TANSU_BIN): this test needs a real broker")
        });
        for _ in 0..3 {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let child = Command::new(&bin)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let scratch =
                std::env::temp_dir().join(format!("atoll-tansu-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&scratch);
            std::fs::create_dir_all(&scratch).expect("a scratch directory");
            let mut broker = Self {
                child,
                port,
                scratch,
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return broker;
                }
                if let Ok(Some(status)) = broker.child.try_wait() {
                    eprintln!("tansu exited with {status} on port {port}; retrying");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("tansu did not start listening");
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A SQLite file for a store of a process on this broker (`name`: e.g. the service),
    /// removed with the broker: runs on a fresh broker never share state.
    pub fn store_path(&self, name: &str) -> PathBuf {
        self.scratch.join(format!("{name}.db"))
    }

    /// An atoll configuration for this broker, with fast group joins and a fresh SQLite store.
    pub fn config(&self) -> atoll::config::Config {
        let mut c = atoll::config::Config::default();
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
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Reads `topic` from the beginning of every partition until `n` records were read or
/// `timeout` passed.
pub fn read_topic(bootstrap: &str, topic: &str, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "atoll-testkit-reader")
        .set("enable.auto.commit", "false")
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

pub mod postgres;
pub mod probe;
pub mod process;

pub use postgres::Postgres;
