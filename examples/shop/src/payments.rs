//! `acme.shop.payments`: charges and refunds orders; declines amounts above the limit.
//!
//! Charges live in memory, by order id, so that a redelivered command charges nothing twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use apache_avro::AvroSchema;
use atoll::{event_service, handlers, Context, Event, HandlerError, HandlerResult};
use serde::{Deserialize, Serialize};

/// The payments service.
#[event_service(company = "acme", namespace = "shop", name = "payments")]
#[derive(Debug, Default)]
pub struct Payments {
    /// The probability that a charge fails transiently (a flaky gateway), from 0 to 1.
    pub flaky: f64,
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Charged cents by order.
    charged: HashMap<String, i64>,
    /// Orders refunded: a charge that arrives after its refund is declined.
    refunded: HashSet<String>,
}

impl Payments {
    /// Charges above this many cents are declined.
    pub const LIMIT_CENTS: i64 = 50_000;

    /// A payments service whose gateway fails transiently with probability `flaky`.
    pub fn new(flaky: f64) -> Self {
        Self {
            flaky,
            ..Self::default()
        }
    }

    /// Charges `amount_cents` once per order: `Ok(true)` when this call charged, `Ok(false)`
    /// when the order was charged already, `Err` with the reason of a decline.
    fn charge_once(&self, cmd: &ChargePayment) -> Result<bool, String> {
        let mut ledger = self.ledger.lock().expect("poisoned");
        if ledger.charged.contains_key(&cmd.order_id) {
            return Ok(false);
        }
        if ledger.refunded.contains(&cmd.order_id) {
            return Err("the order was refunded already".into());
        }
        if cmd.amount_cents > Self::LIMIT_CENTS {
            return Err(format!(
                "{} cents exceeds the limit of customer {}",
                cmd.amount_cents, cmd.customer_id
            ));
        }
        ledger
            .charged
            .insert(cmd.order_id.clone(), cmd.amount_cents);
        Ok(true)
    }

    /// Refunds an order's charge; the cents refunded (0 when it was not charged).
    fn refund(&self, order_id: &str) -> i64 {
        let mut ledger = self.ledger.lock().expect("poisoned");
        ledger.refunded.insert(order_id.to_owned());
        ledger.charged.remove(order_id).unwrap_or(0)
    }
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
    async fn charge(&self, ctx: Context<Self>, cmd: ChargePayment) -> HandlerResult<ChargeResult> {
        if self.flaky > 0.0 && rand::random::<f64>() < self.flaky {
            return Err(HandlerError::transient(
                "payment gateway timed out (simulated)",
            ));
        }
        let outcome = self.charge_once(&cmd);
        let order_id = cmd.order_id.clone();
        match &outcome {
            Ok(true) => {
                ctx.emit(PaymentCharged {
                    order_id: order_id.clone(),
                    amount_cents: cmd.amount_cents,
                })
                .await?
            }
            Ok(false) => {}
            Err(reason) => {
                ctx.emit(PaymentDeclined {
                    order_id: order_id.clone(),
                    reason: reason.clone(),
                })
                .await?
            }
        }
        Ok(ChargeResult {
            order_id,
            charged: outcome.is_ok(),
            reason: outcome.err(),
        })
    }

    /// Refunds the order's charge, if any.
    #[listener(name = "refund")]
    async fn refund_payment(
        &self,
        ctx: Context<Self>,
        cmd: RefundPayment,
    ) -> HandlerResult<RefundResult> {
        let cents = self.refund(&cmd.order_id);
        if cents > 0 {
            ctx.emit(PaymentRefunded {
                order_id: cmd.order_id.clone(),
                amount_cents: cents,
            })
            .await?;
        }
        Ok(RefundResult {
            order_id: cmd.order_id,
            refunded_cents: cents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(order_id: &str, amount_cents: i64) -> ChargePayment {
        ChargePayment {
            order_id: order_id.into(),
            customer_id: "c1".into(),
            amount_cents,
        }
    }

    #[test]
    fn charges_once_declines_over_the_limit_and_refunds_once() {
        let p = Payments::default();
        assert_eq!(p.charge_once(&charge("o1", 100)), Ok(true));
        assert_eq!(p.charge_once(&charge("o1", 100)), Ok(false));
        assert!(p
            .charge_once(&charge("o2", Payments::LIMIT_CENTS + 1))
            .unwrap_err()
            .contains("exceeds the limit"));
        assert_eq!(p.refund("o1"), 100);
        assert_eq!(p.refund("o1"), 0);
        // A charge that arrives after its refund is declined.
        assert!(p.charge_once(&charge("o1", 100)).is_err());
    }
}
