//! Redriving from the console's dead-letter page, on tansu: while one redrive runs (slowly, at
//! one record a second), a second is refused (409) and sends nothing; the first sends each
//! dead letter once to its original topic, and a redrive after it skips them all (remembered).

mod common;

use common::attr;

use std::time::Duration;

use atoll::config::Secret;
use atoll_console::Console;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const SERVICE: &str = "acme.test.redriven";
const TOKEN: &str = "redrive-token-1";

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_redrive_waits_for_the_first() {
    let broker = atoll_testkit::Tansu::start();
    let bootstrap = broker.bootstrap();
    let (dlq, commands) = (
        format!("{SERVICE}.private.dlq"),
        format!("{SERVICE}.commands"),
    );
    let admin: AdminClient<DefaultClientContext> = client(&bootstrap).create().unwrap();
    let topics =
        [dlq.as_str(), commands.as_str()].map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)));
    admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap();
    let producer: FutureProducer = client(&bootstrap)
        .set("batch.num.messages", "1")
        .create()
        .unwrap();
    for i in 0..3 {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: atoll::dead_letter::ORIGINAL_TOPIC,
                value: Some(commands.as_str()),
            })
            .insert(Header {
                key: atoll::dead_letter::LISTENER,
                value: Some("jobs"),
            });
        let key = format!("k{i}");
        let record = FutureRecord::to(&dlq)
            .key(&key)
            .payload("{}")
            .headers(headers);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }

    let console = Console::start(&client(&bootstrap), "", Some(Secret::new(TOKEN))).unwrap();
    let addr = common::serve(&console).await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("http://{addr}/dlq?service={SERVICE}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        attr(&page, "", "data-dead-letters-total").as_deref(),
        Some("3"),
        "{page}"
    );
    let csrf = attr(&page, "name=\"csrf\"", "value").expect("the redrive form");
    let redrive = || {
        let form = [
            ("csrf", csrf.clone()),
            ("service", SERVICE.to_owned()),
            // Three records 4 s apart: a redrive runs for 8 s, time enough on a loaded machine
            // to see its first record out and ask for a second redrive meanwhile.
            ("rate", "0.25".to_owned()),
            ("token", TOKEN.to_owned()),
        ];
        let request = http
            .post(format!("http://{addr}/dlq/redrive"))
            .header("sec-fetch-site", "same-origin")
            .form(&form);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let first = tokio::spawn(redrive());
    // Running: its first record (of three, 4 s apart) is on the original topic.
    let kafka = atoll_console::dlq::Kafka::new(&client(&bootstrap)).unwrap();
    let kafka = std::sync::Arc::new(kafka);
    let sent = |kafka: std::sync::Arc<atoll_console::dlq::Kafka>, topic: String| async move {
        tokio::task::spawn_blocking(move || kafka.read_all(&topic).unwrap().len())
            .await
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sent(kafka.clone(), commands.clone()).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first redrive never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = redrive().await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("a redrive is running"), "{body}");
    let (status, body) = first.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let replayed = format!("replayed {SERVICE}.private.dlq/");
    assert_eq!(body.matches(&replayed).count(), 3, "each once: {body}");
    assert_eq!(
        sent(kafka.clone(), commands.clone()).await,
        3,
        "the second redrive sent nothing"
    );
    let (status, again) = redrive().await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again.matches("skip ").count(), 3, "remembered: {again}");
}
