//! Graceful shutdown on SIGTERM, on a real broker (tansu): in-flight records finish, offsets
//! are committed, the group is left, and a restart handles nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use atoll_testkit::probe::Work;
use atoll_testkit::process::{wait_until, Proc};
use atoll_testkit::Tansu;

const PROBE: &str = env!("CARGO_BIN_EXE_probe");
const N: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_then_restart_handles_every_record_exactly_once() {
    let broker = Tansu::start();
    let mut env = broker.env();
    env.extend([
        ("PROBE_DELAY_MS".to_owned(), "1".to_owned()),
        // A minute: only the shutdown's own commit can have committed what was handled.
        (
            "ATOLL_LISTENER__COMMIT_INTERVAL_MS".to_owned(),
            "60000".to_owned(),
        ),
        (
            "ATOLL_LISTENER__COMMIT_BATCH".to_owned(),
            "1000000".to_owned(),
        ),
        (
            "ATOLL_KAFKA__PROPERTIES__DEBUG".to_owned(),
            "cgrp".to_owned(),
        ),
        // librdkafka's group protocol log, to see the LeaveGroup.
        (
            "RUST_LOG".to_owned(),
            "atoll=info,librdkafka=debug".to_owned(),
        ),
    ]);
    let mut first = Proc::start(PROBE, &[], &env);
    let running = broker.driver().await;
    let client = running.client("test-driver");
    let ids: Vec<String> = (0..N).map(|i| format!("r-{i}")).collect();
    for id in &ids {
        client.send(&Work { id: id.clone() }).await.unwrap();
    }
    running.shutdown().await;
    assert!(
        wait_until(Duration::from_secs(120), || first.ids("work").len()
            >= N / 5),
        "the first process handled too little:\n{}",
        first.log()
    );
    let status = first.terminate();
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status}\n{}",
        first.log()
    );
    let log = first.log();
    assert!(
        first.ids("work").len() < N,
        "the stop must land mid-run ({} handled)",
        first.ids("work").len()
    );
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(log.contains("atoll stopped"), "{log}");
    // Dynamic membership: each consumer left its group (the broker answered its LeaveGroup)
    // instead of lingering until its session timed out. tansu 0.6 and the mock cluster do not
    // list group members, so librdkafka's own account (`debug=cgrp`) is the witness.
    for client in ["work", "audit"] {
        assert!(
            log.lines()
                .any(|l| l.contains("LeaveGroup response received")
                    && l.contains(&format!("client=\"{client}\""))),
            "{client} did not leave its group:\n{log}"
        );
    }
    let second = Proc::start(PROBE, &[], &env);
    for listener in ["work", "audit"] {
        assert!(
            wait_until(Duration::from_secs(180), || {
                first.ids(listener).union(&second.ids(listener)).count() == N
            }),
            "{listener}: not every record handled after the restart ({} + {}):\n{}",
            first.ids(listener).len(),
            second.ids(listener).len(),
            second.log()
        );
        // Zero duplicates: no id handled by both processes, nor twice by one.
        let mut times: BTreeMap<String, usize> = BTreeMap::new();
        for h in first.handled().iter().chain(second.handled().iter()) {
            if h.listener == listener {
                *times.entry(h.id.clone()).or_default() += 1;
            }
        }
        let twice: Vec<&String> = times
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id)
            .collect();
        assert!(twice.is_empty(), "{listener}: handled twice: {twice:?}");
        let want: BTreeSet<String> = ids.iter().cloned().collect();
        let got: BTreeSet<String> = times.into_keys().collect();
        assert_eq!(got, want);
    }
}
