//! `acme.shop.inventory`: reserves stock for placed orders and releases it for cancelled ones.
//!
//! Stock, reservations and every stock movement live in the service's store (tables created by
//! [`crate::migrations::inventory`]); each command is handled in one transaction with its
//! inbox row and the facts it emits, so a crash or a redelivery never moves stock twice.
//!
//! A reservation is held for a limited time ([`Inventory::reservation_hold`]): reserving
//! schedules an [`ExpireReservation`] of the order, which a release or the order's completion
//! cancels. When the order's saga dies (its order dead-lettered, the orders service lost), the
//! expiry puts the stock back, where no compensation would.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use apache_avro::AvroSchema;
use atoll::{
    event_service, handlers, Context, Event, HandlerError, HandlerResult, ScheduleKey, Tx,
};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::orders::{Item, OrderCompleted};

/// The SKUs the shop sells (each starts with [`Inventory::INITIAL_STOCK`] units).
pub const SKUS: &[&str] = &["apple", "banana", "cherry", "date", "elderberry"];

/// The inventory service.
#[event_service(company = "acme", namespace = "shop", name = "inventory")]
#[derive(Debug)]
pub struct Inventory {
    /// How long a reservation is held before it expires, unless released or sold first.
    pub reservation_hold: Duration,
}

impl Default for Inventory {
    /// Reservations held for [`Inventory::RESERVATION_HOLD`].
    fn default() -> Self {
        Self {
            reservation_hold: Self::RESERVATION_HOLD,
        }
    }
}

/// Command (the service's own, scheduled when it reserves): put an order's reservation back if
/// it is still held, neither released nor sold.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "expire_reservation", version = 1, service = Inventory)]
pub struct ExpireReservation {
    /// The order.
    #[event(key)]
    pub order_id: String,
}

/// Command: reserve every item of an order, or nothing (a step of the orders saga).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "reserve_stock", version = 1, service = Inventory, reply = StockReservation)]
pub struct ReserveStock {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// What to reserve.
    pub items: Vec<Item>,
}

/// Reply to [`ReserveStock`].
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(reply, name = "stock_reservation", version = 1, service = Inventory)]
pub struct StockReservation {
    /// The order.
    pub order_id: String,
    /// Whether every item is reserved.
    pub reserved: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// Command: put an order's reservation back (the compensation of [`ReserveStock`]).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "release_stock", version = 1, service = Inventory, reply = StockRelease)]
pub struct ReleaseStock {
    /// The order.
    #[event(key)]
    pub order_id: String,
}

/// Reply to [`ReleaseStock`].
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(reply, name = "stock_release", version = 1, service = Inventory)]
pub struct StockRelease {
    /// The order.
    pub order_id: String,
    /// Whether a reservation was put back (`false`: there was none).
    pub released: bool,
}

/// Fact: stock was reserved for an order.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "stock_reserved", version = 1, service = Inventory)]
pub struct StockReserved {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// What was reserved.
    pub items: Vec<Item>,
}

/// Command: report the current stock levels (for operators and tests).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "report_stock", version = 1, service = Inventory)]
pub struct ReportStock {
    /// Echoed in the report, to match it with the request.
    #[event(key)]
    pub request_id: String,
}

/// Fact: the stock levels at the time of a `report_stock` command.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "stock_reported", version = 1, service = Inventory)]
pub struct StockReported {
    /// The request this answers.
    #[event(key)]
    pub request_id: String,
    /// Units per SKU.
    pub levels: HashMap<String, i64>,
}

/// Fact: an order's reserved stock was put back.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "stock_released", version = 1, service = Inventory)]
pub struct StockReleased {
    /// The order.
    #[event(key)]
    pub order_id: String,
}

impl Inventory {
    /// Units of each SKU the store starts with (its first migration).
    pub const INITIAL_STOCK: i64 = 10_000;
    /// How long a reservation is held by default: 30 minutes.
    pub const RESERVATION_HOLD: Duration = Duration::from_secs(30 * 60);

    /// The schedule key of `order_id`'s expiry.
    fn expiry(order_id: &str) -> ScheduleKey {
        ScheduleKey::of::<ExpireReservation>(order_id)
    }
}

