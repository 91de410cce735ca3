//! Bad input on a commands topic is dead-lettered with the `atoll_dlq_*` headers of
//! `docs/architecture.md#failure-handling-and-dead-letters`, and the records
//! behind it are handled, on a real broker (tansu).

use std::time::Duration;

use atoll::Event;
use atoll_testkit::probe::Work;
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::{committed, header, read_topic, Tansu};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{Message, Offset};

const PROBE: &str = env!("CARGO_BIN_EXE_probe");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_unknown_types_are_dead_lettered_and_the_partition_moves_on() {
    let broker = Tansu::start();
    let running = broker.driver().await;
    let client = running.client("test-driver");
    let topic = "acme.test.probe.commands";
    let typed = |t: &'static str| {
        OwnedHeaders::new().insert(Header {
            key: "ce_type",
            value: Some(t),
        })
    };
    // Everything keyed alike, so it lands in one partition, in this order.
    let key = Some(&b"same-key"[..]);
    client
        .send_raw(topic, key, b"\x00\x01garbage\xff", typed(Work::ce_type()))
        .await
        .unwrap();
    client
        .send_raw(
            topic,
            key,
            b"{\"id\":\"x\"}",
            typed("acme.test.probe.explode.v1"),
        )
        .await
        .unwrap();
    client
        .send_raw(topic, key, b"{\"id\":\"y\"}", OwnedHeaders::new())
        .await
        .unwrap();
    client
        .send_raw(topic, key, br#"{"id":"after-bad"}"#, {
            let (h, _) = atoll::envelope::Outgoing::new(Work::ce_type(), "test").headers();
            h
        })
        .await
        .unwrap();
    running.shutdown().await;

    let mut probe = Proc::start(PROBE, &[], &broker.env());
    assert!(
        wait_until(Duration::from_secs(60), || probe
            .ids("work")
            .contains("after-bad")
            && probe.ids("audit").contains("after-bad")),
        "the valid record behind the bad ones was handled:\n{}",
        probe.log()
    );
    assert!(probe.running(), "bad input does not crash the service");
    let dlq = read_topic(
        &broker.bootstrap(),
        "acme.test.probe.private.dlq",
        4,
        Duration::from_secs(20),
    );
    // The decode failure is every listener's; unknown and missing types are dead-lettered once,
    // by the first listener on the commands topic.
    let mut got: Vec<(String, String)> = dlq
        .iter()
        .map(|m| {
            (
                header(m, "atoll_dlq_listener").unwrap().to_owned(),
                header(m, "atoll_dlq_error_kind").unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("audit", "decode"),
        ("work", "decode"),
        ("work", "unknown_type"),
        ("work", "unknown_type"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    for m in &dlq {
        assert_eq!(m.key(), key, "key preserved");
        assert_eq!(header(m, "atoll_dlq_original_topic"), Some(topic));
        assert!(header(m, "atoll_dlq_original_partition")
            .unwrap()
            .parse::<i32>()
            .is_ok());
        let offset: i64 = header(m, "atoll_dlq_original_offset")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (0..3).contains(&offset),
            "one of the three bad records: {offset}"
        );
        assert_eq!(header(m, "atoll_dlq_attempts"), Some("1"));
        assert!(!header(m, "atoll_dlq_error").unwrap().is_empty());
        assert!(header(m, "atoll_dlq_failed_at").unwrap().contains('T'));
    }
    let garbage = dlq
        .iter()
        .find(|m| header(*m, "atoll_dlq_error_kind") == Some("decode"))
        .unwrap();
    assert_eq!(
        garbage.payload(),
        Some(&b"\x00\x01garbage\xff"[..]),
        "value preserved"
    );
    assert_eq!(
        header(garbage, "ce_type"),
        Some(Work::ce_type()),
        "original headers preserved"
    );
    let unknown = dlq
        .iter()
        .find(|m| header(*m, "ce_type") == Some("acme.test.probe.explode.v1"))
        .unwrap();
    assert!(header(unknown, "atoll_dlq_error")
        .unwrap()
        .contains("explode"));
    // Offsets moved past the dead-lettered records: a restart would not see them again.
    std::thread::sleep(Duration::from_secs(1));
    probe.terminate();
    let partition = header(garbage, "atoll_dlq_original_partition")
        .unwrap()
        .parse::<usize>()
        .unwrap();
    let offsets = committed(&broker.bootstrap(), "acme.test.probe-work", topic, 6);
    assert_eq!(offsets[partition], Offset::Offset(4), "{offsets:?}");
}
