//! `atoll graph` and `atoll docs` on the shop: the picture in each format, the checked-in SVG
//! current, and the page as headless Chromium renders it (a screenshot, and the DOM).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::atoll;

const TOPICS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../topics");

fn graph(format: &str) -> String {
    let out = atoll(&[], &["graph", TOPICS, "--format", format]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `cmd`, failing the test if it takes over a minute.
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/install-node-tools installs it)"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{cmd:?} took over a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

fn chromium(args: &[&str], page: &Path) -> Output {
    run(Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(format!("file://{}", page.display())))
}

/// The lines of an SVG without Graphviz's comments (which name its version).
fn without_comments(svg: &str) -> String {
    svg.lines()
        .filter(|l| !l.trim_start().starts_with("<!--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_picture_shows_every_service_and_flow() {
    let dot = graph("dot");
    for service in example_shop::SERVICES {
        assert!(
            dot.contains(&format!("\"acme.shop.{service}\" [shape=box")),
            "{dot}"
        );
    }
    assert!(dot.contains("saga: order-saga"), "{dot}");
    for flow in ["facts", "results", "commands", "replies"] {
        assert!(dot.contains(&format!("label=\"{flow}\"")), "{flow}: {dot}");
    }
    let mermaid = graph("mermaid");
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("-.->|replies|"),
        "{mermaid}"
    );
    let svg = graph("svg");
    assert!(
        svg.contains("<svg") && svg.contains("order&#45;saga"),
        "{svg}"
    );
    let checked_in =
        std::fs::read_to_string(Path::new(TOPICS).join("acme.shop.svg")).unwrap_or_default();
    assert!(
        without_comments(&checked_in) == without_comments(&svg),
        "topics/acme.shop.svg is out of date: run `cargo run -p atoll-cli -- graph topics -o topics/acme.shop.svg`"
    );
}

#[test]
fn the_page_renders_with_every_service() {
    let site: PathBuf = std::env::temp_dir().join(format!("atoll-docs-{}", std::process::id()));
    let out = atoll(&[], &["docs", TOPICS, "-o", site.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = site.join("index.html");
    let shot = site.join("shop.png");
    let out = chromium(
        &[
            "--window-size=1400,2000",
            &format!("--screenshot={}", shot.display()),
        ],
        &page,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 50_000,
        "{} bytes",
        png.len()
    );
    let out = chromium(&["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&out.stdout);
    for service in example_shop::SERVICES {
        assert!(
            dom.contains(&format!(
                "<section class=\"service\" id=\"acme.shop.{service}\">"
            )),
            "{service} missing:\n{dom}"
        );
    }
    assert!(dom.contains("<svg"), "the picture");
    assert_eq!(
        dom.matches("<tr class=\"event\">").count(),
        24,
        "every event"
    );
    assert_eq!(dom.matches("<details>").count(), 24, "every event's schema");
    assert_eq!(
        dom.matches("<tr class=\"listener\">").count(),
        14,
        "every listener"
    );
    assert!(
        dom.contains("acme.shop.orders-order-saga"),
        "a consumer group"
    );
    std::fs::remove_dir_all(site).unwrap();
}
