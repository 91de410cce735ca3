//! The crate's layers import only downwards: each file may use the layers below its own and its
//! own, never one above. So there is no import cycle between layers, and `contract/` imports
//! nothing from the runtime.
//!
//! Reads every source file under `src/`, takes each `crate::<module>` path outside comments,
//! and checks it against the order below (the order `lib.rs` documents).

mod source;

use std::path::Path;

/// The layers from the bottom up; a file's layer is its first path component under `src/`.
const LAYERS: &[&[&str]] = &[
    &["contract"],
    &["error", "backoff"],
    &["config"],
    &["produce"],
    &["ops"],
    &["codec"],
    &["store"],
    &["handler"],
    &["saga"],
    &["consume"],
    &["app"],
    &["testing"],
    &["lib"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The layer of a file (its path from `src/`): `<layer>/…` or `<layer>.rs`.
fn layer_of(rel: &Path) -> String {
    let first = rel.components().next().expect("a path").as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The leading identifier of `s`.
fn ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// `(line, module)` for every `crate::<module>` outside comments, including each module of a
/// grouped `crate::{a::X, b::Y}`; a `super::super` path counts as module `super`, which no
/// layer is (a file reaches another layer only through `crate::`).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let code = line.split("//").next().unwrap_or("");
        if code.contains("super::super") {
            found.push((n + 1, "super".to_owned()));
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let mut modules = vec![ident(after)];
            if let Some(grouped) = after.strip_prefix('{') {
                // A grouped import, possibly over several lines.
                let mut group = grouped.to_owned();
                while !group.contains('}') {
                    match lines.next() {
                        Some((_, more)) => group.push_str(more.split("//").next().unwrap_or("")),
                        None => break,
                    }
                }
                let group = group.split('}').next().unwrap_or("");
                modules = group
                    .split(',')
                    .map(ident)
                    .filter(|m| !m.is_empty())
                    .collect();
            }
            let starts_word = i == 0
                || !rest[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            if starts_word {
                found.extend(
                    modules
                        .into_iter()
                        .filter(|m| !m.is_empty())
                        .map(|m| (n + 1, m)),
                );
            }
            rest = after;
        }
    }
    found
}

#[test]
fn every_file_imports_only_its_own_layer_and_those_below() {
    let mut violations = Vec::new();
    for (file, text) in &source::files() {
        let layer = layer_of(file);
        let Some(own) = rank(&layer) else {
            violations.push(format!(
                "{}: `{layer}` is in no layer; add it to LAYERS (and to the table in lib.rs)",
                file.display()
            ));
            continue;
        };
        for (line, module) in crate_paths(text) {
            match rank(&module) {
                // Items re-exported at the crate root are named by their layer, never the root.
                None => violations.push(format!(
                    "{}:{line}: `crate::{module}` is no layer; import from the layer that defines it",
                    file.display()
                )),
                Some(r) if r > own => violations.push(format!(
                    "{}:{line}: `{layer}` imports `crate::{module}`, a layer above it",
                    file.display()
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_contract_layer_imports_nothing_from_the_runtime() {
    let contract = source::files()
        .into_iter()
        .filter(|(file, _)| layer_of(file) == "contract");
    for (file, text) in contract {
        for (line, module) in crate_paths(&text) {
            assert_eq!(
                module,
                "contract",
                "{}:{line} imports `crate::{module}`",
                file.display()
            );
        }
    }
}

#[test]
fn the_checker_sees_imports_and_ignores_comments() {
    let text = "use crate::consume::worker;\n// crate::app in a comment\nlet x = crate::ops::http::Server;\n/// [`crate::saga`]\nuse crate::{app::App,\n    saga::Saga};\nuse super::super::x;\n";
    let paths = crate_paths(text);
    let found: Vec<(usize, &str)> = paths.iter().map(|(n, m)| (*n, m.as_str())).collect();
    assert_eq!(
        found,
        [
            (1, "consume"),
            (3, "ops"),
            (5, "app"),
            (5, "saga"),
            (7, "super")
        ]
    );
    assert_eq!(rank("contract"), Some(0));
    assert!(rank("consume") > rank("handler"));
    assert_eq!(rank("nowhere"), None);
}
