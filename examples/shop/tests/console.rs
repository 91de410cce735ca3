//! The operator console, as a person uses it: the shop's six services on tansu, the console
//! served inside storefront (`shop serve storefront --console`), read with headless Chromium
//! and clicked with puppeteer-core (holds, group resets, redrives).
//! With orders done, payments stopped (three orders' sagas then wait for it) and a dead letter
//! made, the pages must show what the cluster holds: the committed offsets and lag of a
//! listener's partitions, the dead letters on a service's DLQ, the sagas waiting, the service
//! nobody runs. Screenshots of the pages land in `target/console-screenshots/` (and, with
//! `SHOP_SCREENSHOTS=<dir>`, there: `scripts/console-screenshots` writes the docs' pictures).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use atoll_testkit::browser::{self, Step};
use atoll_testkit::process::Proc;
use atoll_testkit::Tansu;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, TopicPartitionList};

use atoll::Event;
use common::SHOP;
use example_shop::orders::{OrderCancelled, OrderCompleted};

/// The console's action token (storefront serves the console).
const TOKEN: &str = "console-token-7f3a";

/// The statistics (committed offsets, ends) and status records come every second.
const FAST: [(&str, &str); 2] = [
    ("ATOLL_STATUS__INTERVAL_MS", "1000"),
    ("ATOLL_KAFKA__PROPERTIES__STATISTICS_INTERVAL_MS", "1000"),
];

fn serve(broker: &Tansu, service: &str, extra: &[(String, String)]) -> Proc {
    serve_with(broker, service, extra, &[])
}

/// As [`serve`], with more arguments (a fault to inject).
fn serve_with(broker: &Tansu, service: &str, extra: &[(String, String)], args: &[&str]) -> Proc {
    let mut env = common::own_sqlite_env(broker, service);
    env.extend(FAST.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env.extend(extra.iter().cloned());
    let mut all = vec!["serve", service];
    if service == "storefront" {
        all.push("--console");
    }
    all.extend(args);
    Proc::start(SHOP, &all, &env)
}

fn place(broker: &Tansu, orders: &str, timeout_secs: &str) -> bool {
    Command::new(SHOP)
        .args(["place", "--orders", orders, "--timeout-secs", timeout_secs])
        .envs(broker.env())
        .output()
        .expect("run shop place")
        .status
        .success()
}

/// The value of attribute `attr` after the first `from` marker that follows each marker of
/// `path` in turn (a section, then a row, then a cell).
fn attr(dom: &str, path: &[&str], attr: &str) -> Option<String> {
    let mut at = 0;
    for marker in path {
        at += dom[at..].find(marker)? + marker.len();
    }
    let key = format!("{attr}=\"");
    let start = at + dom[at..].find(&key)? + key.len();
    let end = start + dom[start..].find('"')?;
    Some(dom[start..end].to_owned())
}

/// Per partition: (committed, end) of `group` on `topic`, as the cluster has them.
fn cluster_offsets(bootstrap: &str, group: &str, topic: &str) -> BTreeMap<i32, (i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    committed
        .elements()
        .iter()
        .map(|e| {
            let (_, end) = c
                .fetch_watermarks(topic, e.partition(), Duration::from_secs(10))
                .unwrap();
            (e.partition(), (e.offset().to_raw().unwrap_or(-1), end))
        })
        .collect()
}

/// Records on `topic`, all partitions.
fn records_on(bootstrap: &str, topic: &str) -> i64 {
    cluster_offsets(bootstrap, "atoll-test-count", topic)
        .values()
        .map(|(_, end)| end)
        .sum()
}

fn screenshots_dir() -> PathBuf {
    std::env::var_os("SHOP_SCREENSHOTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots"),
        PathBuf::from,
    )
}

