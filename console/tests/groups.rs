//! Moving a consumer group's offsets to a time from the console's groups page, on tansu: a
//! wrong token and a running group are refused and move nothing, a dry run says where each
//! partition would go and moves nothing, and the move commits each partition's first record at
//! or after the time (its end where none is). A hold is not written to a control topic that
//! does not exist. tansu's time index answers the partition's start
//! for any time (`testkit/tests/tansu_limitations.rs`): a time before every record takes its
//! answer, which the records confirm; the others are found by searching the records. (The mock
//! cluster lists no groups, see `testkit/tests/mock_limitations.rs`.)

mod common;

use common::attr;

use std::time::Duration;

use atoll::config::Secret;
use atoll_console::groups;
use atoll_console::Console;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "acme.test.moved.commands";
const GROUP: &str = "acme.test.moved-jobs";
const TOKEN: &str = "groups-token-1";
/// The records' times: partition 0 at T+1 s … T+4 s, partition 1 at T+1.5 s and T+2.5 s.
const T: i64 = 1_796_000_000_000;

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// `GROUP`'s committed offsets, partitions 0 and 1.
fn committed(kafka: &atoll_console::dlq::Kafka) -> Vec<Option<i64>> {
    let tpl = groups::committed(kafka, GROUP, TOPIC).unwrap();
    let mut offsets: Vec<(i32, Option<i64>)> = tpl
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset().to_raw().filter(|o| *o >= 0)))
        .collect();
    offsets.sort();
    offsets.into_iter().map(|(_, o)| o).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_group_moves_to_a_time_and_a_running_one_is_refused() {
    let broker = atoll_testkit::Tansu::start();
    let bootstrap = broker.bootstrap();
    let admin: rdkafka::admin::AdminClient<_> = client(&bootstrap).create().unwrap();
    admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                TOPIC,
                2,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .unwrap();
    let producer: FutureProducer = client(&bootstrap).create().unwrap();
    for (p, at) in [
        (0, 1_000),
        (0, 2_000),
        (0, 3_000),
        (0, 4_000),
        (1, 1_500),
        (1, 2_500),
    ] {
        let record = FutureRecord::<str, str>::to(TOPIC)
            .partition(p)
            .payload("x")
            .timestamp(T + at);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let kafka = atoll_console::dlq::Kafka::new(&client(&bootstrap)).unwrap();
    let mut done = TopicPartitionList::new();
    done.add_partition_offset(TOPIC, 0, Offset::Offset(4))
        .unwrap();
    done.add_partition_offset(TOPIC, 1, Offset::Offset(2))
        .unwrap();
    groups::commit(&kafka, GROUP, &done).unwrap();
    assert_eq!(committed(&kafka), [Some(4), Some(2)]);

    let console = Console::start(&client(&bootstrap), "", Some(Secret::new(TOKEN))).unwrap();
    let addr = common::serve(&console).await;
    let http = reqwest::Client::new();
    let page = http
        .get(format!("http://{addr}/groups?service=acme.test.moved"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let section = format!("data-group=\"{GROUP}\"");
    assert_eq!(
        attr(&page, &section, "data-members").as_deref(),
        Some("0"),
        "{page}"
    );
    let csrf = attr(&page, &section, "value").expect("the reset form");
    let post = |token: &str, time: &str, dry_run: bool| {
        let mut form = vec![
            ("csrf", csrf.clone()),
            ("service", "acme.test.moved".to_owned()),
            ("group", GROUP.to_owned()),
            ("topic", TOPIC.to_owned()),
            ("time", time.to_owned()),
            ("token", token.to_owned()),
        ];
        if dry_run {
            form.push(("dry_run", "on".to_owned()));
        }
        let request = http
            .post(format!("http://{addr}/groups/reset"))
            .header("sec-fetch-site", "same-origin")
            .form(&form);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let at = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(T + ms) * 1_000_000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let moves = |body: &str| -> Vec<(Option<i64>, i64)> {
        (0..2)
            .map(|p| {
                let row = format!("data-move=\"{p}\"");
                let from = attr(body, &row, "data-from").map(|o| o.parse().unwrap());
                let to = attr(body, &row, "data-to").unwrap().parse().unwrap();
                (from, to)
            })
            .collect()
    };

    let (status, _) = post("wrong", &at(2_000), false).await;
    assert_eq!(status, 403);
    let (status, body) = post(TOKEN, &at(2_000), true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(moves(&body), [(Some(4), 1), (Some(2), 1)], "{body}");
    assert_eq!(
        committed(&kafka),
        [Some(4), Some(2)],
        "a dry run moves nothing"
    );

    let (status, body) = post(TOKEN, &at(2_000), false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(committed(&kafka), [Some(1), Some(1)]);
    // Before every record: the start, as the broker answers.
    let (status, body) = post(TOKEN, &at(0), true).await;
    assert_eq!(
        (status, moves(&body)),
        (200, vec![(Some(1), 0), (Some(1), 0)]),
        "{body}"
    );
    // Between records.
    let (status, body) = post(TOKEN, &at(2_600), true).await;
    assert_eq!(
        (status, moves(&body)),
        (200, vec![(Some(1), 2), (Some(1), 2)]),
        "{body}"
    );
    // After every record: each partition's end.
    let (status, body) = post(TOKEN, &at(60_000), false).await;
    assert_eq!(
        (status, moves(&body)),
        (200, vec![(Some(1), 4), (Some(1), 2)]),
        "{body}"
    );

    // No hold is written to a control topic that does not exist (the broker would make it
    // without compaction).
    let hold = http
        .post(format!("http://{addr}/listener/hold"))
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("csrf", csrf.as_str()),
            ("service", "acme.test.moved"),
            ("listener", "jobs"),
            ("partition", "0"),
            ("action", "hold"),
            ("token", TOKEN),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(hold.status().as_u16(), 404);
    assert!(hold
        .text()
        .await
        .unwrap()
        .contains("acme.test.moved.private.control` does not exist"));

    // A running member: refused, nothing moved.
    let member: BaseConsumer = client(&bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    member.subscribe(&[TOPIC]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while member.assignment().unwrap().count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the member never joined"
        );
        member.poll(Duration::from_millis(100));
    }
    let (status, body) = post(TOKEN, &at(2_000), false).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("1 member(s)"), "{body}");
    assert_eq!(committed(&kafka), [Some(4), Some(2)]);
}
