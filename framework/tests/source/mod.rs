//! Reading the crate's own source, for the tests that check its shape (layers, lengths).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its path from `src/`, and its text.
pub(crate) fn files() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    assert!(
        paths.len() > 20,
        "found only {} files under {}",
        paths.len(),
        src.display()
    );
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a readable source file");
            (p.strip_prefix(&src).expect("under src/").to_owned(), text)
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
