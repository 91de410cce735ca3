use atoll::{event_service, handlers, Context, Event, HandlerResult, Saga, Step};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders", sagas = [Checkout])]
pub struct Orders;

#[handlers]
impl Orders {}

#[event_service(company = "acme", namespace = "shop", name = "payments")]
pub struct Payments;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "charge", version = 1, service = Payments)]
pub struct Charge {
    #[event(key)]
    pub order_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkout {
    pub order_id: String,
}

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

// `Checkout` is declared by `Orders`: `Payments` cannot start it.
#[handlers]
impl Payments {
    #[listener(name = "charge")]
    async fn charge(&self, ctx: Context<Self>, cmd: Charge) -> HandlerResult {
        ctx.start_saga(Checkout { order_id: cmd.order_id }).await?;
        Ok(())
    }
}

fn main() {}
