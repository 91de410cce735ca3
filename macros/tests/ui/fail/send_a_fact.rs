use atoll::{event_service, handlers, Context, Event, HandlerResult};
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
    #[listener(name = "place-order")]
    async fn place(&self, ctx: Context<Self>, _cmd: PlaceOrder) -> HandlerResult {
        ctx.send(OrderPlaced {}).await?;
        Ok(())
    }
}

fn main() {}
