//! `acme.shop.analytics`: a pipeline. It turns each order's outcome into a line of the day's
//! sales on its `results` topic, exactly once (Kafka transactions): each end fact gives one
//! line, however often analytics handles it again (after a crash, or when its partitions move).
//!
//! Its listener takes the outcomes a batch at a time (up to `batch_size`, waiting
//! `batch_wait_ms` for more): one call per batch, each line staged with its own record's
//! offset in the listener's Kafka transaction.

use apache_avro::AvroSchema;
use atoll::{event_service, handlers, Batch, Event, Events, HandlerResult, Meta};
use serde::{Deserialize, Serialize};

use crate::orders::{OrderCancelled, OrderCompleted};

/// The analytics service.
#[event_service(
    company = "acme",
    namespace = "shop",
    name = "analytics",
    results = true,
    // A month of daily sales stays readable.
    topic_config = [("results", "retention.ms", "2592000000")]
)]
#[derive(Debug, Default)]
pub struct Analytics;

/// Result: one order's outcome, a line of its day's sales (keyed by the day, so a day's lines
/// are in order on one partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event, AvroSchema)]
#[event(result, name = "daily_sales", version = 1, service = Analytics)]
pub struct DailySales {
    /// The day the order ended, `YYYY-MM-DD`: the date of its fact's `ce_time` (which atoll
    /// writes in UTC).
    #[event(key)]
    pub day: String,
    /// The order.
    pub order_id: String,
    /// `true`: completed; `false`: cancelled.
    pub completed: bool,
}

/// An order's outcome, as the orders service publishes it.
#[derive(Debug, Events)]
pub enum OrderOutcome {
    /// It completed.
    Completed(OrderCompleted),
    /// It was cancelled.
    Cancelled(OrderCancelled),
}

/// The UTC day of an RFC 3339 time (`ce_time`), or `undated` without one.
fn day_of(time: Option<&str>) -> String {
    time.and_then(|t| t.get(..10))
        .filter(|d| d.len() == 10 && d.as_bytes()[4] == b'-' && d.as_bytes()[7] == b'-')
        .unwrap_or("undated")
        .to_owned()
}

impl DailySales {
    /// The line of an ended order, dated by its fact's `ce_time`.
    pub fn of(meta: &Meta, outcome: &OrderOutcome) -> Self {
        let (order_id, completed) = match outcome {
            OrderOutcome::Completed(f) => (f.order_id.clone(), true),
            OrderOutcome::Cancelled(f) => (f.order_id.clone(), false),
        };
        Self {
            day: day_of(meta.time.as_deref()),
            order_id,
            completed,
        }
    }
}

#[handlers]
impl Analytics {
    /// A batch of ended orders, a line each. A line that cannot be staged fails its record
    /// alone: it is handled again by itself, and the batch's other lines stand.
    #[listener(name = "outcomes", delivery = "exactly_once", batch_wait_ms = 20)]
    async fn outcomes(&self, batch: Batch<Self, OrderOutcome>) -> HandlerResult<()> {
        for record in &batch {
            let line = DailySales::of(record.meta(), &record.event);
            if let Err(e) = record.ctx.emit(line).await {
                record.fail(e);
            }
        }
        Ok(())
    }
}

/// Analytics' listeners: `exactly_once`, which needs a broker with Kafka transactions.
pub const LISTENERS: [&str; 1] = ["outcomes"];

/// Sets analytics' listeners to at-least-once in `config`, for a broker without transactions
/// (tansu): its results may then repeat after a crash or a rebalance.
pub fn without_transactions(config: &mut atoll::config::Config) {
    for name in LISTENERS {
        config
            .listeners
            .entry(name.to_owned())
            .or_default()
            .delivery = Some(atoll::config::DeliveryMode::AtLeastOnce);
    }
}

/// [`without_transactions`] as the environment of a `shop serve analytics` process.
pub fn without_transactions_env() -> Vec<(String, String)> {
    LISTENERS
        .iter()
        .map(|name| {
            (
                format!("ATOLL_LISTENERS__{}__DELIVERY", name.to_uppercase()),
                "at_least_once".to_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_line_is_dated_by_its_facts_day() {
        let cases = [
            (Some("2026-12-01T19:49:58.123Z"), "2026-12-01"),
            (Some("2026-12-01T23:59:59+00:00"), "2026-12-01"),
            (Some("yesterday"), "undated"),
            (Some(""), "undated"),
            (None, "undated"),
        ];
        for (time, day) in cases {
            assert_eq!(super::day_of(time), day, "{time:?}");
        }
    }
}
