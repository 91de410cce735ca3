//! `acme.shop.payments`: charges reserved orders; declines amounts above the limit.

use atoll::{event_service, handlers, Context, Event, HandlerError, HandlerResult};
use serde::{Deserialize, Serialize};

use crate::inventory::StockReserved;

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
}

/// Fact: an order was charged.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(fact, name = "payment_charged", version = 1, service = Payments)]
pub struct PaymentCharged {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// Amount charged, in cents.
    pub amount_cents: i64,
}

/// Fact: a charge was declined.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(fact, name = "payment_declined", version = 1, service = Payments)]
pub struct PaymentDeclined {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// Why.
    pub reason: String,
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
    async fn charge(&self, ctx: Context<Self>, reserved: StockReserved) -> HandlerResult {
        if self.flaky > 0.0 && rand::random::<f64>() < self.flaky {
            return Err(HandlerError::transient(
                "payment gateway timed out (simulated)",
            ));
        }
        let StockReserved {
            order_id,
            amount_cents,
            customer_id,
        } = reserved;
        if amount_cents > Self::LIMIT_CENTS {
            let reason =
                format!("{amount_cents} cents exceeds the limit of customer {customer_id}");
            ctx.emit(PaymentDeclined { order_id, reason }).await?;
        } else {
            ctx.emit(PaymentCharged {
                order_id,
                amount_cents,
            })
            .await?;
        }
        Ok(())
    }
}
