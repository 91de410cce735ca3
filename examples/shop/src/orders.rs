//! `acme.shop.orders`: accepts `place_order` and runs each order as an orchestrated saga:
//! reserve stock (inventory) → charge payment (payments) → arrange shipment (shipping).
//!
//! A declined payment releases the stock; a failed shipment refunds the payment and releases
//! the stock; a step that times out is compensated with the steps before it. The outcome is a
//! fact: `order_completed`, or `order_cancelled` with the reason.

use std::time::Duration;

use apache_avro::AvroSchema;
use atoll::{event_service, handlers, Context, Event, HandlerError, HandlerResult, Saga, Step};
use serde::{Deserialize, Serialize};

use crate::inventory::{ReleaseStock, ReserveStock, StockReservation};
use crate::payments::{ChargePayment, ChargeResult, RefundPayment};
use crate::shipping::{ArrangeShipment, ShipmentResult};

/// The orders service.
#[event_service(company = "acme", namespace = "shop", name = "orders", sagas = [OrderSaga])]
#[derive(Debug, Default)]
pub struct Orders {
    /// Fault injection (`--refuse-orders`): every order is dead-lettered, as by a deploy with
    /// a bug; the orders wait in the DLQ for the fix and a redrive.
    pub refuse: bool,
}

impl Orders {
    /// How long each step of an order waits for its reply.
    pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

    /// The orders service; with `refuse`, it dead-letters every order (see [`Orders::refuse`]).
    pub fn new(refuse: bool) -> Self {
        Self { refuse }
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
pub struct Item {
    /// Stock keeping unit.
    pub sku: String,
    /// Quantity, at least 1.
    pub qty: i64,
}

/// Command: place an order (its payload is documented in docs/architecture.md).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "place_order", version = 1, service = Orders)]
pub struct PlaceOrder {
    /// The order id; the key of every record of the order.
    #[event(key)]
    pub order_id: String,
    /// Who orders.
    pub customer_id: String,
    /// What.
    pub items: Vec<Item>,
    /// Total, in cents.
    pub amount_cents: i64,
}

/// Fact: an order was placed.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "order_placed", version = 1, service = Orders)]
pub struct OrderPlaced {
    /// The order id.
    #[event(key)]
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// What.
    pub items: Vec<Item>,
    /// Total, in cents.
    pub amount_cents: i64,
}

/// Fact: an order completed (charged and shipped).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "order_completed", version = 1, service = Orders)]
pub struct OrderCompleted {
    /// The order id.
    #[event(key)]
    pub order_id: String,
}

/// Fact: an order was cancelled.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "order_cancelled", version = 1, service = Orders)]
pub struct OrderCancelled {
    /// The order id.
    #[event(key)]
    pub order_id: String,
    /// Why.
    pub reason: String,
}

impl PlaceOrder {
    /// Why the order cannot be accepted, if it cannot.
    pub fn invalid(&self) -> Option<String> {
        if self.order_id.is_empty() {
            return Some("order_id is empty".into());
        }
        if self.items.is_empty() {
            return Some("the order has no items".into());
        }
        if let Some(i) = self.items.iter().find(|i| i.qty < 1) {
            return Some(format!("quantity of {} must be at least 1", i.sku));
        }
        (self.amount_cents < 0).then(|| "amount_cents is negative".into())
    }
}

/// One order's saga: its data is the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSaga {
    /// The order id: the saga id.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// What.
    pub items: Vec<Item>,
    /// Total, in cents.
    pub amount_cents: i64,
}

/// `Ok` when the reply says yes, else the reason.
fn judged(ok: bool, reason: Option<String>, what: &str) -> Result<(), String> {
    if ok {
        return Ok(());
    }
    Err(format!(
        "{what}: {}",
        reason.unwrap_or_else(|| "no reason given".into())
    ))
}

impl Saga for OrderSaga {
    const NAME: &'static str = "order";
    const STEP_TIMEOUT: Duration = Orders::STEP_TIMEOUT;

