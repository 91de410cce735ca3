use atoll::{event_service, handlers, Event, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "payments")]
pub struct Payments;

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "charge", version = 1, service = Payments)]
pub struct Charge {}

#[handlers]
impl Payments {
    #[listener(name = "charge")]
    async fn charge(&self, _cmd: Charge) -> HandlerResult<String> {
        Ok("charged".into())
    }
}

fn main() {}
