//! The console's pages, rendered on the server (maud escapes every value it writes, so a
//! listener name or an error's cause cannot inject markup). Each page is a layout around one
//! `<main>`, which htmx fetches again every few seconds and swaps in place; the charts are
//! drawn by uPlot from the series each chart element carries.
//!
//! Every figure a test or a script may want to read carries it in a `data-*` attribute as a
//! plain number, beside the text a person reads.

use maud::{html, Markup, DOCTYPE};

use crate::fleet::{ListenerView, Liveness, ProcessView, ServiceView};

/// The assets, served under `<base>/assets/`.
pub(crate) const HTMX: &str = "htmx-2.0.11.min.js";
/// uPlot's script.
pub(crate) const UPLOT: &str = "uPlot-1.6.32.iife.min.js";
/// uPlot's style sheet.
pub(crate) const UPLOT_CSS: &str = "uPlot-1.6.32.min.css";
/// The console's own script: draws the charts.
pub(crate) const SCRIPT: &str = "console.js";
/// The console's own style sheet.
pub(crate) const STYLE: &str = "console.css";

/// How often a page refreshes its content, in seconds.
pub(crate) const REFRESH_SECONDS: u32 = 5;

/// The overview's address: the base path itself (a router nested at `/console` answers
/// `/console`, not `/console/`), or `/` at the root.
pub(crate) fn home(base: &str) -> String {
    if base.is_empty() {
        "/".to_owned()
    } else {
        base.to_owned()
    }
}

/// A whole page: the layout around `main`, whose content is fetched again every
/// [`REFRESH_SECONDS`] from `refresh` (below `base`; `/` is the overview) when given. Pages
/// with forms (the dead letters) are not refreshed: a refresh would wipe what is being typed.
pub(crate) fn page(base: &str, title: &str, refresh: Option<&str>, main: Markup) -> Markup {
    let refresh = refresh.map(|path| {
        if path == "/" {
            home(base)
        } else {
            format!("{base}{path}")
        }
    });
    let asset = |name: &str| format!("{base}/assets/{name}");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                // htmx would add a style element of its own, which the content security policy
                // refuses.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false}"#;
                title { (title) " · atoll console" }
                link rel="stylesheet" href=(asset(UPLOT_CSS));
                link rel="stylesheet" href=(asset(STYLE));
                script src=(asset(HTMX)) {}
                script src=(asset(UPLOT)) {}
                script src=(asset(SCRIPT)) {}
            }
            body {
                header {
                    strong { "atoll console" }
                    nav {
                        a href=(home(base)) { "Overview" }
                        a href=(format!("{base}/store")) { "Store" }
                        a href=(format!("{base}/dlq")) { "Dead letters" }
                        a href=(format!("{base}/sagas")) { "Sagas" }
                        a href=(format!("{base}/topology")) { "Topology" }
                        a href=(format!("{base}/groups")) { "Groups" }
                    }
                }
                @if let Some(refresh) = refresh {
                    main id="main" hx-get=(refresh)
                        hx-trigger=(format!("every {REFRESH_SECONDS}s")) hx-swap="innerHTML" {
                        (main)
                    }
                } @else {
                    main id="main" { (main) }
                }
            }
        }
    }
}

/// The overview: each service's processes and listeners.
pub(crate) fn overview(base: &str, services: &[ServiceView]) -> Markup {
    let processes: Vec<&ProcessView> = services.iter().flat_map(|s| &s.processes).collect();
    let alive = processes
        .iter()
        .filter(|p| p.liveness == Liveness::Alive)
        .count();
    html! {
        h1 { "Overview" }
        p.summary {
            span data-services=(services.len()) { (services.len()) " services" } ", "
            span data-alive=(alive) { (alive) " processes alive" } ", "
            span data-stale=(processes.len() - alive) { (processes.len() - alive) " stale" }
        }
        @if services.is_empty() {
            p.empty { "No status records yet: services publish theirs every few seconds on "
                code { "<service>.private.status" } "." }
        }
        @for s in services {
            section.service data-service=(s.name) data-processes=(s.processes.len()) {
                h2 { (s.name) " " a.dlq href=(dlq_href(base, &s.name)) { "dead letters" } }
                @if s.processes.is_empty() {
                    p.stale { "No process of this service runs: what is sent to it waits." }
                } @else {
                    (process_table(&s.processes))
                }
                @if !s.listeners.is_empty() {
                    (listener_table(base, s))
                }
            }
        }
    }
}

