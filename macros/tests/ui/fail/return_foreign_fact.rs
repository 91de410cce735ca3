use atoll::{event_service, handlers, Event, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders")]
pub struct Orders;

#[event_service(company = "acme", namespace = "shop", name = "payments")]
pub struct Payments;

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "place_order", version = 1, service = Orders)]
pub struct PlaceOrder {}

#[derive(Serialize, Deserialize, Event)]
#[event(fact, name = "order_placed", version = 1, service = Orders)]
pub struct OrderPlaced {}

#[derive(Serialize, Deserialize, Event)]
#[event(fact, name = "payment_charged", version = 1, service = Payments)]
pub struct PaymentCharged {}

#[handlers]
impl Orders {
    #[listener(name = "place-order")]
    async fn place(&self, _cmd: PlaceOrder) -> HandlerResult<(OrderPlaced, PaymentCharged)> {
        Ok((OrderPlaced {}, PaymentCharged {}))
    }
}

fn main() {}
