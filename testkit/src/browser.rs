//! Headless Chromium, as a person's browser: the page's DOM after its scripts ran, and
//! screenshots. A test that needs it fails, saying so, when Chromium is not installed
//! (`scripts/install-node-tools` installs Debian's `chromium`).

use std::path::Path;
use std::process::Command;

/// How long the page's scripts may run (virtual time) before the DOM is read or the picture
/// taken: htmx and the charts start on load.
const SCRIPT_BUDGET_MS: &str = "3000";

fn chromium() -> Command {
    let bin = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium is not installed: run scripts/install-node-tools");
    let mut c = Command::new(bin);
    // As root (CI) Chromium refuses its sandbox; the pages are our own, on loopback.
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        &format!("--virtual-time-budget={SCRIPT_BUDGET_MS}"),
    ]);
    c
}

/// The DOM of `url` once its scripts ran.
pub fn dom(url: &str) -> String {
    let out = chromium()
        .args(["--dump-dom", url])
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium --dump-dom {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PNG of `url`, `width` × `height` pixels, at `path`.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("screenshot directory");
    }
    let out = chromium()
        .arg(format!("--screenshot={}", path.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(url)
        .output()
        .expect("run chromium");
    let png = std::fs::read(path).unwrap_or_default();
    assert!(
        out.status.success() && png.starts_with(b"\x89PNG"),
        "chromium --screenshot {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
