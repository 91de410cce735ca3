//! `acme.shop.orders`: accepts `place_order`, and decides each order's outcome from the
//! other services' facts.

use atoll::{event_service, handlers, Context, Event, HandlerResult};
use serde::{Deserialize, Serialize};

use crate::inventory::StockUnavailable;
use crate::payments::PaymentDeclined;
use crate::shipping::ShipmentScheduled;

/// The orders service.
#[event_service(company = "acme", namespace = "shop", name = "orders")]
#[derive(Debug, Default)]
pub struct Orders;

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Stock keeping unit.
    pub sku: String,
    /// Quantity, at least 1.
    pub qty: i64,
}

/// Command: place an order (design §8 fixes this payload).
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
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
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
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
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(fact, name = "order_completed", version = 1, service = Orders)]
pub struct OrderCompleted {
    /// The order id.
    #[event(key)]
    pub order_id: String,
}

/// Fact: an order was cancelled.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
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

/// Ends an order with `order_cancelled`.
async fn cancel(ctx: &Context<Orders>, order_id: String, reason: String) -> HandlerResult {
    ctx.emit(OrderCancelled { order_id, reason }).await?;
    Ok(())
}

#[handlers]
impl Orders {
    /// Accepts an order, or cancels it when it is invalid: every placed order ends terminal.
    #[listener(name = "place-order")]
    async fn place_order(&self, ctx: Context<Self>, cmd: PlaceOrder) -> HandlerResult {
        if let Some(reason) = cmd.invalid() {
            return cancel(&ctx, cmd.order_id, format!("invalid order: {reason}")).await;
        }
        let PlaceOrder {
            order_id,
            customer_id,
            items,
            amount_cents,
        } = cmd;
        ctx.emit(OrderPlaced {
            order_id,
            customer_id,
            items,
            amount_cents,
        })
        .await?;
        Ok(())
    }

    /// No stock: the order is cancelled.
    #[listener(name = "stock-unavailable")]
    async fn stock_unavailable(&self, ctx: Context<Self>, fact: StockUnavailable) -> HandlerResult {
        cancel(&ctx, fact.order_id, format!("out of stock: {}", fact.sku)).await
    }

    /// Payment declined: the order is cancelled (inventory releases the stock).
    #[listener(name = "payment-declined")]
    async fn payment_declined(&self, ctx: Context<Self>, fact: PaymentDeclined) -> HandlerResult {
        cancel(
            &ctx,
            fact.order_id,
            format!("payment declined: {}", fact.reason),
        )
        .await
    }

    /// Shipped: the order is complete.
    #[listener(name = "shipment-scheduled")]
    async fn shipment_scheduled(
        &self,
        ctx: Context<Self>,
        fact: ShipmentScheduled,
    ) -> HandlerResult {
        ctx.emit(OrderCompleted {
            order_id: fact.order_id,
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