    fn id(&self) -> String {
        self.order_id.clone()
    }

    fn steps() -> Vec<Step<Self>> {
        vec![
            Step::new(
                "reserve-stock",
                |o: &Self| ReserveStock {
                    order_id: o.order_id.clone(),
                    items: o.items.clone(),
                },
                |_: &mut Self, r: StockReservation| {
                    judged(r.reserved, r.reason, "stock not reserved")
                },
            )
            .compensate(|o: &Self| ReleaseStock {
                order_id: o.order_id.clone(),
            }),
            Step::new(
                "charge-payment",
                |o: &Self| ChargePayment {
                    order_id: o.order_id.clone(),
                    customer_id: o.customer_id.clone(),
                    amount_cents: o.amount_cents,
                },
                |_: &mut Self, r: ChargeResult| judged(r.charged, r.reason, "payment declined"),
            )
            .compensate(|o: &Self| RefundPayment {
                order_id: o.order_id.clone(),
            }),
            Step::new(
                "arrange-shipment",
                |o: &Self| ArrangeShipment {
                    order_id: o.order_id.clone(),
                    customer_id: o.customer_id.clone(),
                },
                |_: &mut Self, r: ShipmentResult| judged(r.scheduled, r.reason, "shipping failed"),
            ),
        ]
    }

    async fn completed(self, ctx: Context<Orders>) -> HandlerResult {
        ctx.emit(OrderCompleted {
            order_id: self.order_id,
        })
        .await?;
        Ok(())
    }

    async fn failed(self, ctx: Context<Orders>, reason: String) -> HandlerResult {
        ctx.emit(OrderCancelled {
            order_id: self.order_id,
            reason,
        })
        .await?;
        Ok(())
    }
}

#[handlers]
impl Orders {
    /// Accepts an order and starts its saga, or cancels it when it is invalid: every placed
    /// order ends terminal.
    #[listener(name = "place-order")]
    async fn place_order(&self, ctx: Context<Self>, cmd: PlaceOrder) -> HandlerResult {
        if self.refuse {
            return Err(HandlerError::permanent(format!(
                "order {} refused: this orders service runs with --refuse-orders",
                cmd.order_id
            )));
        }
        if let Some(reason) = cmd.invalid() {
            ctx.emit(OrderCancelled {
                order_id: cmd.order_id,
                reason: format!("invalid order: {reason}"),
            })
            .await?;
            return Ok(());
        }
        let PlaceOrder {
            order_id,
            customer_id,
            items,
            amount_cents,
        } = cmd;
        ctx.emit(OrderPlaced {
            order_id: order_id.clone(),
            customer_id: customer_id.clone(),
            items: items.clone(),
            amount_cents,
        })
        .await?;
        ctx.start_saga(OrderSaga {
            order_id,
            customer_id,
            items,
            amount_cents,
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> PlaceOrder {
        PlaceOrder {
            order_id: "o1".into(),
            customer_id: "c1".into(),
            items: vec![Item {
                sku: "apple".into(),
                qty: 1,
            }],
            amount_cents: 100,
        }
    }

    #[test]
    fn invalid_orders_say_why() {
        assert_eq!(order().invalid(), None);
        let no_id = PlaceOrder {
            order_id: String::new(),
            ..order()
        };
        assert_eq!(no_id.invalid().as_deref(), Some("order_id is empty"));
        let empty = PlaceOrder {
            items: vec![],
            ..order()
        };
        assert_eq!(empty.invalid().as_deref(), Some("the order has no items"));
        let zero = PlaceOrder {
            items: vec![Item {
                sku: "kiwi".into(),
                qty: 0,
            }],
            ..order()
        };
        assert_eq!(
            zero.invalid().as_deref(),
            Some("quantity of kiwi must be at least 1")
        );
        let negative = PlaceOrder {
            amount_cents: -1,
            ..order()
        };
        assert_eq!(
            negative.invalid().as_deref(),
            Some("amount_cents is negative")
        );
    }
}