fn process_table(processes: &[ProcessView]) -> Markup {
    html! {
        table.processes {
            thead { tr { th { "process" } th { "state" } th { "atoll" } th { "build" }
                th { "up since" } } }
            tbody {
                @for p in processes {
                    tr data-process=(p.name) {
                        td { (p.name) }
                        @match p.liveness {
                            Liveness::Alive => td.alive data-state="alive" { "alive" },
                            Liveness::Stale(s) => td.stale data-state="stale" {
                                "stale (" (s) " s)" },
                        }
                        td { (p.last.atoll_version) }
                        td { (p.last.build.as_deref().unwrap_or("–")) }
                        td data-started-ms=(p.last.started_ms) { (time(p.last.started_ms)) }
                    }
                }
            }
        }
    }
}

fn listener_table(base: &str, s: &ServiceView) -> Markup {
    html! {
        table.listeners {
            thead { tr { th { "listener" } th { "processes" } th { "lag" } th { "lag (s)" }
                th { "trend" } th { "records/s" } th { "p99 (ms)" } th { "failures" }
                th { "dead letters" } th { "live sagas" } } }
            tbody {
                @for l in &s.listeners {
                    tr data-listener=(l.name) {
                        td { a href=(listener_href(base, &s.name, &l.name)) { (l.name) } }
                        td { (l.processes.len()) }
                        td data-lag=(l.lag) { (l.lag) }
                        td data-lag-seconds=(l.lag_seconds) { (format!("{:.1}", l.lag_seconds)) }
                        td class=(format!("trend {}", l.trend.as_str())) data-trend=(l.trend.as_str()) {
                            (l.trend.as_str()) }
                        td data-rate=(l.rate) { (format!("{:.1}", l.rate)) }
                        td data-p99-ms=[l.p99_ms] { (ms(l.p99_ms)) }
                        td data-failed=(failures(l)) { (failures(l)) }
                        td data-dead-lettered=(l.dead_lettered) { (l.dead_lettered) }
                        td data-sagas-live=[l.sagas_live] {
                            (l.sagas_live.map_or("–".to_owned(), |n| n.to_string())) }
                    }
                }
            }
        }
    }
}

/// A listener's page: its partitions with their owners, its lag and rate over time, its last
/// failures.
///
/// With `csrf` (the console acts), each partition of the listener's topic has a form holding
/// it, or lifting its hold.
pub(crate) fn listener(base: &str, service: &str, l: &ListenerView, csrf: Option<&str>) -> Markup {
    let chart = serde_json::json!({
        "t": l.history.iter().map(|p| p.0 as f64 / 1000.0).collect::<Vec<_>>(),
        "lag": l.history.iter().map(|p| p.1).collect::<Vec<_>>(),
        "rate": l.history.iter().map(|p| p.2).collect::<Vec<_>>(),
    });
    html! {
        h1 { (service) " · " (l.name) }
        p { "group " code { (l.group) } ", lag " span data-lag=(l.lag) { (l.lag) }
            " (" (l.trend.as_str()) "), " (format!("{:.1}", l.rate)) " records/s" }
        div.chart data-chart=(chart.to_string()) {}
        h2 { "Partitions" }
        table.partitions {
            thead { tr { th { "topic" } th { "partition" } th { "owner" } th { "committed" }
                th { "end" } th { "lag" } th { "lag (s)" } th { "state" }
                @if csrf.is_some() { th { "hold" } } } }
            tbody {
                @for (owner, p) in &l.partitions {
                    tr data-partition=(p.partition) data-topic=(p.topic) {
                        td { (p.topic) }
                        td { (p.partition) }
                        td data-owner=(owner) { (owner) }
                        td data-committed=[p.committed] { (num(p.committed)) }
                        td data-end=[p.end] { (num(p.end)) }
                        td data-lag=[p.lag] { (num(p.lag)) }
                        td { (p.lag_seconds.map_or("–".to_owned(), |s| format!("{s:.1}"))) }
                        @if let Some(h) = &p.held {
                            td.held data-state="held" data-held-by=(h.by) {
                                "held by " (h.by) @if !h.reason.is_empty() { ": " (h.reason) }
                                " (since " (time(h.at_ms)) ")" }
                        } @else if let Some(why) = &p.blocked {
                            td.blocked data-state="blocked" { "blocked: " (why) }
                        } @else if p.paused && atoll::contract::is_retry_topic(&p.topic) {
                            td.paused data-state="paused" { "paused (waiting until due, or buffer full)" }
                        } @else if p.paused {
                            td.paused data-state="paused" { "paused (buffer full)" }
                        } @else {
                            td data-state="running" { "running" }
                        }
                        @if let Some(csrf) = csrf {
                            td { @if !atoll::contract::is_retry_topic(&p.topic) {
                                (crate::holds::form(base, service, &l.name, p, csrf)) } }
                        }
                    }
                }
            }
        }
        h2 { "Last failures" }
        @if l.last_errors.is_empty() { p.empty { "None since the processes started." } }
        @else {
            table.errors {
                thead { tr { th { "when" } th { "process" } th { "kind" } th { "then" }
                    th { "record" } th { "cause" } } }
                tbody {
                    @for (process, e) in &l.last_errors {
                        tr data-kind=(e.kind) {
                            td { (time(e.at_ms)) }
                            td { (process) }
                            td { (e.kind) }
                            td data-then=(e.then) { (e.then) }
                            td { (e.topic) "/" (e.partition) "@" (e.offset) }
                            td.cause { (e.cause) }
                        }
                    }
                }
            }
        }
    }
}

