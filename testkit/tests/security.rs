//! The security matrix on loopback (see `docs/security.md`): TLS and mutual TLS through
//! stunnel in front of tansu, SASL SCRAM-SHA-256 and -512 with tansu checking the passwords,
//! SASL over TLS. Each case runs the probe service as a process, configured as a user would
//! configure it (`[kafka.security]` in its `atoll.toml`).
//!
//! A refused client is a process that stays up, not ready, saying
//! `authentication failed for <principal> at <bootstrap>: <the broker's reason>` a few times
//! rather than at every reconnect, and that consumes and commits nothing; given the right
//! setting it handles everything that waited.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll_testkit::probe::{Probe, Work};
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::{Pki, Stunnel, Tansu, TlsFront};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const PROBE: &str = env!("CARGO_BIN_EXE_probe");

/// A directory of this test's, emptied.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("atoll-security-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `toml` as an `atoll.toml` in `dir`, named `name`.
fn config_file(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The probe, configured by `file`, serving its health on a port of its own; returns it and
/// the readiness URL.
fn probe(broker: &Tansu, file: &Path, store: &str) -> (Proc, String) {
    let addr = free_addr();
    let mut env = broker.env();
    env.push(("ATOLL_CONFIG".into(), file.display().to_string()));
    env.push(("ATOLL_HTTP__ADDR".into(), addr.clone()));
    env.push((
        "ATOLL_STORE__PATH".into(),
        broker.store_path(store).display().to_string(),
    ));
    (
        Proc::start(PROBE, &[], &env),
        format!("http://{addr}/health/ready"),
    )
}

/// `(status, body)` of a GET, or `(0, why)` when nothing answered (on a thread of its own:
/// the blocking client may not live on the test's runtime).
fn get(url: &str) -> (u16, String) {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        match client.get(&url).send() {
            Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    })
    .join()
    .unwrap()
}

/// Sends `n` work commands as the driver configured by `file`.
async fn send(broker: &Tansu, file: &Path, prefix: &str, n: usize) -> Vec<String> {
    let running = atoll::App::new(broker.config_from(file))
        .topics(atoll::contract::owned_topics::<Probe>())
        .start()
        .await
        .expect("the driver starts");
    let client = running.client("security-driver");
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for id in &ids {
        client.send(&Work { id: id.clone() }).await.unwrap();
    }
    running.shutdown().await;
    ids
}

/// Waits until `probe` handled every one of `ids` on its `work` listener.
fn handles_all(probe: &Proc, ids: &[String]) {
    let done = wait_until(Duration::from_secs(60), || {
        let seen = probe.ids("work");
        ids.iter().all(|id| seen.contains(id))
    });
    assert!(
        done,
        "handled {} of {}:\n{}",
        probe.ids("work").len(),
        ids.len(),
        probe.log()
    );
}

