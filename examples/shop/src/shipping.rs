//! `acme.shop.shipping`: arranges shipments; no carrier delivers to "remote" customers.

use apache_avro::AvroSchema;
use atoll::{event_service, handlers, Event, HandlerResult};
use serde::{Deserialize, Serialize};

/// The shipping service.
#[event_service(company = "acme", namespace = "shop", name = "shipping")]
#[derive(Debug, Default)]
pub struct Shipping;

impl Shipping {
    /// Customers whose id starts with this cannot be delivered to: their orders' shipment
    /// fails (deterministically, for the saga's shipping-failure path).
    pub const UNREACHABLE_PREFIX: &'static str = "remote-";
}

/// Command: arrange the shipment of a charged order (the last step of the orders saga).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "arrange_shipment", version = 1, service = Shipping, reply = ShipmentResult)]
pub struct ArrangeShipment {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// Who receives it.
    pub customer_id: String,
}

/// Reply to [`ArrangeShipment`].
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(reply, name = "shipment_result", version = 1, service = Shipping)]
pub struct ShipmentResult {
    /// The order.
    pub order_id: String,
    /// Whether a shipment is scheduled.
    pub scheduled: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// Fact: a shipment was scheduled.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "shipment_scheduled", version = 1, service = Shipping)]
pub struct ShipmentScheduled {
    /// The order.
    #[event(key)]
    pub order_id: String,
}

#[handlers]
impl Shipping {
    /// Schedules the shipment, unless no carrier reaches the customer.
    #[listener(name = "ship")]
    async fn ship(
        &self,
        cmd: ArrangeShipment,
    ) -> HandlerResult<(Option<ShipmentScheduled>, ShipmentResult)> {
        let ArrangeShipment {
            order_id,
            customer_id,
        } = cmd;
        if customer_id.starts_with(Self::UNREACHABLE_PREFIX) {
            let declined = ShipmentResult {
                order_id,
                scheduled: false,
                reason: Some(format!("no carrier delivers to customer {customer_id}")),
            };
            return Ok((None, declined));
        }
        let scheduled = ShipmentScheduled {
            order_id: order_id.clone(),
        };
        let result = ShipmentResult {
            order_id,
            scheduled: true,
            reason: None,
        };
        Ok((Some(scheduled), result))
    }
}