#[test]
fn the_console_shows_the_shop_as_the_cluster_holds_it() {
    let broker = Tansu::start();
    let bootstrap = broker.bootstrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut procs: BTreeMap<&str, Proc> = example_shop::SERVICES
        .iter()
        .map(|s| {
            let extra = match *s {
                "storefront" => vec![
                    ("ATOLL_HTTP__ADDR".to_owned(), http.to_string()),
                    ("ATOLL_CONSOLE__TOKEN".to_owned(), TOKEN.to_owned()),
                ],
                _ => Vec::new(),
            };
            (*s, serve(&broker, s, &extra))
        })
        .collect();
    common::joined(&procs.values().collect::<Vec<_>>());
    assert!(place(&broker, "20", "120"), "20 orders end");

    // Payments stops: the next orders' sagas wait for their charge.
    procs.get_mut("payments").unwrap().terminate();
    assert!(
        !place(&broker, "3", "3"),
        "the orders cannot end without payments"
    );
    // A record no listener can read, for inventory's DLQ.
    let producer = atoll_testkit::raw_producer(&bootstrap);
    atoll_testkit::send_waiting(
        &producer,
        rdkafka::producer::BaseRecord::to("acme.shop.inventory.commands")
            .key("garbage")
            .payload("{not json"),
    );
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).unwrap();

    let base = format!("http://{http}/console");
    let dlq = "acme.shop.inventory.private.dlq";
    let deadline = Instant::now() + Duration::from_secs(90);
    let overview = loop {
        let dom = browser::dom(&base);
        let inventory = "data-service=\"acme.shop.inventory\"";
        let dead: i64 = ["report-stock", "reserve-stock", "release-stock"]
            .iter()
            .filter_map(|l| {
                let row = format!("data-listener=\"{l}\"");
                attr(&dom, &[inventory, &row], "data-dead-lettered")?
                    .parse::<i64>()
                    .ok()
            })
            .sum();
        let sagas = attr(
            &dom,
            &[
                "data-service=\"acme.shop.orders\"",
                "data-listener=\"order-saga\"",
            ],
            "data-sagas-live",
        );
        let payments = dom.contains("data-service=\"acme.shop.payments\" data-processes=\"0\"");
        let on_dlq = records_on(&bootstrap, dlq);
        // Every process's status read, the stopped one's tombstone too.
        let alive = dom.contains("data-alive=\"5\"");
        if dead > 0 && dead == on_dlq && sagas.as_deref() == Some("3") && payments && alive {
            break dom;
        }
        assert!(
            Instant::now() < deadline,
            "the console never showed it all ({dead} dead letters shown, {on_dlq} on {dlq}, \
             sagas {sagas:?}, payments without processes: {payments}, five alive: {alive}):\n{dom}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(overview.contains("data-services=\"6\""), "{overview}");
    assert!(
        overview.contains("data-alive=\"5\""),
        "five processes run: {overview}"
    );

    // A listener's page: its partitions' committed offsets and lag, as the cluster has them.
    let group = "acme.shop.inventory-reserve-stock";
    let topic = "acme.shop.inventory.commands";
    let page = format!("{base}/listener?service=acme.shop.inventory&name=reserve-stock");
    let deadline = Instant::now() + Duration::from_secs(30);
    let listener = loop {
        let dom = browser::dom(&page);
        let cluster = cluster_offsets(&bootstrap, group, topic);
        let shown: BTreeMap<i32, (i64, i64)> = cluster
            .keys()
            .filter_map(|p| {
                let row = format!("data-partition=\"{p}\" data-topic=\"{topic}\"");
                let committed = attr(&dom, &[&row], "data-committed")?.parse().ok()?;
                let lag: i64 = attr(&dom, &[&row], "data-lag")?.parse().ok()?;
                Some((*p, (committed, committed + lag)))
            })
            .collect();
        if shown == cluster && cluster.values().any(|(c, _)| *c > 0) {
            break dom;
        }
        assert!(
            Instant::now() < deadline,
            "the page shows {shown:?}, the cluster holds {cluster:?}:\n{dom}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        listener.contains("class=\"uplot"),
        "the chart is drawn: {listener}"
    );

    let store = browser::dom(&format!("{base}/store"));
    assert!(
        attr(
            &store,
            &["data-service=\"acme.shop.inventory\""],
            "data-outbox-rows"
        )
        .is_some(),
        "inventory's store: {store}"
    );

    dead_letters(&base, &bootstrap, dlq);
    holds(&base, &bootstrap);
    sagas(&base, &bootstrap);
    groups(&base, &bootstrap);
    topology(&base);
    let storefront = procs["storefront"].log();
    assert!(
        !storefront.contains(TOKEN),
        "the token in a log:\n{storefront}"
    );
    assert!(
        storefront.contains("console: partition held")
            && storefront.contains("console: hold lifted"),
        "the actions are logged:\n{storefront}"
    );

    let dir = screenshots_dir();
    browser::screenshot(&base, &dir.join("console-overview.png"), 1400, 1400);
    browser::screenshot(&page, &dir.join("console-listener.png"), 1400, 1000);
    browser::screenshot(
        &format!("{base}/store"),
        &dir.join("console-store.png"),
        1400,
        700,
    );
    browser::screenshot(
        &format!("{base}/topology"),
        &dir.join("console-topology.png"),
        1400,
        1100,
    );
    browser::screenshot(
        &format!("{base}/sagas?service=acme.shop.orders"),
        &dir.join("console-sagas.png"),
        1400,
        900,
    );
    browser::screenshot(
        &format!("{base}/dlq?service=acme.shop.inventory"),
        &dir.join("console-dead-letters.png"),
        1400,
        700,
    );
    redrive_ends_an_order(&broker, &base, &mut procs);
    for p in procs.values_mut() {
        if p.running() {
            p.terminate();
        }
    }
}

