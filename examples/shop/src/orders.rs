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

#[handlers]
impl Orders {
    /// Accepts an order, or cancels it when it is invalid: every placed order ends terminal.
    #[listener(name = "place-order")]
    async fn place_order(&self, ctx: Context<Self>, cmd: PlaceOrder) -> HandlerResult {
        if let Some(reason) = cmd.invalid() {
            let reason = format!("invalid order: {reason}");
            ctx.emit(OrderCancelled {
                order_id: cmd.order_id,
                reason,
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
        let reason = format!("out of stock: {}", fact.sku);
        ctx.emit(OrderCancelled {
            order_id: fact.order_id,
            reason,
        })
        .await?;
        Ok(())
    }

    /// Payment declined: the order is cancelled (inventory releases the stock).
    #[listener(name = "payment-declined")]
    async fn payment_declined(&self, ctx: Context<Self>, fact: PaymentDeclined) -> HandlerResult {
        let reason = format!("payment declined: {}", fact.reason);
        ctx.emit(OrderCancelled {
            order_id: fact.order_id,
            reason,
        })
        .await?;
        Ok(())
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
