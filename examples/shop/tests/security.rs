//! The shop's order flow over secured connections (see `docs/security.md`): TLS to the broker
//! through stunnel, SASL SCRAM-SHA-256 checked by tansu, Avro through a schema registry over
//! https with basic auth. The shop is configured as a user would configure it: a
//! `[kafka.security]` or `[schema_registry]` section in the file `ATOLL_CONFIG` names.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use atoll::codec::DevRegistry;
use atoll::config::Secret;
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::{Pki, Stunnel, Tansu, TlsFront};

const SHOP: &str = env!("CARGO_BIN_EXE_shop");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("atoll-shop-sec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn file(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

/// `shop demo` with `env`: its output, after asserting that every order ended.
fn demo(args: &[&str], env: &[(String, String)]) -> Output {
    let out = Command::new(SHOP)
        .arg("demo")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run shop demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains("placed=20") && summary.contains("dead_lettered=0"),
        "{stdout}"
    );
    assert!(stdout.contains("stock: conserved"), "{stdout}");
    out
}

/// The environment of a `shop demo` on `broker` configured by `config` (analytics at least
/// once: tansu has no transactions).
fn on(broker: &Tansu, config: &Path) -> Vec<(String, String)> {
    let mut env = broker.env();
    env.push(("ATOLL_CONFIG".into(), config.display().to_string()));
    env.extend(example_shop::analytics::without_transactions_env());
    env
}

#[test]
fn the_order_flow_completes_over_tls() {
    let dir = scratch("tls");
    let pki = Pki::new(&dir.join("pki"));
    let broker = Tansu::builder()
        .tls(TlsFront {
            server: pki.server.clone(),
            clients_signed_by: None,
        })
        .start();
    let config = file(
        &dir,
        "atoll.toml",
        &format!(
            "[kafka.security]\nprotocol = \"ssl\"\nca_file = \"{}\"\n",
            pki.ca_file.display()
        ),
    );
    demo(&["--orders", "20"], &on(&broker, &config));
}

#[test]
fn the_order_flow_completes_with_scram_sha_256() {
    let dir = scratch("scram");
    let broker = Tansu::builder().user("shop", "shop-s3cret", 256).start();
    let password = file(&dir, "password", "shop-s3cret\n");
    let config = file(
        &dir,
        "atoll.toml",
        &format!(
            "[kafka.security]\nprotocol = \"sasl_plaintext\"\n\n[kafka.security.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"shop\"\npassword_file = \"{}\"\n",
            password.display()
        ),
    );
    demo(&["--orders", "20"], &on(&broker, &config));
}

/// A development registry asking for a login, behind TLS: its https URL.
async fn https_registry(pki: &Pki, dir: &Path) -> (DevRegistry, Stunnel, String) {
    let registry = DevRegistry::start_with_login("shop-key", Secret::new("shop-secret"))
        .await
        .unwrap();
    let port: u16 = registry.url().rsplit(':').next().unwrap().parse().unwrap();
    let front = Stunnel::start(port, &pki.server, None, dir);
    let url = format!("https://localhost:{}", front.port());
    (registry, front, url)
}

fn registry_config(dir: &Path, name: &str, url: &str, ca: &Path, password: &str) -> PathBuf {
    file(
        dir,
        name,
        &format!(
            "[schema_registry]\nurl = \"{url}\"\nca_file = \"{}\"\nusername = \"shop-key\"\npassword = \"{password}\"\n",
            ca.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_round_trips_through_an_https_registry_with_basic_auth() {
    let dir = scratch("registry");
    let pki = Pki::new(&dir.join("pki"));
    let (_registry, _front, url) = https_registry(&pki, &dir).await;
    let right = registry_config(&dir, "right.toml", &url, &pki.ca_file, "shop-secret");
    let env = vec![("ATOLL_CONFIG".to_owned(), right.display().to_string())];
    let out = tokio::task::spawn_blocking(move || {
        demo(&["--orders", "20", "--codec", "avro"], &env)
    })
    .await
    .unwrap();
    assert!(out.status.success());

    // A wrong password: the service stays up, not ready, saying so, never showing it.
    let wrong = registry_config(&dir, "wrong.toml", &url, &pki.ca_file, "not-the-secret");
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let env = vec![
        ("ATOLL_CONFIG".to_owned(), wrong.display().to_string()),
        ("ATOLL_HTTP__ADDR".to_owned(), addr.to_string()),
        ("ATOLL_SERVICE__CODEC".to_owned(), "avro".to_owned()),
        (
            "ATOLL_STORE__PATH".to_owned(),
            dir.join("orders.db").display().to_string(),
        ),
    ];
    let mut orders = Proc::start(SHOP, &["serve", "orders"], &env);
    let ready = format!("http://{addr}/health/ready");
    let says = tokio::task::spawn_blocking(move || {
        let mut last = String::new();
        let said = wait_until(Duration::from_secs(30), || {
            last = get(&ready);
            last.contains(&format!("schema registry {url} answered 401 Unauthorized"))
        });
        (said, last)
    })
    .await
    .unwrap();
    assert!(says.0, "{}\n{}", says.1, orders.log());
    assert!(orders.running(), "{}", orders.log());
    assert!(!orders.log().contains("not-the-secret") && !says.1.contains("not-the-secret"));
    orders.terminate();
}

/// The body of a GET (a blocking client: call it off the runtime).
fn get(url: &str) -> String {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(url)
        .send()
        .and_then(|r| r.text())
        .unwrap_or_else(|e| e.to_string())
}
