//! `atoll group reset --to-time` and `atoll dlq replay --from/--to` on noida-db, whose time
//! index answers as Kafka's does (`testkit/tests/noida_limitations.rs`). tansu's answers every
//! time with the partition's start (the mock cluster's with its end), so there the records are
//! searched: the window test reads the same window on both.

mod common;

use common::atoll;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atoll_testkit::process::wait_until;
use atoll_testkit::{committed, raw_producer, send_waiting, text, Tansu};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// T: an hour ago, in whole seconds (within any retention: a broker deletes records older
/// than its `retention.ms`, a week by default, whatever their offsets).
fn t() -> i64 {
    static T: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        (now - 3_600) * 1_000
    })
}

/// The records' times after T: partition 0 at T+1 s … T+4 s, partition 1 at T+1.5 s and T+2.5 s.
const TIMES: [(i32, i64); 6] = [
    (0, 1_000),
    (0, 2_000),
    (0, 3_000),
    (0, 4_000),
    (1, 1_500),
    (1, 2_500),
];

fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// T + `ms`, in RFC 3339.
fn at(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t() + ms) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn create(bootstrap: &str, topics: &[&str]) {
    atoll_testkit::create_topics(bootstrap, topics, 2).await;
}

/// Writes one record per entry of [`TIMES`] to `topic`, its payload the time's offset from T
/// in ms, with `headers`.
fn write_timed(bootstrap: &str, topic: &str, headers: &[(&str, &str)]) {
    let producer = raw_producer(bootstrap);
    for (p, ms) in TIMES {
        let mut hs = OwnedHeaders::new();
        for (key, value) in headers {
            hs = hs.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let payload = ms.to_string();
        send_waiting(
            &producer,
            BaseRecord::<str, str>::to(topic)
                .partition(p)
                .key("k")
                .payload(&payload)
                .timestamp(t() + ms)
                .headers(hs),
        );
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_group_is_reset_to_a_time_and_a_running_one_is_refused() {
    const TOPIC: &str = "acme.test.moved.commands";
    const GROUP: &str = "acme.test.moved-jobs";
    let broker = Tansu::builder().transactions(true).start();
    let b = broker.bootstrap();
    create(&b, &[TOPIC]).await;
    let env = broker.env();
    let (b2, offsets) = (b.clone(), move |b: &str| committed(b, GROUP, TOPIC, 2));
    tokio::task::spawn_blocking(move || {
        write_timed(&b2, TOPIC, &[]);
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b2)
            .set("group.id", GROUP)
            .create()
            .unwrap();
        let mut done = TopicPartitionList::new();
        done.add_partition_offset(TOPIC, 0, Offset::Offset(4))
            .unwrap();
        done.add_partition_offset(TOPIC, 1, Offset::Offset(2))
            .unwrap();
        c.commit(&done, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
    let reset = |args: &[&str]| {
        let mut all = vec!["group", "reset", GROUP, "--topic", TOPIC];
        all.extend_from_slice(args);
        atoll(&env, &all)
    };
    let two_s = at(2_000);

    let out = reset(&["--to-time", &two_s, "--dry-run"]);
    assert!(out.status.success(), "{}", said(&out));
    let text = said(&out);
    assert!(
        text.contains("would move")
            && text.contains("partition 0: 4 -> 1")
            && text.contains("partition 1: 2 -> 1"),
        "{text}"
    );
    assert_eq!(
        offsets(&b),
        [Offset::Offset(4), Offset::Offset(2)],
        "a dry run moves nothing"
    );

    let out = reset(&["--to-time", &two_s]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(offsets(&b), [Offset::Offset(1), Offset::Offset(1)]);
    // Between records, and past every record: each partition's end.
    let out = reset(&["--to-time", &at(2_600)]);
    assert!(said(&out).contains("partition 0: 1 -> 2"), "{}", said(&out));
    assert_eq!(offsets(&b), [Offset::Offset(2), Offset::Offset(2)]);
    reset(&["--to-time", &at(60_000)]);
    assert_eq!(offsets(&b), [Offset::Offset(4), Offset::Offset(2)]);
    let out = reset(&["--to-start"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(offsets(&b), [Offset::Offset(0), Offset::Offset(0)]);

    // Wrong lines: nothing moves.
    for (args, want) in [
        (vec!["--to-time", "yesterday"], "is not an RFC 3339 time"),
        (
            vec!["--to-time", &two_s, "--to-start"],
            "cannot be used with",
        ),
    ] {
        let out = reset(&args);
        assert!(
            !out.status.success() && said(&out).contains(want),
            "{args:?}: {}",
            said(&out)
        );
    }
    let out = atoll(
        &env,
        &[
            "group",
            "reset",
            GROUP,
            "--topic",
            "acme.test.none.commands",
            "--to-start",
        ],
    );
    assert!(
        !out.status.success() && said(&out).contains("`acme.test.none.commands` does not exist"),
        "{}",
        said(&out)
    );

    // A member runs: refused, nothing moves.
    let running = Arc::new(AtomicBool::new(true));
    let member = {
        let (b, running) = (b.clone(), running.clone());
        std::thread::spawn(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &b)
                .set("group.id", GROUP)
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            c.subscribe(&[TOPIC]).unwrap();
            while running.load(Ordering::Relaxed) {
                c.poll(Duration::from_millis(100));
            }
        })
    };
    let (b3, group) = (b.clone(), GROUP);
    let joined = tokio::task::spawn_blocking(move || {
        let kafka =
            atoll_console::dlq::Kafka::new(ClientConfig::new().set("bootstrap.servers", &b3))
                .unwrap();
        wait_until(Duration::from_secs(30), || {
            atoll_console::groups::members(&kafka, group).unwrap_or(0) > 0
        })
    })
    .await
    .unwrap();
    assert!(joined, "the member never showed in the group");
    let out = reset(&["--to-time", &two_s]);
    running.store(false, Ordering::Relaxed);
    member.join().unwrap();
    assert!(
        !out.status.success() && said(&out).contains("has 1 member(s): stop its consumers first"),
        "{}",
        said(&out)
    );
    assert_eq!(offsets(&b), [Offset::Offset(0), Offset::Offset(0)]);
}

/// `dlq replay --from/--to` replays the dead letters written within the window, each
/// partition read from its first record at or after `--from` up to its first at or after
/// `--to`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_takes_the_dead_letters_within_its_window() {
    const DLQ: &str = "acme.test.probe.private.dlq";
    const TARGET: &str = "acme.test.probe.commands";
    let broker = Tansu::builder().transactions(true).start();
    let b = broker.bootstrap();
    create(&b, &[DLQ, TARGET]).await;
    let b2 = b.clone();
    tokio::task::spawn_blocking(move || {
        write_timed(
            &b2,
            DLQ,
            &[
                ("atoll_dlq_original_topic", TARGET),
                ("atoll_dlq_original_partition", "0"),
                ("atoll_dlq_original_offset", "7"),
                ("atoll_dlq_listener", "work"),
            ],
        );
    })
    .await
    .unwrap();
    let env = broker.env();
    let replay = |extra: &[&str]| {
        let mut args = vec!["dlq", "replay", DLQ, "--all"];
        args.extend_from_slice(extra);
        atoll(&env, &args)
    };
    let (from, to) = (at(2_000), at(4_000));
    let out = replay(&["--from", &from, "--to", &to, "--dry-run"]);
    assert!(
        out.status.success() && said(&out).contains("would replay 3, skipped 0"),
        "{}",
        said(&out)
    );
    let out = replay(&["--from", &from, "--to", &to]);
    assert!(
        out.status.success() && said(&out).contains("replayed 3, skipped 0"),
        "{}",
        said(&out)
    );
    let sent = tokio::task::spawn_blocking(move || {
        atoll_testkit::read_topic(&b, TARGET, 4, Duration::from_secs(5))
    })
    .await
    .unwrap();
    let mut payloads: Vec<&str> = sent.iter().map(text).collect();
    payloads.sort();
    assert_eq!(payloads, ["2000", "2500", "3000"]);
}

/// The window's records, exactly: each partition read from its first record at or after the
/// start to its first at or after the end, on noida-db (the broker's answer) and on tansu (whose
/// time index answers the partition's start: the records are searched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_is_read_from_its_first_record_to_its_last_whatever_the_time_index() {
    const TOPIC: &str = "acme.test.window.events";
    for broker in [Tansu::builder().transactions(true).start(), Tansu::start()] {
        let b = broker.bootstrap();
        create(&b, &[TOPIC]).await;
        let read = tokio::task::spawn_blocking(move || {
            write_timed(&b, TOPIC, &[]);
            let kafka =
                atoll_console::dlq::Kafka::new(ClientConfig::new().set("bootstrap.servers", &b))
                    .unwrap();
            let t = t();
            [
                (Some(t + 2_000), Some(t + 4_000)),
                (None, Some(t + 1_500)),
                (Some(t + 2_600), None),
                (Some(t + 60_000), None),
                (None, None),
            ]
            .map(|(from, to)| {
                let got = kafka.read_between(TOPIC, from, to).unwrap();
                got.iter()
                    .map(|d| (d.partition, d.offset))
                    .collect::<Vec<_>>()
            })
        })
        .await
        .unwrap();
        assert_eq!(
            read,
            [
                vec![(0, 1), (0, 2), (1, 1)],
                vec![(0, 0)],
                vec![(0, 2), (0, 3)],
                vec![],
                vec![(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)],
            ],
            "{}",
            broker.bootstrap()
        );
    }
}
