//! Helpers shared by the embedded-broker tests.

// Each test crate uses some of them.
#![allow(dead_code, unused_imports)]

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A one-broker mock cluster holding `topics`, and a configuration for it that creates no
/// topics at start.
pub(crate) fn mock_cluster(
    topics: impl IntoIterator<Item = atoll::contract::TopicSpec>,
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    atoll::config::Config,
) {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    for t in topics {
        cluster
            .create_topic(t.name.as_str(), t.partitions, 1)
            .unwrap();
    }
    let mut config = atoll::config::Config::default();
    config.kafka.bootstrap_servers = Some(cluster.bootstrap_servers());
    config.kafka.create_topics = false;
    (cluster, config)
}

/// Reads partitions `0..partitions` of `topic` from the beginning until `n` records were read
/// or 30 s passed. Blocking: call it from `spawn_blocking`.
pub(crate) fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Vec<OwnedMessage> {
    read_topic_within(bootstrap, topic, partitions, n, Duration::from_secs(30))
}

/// Like [`read_topic`], waiting at most `wait`: for checks that no more than some records
/// arrive, which must wait out the whole time.
pub(crate) fn read_topic_within(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    wait: Duration,
) -> Vec<OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

/// The offset `group` committed for partition 0 of `topic`. Blocking: call it from
/// `spawn_blocking`.
pub(crate) fn committed(bootstrap: &str, group: &str, topic: &str) -> Offset {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    c.committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()[0]
        .offset()
}

pub(crate) use atoll::envelope::header_str as header;

/// `GET http://<addr><path>`: the status code and body.
pub(crate) async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A sample's labels, as (name, value) pairs.
pub(crate) type Labels = Vec<(String, String)>;

/// A parsed `/metrics` exposition: every sample as (name, labels, value).
#[derive(Debug)]
pub(crate) struct Exposition(pub(crate) Vec<(String, Labels, f64)>);

impl Exposition {
    /// Parses the OpenMetrics text format strictly: every line is a `# HELP`, `# TYPE` or
    /// `# UNIT` comment or a sample of a family declared before it, and the text ends with
    /// `# EOF`.
    pub(crate) fn parse(text: &str) -> Self {
        let mut families: Vec<(String, String)> = Vec::new();
        let mut samples = Vec::new();
        let mut lines = text.lines().peekable();
        let mut eof = false;
        while let Some(line) = lines.next() {
            if line == "# EOF" {
                assert!(lines.peek().is_none(), "text after # EOF");
                eof = true;
                break;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "unexpected type in {line}"
                );
                families.push((name.to_owned(), kind.to_owned()));
                continue;
            }
            if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), Vec::new()),
                Some((name, rest)) => {
                    let body = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv
                                .split_once("=\"")
                                .unwrap_or_else(|| panic!("bad label in {line:?}"));
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            let declared = families.iter().any(|(f, kind)| {
                let suffixes: &[&str] = match kind.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_sum", "_count", "_created"],
                    _ => &[""],
                };
                suffixes.iter().any(|s| name == format!("{f}{s}"))
            });
            assert!(declared, "sample {name} of no declared family");
            samples.push((name, labels, value));
        }
        assert!(eof, "the exposition must end with # EOF");
        Self(samples)
    }

    /// The samples named `name` whose labels include every one of `with`.
    pub(crate) fn values(&self, name: &str, with: &[(&str, &str)]) -> Vec<(Labels, f64)> {
        self.0
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }

    /// The sum of [`values`](Self::values).
    pub(crate) fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.values(name, with).iter().map(|(_, v)| v).sum()
    }
}

/// Scrapes `/metrics`.
pub(crate) async fn scrape(addr: std::net::SocketAddr) -> Exposition {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    Exposition::parse(&body)
}

/// Polls `check` every 100 ms until it holds or `secs` passed; whether it held.
pub(crate) async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Registers `schema` under `subject` with a bare HTTP/1.1 request; returns its id.
pub(crate) async fn register_schema(url: &str, subject: &str, schema: &str) -> u32 {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").to_owned();
    let body = serde_json::json!({ "schema": schema }).to_string();
    let subject = subject.to_owned();
    tokio::task::spawn_blocking(move || {
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let req = format!(
        "POST /subjects/{subject}/versions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let json = out.split("\r\n\r\n").nth(1).unwrap().to_owned();
    serde_json::from_str::<serde_json::Value>(&json).unwrap()["id"].as_u64().unwrap() as u32
    })
    .await
    .unwrap()
}
