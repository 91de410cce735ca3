//! `atoll plan` and `atoll apply` with the shop's manifest, on tansu, and the schema check
//! against a registry.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use atoll_testkit::process::wait_until;
use atoll_testkit::Tansu;
use common::atoll;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

const TOPICS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../topics");

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A copy of the shop's manifest (and schemas) in a directory of its own, edited by `edit`.
fn manifest_copy(name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("atoll-topics-{}-{name}", std::process::id()));
    let avro = dir.join("avro");
    std::fs::create_dir_all(&avro).unwrap();
    let shop = std::fs::read_to_string(Path::new(TOPICS).join("acme.shop.json")).unwrap();
    let edited = edit(shop.clone());
    assert_ne!(edited, shop, "the edit changes the manifest");
    std::fs::write(dir.join("acme.shop.json"), edited).unwrap();
    for f in std::fs::read_dir(Path::new(TOPICS).join("avro")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, avro.join(f.file_name().unwrap())).unwrap();
    }
    dir
}

/// Every topic on the broker, with its partition count.
fn topics(bootstrap: &str) -> Vec<(String, usize)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let mut all: Vec<(String, usize)> = md
        .topics()
        .iter()
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect();
    all.sort();
    all
}

fn plan(dir: &Path, bootstrap: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "plan",
        dir.to_str().unwrap(),
        "--bootstrap",
        bootstrap,
        "--detailed-exitcode",
    ];
    args.extend_from_slice(extra);
    atoll(&[], &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_the_shop_and_plan_then_sees_only_whats_new() {
    let broker = Tansu::start();
    let b = broker.bootstrap();
    let shop = Path::new(TOPICS);
    // An empty broker: everything to create.
    let first = plan(shop, &b, &[]);
    assert_eq!(first.status.code(), Some(2), "{}", text(&first));
    let creates = text(&first).matches("+ create ").count();
    // With the configs the services declare: the saga state compacted, a month of results.
    for line in [
        "+ create acme.shop.orders.private.saga (6 partitions, cleanup.policy=compact)",
        "+ create acme.shop.analytics.results (6 partitions, retention.ms=2592000000)",
    ] {
        assert!(text(&first).contains(line), "{line}\n{}", text(&first));
    }
    let out = atoll(&[], &["apply", TOPICS, "--bootstrap", &b]);
    assert!(out.status.success(), "{}", text(&out));
    let on_broker = topics(&b);
    let shop_topics: Vec<&(String, usize)> = on_broker
        .iter()
        .filter(|(t, _)| t.starts_with("acme.shop."))
        .collect();
    assert_eq!(shop_topics.len(), creates, "{on_broker:?}");
    // Seven topics each (the status and control topics among them), the analytics results
    // and the orders saga state.
    assert_eq!(
        creates,
        6 * 7 + 2,
        "six services' topics:\n{}",
        text(&first)
    );
    let declared = |t: &str| {
        if t.ends_with(".private.status") || t.ends_with(".private.control") {
            1
        } else {
            6
        }
    };
    assert!(
        shop_topics.iter().all(|(t, p)| *p == declared(t)),
        "{shop_topics:?}"
    );
    // Applied: nothing more to do, and a second apply changes nothing.
    let again = plan(shop, &b, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let out = atoll(&[], &["apply", TOPICS, "--bootstrap", &b]);
    assert!(text(&out).contains("nothing to change"), "{}", text(&out));

    // One topic added to the manifest: exactly that change.
    let added = manifest_copy("added", |m| {
        m.replacen(
            r#""topics": ["#,
            r#""topics": [
      {
        "name": "acme.shop.orders.private.audit",
        "partitions": 3,
        "config": {}
      },"#,
            1,
        )
    });
    let out = plan(&added, &b, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let changes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(['+', '~', '-']))
        .collect();
    assert_eq!(
        changes,
        ["+ create acme.shop.orders.private.audit (3 partitions)"],
        "{}",
        text(&out)
    );

    // Fewer partitions declared than the topic has: explained, not done, not a change.
    let fewer = manifest_copy("fewer", |m| {
        let at = m.find(r#""name": "acme.shop.orders.events""#).unwrap();
        let (head, tail) = m.split_at(at);
        format!(
            "{head}{}",
            tail.replacen(r#""partitions": 6"#, r#""partitions": 3"#, 1)
        )
    });
    let out = plan(&fewer, &b, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(
            "acme.shop.orders.events has 6 partitions, 3 declared: Kafka cannot remove partitions"
        ),
        "{}",
        text(&out)
    );
    let out = atoll(&[], &["apply", fewer.to_str().unwrap(), "--bootstrap", &b]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(topics(&b).contains(&("acme.shop.orders.events".into(), 6)));

    // A config declared: a change.
    let configured = manifest_copy("configured", |m| {
        let at = m.find(r#""name": "acme.shop.orders.events""#).unwrap();
        let (head, tail) = m.split_at(at);
        format!(
            "{head}{}",
            tail.replacen(
                r#""config": {}"#,
                r#""config": { "retention.ms": "3600000" }"#,
                1
            )
        )
    });
    let out = plan(&configured, &b, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("~ config acme.shop.orders.events: retention.ms ")
            && text(&out).contains(" -> 3600000"),
        "{}",
        text(&out)
    );
    // tansu 0.6 does not implement AlterConfigs: the error says what to set by hand.
    let out = atoll(
        &[],
        &["apply", configured.to_str().unwrap(), "--bootstrap", &b],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out)
            .contains("does not support AlterConfigs; set them by hand (retention.ms=3600000)"),
        "{}",
        text(&out)
    );

    // A topic under the namespace that no service declares: reported, kept.
    let out = atoll(&[], &["apply", added.to_str().unwrap(), "--bootstrap", &b]);
    assert!(out.status.success(), "{}", text(&out));
    let out = plan(shop, &b, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(
            "? acme.shop.orders.private.audit is on the cluster but no service declares it"
        ),
        "{}",
        text(&out)
    );
    // Deleted only when asked.
    let out = atoll(&[], &["apply", TOPICS, "--bootstrap", &b, "--delete"]);
    assert!(
        text(&out).contains("- delete acme.shop.orders.private.audit"),
        "{}",
        text(&out)
    );
    assert!(
        wait_until(Duration::from_secs(10), || !topics(&b)
            .iter()
            .any(|(t, _)| t == "acme.shop.orders.private.audit")),
        "{:?}",
        topics(&b)
    );
    let out = plan(shop, &b, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("0 change(s), 0 notice(s)"),
        "{}",
        text(&out)
    );
    for dir in [added, fewer, configured] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_checks_each_schema_against_the_registry() {
    let broker = Tansu::start();
    let b = broker.bootstrap();
    let registry = atoll::codec::DevRegistry::start().await.unwrap();
    let url = registry.url().to_owned();
    let out = plan(Path::new(TOPICS), &b, &["--registry", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // One per checked-in schema.
    let schemas = std::fs::read_dir(Path::new(TOPICS).join("avro"))
        .unwrap()
        .count();
    assert_eq!(
        text(&out).matches(": new subject").count(),
        schemas,
        "{}",
        text(&out)
    );
    // One subject as checked in, one whose registered schema the checked-in one cannot read.
    let placed = "acme.shop.orders.events-acme.shop.orders.order_placed_v1";
    let completed = "acme.shop.orders.events-acme.shop.orders.order_completed_v1";
    let http = reqwest::Client::new();
    let register = |subject: &str, schema: String| {
        let http = http.clone();
        let url = format!("{url}/subjects/{subject}/versions");
        async move {
            let body = serde_json::json!({ "schema": schema }).to_string();
            let r = http
                .post(url)
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{:?}", r.text().await);
        }
    };
    let as_checked_in = std::fs::read_to_string(
        Path::new(TOPICS)
            .join("avro")
            .join(format!("{placed}.avsc")),
    )
    .unwrap();
    register(placed, as_checked_in).await;
    // An earlier version with no `order_id`: the checked-in schema (which has it, without a
    // default) cannot read its data.
    let earlier = r#"{"type":"record","name":"order_completed_v1","namespace":"acme.shop.orders","fields":[{"name":"other","type":"string"}]}"#;
    register(completed, earlier.to_owned()).await;
    let out = plan(Path::new(TOPICS), &b, &["--registry", &url]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("schema {placed}: compatible")), "{t}");
    assert!(
        t.contains(&format!("schema {completed}: INCOMPATIBLE")),
        "{t}"
    );
    assert!(
        t.contains("an incompatible change needs a new event version"),
        "{t}"
    );
    // A registry that does not answer: one line naming it.
    let out = plan(Path::new(TOPICS), &b, &["--registry", "http://127.0.0.1:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach the schema registry at http://127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_refusing_acls_says_so() {
    let broker = Tansu::start();
    let b = broker.bootstrap();
    let out = atoll(&[], &["apply", TOPICS, "--bootstrap", &b, "--acls"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    // The topics were created first; the ACLs were refused, with what to do instead.
    assert!(t.contains("+ create acme.shop.orders.events"), "{t}");
    assert!(
        t.contains(&format!("creating ACLs on {b}:"))
            && t.contains("ACLs need a Kafka broker with an authorizer"),
        "{t}"
    );
}

#[test]
fn an_unreachable_broker_is_one_line_naming_it() {
    let out = plan(Path::new(TOPICS), "127.0.0.1:1", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("127.0.0.1:1") && err.contains("ATOLL_KAFKA__BOOTSTRAP_SERVERS"),
        "{err}"
    );
}