#[test]
fn the_console_needs_the_cluster_and_the_http_server() {
    for (env, says) in [
        (
            vec![],
            "--console reads the cluster: set ATOLL_KAFKA__BOOTSTRAP_SERVERS",
        ),
        (
            vec![("ATOLL_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9")],
            "--console is served on the service's HTTP server: set ATOLL_HTTP__ADDR",
        ),
    ] {
        let out = Command::new(SHOP)
            .args(["serve", "shipping", "--console"])
            .env_remove("ATOLL_KAFKA__BOOTSTRAP_SERVERS")
            .env_remove("ATOLL_HTTP__ADDR")
            .envs(env)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{err}");
    }
}

/// The dead-letter page shows inventory's DLQ as the cluster holds it; a redrive is refused
/// without the token, with a wrong one, and from a form the console did not serve; with the
/// token, a dry run says what it would do and a redrive re-publishes the record for the
/// listener that failed it.
fn dead_letters(base: &str, bootstrap: &str, dlq: &str) {
    let page = format!("{base}/dlq?service=acme.shop.inventory");
    let dom = browser::dom(&page);
    let total = attr(&dom, &[], "data-dead-letters-total").unwrap();
    assert_eq!(
        total.parse::<i64>().unwrap(),
        records_on(bootstrap, dlq),
        "{dom}"
    );
    let at = attr(&dom, &["<tbody>"], "data-dlq").expect("a dead letter's row");
    assert!(
        dom.contains("\"garbage\"") || dom.contains(">garbage<"),
        "its key: {dom}"
    );
    let csrf = attr(&dom, &["name=\"csrf\""], "value").expect("the redrive form");
    assert!(!dom.contains(TOKEN));

    let post = |fields: &[(&str, String)], origin: &str| {
        let client = reqwest::blocking::Client::new();
        let r = client
            .post(format!("{base}/dlq/redrive"))
            .header("Origin", origin)
            .form(fields)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let ours = format!(
        "http://{}",
        base.trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
    );
    let one = |token: &'static str, csrf: &str, dry: bool| {
        let mut f = vec![
            ("service", "acme.shop.inventory".to_owned()),
            ("at", at.clone()),
            ("token", token.to_owned()),
            ("csrf", csrf.to_owned()),
            ("rate", "5".to_owned()),
        ];
        if dry {
            f.push(("dry_run", "on".to_owned()));
        }
        f
    };
    for (form, origin, says) in [
        (
            one("", &csrf, false),
            ours.as_str(),
            "the token is not this console's",
        ),
        (
            one("wrong", &csrf, false),
            ours.as_str(),
            "the token is not this console's",
        ),
        (
            one(TOKEN, "forged", false),
            ours.as_str(),
            "did not come from this console's own page",
        ),
        (
            one(TOKEN, &csrf, false),
            "http://evil.example",
            "did not come from this console's own page",
        ),
    ] {
        let (status, body) = post(&form, origin);
        assert_eq!(status, 403, "{body}");
        assert!(body.contains(says) && !body.contains(TOKEN), "{body}");
    }
    assert_eq!(
        records_on(bootstrap, dlq),
        total.parse::<i64>().unwrap(),
        "nothing redriven"
    );

    let mut slow = one(TOKEN, &csrf, true);
    slow.retain(|(k, _)| *k != "rate");
    slow.push(("rate", "0".to_owned()));
    let (status, body) = post(&slow, &ours);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`0` is no rate"), "{body}");
    let mut nobody = one(TOKEN, &csrf, true);
    nobody.retain(|(k, _)| *k != "service");
    let (status, body) = post(&nobody, &ours);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("which service"), "{body}");

    let (status, body) = post(&one(TOKEN, &csrf, true), &ours);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("would replay acme.shop.inventory.private.dlq/"),
        "{body}"
    );

    let commands = "acme.shop.inventory.commands";
    let before = records_on(bootstrap, commands);
    let real = one(TOKEN, &csrf, false);
    let (status, body) = post(&real, &ours);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("replayed acme.shop.inventory.private.dlq/"),
        "{body}"
    );
    assert!(!body.contains(TOKEN));
    assert_eq!(
        records_on(bootstrap, commands),
        before + 1,
        "re-published once"
    );
    // A second redrive of the same dead letter is skipped: it was remembered.
    let (_, again) = post(&real, &ours);
    assert!(again.contains("already replayed"), "{again}");
}