/// The store page: each process's outbox and inbox.
pub(crate) fn store(services: &[ServiceView]) -> Markup {
    html! {
        h1 { "Store" }
        p { "The outbox holds what transactions wrote and the relay has not published yet; "
            "the inbox, which records transactional listeners handled." }
        table.store {
            thead { tr { th { "service" } th { "process" } th { "outbox rows" }
                th { "oldest (s)" } th { "relayed" } th { "publish failures" }
                th { "dead-lettered" } th { "inbox rows" } } }
            tbody {
                @for s in services { @for p in &s.processes {
                    @if let (Some(o), Some(i)) = (&p.last.outbox, &p.last.inbox) {
                        tr data-service=(s.name) data-process=(p.name) {
                            td { (s.name) }
                            td { (p.name) }
                            td data-outbox-rows=(o.rows) { (o.rows) }
                            td { (o.oldest_seconds.map_or("–".to_owned(), |s| format!("{s:.1}"))) }
                            td data-relayed=(o.relayed) { (o.relayed) }
                            td { (o.failed) }
                            td { (o.dead_lettered) }
                            td data-inbox-rows=(i.rows) { (i.rows) }
                        }
                    }
                } }
            }
        }
    }
}

/// A page saying what was not found.
pub(crate) fn not_found(what: &str) -> Markup {
    html! { h1 { "Not found" } p { (what) } }
}

/// The link to a listener's page.
pub(crate) fn listener_href(base: &str, service: &str, listener: &str) -> String {
    format!(
        "{base}/listener?service={}&name={}",
        query(service),
        query(listener)
    )
}

/// A page choosing a service: `title`, and each service linked by `href`.
pub(crate) fn services_index(
    title: &str,
    services: &[String],
    href: impl Fn(&str) -> String,
) -> Markup {
    html! {
        h1 { (title) }
        ul.services {
            @for s in services { li { a href=(href(s)) { (s) } } }
        }
    }
}

/// The link to a service's dead letters.
pub(crate) fn dlq_href(base: &str, service: &str) -> String {
    format!("{base}/dlq?service={}", query(service))
}

/// `s` as a query value: service and listener names are `[a-z0-9._-]`, which need no
/// escaping; anything else is percent-encoded.
pub(crate) fn query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn failures(l: &ListenerView) -> u64 {
    l.failed.values().sum()
}

fn num(n: Option<i64>) -> String {
    n.map_or("–".to_owned(), |n| n.to_string())
}

fn ms(n: Option<f64>) -> String {
    n.map_or("–".to_owned(), |n| format!("{n:.1}"))
}

/// Unix milliseconds as `YYYY-MM-DD hh:mm:ss` UTC.
pub(crate) fn time(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_civil_utc() {
        for (ms, want) in [
            (0, "1970-01-01 00:00:00"),
            (951_782_400_000, "2000-02-29 00:00:00"),
            (1_796_601_599_000, "2026-12-06 23:59:59"),
            (-1_000, "1969-12-31 23:59:59"),
        ] {
            assert_eq!(time(ms), want, "{ms}");
        }
    }

    #[test]
    fn names_go_into_links_escaped() {
        assert_eq!(
            listener_href("/c", "acme.shop.orders", "place-order"),
            "/c/listener?service=acme.shop.orders&name=place-order"
        );
        assert_eq!(query("a b&c"), "a%20b%26c");
    }
}
