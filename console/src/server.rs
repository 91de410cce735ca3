//! The console's routes: the pages (whole, or their `<main>` alone when htmx asks for it with
//! `HX-Request`) and the assets, each answer with headers that keep the page from being framed
//! or fed scripts from elsewhere.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::Markup;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::fleet::Fleet;
use crate::pages;

/// What the routes read.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) fleet: Arc<Mutex<Fleet>>,
    /// The path the console is served under (`""` at the root, `/console` nested).
    pub(crate) base: String,
}

/// The routes, relative to the console's base path.
pub(crate) fn routes(shared: Shared) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/listener", get(listener))
        .route("/store", get(store))
        .route("/assets/{file}", get(asset))
        .with_state(Arc::new(shared))
        .layer(axum::middleware::map_response(secure))
}

/// No framing (clickjacking), no scripts or styles from elsewhere, no guessing of types.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The page, or its `<main>` alone for htmx's refresh.
fn answer(headers: &HeaderMap, s: &Shared, title: &str, path: &str, main: Markup) -> Response {
    let markup = if headers.contains_key("hx-request") {
        main
    } else {
        pages::page(&s.base, title, path, main)
    };
    Html(markup.into_string()).into_response()
}

async fn overview(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let services = s.fleet.lock().services(now_ms());
    let main = pages::overview(&s.base, &services);
    answer(&headers, &s, "Overview", "/", main)
}

/// `?service=…&name=…`.
#[derive(Debug, Deserialize)]
struct Which {
    service: String,
    name: String,
}

async fn listener(
    State(s): State<Arc<Shared>>,
    Query(which): Query<Which>,
    headers: HeaderMap,
) -> Response {
    let services = s.fleet.lock().services(now_ms());
    let found = services
        .iter()
        .find(|svc| svc.name == which.service)
        .and_then(|svc| svc.listeners.iter().find(|l| l.name == which.name));
    let path = pages::listener_href("", &which.service, &which.name);
    match found {
        Some(l) => {
            let main = pages::listener(&which.service, l);
            answer(&headers, &s, &which.name, &path, main)
        }
        None => {
            let what = format!(
                "No running process of {} reports a listener {}.",
                which.service, which.name
            );
            let page = answer(&headers, &s, "Not found", &path, pages::not_found(&what));
            (StatusCode::NOT_FOUND, page).into_response()
        }
    }
}

async fn store(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let services = s.fleet.lock().services(now_ms());
    answer(&headers, &s, "Store", "/store", pages::store(&services))
}

/// The scripts and style sheets, built into the binary.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        pages::HTMX => (
            include_bytes!("../assets/htmx-2.0.11.min.js"),
            "text/javascript",
        ),
        pages::UPLOT => (
            include_bytes!("../assets/uPlot-1.6.32.iife.min.js"),
            "text/javascript",
        ),
        pages::UPLOT_CSS => (include_bytes!("../assets/uPlot-1.6.32.min.css"), "text/css"),
        pages::SCRIPT => (include_bytes!("../assets/console.js"), "text/javascript"),
        pages::STYLE => (include_bytes!("../assets/console.css"), "text/css"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
