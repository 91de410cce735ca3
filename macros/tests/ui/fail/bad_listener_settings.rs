use atoll::{event_service, handlers, Event, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders")]
pub struct Orders;

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "place_order", version = 1, service = Orders)]
pub struct PlaceOrder {}

#[handlers]
impl Orders {
    #[listener(name = "place-order", max_atempts = 5, retry = "sometimes", backoff_ms = "fast")]
    async fn place(&self, _cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }

    #[listener(name = "audit", ordering = "random", delivery = "twice")]
    async fn audit(&self, _cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }

    #[listener(name = "status", view = "order_status, orders; DROP TABLE x")]
    async fn status(&self, _cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }

    #[listener(name = "history", view = 3)]
    async fn history(&self, _cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }

    #[listener(name = "ladder", retry_topic_delays_ms = [500, "slow"])]
    async fn ladder(&self, _cmd: PlaceOrder) -> HandlerResult {
        Ok(())
    }
}

fn main() {}
