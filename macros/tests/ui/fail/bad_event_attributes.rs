use atoll::{event_service, Event};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders")]
pub struct Orders;

#[derive(Serialize, Deserialize, Event)]
#[event(name = "order_placed", version = 1, service = Orders)]
pub struct NoKind {}

#[derive(Serialize, Deserialize, Event)]
#[event(fact, command, name = "OrderPlaced", version = 0, service = Orders)]
pub struct Everything {}

#[derive(Serialize, Deserialize, Event)]
#[event(fact, name = "order_placed", version = 1)]
pub struct NoService {
    #[event(key)]
    a: String,
    #[event(key)]
    b: String,
}

#[derive(Serialize, Deserialize, Event)]
pub struct NoAttribute {}

fn main() {}
