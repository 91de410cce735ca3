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
    let out =
        tokio::task::spawn_blocking(move || demo(&["--orders", "20", "--codec", "avro"], &env))
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
            last.contains(&format!("schema registry {url}/ answered 401 Unauthorized"))
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

/// Every secret of the sentinel run holds this; no output may.
const SENTINEL: &str = "S3NT1NEL-7c1e";

/// An OTLP collector that keeps the `authorization` header of every export.
async fn collector() -> (std::sync::Arc<std::sync::Mutex<Vec<String>>>, String) {
    use axum::http::HeaderMap;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap| {
            let kept = kept.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                kept.lock().unwrap().push(auth);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, url)
}

/// Runs `bin args` with `env` to its end (or `timeout`), polling `http` meanwhile: everything
/// it printed, and every answer of its endpoints.
fn capture(
    bin: &str,
    args: &[&str],
    env: &[(String, String)],
    http: Option<std::net::SocketAddr>,
) -> (bool, String) {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read(child.stderr.take().map(|p| Box::new(p) as _));
    let mut answers = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        if let Some(addr) = http {
            for path in ["/metrics", "/health/live", "/health/ready"] {
                answers.push_str(&get(&format!("http://{addr}{path}")));
                answers.push('\n');
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let text = format!(
        "{}\n{}\n{answers}",
        out.join().unwrap(),
        err.join().unwrap()
    );
    (status.success(), text)
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One run of the shop with a sentinel in every secret setting: the Kafka SCRAM password
/// (SASL over mutual TLS, the client key encrypted with a password), the registry's basic
/// auth password, PostgreSQL's password (over verified TLS), an OTLP authorization header.
/// It completes (so every secret was used), and its logs at debug level, its errors,
/// `/metrics`, `/health/*`, the CLI's outputs, and the outputs of runs refused for a wrong
/// secret or a broken configuration hold the sentinel nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_shown_nowhere() {
    let dir = scratch("sentinel");
    let pki = Pki::new(&dir.join("pki"));
    let secret = |what: &str| format!("{SENTINEL}-{what}");
    let client = pki.client_with_key_password(&secret("key"));
    let broker = Tansu::builder()
        .tls(TlsFront {
            server: pki.server.clone(),
            clients_signed_by: Some(pki.ca_file.clone()),
        })
        .user("shop", &secret("kafka"), 512)
        .start();
    let registry = DevRegistry::start_with_login("shop-key", Secret::new(secret("registry")))
        .await
        .unwrap();
    let port: u16 = registry.url().rsplit(':').next().unwrap().parse().unwrap();
    let front = Stunnel::start(port, &pki.server, None, &dir);
    let pg = atoll_testkit::Postgres::start_tls(&pki.server);
    pg.add_login("shop", &secret("store"));
    let (exports, collector) = collector().await;
    let registry_password = file(&dir, "registry-password", &secret("registry"));
    let store_password = file(&dir, "store-password", &format!("{}\n", secret("store")));
    let toml = |kafka_password: &str| {
        format!(
            r#"[kafka.security]
protocol = "sasl_ssl"
ca_file = "{ca}"
certificate_file = "{cert}"
key_file = "{key}"
key_password = "{key_password}"

[kafka.security.sasl]
mechanism = "SCRAM-SHA-512"
username = "shop"
password = "{kafka_password}"

[schema_registry]
url = "https://localhost:{registry}"
ca_file = "{ca}"
username = "shop-key"
password_file = "{registry_password}"

[store]
url = "postgres://shop@localhost:{pg}/postgres?sslmode=verify-full&sslrootcert={ca}"
password_file = "{store_password}"

[telemetry]
otlp_endpoint = "{collector}"

[telemetry.otlp_headers]
authorization = "Bearer {otlp}"
"#,
            ca = pki.ca_file.display(),
            cert = client.cert.display(),
            key = client.key.display(),
            key_password = secret("key"),
            registry = front.port(),
            registry_password = registry_password.display(),
            pg = pg.port(),
            store_password = store_password.display(),
            otlp = secret("otlp"),
        )
    };
    let right = file(&dir, "right.toml", &toml(&secret("kafka")));
    let wrong = file(&dir, "wrong.toml", &toml(&format!("{SENTINEL}-not-kafka")));
    let both = file(
        &dir,
        "both.toml",
        &format!(
            "{}\n",
            toml(&secret("kafka")).replace(
                "password = \"S3NT1NEL-7c1e-kafka\"",
                "password = \"S3NT1NEL-7c1e-kafka\"\npassword_file = \"/run/secrets/kafka\""
            )
        ),
    );
    let mut env = on(&broker, &right);
    env.push(("RUST_LOG".into(), "debug".into()));
    let http = free_addr();
    env.push(("ATOLL_HTTP__ADDR".into(), http.to_string()));
    let (shown, ok) = tokio::task::spawn_blocking({
        let env = env.clone();
        move || {
            let (ok, text) = capture(
                SHOP,
                &["demo", "--orders", "20", "--codec", "avro"],
                &env,
                Some(http),
            );
            (text, ok)
        }
    })
    .await
    .unwrap();
    assert!(ok, "the sentinel run completes:\n{shown}");
    assert!(shown.contains("summary: placed=20"), "{shown}");
    assert!(
        shown.contains("atoll_records_handled_total"),
        "metrics were scraped"
    );
    assert!(
        exports
            .lock()
            .unwrap()
            .iter()
            .any(|a| *a == format!("Bearer {}", secret("otlp"))),
        "the collector was sent the header"
    );
    let mut outputs = vec![("the run", shown)];

    // Refused: a wrong Kafka password (its readiness answer and log).
    let mut env = broker.env();
    env.push(("ATOLL_CONFIG".into(), wrong.display().to_string()));
    let http = free_addr();
    env.push(("ATOLL_HTTP__ADDR".into(), http.to_string()));
    let mut refused = Proc::start(SHOP, &["serve", "orders"], &env);
    let ready = format!("http://{http}/health/ready");
    let answer = tokio::task::spawn_blocking(move || {
        let mut last = String::new();
        wait_until(Duration::from_secs(30), || {
            last = get(&ready);
            last.contains("authentication failed for shop")
        });
        last
    })
    .await
    .unwrap();
    assert!(
        answer.contains("authentication failed for shop"),
        "{answer}\n{}",
        refused.log()
    );
    refused.terminate();
    outputs.push(("a refused service", format!("{answer}\n{}", refused.log())));

    // A configuration that cannot work: both password and password_file.
    let env = vec![("ATOLL_CONFIG".to_owned(), both.display().to_string())];
    let (ok, text) = capture(SHOP, &["serve", "orders"], &env, None);
    assert!(!ok && text.contains("password_file are both set"), "{text}");
    outputs.push(("a configuration error", text));

    // The CLI, logged in and refused.
    let atoll = Path::new(SHOP).with_file_name("atoll");
    assert!(
        atoll.is_file(),
        "the atoll CLI is not built next to the shop ({}): run the whole test suite (scripts/test)",
        atoll.display()
    );
    let atoll = atoll.display().to_string();
    for (name, config) in [("the CLI", &right), ("the refused CLI", &wrong)] {
        let mut env = broker.env();
        env.push(("ATOLL_CONFIG".into(), config.display().to_string()));
        let (_, text) = capture(
            &atoll,
            &["dlq", "list", "acme.shop.orders.private.dlq"],
            &env,
            None,
        );
        outputs.push((name, text));
    }
    let cli = &outputs[outputs.len() - 2].1;
    assert!(cli.contains("OFFSET"), "the CLI read the DLQ: {cli}");
    let refused_cli = &outputs[outputs.len() - 1].1;
    assert!(
        refused_cli.contains("authentication failed for shop"),
        "the CLI says why it was refused: {refused_cli}"
    );
    for (name, text) in &outputs {
        if let Some(at) = text.find(SENTINEL) {
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            panic!(
                "{name} shows a secret: …{}…",
                &text[from..(at + 40).min(text.len())]
            );
        }
    }
}
