//! What the console's tests share: serving a console on a loopback port, and reading an
//! attribute from its pages.

// Each test crate uses some of them.
#![allow(dead_code)]

use std::net::SocketAddr;

/// Serves `console`'s pages on a free loopback port (as long as the test's runtime runs).
pub(crate) async fn serve(console: &atoll_console::Console) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = console.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The value of the first `attr="…"` after `marker` in `html`.
pub(crate) fn attr(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)? + marker.len();
    let key = format!("{attr}=\"");
    let start = at + html[at..].find(&key)? + key.len();
    Some(html[start..start + html[start..].find('"')?].to_owned())
}
