//! Headless Chromium, as a person's browser: the page's DOM after its scripts ran, screenshots,
//! and [`act`]: typing into a page's forms and clicking its buttons (puppeteer-core driving the
//! same Chromium). A test that needs them fails, saying so, when they are not installed
//! (`scripts/install-node-tools` installs Debian's `chromium` and puppeteer-core).

use std::path::Path;
use std::process::Command;

/// How long the page's scripts may run (virtual time) before the DOM is read or the picture
/// taken: htmx and the charts start on load.
const SCRIPT_BUDGET_MS: &str = "3000";

/// The Chromium installed.
fn chromium_bin() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Chromium is not installed: run scripts/install-node-tools")
}

fn chromium() -> Command {
    let mut c = Command::new(chromium_bin());
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

/// One thing a person does on a page (see [`act`]).
#[derive(Debug, Clone)]
pub enum Step {
    /// Opens the URL; its HTTP status is kept.
    Goto(String),
    /// Types the text into the field the CSS selector finds (emptied first).
    Fill(String, String),
    /// Ticks (`true`) or unticks the checkbox the selector finds.
    Check(String, bool),
    /// Clicks the button the selector finds and waits for the page it loads; its HTTP status
    /// is kept.
    Submit(String),
    /// Clicks what the selector finds (e.g. a `<summary>` that opens a form).
    Click(String),
    /// Waits until the selector finds something (e.g. after a refresh of the page's content).
    Wait(String),
    /// Keeps the page's DOM as it is now.
    Dom,
}

/// What [`act`] kept: the DOMs of its [`Step::Dom`] steps and the statuses of the pages loaded.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Acted {
    /// The DOM at each [`Step::Dom`].
    pub doms: Vec<String>,
    /// The HTTP status of each page loaded ([`Step::Goto`], [`Step::Submit`]).
    pub statuses: Vec<u16>,
}

/// The node_modules holding puppeteer-core (`scripts/install-node-tools` installs it there).
fn node_modules() -> std::path::PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let dir = Path::new(&home).join(".local/share/atoll/node/node_modules");
    assert!(
        dir.join("puppeteer-core").is_dir(),
        "puppeteer-core is not in {}: run scripts/install-node-tools",
        dir.display()
    );
    dir
}

/// Does `steps` in one headless Chromium page, as a person would; panics, saying which step,
/// when one fails (a selector that finds nothing within 30 s, a page that does not load).
pub fn act(steps: &[Step]) -> Acted {
    let json: Vec<serde_json::Value> = steps
        .iter()
        .map(|s| match s {
            Step::Goto(url) => serde_json::json!({ "goto": url }),
            Step::Fill(sel, text) => serde_json::json!({ "fill": [sel, text] }),
            Step::Check(sel, on) => serde_json::json!({ "check": [sel, on] }),
            Step::Submit(sel) => serde_json::json!({ "submit": sel }),
            Step::Click(sel) => serde_json::json!({ "click": sel }),
            Step::Wait(sel) => serde_json::json!({ "wait": sel }),
            Step::Dom => serde_json::json!({ "dom": true }),
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/act.cjs");
    let mut node = Command::new("node")
        .arg(script)
        .env("NODE_PATH", node_modules())
        .env("CHROMIUM", which(chromium_bin()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node (scripts/install-node-tools installs it)");
    let steps = serde_json::to_vec(&json).expect("steps");
    std::io::Write::write_all(&mut node.stdin.take().expect("stdin"), &steps)
        .expect("send the steps");
    let out = node.wait_with_output().expect("the runner's answer");
    assert!(
        out.status.success(),
        "acting on the page failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the runner's answer")
}

/// The path of program `bin` on the `PATH`.
fn which(bin: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(bin))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{bin} is not on the PATH"))
}
