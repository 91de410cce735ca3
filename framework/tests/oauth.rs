//! OAUTHBEARER tokens: from the application's provider, and from an OpenID Connect token
//! endpoint (atoll's client-credentials client), each asked before the first login and again
//! before the token expires, through librdkafka's refresh callback.
//!
//! No broker here validates tokens (tansu 0.6 refused librdkafka's OAUTHBEARER login, see
//! `docs/security.md`), so, as librdkafka's own test 0128 does, the clients point at a port
//! where nothing listens: librdkafka asks for tokens all the same. A provider that fails makes
//! the process not ready, saying why.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use atoll::config::{Config, OAuthToken, OidcConfig, SaslConfig, SecurityProtocol};
use atoll::{App, BoxError};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use common::{eventually, get};

/// A free loopback port where nothing listens.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A configuration logging in with OAUTHBEARER (`oidc`: from that endpoint; else from the
/// app's provider) at a port where nothing listens, serving health on `http`.
fn config(oidc: Option<OidcConfig>, http: SocketAddr) -> Config {
    let mut c = Config::default();
    c.kafka.bootstrap_servers = Some(closed_port());
    c.kafka.create_topics = false;
    c.kafka.security.protocol = SecurityProtocol::SaslPlaintext;
    let mut sasl: SaslConfig =
        serde_json::from_value(serde_json::json!({"mechanism": "OAUTHBEARER"})).unwrap();
    sasl.oidc = oidc;
    c.kafka.security.sasl = Some(sasl);
    c.http.addr = Some(http);
    c
}

/// Waits (up to a minute) until tokens were asked for twice: the first, and its refresh.
async fn asked_twice(asked: impl Fn() -> usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while asked() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that tokens were asked for again before they expired (librdkafka refreshes at
/// 80 % of the lifetime), without asking in a loop.
fn refreshed(asked: &[Instant], lifetime: Duration) {
    assert!(asked.len() >= 2, "asked {} times", asked.len());
    for pair in asked.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= lifetime / 2 && gap < lifetime,
            "asked again after {gap:?} for tokens living {lifetime:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_provider_is_asked_before_each_token_expires() {
    // librdkafka looks at its tokens once a second: a 10 s token is asked for again at 80 %
    // of its life, rounded up to that second.
    let lifetime = Duration::from_secs(10);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let provider = {
        let asked = asked.clone();
        move || {
            asked.lock().unwrap().push(Instant::now());
            async move {
                Ok::<_, BoxError>(OAuthToken::new(
                    "header.payload.signature",
                    "svc-orders",
                    SystemTime::now() + lifetime,
                ))
            }
        }
    };
    let running = App::new(config(None, free_addr()))
        .oauth_token_provider(provider)
        .start()
        .await
        .expect("starts without a broker to talk to");
    asked_twice(|| asked.lock().unwrap().len()).await;
    running.shutdown().await;
    refreshed(&asked.lock().unwrap(), lifetime);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_makes_the_process_unready_saying_why() {
    let http = free_addr();
    let running = App::new(config(None, http))
        .oauth_token_provider(|| async { Err::<OAuthToken, BoxError>("the IdP is down".into()) })
        .start()
        .await
        .unwrap();
    let says = eventually(20, || async {
        let (status, body) = get(http, "/health/ready").await;
        status == 503
            && body.contains("authentication failed for the token provider's principal")
            && body.contains("the IdP is down")
    })
    .await;
    assert!(says, "{:?}", get(http, "/health/ready").await);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_without_a_token_source_does_not_start() {
    let e = App::new(config(None, free_addr()))
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("App::oauth_token_provider") && e.contains("oidc"),
        "{e}"
    );
}

/// What the fake token endpoint saw.
#[derive(Default)]
struct Endpoint {
    asked: Mutex<Vec<Instant>>,
}

/// A token endpoint: client `orders` with secret `orders-secret`, tokens living 6 s.
async fn token(
    State(seen): State<Arc<Endpoint>>,
    headers: HeaderMap,
    form: String,
) -> (StatusCode, Json<serde_json::Value>) {
    seen.asked.lock().unwrap().push(Instant::now());
    // `orders:orders-secret`, base64.
    let login = headers.get("authorization").and_then(|v| v.to_str().ok());
    if login != Some("Basic b3JkZXJzOm9yZGVycy1zZWNyZXQ=") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "invalid_client"})),
        );
    }
    let fields: Vec<&str> = form.split('&').collect();
    let grant = fields.contains(&"grant_type=client_credentials");
    let scope = fields.contains(&"scope=kafka");
    if !(grant && scope) {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "invalid_request"})),
        );
    }
    // A JWT whose subject is `svc-orders`.
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzdmMtb3JkZXJzIn0.c2ln";
    (
        StatusCode::OK,
        Json(serde_json::json!({"access_token": jwt, "token_type": "Bearer", "expires_in": 10})),
    )
}

async fn endpoint() -> (Arc<Endpoint>, String, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Endpoint::default());
    let app = Router::new()
        .route("/token", post(token))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (seen, url, task)
}

fn oidc(url: &str, secret: &str) -> OidcConfig {
    serde_json::from_value(serde_json::json!({
        "token_endpoint_url": url,
        "client_id": "orders",
        "client_secret": secret,
        "scope": "kafka",
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_are_fetched_with_client_credentials_and_refreshed() {
    let (seen, url, server) = endpoint().await;
    let running = App::new(config(Some(oidc(&url, "orders-secret")), free_addr()))
        .start()
        .await
        .unwrap();
    asked_twice(|| seen.asked.lock().unwrap().len()).await;
    running.shutdown().await;
    server.abort();
    refreshed(&seen.asked.lock().unwrap(), Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_oidc_client_is_unready_and_its_secret_shown_nowhere() {
    let (_seen, url, server) = endpoint().await;
    let http = free_addr();
    let running = App::new(config(Some(oidc(&url, "wrong-secret-123")), http))
        .start()
        .await
        .unwrap();
    let says = eventually(20, || async {
        let (status, body) = get(http, "/health/ready").await;
        status == 503
            && body.contains("authentication failed for the OAuth client orders")
            && body.contains("answered 401")
    })
    .await;
    let (_, body) = get(http, "/health/ready").await;
    assert!(says, "{body}");
    assert!(!body.contains("wrong-secret-123"), "{body}");
    running.shutdown().await;
    server.abort();
}

/// The admin client that creates topics at start cannot be given tokens: with OAUTHBEARER
/// and `kafka.create_topics`, the start says so instead of waiting for a login that cannot
/// happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_with_topic_creation_is_refused_at_start() {
    let mut c = config(None, free_addr());
    c.kafka.create_topics = true;
    let e = App::new(c)
        .oauth_token_provider(|| async { Err::<OAuthToken, BoxError>("unused".into()) })
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("kafka.create_topics = false"), "{e}");
}
