//! The command line itself: `--version`, exit codes that tell a wrong command line from
//! "changes to make", and `--bootstrap` on every command that talks to Kafka.

mod common;

use common::atoll;

const TOPICS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../topics");

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_is_printed() {
    let out = atoll(&[], &["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("atoll {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_wrong_command_line_is_not_a_pending_change() {
    // `plan --detailed-exitcode` exits 2 for "changes to make"; clap's own usage errors
    // exit 2 too unless told otherwise.
    for args in [
        &["plan"][..],
        &["plan", "topics", "--no-such-flag"],
        &["no-such-command"],
    ] {
        let out = atoll(&[], args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
    let out = atoll(&[], &["--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn every_kafka_command_takes_bootstrap() {
    // Nothing listens on port 1: each command must try that address, not the configured one.
    let env = [(
        "ATOLL_KAFKA__BOOTSTRAP_SERVERS".to_owned(),
        "127.0.0.1:2".to_owned(),
    )];
    // (Each waits out the reach timeout, 10 s: `apply` shares `plan`'s arguments, and
    // `replay` `list`'s.)
    for args in [
        &[
            "dlq",
            "list",
            "acme.shop.orders.private.dlq",
            "--bootstrap",
            "127.0.0.1:1",
        ][..],
        &[
            "dlq",
            "--bootstrap",
            "127.0.0.1:1",
            "show",
            "t",
            "--offset",
            "0",
        ],
        &["plan", TOPICS, "--bootstrap", "127.0.0.1:1"],
    ] {
        let out = atoll(&env, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot reach the broker at 127.0.0.1:1"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // `view rebuild` reads its store first: the flag is taken, and the store is missing.
    let store = [(
        "ATOLL_STORE__PATH".to_owned(),
        "/nonexistent/x.db".to_owned(),
    )];
    let out = atoll(
        &store,
        &["view", "rebuild", "g", "--bootstrap", "127.0.0.1:1"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no store at"), "{}", stderr(&out));
}