/// Holds partition 0 of inventory's `reserve-stock` from its page, clicking as a person does:
/// refused with a wrong token; with the token, the page shows it held and the listener's
/// committed offset stays put while records arrive on it; lifting the hold (another click)
/// lets it catch up to the end.
fn holds(base: &str, bootstrap: &str) {
    let (group, topic) = (
        "acme.shop.inventory-reserve-stock",
        "acme.shop.inventory.commands",
    );
    let page = format!("{base}/listener?service=acme.shop.inventory&name=reserve-stock");
    let row = format!("tr[data-partition=\"0\"][data-topic=\"{topic}\"]");
    let form = format!("{row} form.hold");
    let click = |token: &str, hold: bool| {
        let mut steps = vec![
            Step::Goto(page.clone()),
            Step::Wait(format!("{form} button")),
        ];
        if hold {
            steps.push(Step::Click(format!("{row} details.hold summary")));
            steps.push(Step::Fill(
                format!("{form} input[name=by]"),
                "ops-anna".into(),
            ));
            steps.push(Step::Fill(
                format!("{form} input[name=reason]"),
                "stock count".into(),
            ));
        }
        steps.push(Step::Fill(
            format!("{form} input[name=token]"),
            token.into(),
        ));
        steps.push(Step::Submit(format!("{form} button")));
        steps.push(Step::Dom);
        browser::act(&steps)
    };
    let refused = click("not-the-token", true);
    assert_eq!(refused.statuses, [200, 403], "{:?}", refused.doms);
    assert!(refused.doms[0].contains("Refused"), "{}", refused.doms[0]);

    let held = click(TOKEN, true);
    assert_eq!(held.statuses, [200, 200], "{:?}", held.doms);
    assert!(held.doms[0].contains("data-held=\"0\""), "{}", held.doms[0]);
    // The owner obeys, and says so in its next status.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dom = browser::dom(&page);
        let cell = format!("data-partition=\"0\" data-topic=\"{topic}\"");
        if attr(&dom, &[&cell, "data-state=\"held\""], "data-held-by").as_deref()
            == Some("ops-anna")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partition 0 never shown held:\n{dom}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let before = cluster_offsets(bootstrap, group, topic)[&0];
    let producer = atoll_testkit::raw_producer(bootstrap);
    for i in 0..3 {
        atoll_testkit::send_waiting(
            &producer,
            rdkafka::producer::BaseRecord::to(topic)
                .partition(0)
                .key(&format!("held-{i}"))
                .payload("{not json"),
        );
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).unwrap();
    // Three statistics intervals: a listener that fetched would have committed by then.
    std::thread::sleep(Duration::from_secs(4));
    let (committed, end) = cluster_offsets(bootstrap, group, topic)[&0];
    assert_eq!(end, before.1 + 3, "the records arrived");
    assert_eq!(committed, before.0, "a held partition makes no progress");

    let lifted = click(TOKEN, false);
    assert_eq!(lifted.statuses, [200, 200], "{:?}", lifted.doms);
    assert!(
        lifted.doms[0].contains("data-lifted=\"0\""),
        "{}",
        lifted.doms[0]
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (committed, end) = cluster_offsets(bootstrap, group, topic)[&0];
        if committed == end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partition 0 did not catch up after its hold was lifted: {committed} of {end}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The orders service's saga states now, as its `private.saga` topic holds them (the last
/// record of each key, as compaction keeps it): by state, and the keys of the live ones.
fn saga_states(bootstrap: &str) -> (BTreeMap<String, usize>, Vec<String>) {
    let topic = "acme.shop.orders.private.saga";
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "atoll-test-sagas")
        .create()
        .unwrap();
    let ends = cluster_offsets(bootstrap, "atoll-test-sagas", topic);
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let total: i64 = ends.values().map(|(_, end)| end).sum();
    let mut latest: BTreeMap<String, Option<atoll::contract::saga::SagaState>> = BTreeMap::new();
    let (mut read, deadline) = (0, Instant::now() + Duration::from_secs(30));
    while read < total && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            use rdkafka::Message;
            read += 1;
            let key = String::from_utf8_lossy(m.key().unwrap()).into_owned();
            let state = m.payload().map(|p| serde_json::from_slice(p).unwrap());
            latest.insert(key, state);
        }
    }
    assert_eq!(read, total, "read the whole saga topic");
    let mut by_state = BTreeMap::new();
    let mut live = Vec::new();
    for (key, state) in latest {
        let Some(state) = state else { continue };
        let name = serde_json::to_value(state.status).unwrap();
        let name = name.as_str().unwrap().to_owned();
        if state.pending.is_some() {
            live.push(key);
        }
        *by_state.entry(name).or_insert(0) += 1;
    }
    (by_state, live)
}

