//! `atoll console` against tansu and the probe service: it says where it serves, serves the
//! overview with the probe's listener and a page per listener, answers 404 for a listener no
//! process reports, sends its pages with headers that forbid framing and foreign scripts, and
//! stops on SIGTERM. It fails clearly on an address it cannot listen on.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::Tansu;
use common::{atoll, probe_bin, ATOLL};

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_serves_the_running_services() {
    let broker = Tansu::start();
    let mut env = broker.env();
    env.push(("ATOLL_STATUS__INTERVAL_MS".into(), "500".into()));
    let mut probe = Proc::start(probe_bin(), &[], &env);
    assert!(
        wait_until(Duration::from_secs(60), || probe
            .log()
            .contains("partitions assigned")),
        "{}",
        probe.log()
    );
    let mut console = Command::new(ATOLL)
        .args(["console", "--listen", "127.0.0.1:0"])
        .envs(broker.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(console.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .trim_end_matches('/')
        .to_owned();

    let deadline = Instant::now() + Duration::from_secs(60);
    let overview = loop {
        let page = get(&format!("{base}/")).await;
        assert_eq!(page.status(), 200);
        let csp = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        let html = page.text().await.unwrap();
        if html.contains("data-service=\"acme.test.probe\"") && html.contains("data-listener=") {
            break html;
        }
        assert!(
            Instant::now() < deadline,
            "the probe never showed up:\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(overview.contains("data-alive=\"1\""), "{overview}");
    let start = overview
        .find("/listener?service=acme.test.probe&amp;name=")
        .unwrap();
    let href = &overview[start..start + overview[start..].find('"').unwrap()];
    let listener = get(&format!("{base}{}", href.replace("&amp;", "&"))).await;
    assert_eq!(listener.status(), 200);
    assert!(listener.text().await.unwrap().contains("data-chart="));
    let fragment = reqwest::Client::new()
        .get(format!("{base}/"))
        .header("HX-Request", "true")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !fragment.contains("<html") && fragment.contains("data-service="),
        "htmx gets the content alone: {fragment}"
    );
    let missing = get(&format!(
        "{base}/listener?service=acme.test.probe&name=nobody"
    ))
    .await;
    assert_eq!(missing.status(), 404);
    let script = get(&format!("{base}/assets/console.js")).await;
    assert_eq!(script.headers()["content-type"], "text/javascript");
    assert_eq!(get(&format!("{base}/assets/other.js")).await.status(), 404);

    let pid = console.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(console.wait().unwrap().success(), "stops on SIGTERM");
    probe.terminate();
}

#[test]
fn an_address_it_cannot_listen_on_is_an_error_before_any_broker_is_asked() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let nowhere = [(
        "ATOLL_KAFKA__BOOTSTRAP_SERVERS".to_owned(),
        "127.0.0.1:9".to_owned(),
    )];
    let out = atoll(&nowhere, &["console", "--listen", &addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}
