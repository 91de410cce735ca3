use atoll::{event_service, handlers, Context, HandlerResult, Saga, Step};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders")]
pub struct Orders;

#[handlers]
impl Orders {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkout {
    pub order_id: String,
}

// No service lists `Checkout` in its `sagas = […]`.
impl Saga for Checkout {
    const NAME: &'static str = "checkout";

    fn id(&self) -> String {
        self.order_id.clone()
    }

    fn steps() -> Vec<Step<Self>> {
        Vec::new()
    }

    async fn completed(self, _ctx: Context<Orders>) -> HandlerResult {
        Ok(())
    }

    async fn failed(self, _ctx: Context<Orders>, _reason: String) -> HandlerResult {
        Ok(())
    }
}

fn main() {}
