use atoll::{event_service, handlers, Event, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders")]
pub struct Orders;

#[event_service(company = "acme", namespace = "shop", name = "payments")]
pub struct Payments;

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "charge", version = 1, service = Payments)]
pub struct Charge {}

#[handlers]
impl Orders {
    #[listener(name = "steal-charges")]
    async fn steal(&self, _cmd: Charge) -> HandlerResult {
        Ok(())
    }
}

fn main() {}
