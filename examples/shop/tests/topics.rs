//! `topics/` must match the service declarations.

#[test]
fn checked_in_topics_match_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topics");
    if let Err(e) = example_shop::topics::check(&dir) {
        panic!("{e}");
    }
}
