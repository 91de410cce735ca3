//! `acme.shop.payments`: charges and refunds orders; declines amounts above the limit.
//!
//! Each order's payment state and the ledger of charges and refunds live in the service's
//! store (tables created by [`crate::migrations::payments`]); each command is handled in one
//! transaction with its inbox row and the facts it emits, so no order is charged twice.

use apache_avro::AvroSchema;
use atoll::layer::{Incoming, Next};
use atoll::{event_service, handlers, BoxError, Event, HandlerError, HandlerResult, Tx};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

/// The payments service.
#[event_service(company = "acme", namespace = "shop", name = "payments")]
#[derive(Debug, Default)]
pub struct Payments {
    /// The probability that a charge fails transiently (a flaky gateway), from 0 to 1.
    pub flaky: f64,
}

impl Payments {
    /// Charges above this many cents are declined.
    pub const LIMIT_CENTS: i64 = 50_000;

    /// A payments service whose gateway fails transiently with probability `flaky`.
    pub fn new(flaky: f64) -> Self {
        Self { flaky }
    }
}

/// The one service payments takes commands from: the orders saga charges and refunds.
const ORDERS: &str = "acme.shop.orders";

/// An interceptor around every payments handler (see [`crate::with_service`]): a command
/// from anyone but the orders service is dead-lettered unhandled, naming its sender. Commands
/// name their sender in `ce_source`; a cluster's ACLs decide who may write to the topic at
/// all, this decides whose commands are acted on.
pub async fn orders_only(record: Incoming<Payments>, next: Next<Payments>) -> Result<(), BoxError> {
    let from = record.meta().source.as_deref();
    if from != Some(ORDERS) {
        return Err(HandlerError::permanent(format!(
            "payments takes commands from {ORDERS} only, not from {}",
            from.unwrap_or("an unnamed sender")
        ))
        .into());
    }
    next.run(record).await
}

/// Charges `cmd.amount_cents` once per order: `Ok(true)` when this call charged, `Ok(false)`
/// when the order was charged already, `Err` with the reason of a decline. Outer `Err`: the
/// database's.
async fn charge_once(
    conn: &mut AnyConnection,
    cmd: &ChargePayment,
) -> sqlx::Result<Result<bool, String>> {
    if cmd.amount_cents > Payments::LIMIT_CENTS {
        return Ok(Err(format!(
            "{} cents exceeds the limit of customer {}",
            cmd.amount_cents, cmd.customer_id
        )));
    }
    let claimed = sqlx::query(
        "INSERT INTO payments_orders (order_id, state, amount_cents) VALUES ($1, 'charged', $2)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&cmd.order_id)
    .bind(cmd.amount_cents)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        let (state,): (String,) =
            sqlx::query_as("SELECT state FROM payments_orders WHERE order_id = $1")
                .bind(&cmd.order_id)
                .fetch_one(&mut *conn)
                .await?;
        return Ok(match state.as_str() {
            "charged" => Ok(false),
            _ => Err("the order was refunded already".into()),
        });
    }
    ledger(conn, &cmd.order_id, "charge", cmd.amount_cents).await?;
    Ok(Ok(true))
}

/// Refunds an order's charge: the cents refunded (0 when it was not charged, or refunded
/// before). The order is marked refunded either way, so a charge arriving later is declined.
async fn refund(conn: &mut AnyConnection, order_id: &str) -> sqlx::Result<i64> {
    // One statement decides under the row's lock: a fresh row refunds nothing, a charged one
    // its amount, a refunded one (no row returned) nothing again.
    let refunded: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO payments_orders (order_id, state, amount_cents) VALUES ($1, 'refunded', 0)
         ON CONFLICT (order_id) DO UPDATE SET state = 'refunded'
             WHERE payments_orders.state = 'charged'
         RETURNING amount_cents",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let cents = refunded.map_or(0, |(c,)| c);
    if cents > 0 {
        ledger(conn, order_id, "refund", cents).await?;
    }
    Ok(cents)
}