/// The sagas page counts the orders' saga instances by state as the cluster holds them; the
/// three waiting for payments (stopped) time out, then their refunds time out too: they are
/// shown timed out and stuck, and one's page shows its timeline.
fn sagas(base: &str, bootstrap: &str) {
    let page = format!("{base}/sagas?service=acme.shop.orders");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (dom, live) = loop {
        let dom = browser::dom(&page);
        let (by_state, live) = saga_states(bootstrap);
        let shown: BTreeMap<String, usize> = ["running", "compensating", "completed", "failed"]
            .iter()
            .filter_map(|s| {
                let n = attr(&dom, &[&format!("data-saga-count=\"{s}\"")], "data-count")?;
                let n: usize = n.parse().ok()?;
                (n > 0).then(|| ((*s).to_owned(), n))
            })
            .collect();
        let stuck = attr(&dom, &["data-saga-count=\"stuck\""], "data-count");
        if shown == by_state && live.len() == 3 && stuck.as_deref() == Some("3") {
            break (dom, live);
        }
        assert!(
            Instant::now() < deadline,
            "the sagas page shows {shown:?} (stuck {stuck:?}), the cluster holds {by_state:?} \
             with {} live:\n{dom}",
            live.len()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    for key in &live {
        let row = format!("data-saga=\"{key}\"");
        assert_eq!(
            attr(&dom, &[&row], "data-stuck").as_deref(),
            Some("true"),
            "{dom}"
        );
        assert_eq!(
            attr(&dom, &[&row], "data-state").as_deref(),
            Some("compensating"),
            "{dom}"
        );
    }
    let timed_out = browser::dom(&format!("{page}&show=timed_out"));
    let shown: usize = attr(&timed_out, &[], "data-shown")
        .unwrap()
        .parse()
        .unwrap();
    assert!(shown >= 3, "the timed-out filter: {timed_out}");
    let one = browser::dom(&format!(
        "{base}/saga?service=acme.shop.orders&key={}",
        live[0].replace('/', "%2F")
    ));
    assert!(one.contains("data-ended=\"timed_out\""), "{one}");
    assert!(
        one.matches("data-version=").count() >= 2,
        "a timeline of its versions: {one}"
    );
}

/// The groups page shows inventory's groups with their members and committed offsets as the
/// cluster has them; moving a running group's offsets (clicked, with the token) is refused.
fn groups(base: &str, bootstrap: &str) {
    let (group, topic) = (
        "acme.shop.inventory-reserve-stock",
        "acme.shop.inventory.commands",
    );
    let page = format!("{base}/groups?service=acme.shop.inventory");
    let section = format!("section[data-group=\"{group}\"]");
    let dom = browser::dom(&page);
    let marker = format!("data-group=\"{group}\"");
    assert_eq!(
        attr(&dom, &[&marker], "data-members").as_deref(),
        Some("1"),
        "{dom}"
    );
    for (p, (committed, _)) in cluster_offsets(bootstrap, group, topic) {
        let row = format!("data-partition=\"{p}\"");
        let shown = attr(
            &dom,
            &[&marker, &format!("data-topic=\"{topic}\""), &row],
            "data-committed",
        );
        assert_eq!(shown, Some(committed.to_string()), "partition {p}: {dom}");
    }
    let form = format!("{section} form.reset");
    let acted = browser::act(&[
        Step::Goto(page.clone()),
        Step::Click(format!("{section} details.reset summary")),
        Step::Fill(
            format!("{form} input[name=time]"),
            "2026-12-07T08:00:00".into(),
        ),
        Step::Check(format!("{form} input[name=dry_run]"), false),
        Step::Fill(format!("{form} input[name=token]"), TOKEN.into()),
        Step::Submit(format!("{form} button")),
        Step::Dom,
    ]);
    assert_eq!(acted.statuses, [200, 409], "{:?}", acted.doms);
    assert!(acted.doms[0].contains("1 member(s)"), "{}", acted.doms[0]);
}

/// The topology page draws the shop's flows from what its processes report: the orders saga
/// sends inventory's and payments' commands, inventory reads its own, storefront reads the
/// orders' facts; each edge with a rate.
fn topology(base: &str) {
    let dom = browser::dom(&format!("{base}/topology"));
    let edges = [
        ("acme.shop.orders", "acme.shop.inventory.commands"),
        ("acme.shop.orders", "acme.shop.payments.commands"),
        ("acme.shop.inventory.commands", "acme.shop.inventory"),
        ("acme.shop.orders.commands", "acme.shop.orders"),
    ];
    for (from, to) in edges {
        let edge = format!("data-from=\"{from}\" data-to=\"{to}\"");
        let rate: Option<f64> = attr(&dom, &[&edge], "data-rate").and_then(|r| r.parse().ok());
        assert!(
            rate.is_some_and(|r| r >= 0.0),
            "no edge {from} → {to} with a rate:\n{dom}"
        );
    }
    assert!(
        !dom.contains(".private.status"),
        "atoll's own topics are left out: {dom}"
    );
}

/// A deploy of orders with a bug dead-letters an order; once orders runs fixed (and payments
/// runs again), a redrive clicked on the dead-letter page ends that order.
fn redrive_ends_an_order(broker: &Tansu, base: &str, procs: &mut BTreeMap<&str, Proc>) {
    let bootstrap = broker.bootstrap();
    let kafka =
        atoll_console::dlq::Kafka::new(ClientConfig::new().set("bootstrap.servers", &bootstrap))
            .unwrap();
    let read = |topic: &str| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let _inside = runtime.enter();
        kafka.read_all(topic).unwrap()
    };
    let dlq = "acme.shop.orders.private.dlq";
    procs.get_mut("orders").unwrap().terminate();
    let refusing = serve_with(broker, "orders", &[], &["--refuse-orders"]);
    common::joined(&[&refusing]);
    let before = records_on(&bootstrap, dlq);
    assert!(!place(broker, "1", "5"), "a refused order does not end");
    let deadline = Instant::now() + Duration::from_secs(30);
    while records_on(&bootstrap, dlq) == before {
        assert!(
            Instant::now() < deadline,
            "the refused order was not dead-lettered"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let letters = read(dlq);
    let refused = letters
        .iter()
        .find(|d| d.cause().is_some_and(|c| c.contains("--refuse-orders")));
    let order = refused
        .and_then(|d| d.key.clone())
        .expect("the refused order's key");
    let order = String::from_utf8(order).unwrap();

    // The fix: orders as it should run, and payments back.
    let mut refusing = refusing;
    refusing.terminate();
    procs.insert("orders", serve(broker, "orders", &[]));
    procs.insert("payments", serve(broker, "payments", &[]));
    common::joined(&[&procs["orders"], &procs["payments"]]);
    let acted = browser::act(&[
        Step::Goto(format!("{base}/dlq?service=acme.shop.orders")),
        Step::Fill("form.redrive input[name=token]".into(), TOKEN.into()),
        Step::Check("form.redrive input[name=dry_run]".into(), false),
        Step::Submit("form.redrive button".into()),
        Step::Dom,
    ]);
    assert_eq!(acted.statuses, [200, 200], "{:?}", acted.doms);
    assert!(
        acted.doms[0].contains(&format!("replayed {dlq}/")),
        "{}",
        acted.doms[0]
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ended = read("acme.shop.orders.events").into_iter().any(|e| {
            e.key.as_deref() == Some(order.as_bytes())
                && [OrderCompleted::ce_type(), OrderCancelled::ce_type()]
                    .contains(&e.ce_type().unwrap_or_default())
        });
        if ended {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "order {order} did not end after its redrive"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
