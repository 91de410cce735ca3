use atoll::{event_service, handlers, Event, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders")]
pub struct Orders;

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "place_order", version = 1, service = Orders)]
pub struct PlaceOrder {}

#[handlers]
impl Orders {
    #[listener(name = "not-async")]
    fn not_async(&self, _cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }

    #[listener(name = "no-self")]
    async fn no_self(_cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }

    #[listener(name = "no-event")]
    async fn no_event(&self) -> HandlerResult {
        Ok(())
    }

    #[listener(name = "no-result")]
    async fn no_result(&self, _cmd: PlaceOrder) {}

    #[listener(name = "Bad Name")]
    async fn bad_name(&self, _cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }

    #[listener]
    async fn unnamed(&self, _cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }
}

fn main() {}
