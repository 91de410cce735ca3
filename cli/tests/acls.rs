//! `atoll acls` on the shop's manifest, against a table written by hand from the convention.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::atoll;

const TOPICS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../topics");

/// (principal, operation, resource, pattern, name), as the table prints them.
type Row = (String, String, String, String, String);

fn rows(table: &str) -> BTreeSet<Row> {
    table
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(c.len(), 5, "{l}");
            (
                c[0].into(),
                c[1].into(),
                c[2].into(),
                c[3].into(),
                c[4].into(),
            )
        })
        .collect()
}

/// A service, the topics it writes and reads beyond its own, whether it owns a results topic
/// and runs sagas, and its exactly-once listeners.
type Grants = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    bool,
    bool,
    &'static [&'static str],
);

/// What each shop service may do, by hand: the topics it writes, the topics it reads, and the
/// listeners it runs exactly once.
fn expected() -> BTreeSet<Row> {
    let p = "acme.shop";
    let own_private = |s: &str| {
        ["dlq", "retry", "reply", "status"]
            .iter()
            .map(|t| format!("{p}.{s}.private.{t}"))
            .collect::<Vec<_>>()
    };
    let services: [Grants; 6] = [
        (
            "orders",
            &[
                "inventory.commands",
                "payments.commands",
                "shipping.commands",
            ],
            &[],
            false,
            true,
            &[],
        ),
        (
            "inventory",
            // Its own commands: the reservations' expiries it schedules.
            &["orders.private.reply", "inventory.commands"],
            &["orders.events"],
            false,
            false,
            &[],
        ),
        (
            "payments",
            &["orders.private.reply"],
            &[],
            false,
            false,
            &[],
        ),
        (
            "shipping",
            &["orders.private.reply"],
            &[],
            false,
            false,
            &[],
        ),
        (
            "storefront",
            &[],
            &["orders.events", "payments.events", "shipping.events"],
            false,
            false,
            &[],
        ),
        (
            "analytics",
            &[],
            &["orders.events"],
            true,
            false,
            &["outcomes"],
        ),
    ];
    let mut rows = BTreeSet::new();
    for (s, writes, reads, results, sagas, exactly_once) in services {
        let principal = format!("User:{p}.{s}");
        let mut row = |op: &str, resource: &str, pattern: &str, name: String| {
            rows.insert((
                principal.clone(),
                op.to_owned(),
                resource.to_owned(),
                pattern.to_owned(),
                name,
            ));
        };
        let mut private = own_private(s);
        if sagas {
            private.push(format!("{p}.{s}.private.saga"));
        }
        for t in &private {
            row("Write", "topic", "literal", t.clone());
            row("Read", "topic", "literal", t.clone());
        }
        // The operators' holds: read only.
        row(
            "Read",
            "topic",
            "literal",
            format!("{p}.{s}.private.control"),
        );
        row("Write", "topic", "literal", format!("{p}.{s}.events"));
        if results {
            row("Write", "topic", "literal", format!("{p}.{s}.results"));
        }
        row("Read", "topic", "literal", format!("{p}.{s}.commands"));
        for t in writes {
            row("Write", "topic", "literal", format!("{p}.{t}"));
        }
        for t in reads {
            row("Read", "topic", "literal", format!("{p}.{t}"));
        }
        // Its retry tiers, whichever delays it uses.
        for op in ["Write", "Read"] {
            row(op, "topic", "prefixed", format!("{p}.{s}.private.retry-"));
        }
        row("Read", "group", "prefixed", format!("{p}.{s}-"));
        row(
            "IdempotentWrite",
            "cluster",
            "literal",
            "kafka-cluster".into(),
        );
        for l in exactly_once {
            for op in ["Write", "Describe"] {
                row(op, "transactional-id", "prefixed", format!("{p}.{s}-{l}."));
            }
        }
    }
    rows
}

#[test]
fn the_shops_acls_are_the_least_its_services_need() {
    let out = atoll(&[], &["acls", TOPICS]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = rows(&String::from_utf8_lossy(&out.stdout));
    let want = expected();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:#?}\nnot expected: {extra:#?}"
    );
    // What the convention forbids, spelled out.
    let orders = "User:acme.shop.orders".to_owned();
    for (op, topic) in [
        ("Write", "acme.shop.inventory.events"),
        ("Read", "acme.shop.inventory.commands"),
        ("Write", "acme.shop.analytics.results"),
    ] {
        let row = (
            orders.clone(),
            op.into(),
            "topic".into(),
            "literal".into(),
            topic.into(),
        );
        assert!(!got.contains(&row), "orders may not {op} {topic}");
    }
}

#[test]
fn the_commands_create_the_same_acls() {
    let out = atoll(&[], &["acls", TOPICS, "--format", "commands"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let want = expected();
    let operations: usize = text.lines().map(|l| l.matches("--operation").count()).sum();
    assert_eq!(operations, want.len(), "{text}");
    assert!(
        text.lines().any(|l| l.contains("'User:acme.shop.analytics'")
            && l.contains("--operation Write --operation Describe --transactional-id 'acme.shop.analytics-outcomes.' --resource-pattern-type prefixed")),
        "{text}"
    );
    let principal = atoll(
        &[],
        &[
            "acls",
            TOPICS,
            "--principal",
            "User:svc-{name}",
            "--format",
            "commands",
        ],
    );
    let text = String::from_utf8_lossy(&principal.stdout);
    assert!(
        text.contains("'User:svc-orders'") && !text.contains("User:acme"),
        "{text}"
    );
}

#[test]
fn a_bad_manifest_names_the_file_and_the_field() {
    let dir = std::env::temp_dir().join(format!("atoll-acls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shop = std::fs::read_to_string(Path::new(TOPICS).join("acme.shop.json")).unwrap();
    let broken = shop.replacen(
        "\"acme.shop.orders.events\"",
        "\"acme.shop.orders.Events\"",
        1,
    );
    std::fs::write(dir.join("acme.shop.json"), broken).unwrap();
    let out = atoll(&[], &["acls", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("acme.shop.json") && err.contains("services[0].topics[0].name"),
        "{err}"
    );
    std::fs::remove_file(dir.join("acme.shop.json")).unwrap();
    let out = atoll(&[], &["acls", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no manifest"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
