//! The driver: places orders and watches them reach a terminal fact.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll::config::Config;
use atoll::envelope::header_str;
use atoll::{Event, PrivateTopic, Running, Service};
use rand::seq::SliceRandom;
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::analytics::DailySales;
use crate::inventory::{ReportStock, StockReported, SKUS};
use crate::orders::{Item, OrderCancelled, OrderCompleted, PlaceOrder};
use crate::payments::Payments;

/// The outcome of a run: the line `summary: placed=… completed=… cancelled=… dead_lettered=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Orders placed.
    pub placed: usize,
    /// Orders that reached `order_completed`.
    pub completed: usize,
    /// Orders that reached `order_cancelled`.
    pub cancelled: usize,
    /// Records of this run's orders in any service's DLQ.
    pub dead_lettered: usize,
    /// The stock invariant (not part of the summary line).
    pub stock: StockCheck,
    /// Whether analytics' results match the outcomes (not part of the summary line).
    pub sales: SalesCheck,
}

impl Summary {
    /// Field `name` of a printed summary line (`placed`, `completed`, …).
    pub fn field(line: &str, name: &str) -> Option<usize> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    }

    /// Whether every placed order reached a terminal fact.
    pub fn all_terminal(&self) -> bool {
        self.completed + self.cancelled == self.placed
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary: placed={} completed={} cancelled={} dead_lettered={}",
            self.placed, self.completed, self.cancelled, self.dead_lettered
        )
    }
}

/// `n` random orders with ids `<run>-<i>`, of which `round(n × decline_rate)`, chosen at random,
/// exceed the payment limit (and so are declined); the others are within it.
pub fn orders(run: &str, n: usize, decline_rate: f64) -> Vec<PlaceOrder> {
    let mut rng = rand::rng();
    let mut declined = vec![false; n];
    let over = ((n as f64) * decline_rate).round() as usize;
    declined[..over.min(n)].iter_mut().for_each(|d| *d = true);
    declined.shuffle(&mut rng);
    let limit = Payments::LIMIT_CENTS;
    (0..n)
        .map(|i| {
            let items = (0..rng.random_range(1..=3))
                .map(|_| Item {
                    sku: SKUS[rng.random_range(0..SKUS.len())].to_owned(),
                    qty: rng.random_range(1..=3),
                })
                .collect();
            let amount_cents = if declined[i] {
                rng.random_range(limit + 1..=2 * limit)
            } else {
                rng.random_range(500..=limit)
            };
            PlaceOrder {
                order_id: format!("{run}-{i}"),
                customer_id: format!("c-{}", rng.random_range(0..10)),
                items,
                amount_cents,
            }
        })
        .collect()
}

/// What to place, how fast, and how long to wait for the outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// How many orders.
    pub orders: usize,
    /// The fraction of orders whose amount is above the payment limit.
    pub decline_rate: f64,
    /// Orders per second; 0 places them as fast as the broker takes them.
    pub rate: u32,
    /// How long to wait for every order to end.
    pub timeout: Duration,
}

#[derive(Default)]
struct Seen {
    terminal: HashMap<String, bool>,
    /// End facts per order: an order's end fact can be written twice (the orders saga runs at
    /// least once), and analytics writes a line per fact record.
    end_facts: HashMap<String, usize>,
    dead_lettered: usize,
    /// Stock reports by request id: content type and payload, decoded by the waiter.
    reports: HashMap<String, (Option<String>, Vec<u8>)>,
    /// Analytics' results not yet decoded: content type and payload.
    sales: Vec<(Option<String>, Vec<u8>)>,
}

/// Whether stock was conserved: final = baseline − what completed orders took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockCheck {
    /// It was.
    Conserved,
    /// It was not (or not within the wait).
    NotConserved {
        /// What it should be.
        expected: BTreeMap<String, i64>,
        /// What inventory reported last.
        got: BTreeMap<String, i64>,
    },
    /// Inventory did not report its stock (not running?).
    Unchecked,
}