/// Current stock of every SKU.
///
/// # Errors
/// The database's.
pub async fn levels(conn: &mut AnyConnection) -> sqlx::Result<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT sku, qty FROM inventory_stock")
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Reserves every item of `order_id`, or nothing: `Ok(true)` when this call reserved,
/// `Ok(false)` when the order was reserved already, `Err` with the reason of a refusal
/// (out of stock, or released before). Outer `Err`: the database's.
async fn reserve(
    conn: &mut AnyConnection,
    order_id: &str,
    items: &[Item],
) -> sqlx::Result<Result<bool, String>> {
    sqlx::query("SAVEPOINT reserve").execute(&mut *conn).await?;
    let claimed = sqlx::query(
        "INSERT INTO inventory_orders (order_id, state) VALUES ($1, 'reserved')
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        let (state,): (String,) =
            sqlx::query_as("SELECT state FROM inventory_orders WHERE order_id = $1")
                .bind(order_id)
                .fetch_one(&mut *conn)
                .await?;
        sqlx::query("RELEASE SAVEPOINT reserve")
            .execute(&mut *conn)
            .await?;
        return Ok(match state.as_str() {
            "reserved" => Ok(false),
            _ => Err("the order was released already".into()),
        });
    }
    // One movement per SKU (an order may name a SKU twice), in SKU order: concurrent
    // reservations lock rows in the same order, so they never deadlock.
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for item in items {
        *wanted.entry(&item.sku).or_default() += item.qty;
    }
    for (sku, qty) in wanted {
        let taken =
            sqlx::query("UPDATE inventory_stock SET qty = qty - $1 WHERE sku = $2 AND qty >= $1")
                .bind(qty)
                .bind(sku)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                == 1;
        if !taken {
            // All or nothing: undo the claim and what was taken.
            for undo in ["ROLLBACK TO SAVEPOINT reserve", "RELEASE SAVEPOINT reserve"] {
                sqlx::query(undo).execute(&mut *conn).await?;
            }
            return Ok(Err(format!("out of stock: {sku}")));
        }
        movement(conn, order_id, sku, -qty, "reserve").await?;
    }
    sqlx::query("RELEASE SAVEPOINT reserve")
        .execute(&mut *conn)
        .await?;
    Ok(Ok(true))
}

/// Puts an order's reservation back: whether there was one. The order is marked released
/// either way, so a reservation arriving later (a late command) is refused.
async fn release(conn: &mut AnyConnection, order_id: &str) -> sqlx::Result<bool> {
    // One statement decides, under the row's lock: a concurrent reservation of the same
    // order either committed before (and is released) or finds the order released.
    let (prior,): (Option<String>,) = sqlx::query_as(
        "INSERT INTO inventory_orders (order_id, state) VALUES ($1, 'released')
         ON CONFLICT (order_id) DO UPDATE SET prior = inventory_orders.state, state = 'released'
         RETURNING prior",
    )
    .bind(order_id)
    .fetch_one(&mut *conn)
    .await?;
    if prior.as_deref() != Some("reserved") {
        return Ok(false);
    }
    put_back(conn, order_id).await?;
    Ok(true)
}

/// Puts an order's reservation back if it is still held (neither released nor sold): whether
/// it was. The order is then `expired`: a release arriving later finds nothing to put back, a
/// reservation is refused, and a completion takes the stock again ([`sell`]).
async fn expire(conn: &mut AnyConnection, order_id: &str) -> sqlx::Result<bool> {
    let held = sqlx::query(
        "UPDATE inventory_orders SET prior = state, state = 'expired'
         WHERE order_id = $1 AND state = 'reserved'",
    )
    .bind(order_id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if held {
        put_back(conn, order_id).await?;
    }
    Ok(held)
}

/// Marks an order's reservation sold (its order completed): it no longer expires. An order
/// that completes after its reservation expired (its saga outlived the hold, or the expiry
/// ran before the completion was read) takes its stock again: the goods left. `Ok(false)`
/// when that stock is gone meanwhile: the stock is then counted short, for an operator.
async fn sell(conn: &mut AnyConnection, order_id: &str) -> sqlx::Result<bool> {
    let prior: Option<(Option<String>,)> = sqlx::query_as(
        "UPDATE inventory_orders SET prior = state, state = 'sold'
         WHERE order_id = $1 AND state IN ('reserved', 'expired')
         RETURNING prior",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    if prior.and_then(|(p,)| p).as_deref() != Some("expired") {
        return Ok(true);
    }
    let taken = reserved(conn, order_id).await?;
    for (sku, delta) in taken {
        // `delta` is what the reservation took: negative.
        let again = sqlx::query(
            "UPDATE inventory_stock SET qty = qty + $1 WHERE sku = $2 AND qty + $1 >= 0",
        )
        .bind(delta)
        .bind(&sku)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if !again {
            return Ok(false);
        }
        movement(conn, order_id, &sku, delta, "sold after expiry").await?;
    }
    Ok(true)
}

/// What an order's reservation took: each SKU and its (negative) movement, in SKU order, like
/// reservations take them, so that the two never wait on each other's rows in a cycle.
async fn reserved(conn: &mut AnyConnection, order_id: &str) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "SELECT sku, delta FROM inventory_movements WHERE order_id = $1 AND kind = 'reserve'
         ORDER BY sku",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await
}

