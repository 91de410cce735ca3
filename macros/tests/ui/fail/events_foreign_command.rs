use atoll::{event_service, handlers, Event, Events, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders")]
pub struct Orders;

#[event_service(company = "acme", namespace = "shop", name = "payments")]
pub struct Payments;

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "place_order", version = 1, service = Orders)]
pub struct PlaceOrder {}

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "charge", version = 1, service = Payments)]
pub struct Charge {}

#[derive(Events)]
pub enum Inbox {
    Place(PlaceOrder),
    Charge(Charge),
}

#[handlers]
impl Orders {
    #[listener(name = "inbox")]
    async fn inbox(&self, _cmd: Inbox) -> HandlerResult {
        Ok(())
    }
}

fn main() {}