impl fmt::Display for StockCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conserved => f.write_str("stock: conserved"),
            Self::NotConserved { expected, got } => {
                write!(
                    f,
                    "stock: NOT conserved: expected {expected:?}, inventory reports {got:?}"
                )
            }
            Self::Unchecked => f.write_str("stock: not checked (inventory sent no stock report)"),
        }
    }
}

/// Whether analytics' `daily_sales` results agree with the outcomes: one line per ended order
/// of the run, saying how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SalesCheck {
    /// They do.
    Matching {
        /// Lines of completed orders.
        completed: usize,
        /// Lines of cancelled orders.
        cancelled: usize,
    },
    /// They do not (or not within the wait).
    NotMatching {
        /// Ended orders without a line.
        missing: usize,
        /// Orders with more lines than end facts.
        repeated: usize,
        /// Lines whose outcome is not the order's, or of orders that did not end.
        wrong: usize,
        /// Lines that do not decode.
        unreadable: usize,
    },
    /// No line arrived (analytics does not run, or is more than 5 s behind).
    Unchecked,
}

impl SalesCheck {
    /// Compares `lines` (this run's) with the outcomes `ended` (order id → completed) and the
    /// number of end facts of each order (`facts`: one line per fact record, each once), with
    /// `unreadable` lines that did not decode.
    pub fn of(
        ended: &HashMap<String, bool>,
        facts: &HashMap<String, usize>,
        lines: &[DailySales],
        unreadable: usize,
    ) -> Self {
        if lines.is_empty() && unreadable == 0 {
            return Self::Unchecked;
        }
        let mut per_order: HashMap<&str, Vec<bool>> = HashMap::new();
        for line in lines {
            per_order
                .entry(line.order_id.as_str())
                .or_default()
                .push(line.completed);
        }
        let missing = ended
            .keys()
            .filter(|id| !per_order.contains_key(id.as_str()))
            .count();
        let repeated = per_order
            .iter()
            .filter(|(id, l)| l.len() > facts.get(**id).copied().unwrap_or(1).max(1))
            .count();
        let wrong = per_order
            .iter()
            .filter(|(id, l)| l.iter().any(|c| ended.get(**id) != Some(c)))
            .count();
        if missing + repeated + wrong + unreadable > 0 {
            return Self::NotMatching {
                missing,
                repeated,
                wrong,
                unreadable,
            };
        }
        let completed = per_order.values().filter(|l| l[0]).count();
        Self::Matching {
            completed,
            cancelled: per_order.len() - completed,
        }
    }
}

impl fmt::Display for SalesCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Matching {
                completed,
                cancelled,
            } => write!(
                f,
                "sales: one daily_sales line per end fact, once ({completed} completed, {cancelled} cancelled)"
            ),
            Self::NotMatching {
                missing,
                repeated,
                wrong,
                unreadable,
            } => write!(
                f,
                "sales: NOT matching the outcomes: {missing} orders without a line, {repeated} with more lines than end facts, {wrong} wrong, {unreadable} unreadable"
            ),
            Self::Unchecked => f.write_str("sales: not checked (no daily_sales line arrived)"),
        }
    }
}

