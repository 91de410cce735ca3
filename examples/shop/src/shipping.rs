//! `acme.shop.shipping`: schedules a shipment for every charged order.

use atoll::{event_service, handlers, Context, Event, HandlerResult};
use serde::{Deserialize, Serialize};

use crate::payments::PaymentCharged;

/// The shipping service.
#[event_service(company = "acme", namespace = "shop", name = "shipping")]
#[derive(Debug, Default)]
pub struct Shipping;

/// Fact: a shipment was scheduled.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(fact, name = "shipment_scheduled", version = 1, service = Shipping)]
pub struct ShipmentScheduled {
    /// The order.
    #[event(key)]
    pub order_id: String,
}

#[handlers]
impl Shipping {
    /// Schedules the shipment of a charged order.
    #[listener(name = "ship")]
    async fn ship(&self, ctx: Context<Self>, charged: PaymentCharged) -> HandlerResult {
        ctx.emit(ShipmentScheduled {
            order_id: charged.order_id,
        })
        .await?;
        Ok(())
    }
}
