//! `atoll dlq list | show | replay` against a real broker (tansu) and the probe service.

mod common;

use common::{atoll, probe_bin, ATOLL};
use std::process::{Command, Output};
use std::time::Duration;

use atoll_testkit::probe::Work;
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::Tansu;

const DLQ: &str = "acme.test.probe.private.dlq";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_replayed_once() {
    let broker = Tansu::start();
    let running = broker.driver().await;
    let client = running.client("test");
    for id in ["good-1", "bad", "good-2"] {
        client.send(&Work { id: id.into() }).await.unwrap();
    }
    running.shutdown().await;
    let env = broker.env();
    let mut failing_env = env.clone();
    failing_env.push(("PROBE_FAIL".into(), "bad".into()));
    let mut failing = Proc::start(probe_bin(), &[], &failing_env);
    // Both listeners give up on `bad` after the default budget of 3 attempts.
    let dead = wait_until(Duration::from_secs(60), || {
        failing.log().matches("record dead-lettered").count() == 2
    });
    assert!(dead, "{}", failing.log());
    failing.terminate();

    let list = atoll(&env, &["dlq", "list", DLQ]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let table = stdout(&list);
    assert!(table.contains("acme.test.probe.work.v1"), "{table}");
    assert!(table.contains("configured to fail on bad"), "{table}");
    assert!(table.contains("2 dead letter(s)"), "{table}");
    let row = table.lines().find(|l| l.contains("bad")).unwrap();
    let (partition, offset) = row
        .split_whitespace()
        .next()
        .unwrap()
        .split_once(':')
        .unwrap();

    let show = atoll(
        &env,
        &[
            "dlq",
            "show",
            DLQ,
            "--offset",
            offset,
            "--partition",
            partition,
        ],
    );
    let shown = stdout(&show);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    for expected in [
        "atoll_dlq_error_kind: handler",
        "atoll_dlq_attempts: 3",
        "ce_type: acme.test.probe.work.v1",
        "\"id\": \"bad\"",
    ] {
        assert!(shown.contains(expected), "missing {expected:?} in\n{shown}");
    }

    let dry = atoll(&env, &["dlq", "replay", DLQ, "--all", "--dry-run"]);
    assert!(stdout(&dry).contains("would replay 2"), "{}", stdout(&dry));
    // By the time they were dead-lettered: none after a time to come, both within a window.
    let replay_window = |window: &[&str]| {
        let mut args = vec!["dlq", "replay", DLQ, "--all", "--dry-run"];
        args.extend_from_slice(window);
        atoll(&env, &args)
    };
    let later = replay_window(&["--from", "2999-01-01T00:00:00Z"]);
    assert!(
        stdout(&later).contains("would replay 0"),
        "{}",
        stdout(&later)
    );
    let earlier = replay_window(&["--to", "2000-01-01T00:00:00Z"]);
    assert!(
        stdout(&earlier).contains("would replay 0"),
        "{}",
        stdout(&earlier)
    );
    let within = replay_window(&[
        "--from",
        "2000-01-01T00:00:00Z",
        "--to",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(
        stdout(&within).contains("would replay 2"),
        "{}",
        stdout(&within)
    );
    let bad = replay_window(&["--from", "yesterday"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--from `yesterday` is not an RFC 3339 time"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // The handler is fixed: replay (spaced out), and each listener handles `bad` once more.
    let fixed = Proc::start(probe_bin(), &[], &env);
    let replay = atoll(&env, &["dlq", "replay", DLQ, "--all", "--rate", "50"]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(
        stdout(&replay).contains("replayed 2, skipped 0"),
        "{}",
        stdout(&replay)
    );
    let handled = |p: &Proc, l: &str| {
        p.handled()
            .iter()
            .filter(|h| h.listener == l && h.id == "bad")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(60), || handled(&fixed, "work") == 1
            && handled(&fixed, "audit") == 1),
        "{}",
        fixed.log()
    );
    // A second replay does nothing.
    let again = atoll(&env, &["dlq", "replay", DLQ, "--all"]);
    assert!(
        stdout(&again).contains("replayed 0, skipped 2"),
        "{}",
        stdout(&again)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (handled(&fixed, "work"), handled(&fixed, "audit")),
        (1, 1),
        "no duplicates"
    );
    // Unless forced, and only for the chosen record.
    let forced = atoll(
        &env,
        &[
            "dlq",
            "replay",
            DLQ,
            "--offset",
            offset,
            "--partition",
            partition,
            "--force",
        ],
    );
    assert!(
        stdout(&forced).contains("replayed 1, skipped 0"),
        "{}",
        stdout(&forced)
    );
}

#[test]
fn unreachable_broker_and_wrong_topics_are_clear_errors() {
    let env = vec![(
        "ATOLL_KAFKA__BOOTSTRAP_SERVERS".to_owned(),
        "127.0.0.1:1".to_owned(),
    )];
    let out = atoll(&env, &["dlq", "list", DLQ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the broker at 127.0.0.1:1"),
        "{err}"
    );

    let out = Command::new(ATOLL)
        .args(["dlq", "list", DLQ])
        .env_remove("ATOLL_KAFKA__BOOTSTRAP_SERVERS")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("set ATOLL_KAFKA__BOOTSTRAP_SERVERS"));

    // A rate that is no rate is a wrong command line, before any broker is asked.
    for rate in ["0", "1e-20", "fast"] {
        let out = atoll(&env, &["dlq", "replay", DLQ, "--all", "--rate", rate]);
        assert_eq!(out.status.code(), Some(64), "--rate {rate}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("`{rate}` is no rate")), "{err}");
    }

    let broker = Tansu::start();
    let out = atoll(&broker.env(), &["dlq", "list", "acme.test.probe.events"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a dead-letter topic"));
    let out = atoll(
        &broker.env(),
        &["dlq", "list", "acme.test.nobody.private.dlq"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A dead letter whose payload was too large for the DLQ holds a pointer, not the record: a
/// replay skips it and says where the original is, and sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_without_its_payload_is_not_replayed() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let broker = Tansu::start();
    broker.driver().await.shutdown().await;
    let target = "acme.test.probe.commands";
    let mut headers = OwnedHeaders::new();
    for (key, value) in [
        ("atoll_dlq_original_topic", target),
        ("atoll_dlq_original_partition", "0"),
        ("atoll_dlq_original_offset", "7"),
        ("atoll_dlq_listener", "work"),
        ("atoll_dlq_payload_omitted", "999990"),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::<str, str>::to(DLQ)
                .key("k")
                .payload(r#"{"topic":"acme.test.probe.commands","partition":0,"offset":7}"#)
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let replay = atoll(&broker.env(), &["dlq", "replay", DLQ, "--all"]);
    let out = stdout(&replay);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(
        out.contains("too large for the DLQ")
            && out.contains(&format!("{target} partition 0 offset 7")),
        "{out}"
    );
    assert!(out.contains("replayed 0, skipped 1"), "{out}");
    let b = broker.bootstrap();
    let sent = tokio::task::spawn_blocking(move || {
        atoll_testkit::read_topic(&b, target, 1, Duration::from_secs(3))
    })
    .await
    .unwrap();
    assert!(sent.is_empty(), "the pointer was replayed");
}

/// A crafted dead letter cannot drive the operator's terminal: control characters in its key,
/// header names and values, error and payload are shown escaped by `dlq show` and `dlq list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_dead_letter_cannot_inject_terminal_escapes() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let broker = Tansu::start();
    broker.driver().await.shutdown().await;
    let mut headers = OwnedHeaders::new();
    for (key, value) in [
        ("ce_type", "acme.test.probe.work.v1\x1b[2J"),
        ("atoll_dlq_error", "boom\x1b]0;pwned\x07\r\x1b[1A"),
        ("atoll_dlq_error_kind", "handler"),
        ("x-\x1b[31mred", "\u{9b}31m"),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::<[u8], [u8]>::to(DLQ)
                .key(b"k\x1b[8m\xff")
                .payload(b"not json \x1b[?1049h")
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    for args in [
        &["dlq", "show", DLQ, "--offset", "0"][..],
        &["dlq", "list", DLQ],
    ] {
        let run = atoll(&broker.env(), args);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let shown = &run.stdout;
        assert!(
            !shown
                .iter()
                .any(|b| *b == 0x1b || *b == 0x07 || *b == b'\r')
                && !String::from_utf8_lossy(shown).contains('\u{9b}'),
            "{args:?} printed control characters: {:?}",
            String::from_utf8_lossy(shown)
        );
        let text = stdout(&run);
        assert!(
            text.contains(r"\x1b"),
            "{args:?} shows them escaped: {text}"
        );
    }
}