/// Places the plan's orders through `running`'s broker and waits up to its timeout for each to be
/// terminal on `acme.shop.orders.events`.
pub async fn drive(running: &Running, config: &Config, plan: &Plan) -> anyhow::Result<Summary> {
    let Plan {
        orders: n,
        decline_rate,
        rate,
        timeout,
    } = *plan;
    let run: String = (0..6)
        .map(|_| rand::rng().random_range(b'a'..=b'z') as char)
        .collect();
    let placed = orders(&run, n, decline_rate);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let client = atoll::broker::client_config(config, running.bootstrap_servers())?;
        let (seen, stop, prefix) = (seen.clone(), stop.clone(), format!("{run}-"));
        std::thread::spawn(move || watch(client, &prefix, &seen, &stop))
    };
    let client = running.client("acme.shop.driver");
    let report = |i: usize| ReportStock {
        request_id: format!("{run}-stock-{i}"),
    };
    client.send(&report(0)).await?;
    // Before any order: as long as inventory takes to join its group and answer.
    let baseline = wait_report(
        running,
        &seen,
        &report(0).request_id,
        Duration::from_secs(60),
    )
    .await;
    let started = Instant::now();
    for (i, order) in placed.iter().enumerate() {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / f64::from(rate));
            tokio::time::sleep_until(due.into()).await;
        }
        // A broker outage or restart can fail a send: the order goes again (placing an order
        // twice is harmless: its saga starts once).
        let mut wait = Duration::from_millis(200);
        for attempt in 1.. {
            match client.send(order).await {
                Ok(_) => break,
                Err(e) if attempt < 20 => {
                    tracing::warn!(error = %e, attempt, "placing an order failed; placing it again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let deadline = Instant::now() + timeout;
    while seen.lock().terminal.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stock = match baseline {
        None => StockCheck::Unchecked,
        Some(baseline) => {
            let terminal = seen.lock().terminal.clone();
            let expected = expected_stock(baseline, &placed, &terminal);
            // Releases of cancelled orders may still be on their way: poll for a while.
            let mut got = BTreeMap::new();
            for i in 1..=20 {
                client.send(&report(i)).await?;
                got = wait_report(
                    running,
                    &seen,
                    &report(i).request_id,
                    Duration::from_secs(5),
                )
                .await
                .unwrap_or_default();
                if got == expected {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if got == expected {
                StockCheck::Conserved
            } else {
                StockCheck::NotConserved { expected, got }
            }
        }
    };
    let sales = wait_sales(running, &seen, &format!("{run}-")).await;
    // Let late dead letters arrive before counting them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || watcher.join())
        .await?
        .map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    let seen = seen.lock();
    let completed = seen.terminal.values().filter(|c| **c).count();
    Ok(Summary {
        placed: n,
        completed,
        cancelled: seen.terminal.len() - completed,
        dead_lettered: seen.dead_lettered,
        stock,
        sales,
    })
}

/// Waits for analytics' lines of every ended order of the run (its results commit with its
/// transactions, every commit interval), then a little longer for any repeat, and compares.
async fn wait_sales(running: &Running, seen: &Mutex<Seen>, prefix: &str) -> SalesCheck {
    let mut lines: Vec<DailySales> = Vec::new();
    let mut unreadable = 0;
    let mut complete_at: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (raw, ended, facts) = {
            let mut seen = seen.lock();
            let raw = std::mem::take(&mut seen.sales);
            (raw, seen.terminal.clone(), seen.end_facts.clone())
        };
        for (content_type, payload) in raw {
            match running
                .decode::<DailySales>(content_type.as_deref(), &payload)
                .await
            {
                Ok(line) if line.order_id.starts_with(prefix) => lines.push(line),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable daily_sales result");
                    unreadable += 1;
                }
            }
        }
        let lined: HashSet<&str> = lines.iter().map(|l| l.order_id.as_str()).collect();
        if ended.keys().all(|id| lined.contains(id.as_str())) {
            complete_at.get_or_insert_with(Instant::now);
        } else {
            complete_at = None;
        }
        let settled = complete_at.is_some_and(|t| t.elapsed() >= Duration::from_secs(1));
        // No line at all after 5 s: analytics does not run (or is far behind).
        let absent = lines.is_empty()
            && unreadable == 0
            && Instant::now() + Duration::from_secs(10) >= deadline;
        if settled || absent || Instant::now() >= deadline {
            return SalesCheck::of(&ended, &facts, &lines, unreadable);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stock once every order ended: the baseline less what the completed orders took
/// (cancelled orders release what they reserved).
fn expected_stock(
    mut stock: BTreeMap<String, i64>,
    placed: &[PlaceOrder],
    completed: &HashMap<String, bool>,
) -> BTreeMap<String, i64> {
    for order in placed
        .iter()
        .filter(|o| completed.get(&o.order_id) == Some(&true))
    {
        for item in &order.items {
            *stock.entry(item.sku.clone()).or_default() -= item.qty;
        }
    }
    stock
}

/// Waits up to `timeout` for inventory's stock report answering `request_id`.
async fn wait_report(
    running: &Running,
    seen: &Mutex<Seen>,
    request_id: &str,
    timeout: Duration,
) -> Option<BTreeMap<String, i64>> {
    let deadline = Instant::now() + timeout;
    loop {
        let raw = seen.lock().reports.get(request_id).cloned();
        if let Some((content_type, payload)) = raw {
            return match running
                .decode::<StockReported>(content_type.as_deref(), &payload)
                .await
            {
                Ok(r) => Some(r.levels.into_iter().collect()),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable stock report");
                    None
                }
            };
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `orders.events` and every DLQ from the beginning, recording this run's outcomes.
fn watch(
    mut client: rdkafka::ClientConfig,
    prefix: &str,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    client
        .set("group.id", "acme.shop.driver")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client.create()?;
    let events = <crate::orders::Orders as Service>::ID.events().to_string();
    let stock_events = <crate::inventory::Inventory as Service>::ID
        .events()
        .to_string();
    let sales = DailySales::topic().to_string();
    let mut topics = vec![events.clone(), stock_events.clone(), sales.clone()];
    let dlqs = crate::all_topics().into_iter().map(|t| t.name);
    topics.extend(
        dlqs.filter(|t| t.private_kind() == Some(PrivateTopic::Dlq))
            .map(|t| t.to_string()),
    );
    let mut tpl = TopicPartitionList::new();
    for topic in &topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    let (completed, cancelled) = (OrderCompleted::ce_type(), OrderCancelled::ce_type());
    let mut counted_dlq: HashSet<(String, i32, i64)> = HashSet::new();
    while !stop.load(Ordering::SeqCst) {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = match msg {
            Ok(msg) => msg,
            // The client recovers by itself (a broker outage, a restart): keep watching.
            Err(e) => {
                tracing::warn!(error = %e, "watching the outcomes: consumer error");
                continue;
            }
        };
        let key = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .unwrap_or("");
        if msg.topic() == sales {
            // Keyed by day: the order id is in the payload, checked once decoded.
            let content_type = header_str(&msg, "content-type").map(str::to_owned);
            let payload = msg.payload().unwrap_or_default().to_vec();
            seen.lock().sales.push((content_type, payload));
            continue;
        }
        if !key.starts_with(prefix) {
            continue;
        }
        let mut seen = seen.lock();
        if msg.topic() == stock_events {
            let content_type = header_str(&msg, "content-type").map(str::to_owned);
            let payload = msg.payload().unwrap_or_default().to_vec();
            seen.reports.insert(key.to_owned(), (content_type, payload));
        } else if msg.topic() == events {
            let ce_type = header_str(&msg, "ce_type").map(str::as_bytes);
            match ce_type {
                Some(t) if t == completed.as_bytes() => {
                    seen.terminal.entry(key.to_owned()).or_insert(true);
                    *seen.end_facts.entry(key.to_owned()).or_default() += 1;
                }
                Some(t) if t == cancelled.as_bytes() => {
                    seen.terminal.entry(key.to_owned()).or_insert(false);
                    *seen.end_facts.entry(key.to_owned()).or_default() += 1;
                }
                _ => {}
            }
        } else if counted_dlq.insert((msg.topic().to_owned(), msg.partition(), msg.offset())) {
            seen.dead_lettered += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_completed_orders_keep_their_stock() {
        let order = |id: &str, qty| PlaceOrder {
            order_id: id.into(),
            customer_id: "c".into(),
            items: vec![Item {
                sku: "apple".into(),
                qty,
            }],
            amount_cents: 1,
        };
        let placed = [order("a", 2), order("b", 3), order("c", 5)];
        let ended: HashMap<String, bool> = [("a".into(), true), ("b".into(), false)].into();
        let base: BTreeMap<String, i64> = [("apple".into(), 100)].into();
        let expected = expected_stock(base, &placed, &ended);
        assert_eq!(
            expected["apple"], 98,
            "only the completed order's 2 units are gone"
        );
        let check = StockCheck::NotConserved {
            expected,
            got: [("apple".into(), 95)].into(),
        };
        assert!(
            check.to_string().starts_with("stock: NOT conserved"),
            "{check}"
        );
    }

    #[test]
    fn sales_match_when_each_end_fact_has_one_line_with_its_outcome() {
        let line = |id: &str, completed| DailySales {
            day: "2026-12-01".into(),
            order_id: id.into(),
            completed,
        };
        let ended: HashMap<String, bool> = [("a".into(), true), ("b".into(), false)].into();
        let once: HashMap<String, usize> = [("a".into(), 1), ("b".into(), 1)].into();
        let twice: HashMap<String, usize> = [("a".into(), 2), ("b".into(), 1)].into();
        let not_matching = |missing, repeated, wrong, unreadable| SalesCheck::NotMatching {
            missing,
            repeated,
            wrong,
            unreadable,
        };
        // (lines, end facts, unreadable lines, expected)
        let cases = [
            (
                vec![line("a", true), line("b", false)],
                &once,
                0,
                SalesCheck::Matching {
                    completed: 1,
                    cancelled: 1,
                },
            ),
            (vec![], &once, 0, SalesCheck::Unchecked),
            (vec![], &once, 1, not_matching(2, 0, 0, 1)),
            (vec![line("a", true)], &once, 0, not_matching(1, 0, 0, 0)),
            (
                vec![line("a", true), line("a", true), line("b", false)],
                &once,
                0,
                not_matching(0, 1, 0, 0),
            ),
            (
                vec![line("a", true), line("a", true), line("b", false)],
                &twice,
                0,
                SalesCheck::Matching {
                    completed: 1,
                    cancelled: 1,
                },
            ),
            (
                vec![line("a", false), line("b", false), line("c", true)],
                &once,
                0,
                not_matching(0, 0, 2, 0),
            ),
        ];
        for (lines, facts, unreadable, expected) in cases {
            assert_eq!(
                SalesCheck::of(&ended, facts, &lines, unreadable),
                expected,
                "{lines:?}"
            );
        }
    }

    #[test]
    fn summary_line_matches_the_contract() {
        let s = Summary {
            placed: 3,
            completed: 2,
            cancelled: 1,
            dead_lettered: 0,
            stock: StockCheck::Conserved,
            sales: SalesCheck::Unchecked,
        };
        assert_eq!(
            s.to_string(),
            "summary: placed=3 completed=2 cancelled=1 dead_lettered=0"
        );
        assert!(s.all_terminal());
        assert!(!Summary {
            placed: 3,
            completed: 1,
            ..s
        }
        .all_terminal());
    }

    #[test]
    fn generated_orders_are_valid_and_the_decline_rate_holds() {
        let orders = orders("run", 500, 0.2);
        assert!(orders.iter().all(|o| o.invalid().is_none()));
        let over = orders
            .iter()
            .filter(|o| o.amount_cents > crate::payments::Payments::LIMIT_CENTS)
            .count();
        assert_eq!(over, 100, "a fifth of 500 over the limit");
        assert!(super::orders("r", 10, 0.0)
            .iter()
            .all(|o| o.amount_cents <= crate::payments::Payments::LIMIT_CENTS));
        assert!(super::orders("r", 10, 1.0)
            .iter()
            .all(|o| o.amount_cents > crate::payments::Payments::LIMIT_CENTS));
    }
}
