use atoll::{event_service, handlers, Context, HandlerResult, Saga, Step};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "payments", sagas = [Refund])]
pub struct Payments;

#[handlers]
impl Payments {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub order_id: String,
}

impl Saga for Refund {
    const NAME: &'static str = "refund";

    fn id(&self) -> String {
        self.order_id.clone()
    }

    fn steps() -> Vec<Step<Self>> {
        Vec::new()
    }

    async fn completed(self, _ctx: Context<Payments>) -> HandlerResult {
        Ok(())
    }

    async fn failed(self, _ctx: Context<Payments>, _reason: String) -> HandlerResult {
        Ok(())
    }
}

// A saga belongs to one service: listing it in a second one conflicts.
#[event_service(company = "acme", namespace = "shop", name = "orders", sagas = [Refund])]
pub struct Orders;

#[handlers]
impl Orders {}

// `sagas` takes a list of types.
#[event_service(company = "acme", namespace = "shop", name = "billing", sagas = Refund)]
pub struct Billing;

fn main() {}
