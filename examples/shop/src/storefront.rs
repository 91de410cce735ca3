//! `acme.shop.storefront`: what the shop's customers see of their orders. A view built from
//! the orders, payments and shipping facts, answering `GET /orders/{id}` on `http.addr`.
//!
//! Each fact fills its own columns of `storefront_orders` (created by
//! [`crate::migrations::storefront`]), stamped with the fact's own `ce_time`. So the view is
//! the same whatever order its three topics are read in, and `atoll view rebuild
//! acme.shop.storefront-orders` rebuilds it from the facts to the same answers. The orders'
//! three facts come to one listener (one consumer group), as one [`OrderFacts`].

use atoll::{event_service, handlers, Events, HandlerResult, Meta, Store, Tx};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AssertSqlSafe};

use crate::orders::{OrderCancelled, OrderCompleted, OrderPlaced};
use crate::payments::PaymentCharged;
use crate::shipping::ShipmentScheduled;

/// The orders' facts the storefront reads, all on `acme.shop.orders.events`.
#[derive(Debug, Events)]
pub enum OrderFacts {
    /// Who ordered, how much, when.
    Placed(OrderPlaced),
    /// The order completed.
    Completed(OrderCompleted),
    /// The order was cancelled, and why.
    Cancelled(OrderCancelled),
}

/// The storefront service.
#[event_service(company = "acme", namespace = "shop", name = "storefront")]
#[derive(Debug, Default)]
pub struct Storefront;

/// An order as the storefront shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStatus {
    /// The order.
    pub order_id: String,
    /// `placed`, `charged`, `shipped`, `completed` or `cancelled`; `unknown` while only a
    /// fact about the order's payment or shipment has been read.
    pub status: String,
    /// Why the order was cancelled.
    pub reason: Option<String>,
    /// Who ordered.
    pub customer_id: Option<String>,
    /// The order's total, in cents.
    pub amount_cents: Option<i64>,
    /// When the order was placed (RFC 3339, the fact's `ce_time`).
    pub placed_at: Option<String>,
    /// When it was charged.
    pub charged_at: Option<String>,
    /// When its shipment was scheduled.
    pub shipped_at: Option<String>,
    /// When it completed.
    pub completed_at: Option<String>,
    /// When it was cancelled.
    pub cancelled_at: Option<String>,
}

/// The timestamps that decide an order's status.
#[derive(Debug, Default, Clone, Copy)]
struct Stamps {
    placed: bool,
    charged: bool,
    shipped: bool,
    completed: bool,
    cancelled: bool,
}

/// An order's status from the facts seen: the furthest step wins, an end over any step.
fn status(s: Stamps) -> &'static str {
    match s {
        Stamps {
            cancelled: true, ..
        } => "cancelled",
        Stamps {
            completed: true, ..
        } => "completed",
        Stamps { shipped: true, .. } => "shipped",
        Stamps { charged: true, .. } => "charged",
        Stamps { placed: true, .. } => "placed",
        _ => "unknown",
    }
}

/// The view's row for `order_id`, if any fact about it was read.
///
/// # Errors
/// The database's.
pub async fn order_status(
    conn: &mut AnyConnection,
    order_id: &str,
) -> sqlx::Result<Option<OrderStatus>> {
    type Row = (
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT customer_id, amount_cents, placed_at, charged_at, shipped_at, completed_at,
                cancelled_at, reason
         FROM storefront_orders WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(
        |(
            customer_id,
            amount_cents,
            placed_at,
            charged_at,
            shipped_at,
            completed_at,
            cancelled_at,
            reason,
        )| {
            let stamps = Stamps {
                placed: placed_at.is_some(),
                charged: charged_at.is_some(),
                shipped: shipped_at.is_some(),
                completed: completed_at.is_some(),
                cancelled: cancelled_at.is_some(),
            };
            OrderStatus {
                order_id: order_id.to_owned(),
                status: status(stamps).to_owned(),
                reason,
                customer_id,
                amount_cents,
                placed_at,
                charged_at,
                shipped_at,
                completed_at,
                cancelled_at,
            }
        },
    ))
}

