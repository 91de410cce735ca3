//! KIP-848's consumer group protocol across processes, on librdkafka's mock cluster (the only
//! broker here that has it: tansu has not, see `tansu_limitations.rs`): a process killed
//! (SIGKILL) loses nothing; the broker gives its partitions to the one left.

use std::collections::BTreeSet;
use std::time::Duration;

use atoll::config::Config;
use atoll::App;
use atoll_testkit::probe::{Probe, Work};
use atoll_testkit::process::{wait_until, Proc};

const PROBE: &str = env!("CARGO_BIN_EXE_probe");

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_loses_nothing_and_its_partitions_go_to_the_other() {
    // The host owns the mock cluster, with the probe's topics (it has no CreateTopics).
    let host = App::new(Config::default())
        .topics(atoll::contract::owned_topics::<Probe>())
        .start()
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("atoll-kip848-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env = |name: &str| {
        vec![
            (
                "ATOLL_KAFKA__BOOTSTRAP_SERVERS".to_owned(),
                host.bootstrap_servers().to_owned(),
            ),
            ("ATOLL_KAFKA__CREATE_TOPICS".to_owned(), "false".to_owned()),
            (
                "ATOLL_LISTENER__GROUP_PROTOCOL".to_owned(),
                "consumer".to_owned(),
            ),
            (
                "ATOLL_STORE__PATH".to_owned(),
                dir.join(format!("{name}.db")).display().to_string(),
            ),
        ]
    };
    let mut a = Proc::start(PROBE, &[], &env("a"));
    let b = Proc::start(PROBE, &[], &env("b"));
    let split = wait_until(Duration::from_secs(60), || {
        let (x, y) = (a.assigned("work"), b.assigned("work"));
        !x.is_empty() && !y.is_empty() && x.len() + y.len() == 6
    });
    assert!(split, "never split:\n{}\n---\n{}", a.log(), b.log());
    let client = host.client("test");
    for id in ids("before", 300) {
        client.send(&Work { id }).await.unwrap();
    }
    let handled = |procs: &[&Proc], prefix: &str| -> BTreeSet<String> {
        procs
            .iter()
            .flat_map(|p| p.ids("work"))
            .filter(|i| i.starts_with(prefix))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(60), || handled(&[&a, &b], "before")
            .len()
            == 300),
        "before the kill:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    a.kill();
    for id in ids("after", 300) {
        client.send(&Work { id }).await.unwrap();
    }
    // The broker gives a's partitions to b once a's session ran out.
    let all = wait_until(Duration::from_secs(120), || {
        b.assigned("work").len() == 6 && handled(&[&b], "after").len() == 300
    });
    assert!(
        all,
        "b holds {:?} and handled {} of 300 after the kill:\n{}",
        b.assigned("work"),
        handled(&[&b], "after").len(),
        b.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
    host.shutdown().await;
}