/// Puts back the stock an order's reservation took.
async fn put_back(conn: &mut AnyConnection, order_id: &str) -> sqlx::Result<()> {
    let taken = reserved(conn, order_id).await?;
    for (sku, delta) in taken {
        sqlx::query("UPDATE inventory_stock SET qty = qty - $1 WHERE sku = $2")
            .bind(delta)
            .bind(&sku)
            .execute(&mut *conn)
            .await?;
        movement(conn, order_id, &sku, -delta, "release").await?;
    }
    Ok(())
}

/// Records a stock movement.
async fn movement(
    conn: &mut AnyConnection,
    order_id: &str,
    sku: &str,
    delta: i64,
    kind: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO inventory_movements (order_id, sku, delta, kind) VALUES ($1, $2, $3, $4)",
    )
    .bind(order_id)
    .bind(sku)
    .bind(delta)
    .bind(kind)
    .execute(conn)
    .await?;
    Ok(())
}

#[handlers]
impl Inventory {
    /// Reports the stock levels as a fact.
    #[listener(name = "report-stock")]
    async fn report_stock(&self, mut tx: Tx, cmd: ReportStock) -> HandlerResult<StockReported> {
        let levels = levels(&mut tx).await?;
        Ok(StockReported {
            request_id: cmd.request_id,
            levels,
        })
    }

    /// Reserves an order's stock, all or nothing, and replies with the outcome. A new
    /// reservation is held for [`Inventory::reservation_hold`]: its expiry is scheduled.
    #[listener(name = "reserve-stock", sends = [ExpireReservation])]
    async fn reserve_stock(
        &self,
        ctx: Context<Self>,
        mut tx: Tx,
        cmd: ReserveStock,
    ) -> HandlerResult<(Option<StockReserved>, StockReservation)> {
        let ReserveStock { order_id, items } = cmd;
        if let Some(bad) = items.iter().find(|i| i.qty < 1) {
            return Err(HandlerError::permanent(format!(
                "quantity of {} must be at least 1, not {}",
                bad.sku, bad.qty
            )));
        }
        let outcome = reserve(&mut tx, &order_id, &items).await?;
        if outcome == Ok(true) {
            let expire = ExpireReservation {
                order_id: order_id.clone(),
            };
            ctx.schedule(expire, self.reservation_hold).await?;
        }
        let reserved = (outcome == Ok(true)).then(|| StockReserved {
            order_id: order_id.clone(),
            items,
        });
        let reservation = StockReservation {
            order_id,
            reserved: outcome.is_ok(),
            reason: outcome.err(),
        };
        Ok((reserved, reservation))
    }

    /// Releases an order's reservation, if it has one, and replies; its expiry is cancelled.
    #[listener(name = "release-stock")]
    async fn release_stock(
        &self,
        ctx: Context<Self>,
        mut tx: Tx,
        cmd: ReleaseStock,
    ) -> HandlerResult<(Option<StockReleased>, StockRelease)> {
        let released = release(&mut tx, &cmd.order_id).await?;
        ctx.cancel(&Self::expiry(&cmd.order_id)).await?;
        let fact = released.then(|| StockReleased {
            order_id: cmd.order_id.clone(),
        });
        let reply = StockRelease {
            order_id: cmd.order_id,
            released,
        };
        Ok((fact, reply))
    }

    /// A completed order's reservation is sold: it no longer expires.
    #[listener(name = "order-completed")]
    async fn order_completed(
        &self,
        ctx: Context<Self>,
        mut tx: Tx,
        fact: OrderCompleted,
    ) -> HandlerResult<()> {
        if !sell(&mut tx, &fact.order_id).await? {
            return Err(HandlerError::permanent(format!(
                "order {} completed after its reservation expired, and its stock is gone: \
                 the stock is counted short",
                fact.order_id
            )));
        }
        ctx.cancel(&Self::expiry(&fact.order_id)).await?;
        Ok(())
    }

    /// An order's reservation ran out: its stock is put back, if it is still held (the order
    /// neither released nor sold).
    #[listener(name = "expire-reservation")]
    async fn expire_reservation(
        &self,
        mut tx: Tx,
        cmd: ExpireReservation,
    ) -> HandlerResult<Option<StockReleased>> {
        let expired = expire(&mut tx, &cmd.order_id).await?;
        if expired {
            tracing::info!(order_id = %cmd.order_id, "reservation expired; stock put back");
        }
        Ok(expired.then_some(StockReleased {
            order_id: cmd.order_id,
        }))
    }
}
