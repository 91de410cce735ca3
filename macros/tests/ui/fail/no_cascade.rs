// One mistake in a handler is one error: the service is still usable, so `App::service` below
// reports nothing.
use atoll::{event_service, handlers, App, Event, HandlerResult};
use atoll::config::Config;
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders")]
pub struct Orders;

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "place_order", version = 1, service = Orders)]
pub struct PlaceOrder {}

#[handlers]
impl Orders {
    #[listener(name = "place-order")]
    fn place(&self, _cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }
}

fn main() {
    let _ = App::new(Config::default()).service(Orders);
}