/// Asserts that the probe behind `ready` is up and refused: not ready for `refused_for`,
/// saying why (every one of `reasons`) in its readiness answer and its log, a few times
/// at most, and handling nothing.
fn refused(probe: &mut Proc, ready: &str, reasons: &[&str], refused_for: Duration) {
    let says = |text: &str| reasons.iter().all(|r| text.contains(r));
    let answered = wait_until(Duration::from_secs(30), || {
        let (status, body) = get(ready);
        status == 503 && says(&body)
    });
    assert!(
        answered,
        "the readiness answer does not say {reasons:?}: {:?}\n{}",
        get(ready),
        probe.log()
    );
    let until = Instant::now() + refused_for;
    while Instant::now() < until {
        assert!(
            probe.running(),
            "the refused process exited:\n{}",
            probe.log()
        );
        let (status, body) = get(ready);
        assert_eq!(status, 503, "{body}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = probe.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("authentication failed for"))
        .count();
    assert!(
        (1..=4).contains(&lines),
        "the failure is logged once a minute per kind, not at every reconnect: {lines} lines\n{log}"
    );
    assert!(
        log.lines().any(says),
        "the log does not say {reasons:?}:\n{log}"
    );
    assert!(
        probe.handled().is_empty(),
        "a refused client handled records"
    );
}

/// The offsets group `group` committed on the probe's command topic, read by a client
/// configured by `config`.
fn committed(config: &Config, group: &str) -> Vec<Offset> {
    let topic = <Probe as atoll::Service>::ID.commands();
    let client =
        atoll::broker::client_config(config, config.kafka.bootstrap_servers.as_deref().unwrap())
            .unwrap();
    let consumer: BaseConsumer = client.clone().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition(topic.as_str(), p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.offset())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_right_ca_works_a_wrong_ca_or_an_expired_certificate_is_refused() {
    let dir = scratch("tls");
    let pki = Pki::new(&dir.join("pki"));
    let broker = Tansu::builder()
        .tls(TlsFront {
            server: pki.server.clone(),
            clients_signed_by: None,
        })
        .start();
    let right = config_file(
        &dir,
        "right",
        &format!(
            "[kafka.security]\nprotocol = \"ssl\"\nca_file = \"{}\"\n",
            pki.ca_file.display()
        ),
    );
    let ids = send(&broker, &right, "tls", 10).await;
    let (mut good, _) = probe(&broker, &right, "good");
    handles_all(&good, &ids);
    good.terminate();

    let wrong = config_file(
        &dir,
        "wrong",
        &format!(
            "[kafka.security]\nprotocol = \"ssl\"\nca_file = \"{}\"\n",
            pki.other_ca_file.display()
        ),
    );
    let (mut bad, ready) = probe(&broker, &wrong, "bad");
    refused(
        &mut bad,
        &ready,
        &[
            &format!(
                "authentication failed for anonymous at {}",
                broker.bootstrap()
            ),
            "certificate verify failed",
        ],
        Duration::from_secs(10),
    );
    bad.terminate();

    // A second front with an expired certificate, before the same broker.
    let expired = Stunnel::start(broker.listener_port(), &pki.expired_server, None, &dir);
    let mut env = broker.env();
    env.retain(|(k, _)| k != "ATOLL_KAFKA__BOOTSTRAP_SERVERS");
    env.push(("ATOLL_KAFKA__BOOTSTRAP_SERVERS".into(), expired.addr()));
    let addr = free_addr();
    env.push(("ATOLL_CONFIG".into(), right.display().to_string()));
    env.push(("ATOLL_HTTP__ADDR".into(), addr.clone()));
    let mut stale = Proc::start(PROBE, &[], &env);
    refused(
        &mut stale,
        &format!("http://{addr}/health/ready"),
        // OpenSSL says no more than that the verification failed.
        &[
            "authentication failed for anonymous",
            "certificate verify failed",
        ],
        Duration::from_secs(5),
    );
    stale.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let dir = scratch("mtls");
    let pki = Pki::new(&dir.join("pki"));
    let broker = Tansu::builder()
        .tls(TlsFront {
            server: pki.server.clone(),
            clients_signed_by: Some(pki.ca_file.clone()),
        })
        .start();
    let with_cert = config_file(
        &dir,
        "with-cert",
        &format!(
            "[kafka.security]\nprotocol = \"ssl\"\nca_file = \"{}\"\ncertificate_file = \"{}\"\nkey_file = \"{}\"\n",
            pki.ca_file.display(),
            pki.client.cert.display(),
            pki.client.key.display()
        ),
    );
    let ids = send(&broker, &with_cert, "mtls", 10).await;
    let (mut good, _) = probe(&broker, &with_cert, "good");
    handles_all(&good, &ids);
    good.terminate();

    let without = config_file(
        &dir,
        "without",
        &format!(
            "[kafka.security]\nprotocol = \"ssl\"\nca_file = \"{}\"\n",
            pki.ca_file.display()
        ),
    );
    let (mut bad, ready) = probe(&broker, &without, "bad");
    refused(
        &mut bad,
        &ready,
        &[&format!(
            "authentication failed for anonymous at {}",
            broker.bootstrap()
        )],
        Duration::from_secs(5),
    );
    bad.terminate();
    assert!(
        broker
            .tls_front()
            .unwrap()
            .log()
            .contains("peer did not return a certificate"),
        "stunnel refused the client for want of a certificate:\n{}",
        broker.tls_front().unwrap().log()
    );
}

fn scram(
    dir: &Path,
    name: &str,
    protocol: &str,
    ca: Option<&Path>,
    sha: u16,
    user: &str,
    password: &str,
) -> PathBuf {
    let ca = ca.map_or(String::new(), |ca| {
        format!("ca_file = \"{}\"\n", ca.display())
    });
    config_file(
        dir,
        name,
        &format!(
            "[kafka.security]\nprotocol = \"{protocol}\"\n{ca}\n[kafka.security.sasl]\nmechanism = \"SCRAM-SHA-{sha}\"\nusername = \"{user}\"\npassword = \"{password}\"\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_256_and_512_log_in_and_a_wrong_password_loses_nothing() {
    let dir = scratch("scram");
    let broker = Tansu::builder()
        .user("alice", "alice-s3cret", 256)
        .user("bob", "bob-s3cret", 512)
        .start();
    let alice = scram(
        &dir,
        "alice",
        "sasl_plaintext",
        None,
        256,
        "alice",
        "alice-s3cret",
    );
    let ids = send(&broker, &alice, "scram", 10).await;

    let wrong = scram(
        &dir,
        "wrong",
        "sasl_plaintext",
        None,
        512,
        "bob",
        "not-bobs",
    );
    let (mut bad, ready) = probe(&broker, &wrong, "bob");
    refused(
        &mut bad,
        &ready,
        &[&format!(
            "authentication failed for bob at {}",
            broker.bootstrap()
        )],
        Duration::from_secs(10),
    );
    bad.terminate();
    assert!(
        !bad.log().contains("not-bobs"),
        "the password was shown:\n{}",
        bad.log()
    );
    let group = <Probe as atoll::Service>::ID.group_id("work").unwrap();
    let offsets = committed(&broker.config_from(&alice), &group);
    assert!(
        offsets.iter().all(|o| *o == Offset::Invalid),
        "the refused process committed: {offsets:?}"
    );

    // The same process with the right password handles everything that waited.
    let right = scram(
        &dir,
        "right",
        "sasl_plaintext",
        None,
        512,
        "bob",
        "bob-s3cret",
    );
    let (mut good, _) = probe(&broker, &right, "bob");
    handles_all(&good, &ids);
    good.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_over_tls_logs_in() {
    let dir = scratch("sasl-ssl");
    let pki = Pki::new(&dir.join("pki"));
    let broker = Tansu::builder()
        .tls(TlsFront {
            server: pki.server.clone(),
            clients_signed_by: None,
        })
        .user("carol", "carol-s3cret", 512)
        .start();
    let file = scram(
        &dir,
        "carol",
        "sasl_ssl",
        Some(&pki.ca_file),
        512,
        "carol",
        "carol-s3cret",
    );
    let ids = send(&broker, &file, "sasl-ssl", 10).await;
    let (mut good, _) = probe(&broker, &file, "carol");
    handles_all(&good, &ids);
    good.terminate();
}

/// The store on `url` (with `password`), and whether its connection is TLS.
async fn store_over(url: &str, password: Option<&str>) -> Result<bool, String> {
    let mut config = atoll::config::StoreConfig::default();
    config.url = Some(url.to_owned());
    config.password = password.map(atoll::config::Secret::new);
    config.connect_timeout_ms = 3_000;
    let store = atoll::Store::connect(&config)
        .await
        .map_err(|e| e.to_string())?;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .map_err(|e| e.to_string())?;
    Ok(ssl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_verifies_postgresql_over_tls_and_logs_in_with_a_password() {
    let dir = scratch("postgres");
    let pki = Pki::new(&dir.join("pki"));
    let pg = atoll_testkit::Postgres::start_tls(&pki.server);
    pg.add_login("shop", "pg-s3cret");
    let url = |user: &str, ca: &Path, mode: &str| {
        format!(
            "postgres://{user}@localhost:{}/postgres?sslmode={mode}&sslrootcert={}",
            pg.port(),
            ca.display()
        )
    };
    let verified = url("atoll", &pki.ca_file, "verify-full");
    assert_eq!(
        store_over(&verified, None).await,
        Ok(true),
        "verify-full with the CA"
    );
    let required = url("atoll", &pki.ca_file, "require");
    assert_eq!(store_over(&required, None).await, Ok(true), "require");

    let wrong_ca = url("atoll", &pki.other_ca_file, "verify-full");
    let e = store_over(&wrong_ca, None).await.unwrap_err();
    assert!(
        e.contains("connecting to postgres://atoll@localhost") && e.contains("TLS"),
        "a server its CA did not sign is refused, saying so: {e}"
    );

    let login = url("shop", &pki.ca_file, "verify-full");
    assert_eq!(
        store_over(&login, Some("pg-s3cret")).await,
        Ok(true),
        "a password login"
    );
    let e = store_over(&login, Some("not-pgs")).await.unwrap_err();
    assert!(
        e.contains("password authentication failed") && !e.contains("not-pgs"),
        "a wrong password is refused, not shown: {e}"
    );
}

/// SASL PLAIN on the wire: noida-db answers the SASL handshake and takes a PLAIN login (it
/// checks no password: no broker here does for PLAIN, so a wrong one cannot be tested).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_logs_in_where_the_broker_takes_it() {
    let dir = scratch("plain");
    let broker = Tansu::builder().transactions(true).start();
    let file = config_file(
        &dir,
        "plain",
        "[kafka.security]\nprotocol = \"sasl_plaintext\"\n\n[kafka.security.sasl]\nmechanism = \"PLAIN\"\nusername = \"dave\"\npassword = \"dave-s3cret\"\n",
    );
    let ids = send(&broker, &file, "plain", 5).await;
    let (mut good, _) = probe(&broker, &file, "dave");
    handles_all(&good, &ids);
    good.terminate();
}
