//! `topics/` must match the service declarations.

#[test]
fn checked_in_topics_match_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topics");
    if let Err(e) = example_shop::topics::check(&dir) {
        panic!("{e}");
    }
}

/// A copy of `topics/` in which `edit` changed the checked-in schema of `order_cancelled`.
fn topics_with(edit: impl Fn(&mut serde_json::Value)) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shop-contracts-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    example_shop::topics::write(&dir).unwrap();
    let file = dir
        .join(example_shop::topics::SCHEMAS)
        .join("acme.shop.orders.events-acme.shop.orders.order_cancelled_v1.avsc");
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    edit(&mut schema);
    std::fs::write(&file, schema.to_string()).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn check(dir: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["topics", "--check"])
        .arg(dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_field_added_without_default_breaks_the_contract() {
    // The checked-in version lacks `reason`: the code added it without a default.
    let dir = topics_with(|s| {
        s["fields"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f["name"] != "reason");
    });
    let (ok, err) = check(&dir);
    assert!(!ok);
    assert!(err.contains("order_cancelled_v1: breaks Backward"), "{err}");
    assert!(
        err.contains("Field 'reason'") && err.contains("default"),
        "{err}"
    );
    assert!(err.contains("new event version"), "{err}");
}

#[test]
fn a_changed_type_breaks_the_contract() {
    let dir = topics_with(|s| {
        for f in s["fields"].as_array_mut().unwrap() {
            if f["name"] == "order_id" {
                f["type"] = "long".into();
            }
        }
    });
    let (ok, err) = check(&dir);
    assert!(!ok);
    assert!(
        err.contains("breaks Backward") && err.contains("order_id"),
        "{err}"
    );
}