/// Writes a ledger row.
async fn ledger(
    conn: &mut AnyConnection,
    order_id: &str,
    kind: &str,
    amount_cents: i64,
) -> sqlx::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    sqlx::query(
        "INSERT INTO payments_ledger (order_id, kind, amount_cents, at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(order_id)
    .bind(kind)
    .bind(amount_cents)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Command: charge an order (a step of the orders saga).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "charge_payment", version = 1, service = Payments, reply = ChargeResult)]
pub struct ChargePayment {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// Who pays.
    pub customer_id: String,
    /// How much, in cents.
    pub amount_cents: i64,
}

/// Reply to [`ChargePayment`].
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(reply, name = "charge_result", version = 1, service = Payments)]
pub struct ChargeResult {
    /// The order.
    pub order_id: String,
    /// Whether the order is charged.
    pub charged: bool,
    /// Why not, when declined.
    pub reason: Option<String>,
}

/// Command: refund an order's charge (the compensation of [`ChargePayment`]).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "refund_payment", version = 1, service = Payments, reply = RefundResult)]
pub struct RefundPayment {
    /// The order.
    #[event(key)]
    pub order_id: String,
}

/// Reply to [`RefundPayment`].
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(reply, name = "refund_result", version = 1, service = Payments)]
pub struct RefundResult {
    /// The order.
    pub order_id: String,
    /// Cents refunded (0: nothing was charged).
    pub refunded_cents: i64,
}

/// Fact: an order was charged.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "payment_charged", version = 1, service = Payments)]
pub struct PaymentCharged {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// Amount charged, in cents.
    pub amount_cents: i64,
}

/// Fact: a charge was declined.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "payment_declined", version = 1, service = Payments)]
pub struct PaymentDeclined {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// Why.
    pub reason: String,
}

/// Fact: an order's charge was refunded.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "payment_refunded", version = 1, service = Payments)]
pub struct PaymentRefunded {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// Amount refunded, in cents.
    pub amount_cents: i64,
}

#[handlers]
impl Payments {
    /// Charges the order, deterministically declining amounts above the limit. The gateway
    /// may be flaky: up to 10 attempts, 20 ms apart at first.
    #[listener(
        name = "charge",
        max_attempts = 10,
        backoff_ms = 20,
        max_backoff_ms = 500
    )]
    async fn charge(
        &self,
        mut tx: Tx,
        cmd: ChargePayment,
    ) -> HandlerResult<(
        Option<PaymentCharged>,
        Option<PaymentDeclined>,
        ChargeResult,
    )> {
        if self.flaky > 0.0 && rand::random::<f64>() < self.flaky {
            return Err(HandlerError::transient(
                "payment gateway timed out (simulated)",
            ));
        }
        if cmd.amount_cents < 0 {
            return Err(HandlerError::permanent(format!(
                "amount_cents must not be negative, not {}",
                cmd.amount_cents
            )));
        }
        let outcome = charge_once(&mut tx, &cmd).await?;
        let order_id = cmd.order_id.clone();
        // Charged now (not when the charge was made before: its fact went out then), or
        // declined.
        let charged = (outcome == Ok(true)).then(|| PaymentCharged {
            order_id: order_id.clone(),
            amount_cents: cmd.amount_cents,
        });
        let declined = outcome.as_ref().err().map(|reason| PaymentDeclined {
            order_id: order_id.clone(),
            reason: reason.clone(),
        });
        let result = ChargeResult {
            order_id,
            charged: outcome.is_ok(),
            reason: outcome.err(),
        };
        Ok((charged, declined, result))
    }

    /// Refunds the order's charge, if any.
    #[listener(name = "refund")]
    async fn refund_payment(
        &self,
        mut tx: Tx,
        cmd: RefundPayment,
    ) -> HandlerResult<(Option<PaymentRefunded>, RefundResult)> {
        let cents = refund(&mut tx, &cmd.order_id).await?;
        let refunded = (cents > 0).then(|| PaymentRefunded {
            order_id: cmd.order_id.clone(),
            amount_cents: cents,
        });
        let result = RefundResult {
            order_id: cmd.order_id,
            refunded_cents: cents,
        };
        Ok((refunded, result))
    }
}

#[cfg(test)]
mod tests {
    use atoll::Service;

    #[test]
    fn the_sender_payments_takes_commands_from_is_the_orders_service() {
        assert_eq!(super::ORDERS, crate::orders::Orders::ID.to_string());
    }
}
