//! `atoll asyncapi`: the shop's document validates with the AsyncAPI project's own parser, and
//! the checked-in `topics/asyncapi.yaml` is what the tool writes today.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::atoll;

const TOPICS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../topics");
const VALIDATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/asyncapi/validate.cjs");

/// The node_modules holding `@asyncapi/parser` (`scripts/install-node-tools` installs it).
fn node_modules() -> PathBuf {
    let dir = std::env::var_os("ATOLL_TEST_NODE_MODULES").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME");
            Path::new(&home).join(".local/share/atoll/node/node_modules")
        },
        PathBuf::from,
    );
    assert!(
        dir.join("@asyncapi/parser").is_dir() && dir.join("@asyncapi/avro-schema-parser").is_dir(),
        "the AsyncAPI parser is not in {}: run scripts/install-node-tools",
        dir.display()
    );
    dir
}

/// Runs the parser on `doc`: whether it found no error, and what it printed.
fn validate(doc: &Path) -> (bool, String) {
    let out = Command::new("node")
        .arg(VALIDATE)
        .arg(doc)
        .env("NODE_PATH", node_modules())
        .output()
        .expect("node (scripts/install-node-tools installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn generated(name: &str) -> (PathBuf, String) {
    let path =
        std::env::temp_dir().join(format!("atoll-asyncapi-{}-{name}.yaml", std::process::id()));
    let out = atoll(&[], &["asyncapi", TOPICS, "-o", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[test]
fn the_shops_document_validates() {
    let (path, text) = generated("valid");
    let (ok, report) = validate(&path);
    assert!(ok, "{report}");
    // Every shop topic that carries events, and every event type.
    assert!(
        report.contains("channels=14 operations=32 messages=24"),
        "{report}"
    );
    for service in example_shop::SERVICES {
        assert!(text.contains(&format!("acme.shop.{service}.")), "{service}");
    }
    assert!(text.contains("schemaFormat: application/vnd.apache.avro+json;version=1.9.0"));
    assert!(
        text.contains("acme.shop.storefront-orders"),
        "a listener's group"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_broken_document_does_not_validate() {
    let (path, text) = generated("broken");
    // An operation on a channel the document does not have.
    let broken = text.replacen(
        "$ref: '#/channels/acme.shop.orders.events'",
        "$ref: '#/channels/acme.shop.nowhere.events'",
        1,
    );
    assert_ne!(broken, text);
    std::fs::write(&path, broken).unwrap();
    let (ok, report) = validate(&path);
    assert!(!ok, "{report}");
    assert!(report.contains("error"), "{report}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn the_checked_in_document_is_current() {
    let (path, text) = generated("current");
    let checked_in =
        std::fs::read_to_string(Path::new(TOPICS).join("asyncapi.yaml")).unwrap_or_default();
    assert!(
        checked_in == text,
        "topics/asyncapi.yaml is out of date: run `cargo run -p atoll-cli -- asyncapi topics -o topics/asyncapi.yaml`"
    );
    std::fs::remove_file(path).unwrap();
}
