use atoll::{event_service, handlers, Event, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders")]
pub struct Orders;

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "place_order", version = 1, service = Orders)]
pub struct PlaceOrder {}

#[derive(Serialize, Deserialize, Event)]
#[event(fact, name = "order_placed", version = 1, service = Orders)]
pub struct OrderPlaced {}

#[handlers]
impl Orders {
    // A fact is emitted, not sent.
    #[listener(name = "place-order", sends = [PlaceOrder, OrderPlaced])]
    async fn place(&self, _cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }
}

#[event_service(company = "acme", namespace = "shop", name = "payments")]
pub struct Payments;

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "charge", version = 1, service = Payments)]
pub struct Charge {}

#[handlers]
impl Payments {
    // Not a list of types.
    #[listener(name = "charge", sends = "PlaceOrder")]
    async fn charge(&self, _cmd: Charge) -> HandlerResult {
        Ok(())
    }

    #[listener(name = "charge-again", sends = [PlaceOrder, 3])]
    async fn again(&self, _cmd: Charge) -> HandlerResult {
        Ok(())
    }
}

fn main() {}