/// Sets `column` of `order_id`'s row to the fact's time, creating the row if needed.
async fn stamp(
    conn: &mut AnyConnection,
    meta: &Meta,
    order_id: &str,
    column: &str,
) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO storefront_orders (order_id, {column}) VALUES ($1, $2)
         ON CONFLICT (order_id) DO UPDATE SET {column} = excluded.{column}"
    );
    let at = meta.time.clone().unwrap_or_else(now);
    sqlx::query(AssertSqlSafe(sql))
        .bind(order_id)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Now, in RFC 3339: the stamp of a fact that carried no `ce_time`.
fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[handlers]
impl Storefront {
    /// A fact of the orders: its stamp, and what it says of the order.
    #[listener(name = "orders", view = "storefront_orders")]
    async fn order(&self, meta: Meta, mut tx: Tx, fact: OrderFacts) -> HandlerResult {
        match fact {
            OrderFacts::Placed(fact) => {
                stamp(&mut tx, &meta, &fact.order_id, "placed_at").await?;
                sqlx::query(
                    "UPDATE storefront_orders SET customer_id = $1, amount_cents = $2 WHERE order_id = $3",
                )
                .bind(&fact.customer_id)
                .bind(fact.amount_cents)
                .bind(&fact.order_id)
                .execute(&mut *tx)
                .await?;
            }
            OrderFacts::Completed(fact) => {
                stamp(&mut tx, &meta, &fact.order_id, "completed_at").await?;
            }
            OrderFacts::Cancelled(fact) => {
                stamp(&mut tx, &meta, &fact.order_id, "cancelled_at").await?;
                sqlx::query("UPDATE storefront_orders SET reason = $1 WHERE order_id = $2")
                    .bind(&fact.reason)
                    .bind(&fact.order_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(())
    }

    /// An order was charged.
    #[listener(name = "payment-charged", view = "storefront_orders")]
    async fn charged(&self, meta: Meta, mut tx: Tx, fact: PaymentCharged) -> HandlerResult {
        stamp(&mut tx, &meta, &fact.order_id, "charged_at").await?;
        Ok(())
    }

    /// An order's shipment was scheduled.
    #[listener(name = "shipment-scheduled", view = "storefront_orders")]
    async fn shipped(&self, meta: Meta, mut tx: Tx, fact: ShipmentScheduled) -> HandlerResult {
        stamp(&mut tx, &meta, &fact.order_id, "shipped_at").await?;
        Ok(())
    }
}

/// The storefront's HTTP routes: `GET /orders/{id}` answers the order's [`OrderStatus`] as
/// JSON, 404 when no fact about it was read.
pub fn routes() -> Router {
    Router::new().route("/orders/{id}", get(order))
}

async fn order(store: Store, Path(id): Path<String>) -> Response {
    let found = match store.pool().acquire().await {
        Ok(mut conn) => order_status(&mut conn, &id).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(Some(status)) => Json(status).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("no order `{id}`") })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": format!("the store failed: {e}") })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_furthest_step_decides_and_an_end_wins() {
        let s = |placed, charged, shipped, completed, cancelled| Stamps {
            placed,
            charged,
            shipped,
            completed,
            cancelled,
        };
        #[rustfmt::skip]
        let table = [
            (s(false, false, false, false, false), "unknown"),
            (s(true,  false, false, false, false), "placed"),
            (s(true,  true,  false, false, false), "charged"),
            (s(false, true,  false, false, false), "charged"),
            (s(true,  true,  true,  false, false), "shipped"),
            (s(true,  true,  true,  true,  false), "completed"),
            (s(false, false, false, true,  false), "completed"),
            (s(true,  true,  false, false, true),  "cancelled"),
            (s(false, false, false, false, true),  "cancelled"),
        ];
        for (stamps, want) in table {
            assert_eq!(status(stamps), want, "{stamps:?}");
        }
    }
}
