//! Consumer groups and at-least-once delivery across processes, on a real broker (tansu).

use std::collections::BTreeSet;
use std::time::Duration;

use atoll_testkit::probe::Work;
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::{committed, Tansu};

const PROBE: &str = env!("CARGO_BIN_EXE_probe");

async fn send(broker: &Tansu, ids: impl IntoIterator<Item = String>) {
    let running = broker.driver().await;
    let client = running.client("test-driver");
    for id in ids {
        client.send(&Work { id }).await.unwrap();
    }
    running.shutdown().await;
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn env_with(broker: &Tansu, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = broker.env();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// Waits until the two processes' assignments of `listener` are disjoint and cover 6 partitions.
fn wait_split(a: &Proc, b: &Proc, listener: &str) -> bool {
    wait_until(Duration::from_secs(60), || {
        let (x, y) = (a.assigned(listener), b.assigned(listener));
        let all: BTreeSet<i32> = x.iter().chain(&y).copied().collect();
        !x.is_empty() && !y.is_empty() && all.len() == 6 && x.len() + y.len() == 6
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_get_every_record_and_processes_split_partitions() {
    let broker = Tansu::start();
    send(&broker, ids("warmup", 1)).await;
    let a = Proc::start(PROBE, &[], &broker.env());
    let b = Proc::start(PROBE, &[], &broker.env());
    assert!(
        wait_split(&a, &b, "work"),
        "work never split:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    assert!(
        wait_split(&a, &b, "audit"),
        "audit never split:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    let steady = ids("steady", 300);
    send(&broker, steady.clone()).await;
    let want: BTreeSet<String> = steady.iter().cloned().collect();
    let done = wait_until(Duration::from_secs(60), || {
        ["work", "audit"].iter().all(|l| {
            a.ids(l)
                .union(&b.ids(l))
                .filter(|i| i.starts_with("steady"))
                .count()
                == 300
        })
    });
    assert!(
        done,
        "not every record handled:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    for listener in ["work", "audit"] {
        let (x, y) = (a.ids(listener), b.ids(listener));
        let got: BTreeSet<String> = x
            .union(&y)
            .filter(|i| i.starts_with("steady"))
            .cloned()
            .collect();
        assert_eq!(got, want, "listener {listener} got every record");
        let both: Vec<&String> = x
            .intersection(&y)
            .filter(|i| i.starts_with("steady"))
            .collect();
        assert!(
            both.is_empty(),
            "{listener}: handled by both processes in steady state: {both:?}"
        );
        assert!(
            x.iter().any(|i| i.starts_with("steady")) && y.iter().any(|i| i.starts_with("steady")),
            "both processes took part"
        );
        let dups = a
            .handled()
            .iter()
            .chain(b.handled().iter())
            .filter(|h| h.listener == listener && h.id.starts_with("steady"))
            .count();
        assert_eq!(
            dups, 300,
            "{listener}: no record handled twice in steady state"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    let broker = Tansu::start();
    let all = ids("k", 2_000);
    send(&broker, all.clone()).await;
    let env = env_with(&broker, &[("PROBE_DELAY_MS", "1")]);
    let mut first = Proc::start(PROBE, &[], &env);
    assert!(
        wait_until(Duration::from_secs(60), || first.ids("work").len() >= 300),
        "{}",
        first.log()
    );
    first.kill();
    let handled_before = first.ids("work");
    assert!(
        handled_before.len() < 2_000,
        "the kill must land mid-stream"
    );
    let second = Proc::start(PROBE, &[], &env);
    let want: BTreeSet<String> = all.into_iter().collect();
    let done = wait_until(Duration::from_secs(120), || {
        handled_before.union(&second.ids("work")).count() == want.len()
    });
    let got: BTreeSet<String> = handled_before.union(&second.ids("work")).cloned().collect();
    assert!(
        done,
        "lost {} records:\n{}",
        want.difference(&got).count(),
        second.log()
    );
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handler_leaves_its_offset_uncommitted() {
    let broker = Tansu::start();
    let all = ids("f", 60);
    send(&broker, all.clone()).await;
    // Unlimited in-place attempts: the record is never dead-lettered.
    let env = env_with(
        &broker,
        &[("PROBE_FAIL", "f-7"), ("ATOLL_LISTENER__MAX_ATTEMPTS", "0")],
    );
    let mut first = Proc::start(PROBE, &[], &env);
    // f-7 is retried in place: its partition waits, the others are handled. Wait until the
    // handled set stops growing, then give the commit interval time to pass.
    let mut last = 0;
    let settled = wait_until(Duration::from_secs(60), || {
        let n = first.ids("work").len();
        let stable = n > 0 && n == last;
        last = n;
        if !stable {
            std::thread::sleep(Duration::from_millis(1500));
        }
        stable
    });
    assert!(settled, "{}", first.log());
    assert!(!first.ids("work").contains("f-7"));
    assert!(first.log().contains("configured to fail on f-7"));
    std::thread::sleep(Duration::from_secs(1));
    let before = committed(
        &broker.bootstrap(),
        "acme.test.probe-work",
        "acme.test.probe.commands",
        6,
    );
    first.kill();
    let second = Proc::start(PROBE, &[], &broker.env());
    let want: BTreeSet<String> = all.into_iter().collect();
    assert!(
        wait_until(Duration::from_secs(60), || first
            .ids("work")
            .union(&second.ids("work"))
            .count()
            == 60),
        "every record handled after restart; committed before: {before:?}\n{}",
        second.log()
    );
    let got: BTreeSet<String> = first
        .ids("work")
        .union(&second.ids("work"))
        .cloned()
        .collect();
    assert_eq!(got, want);
    let f7 = second
        .handled()
        .into_iter()
        .find(|h| h.id == "f-7")
        .unwrap();
    match before[f7.partition as usize] {
        rdkafka::Offset::Offset(o) => {
            assert!(o <= f7.offset, "committed {o} past f-7 at {}", f7.offset)
        }
        other => assert!(matches!(other, rdkafka::Offset::Invalid), "{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_process_gets_its_partitions_back() {
    let broker = Tansu::start();
    send(&broker, ids("warmup", 1)).await;
    let env_a = env_with(&broker, &[("ATOLL_SERVICE__PROCESS_NAME", "probe-a")]);
    let env_b = env_with(&broker, &[("ATOLL_SERVICE__PROCESS_NAME", "probe-b")]);
    let mut a = Proc::start(PROBE, &[], &env_a);
    let b = Proc::start(PROBE, &[], &env_b);
    assert!(
        wait_split(&a, &b, "work"),
        "never split:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    let (before_a, before_b) = (a.assigned("work"), b.assigned("work"));
    // A clean stop: with dynamic membership (see `STATIC_MEMBERSHIP`) a killed member would
    // linger in the group until tansu expires it.
    assert!(a.terminate().success());
    let a2 = Proc::start(PROBE, &[], &env_a);
    assert!(
        wait_until(Duration::from_secs(30), || !a2.assigned("work").is_empty()),
        "restarted process got no assignment:\n{}",
        a2.log()
    );
    // Without static membership (see `STATIC_MEMBERSHIP`) the restart causes a rebalance;
    // the process name still decides the assignment.
    assert!(wait_split(&a2, &b, "work"), "{}", a2.log());
    assert_eq!(
        a2.assigned("work"),
        before_a,
        "same partitions after restart:\n{}",
        a2.log()
    );
    assert_eq!(
        b.assigned("work"),
        before_b,
        "the other process kept its partitions:\n{}",
        b.log()
    );
    // And it resumes: new records on its partitions are handled.
    send(&broker, ids("after", 60)).await;
    assert!(wait_until(Duration::from_secs(30), || a2
        .ids("work")
        .iter()
        .any(|i| i.starts_with("after"))));
}
