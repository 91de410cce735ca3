//! The guides' links work on the repository page and in rustdoc (see `scripts/guide-links`):
//! links between guides are reference links whose label is their target; each guide defines
//! its labels for the repository page, `framework/guide-links.md` defines every label for
//! rustdoc (which `lib.rs` puts before each guide), and every target is a guide that exists,
//! with the heading its anchor names. The README's links to the guides are checked too.
//! (`cargo doc` with `-D warnings`, in `.ci/run`, checks that rustdoc resolves each target.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every guide, by file name, with its text.
fn guides() -> BTreeMap<String, String> {
    let dir = root().join("docs");
    std::fs::read_dir(&dir)
        .expect("docs/ is readable")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The anchor GitHub (and rustdoc) gives a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a guide's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every occurrence of `open` + target + `close` whose target is a guide (`x.md` or
/// `x.md#anchor`).
fn targets(text: &str, open: &str, close: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(open) {
        rest = &rest[i + open.len()..];
        let Some(end) = rest.find(close) else { break };
        let target = &rest[..end];
        let page = target.split('#').next().unwrap_or("");
        let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if page.ends_with(".md") && page.trim_end_matches(".md").chars().all(plain) {
            out.push(target.to_owned());
        }
    }
    out
}

/// `Err` unless `target` names an existing guide and, with an anchor, one of its headings.
fn exists(guides: &BTreeMap<String, String>, target: &str) -> Result<(), String> {
    let (page, anchor) = target.split_once('#').unwrap_or((target, ""));
    let text = guides.get(page).ok_or_else(|| format!("no guide {page}"))?;
    if !anchor.is_empty() && !anchors(text).contains(anchor) {
        return Err(format!("{page} has no heading #{anchor}"));
    }
    Ok(())
}

#[test]
fn links_between_guides_are_defined_for_both_readers_and_lead_somewhere() {
    let guides = guides();
    let rustdoc = std::fs::read_to_string(root().join("framework/guide-links.md")).unwrap();
    let mut problems = Vec::new();
    for (name, text) in &guides {
        for t in targets(text, "](", ')') {
            problems.push(format!(
                "{name}: inline link to {t}: run scripts/guide-links"
            ));
        }
        for t in targets(text, "][", ']') {
            if let Err(e) = exists(&guides, &t) {
                problems.push(format!("{name}: [{t}]: {e}"));
            }
            if !text.contains(&format!("\n[{t}]: {t}\n")) {
                problems.push(format!(
                    "{name}: [{t}] has no definition for the repository page"
                ));
            }
            let (page, anchor) = t.split_once('#').unwrap_or((&t, ""));
            let module = page.trim_end_matches(".md").replace('-', "_");
            let fragment = if anchor.is_empty() {
                String::new()
            } else {
                format!("#{anchor}")
            };
            let def = format!("[{t}]: crate::guide::{module}{fragment}\n");
            if !rustdoc.contains(&def) {
                problems.push(format!("{name}: [{t}] has no definition for rustdoc"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_guide_is_in_the_rustdoc_after_the_link_definitions() {
    let lib = std::fs::read_to_string(root().join("framework/src/lib.rs")).unwrap();
    for name in guides().keys() {
        let module = name.trim_end_matches(".md").replace('-', "_");
        let included = format!(
            "#[doc = include_str!(\"../guide-links.md\")]\n    #[doc = include_str!(\"../../docs/{name}\")]\n    pub mod {module} {{}}"
        );
        assert!(
            lib.contains(&included),
            "lib.rs does not include {name} as guide::{module}"
        );
    }
}

#[test]
fn the_readme_links_to_guides_that_exist() {
    let guides = guides();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let links = targets(&readme, "](docs/", ')');
    assert!(!links.is_empty(), "the README links to no guide");
    for t in links {
        exists(&guides, &t).unwrap_or_else(|e| panic!("README: docs/{t}: {e}"));
    }
}
