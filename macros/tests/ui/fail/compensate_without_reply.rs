use atoll::{event_service, handlers, Context, Event, HandlerResult, Saga, Step};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "stock")]
pub struct Stock;

#[handlers]
impl Stock {}

// `Release` declares no `reply = …`: nothing says what answers it.
#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "release", version = 1, service = Stock)]
pub struct Release {
    #[event(key)]
    pub order_id: String,
}

#[event_service(company = "acme", namespace = "shop", name = "orders", sagas = [Checkout])]
pub struct Orders;

#[handlers]
impl Orders {}

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
        vec![Step::new(
            "release",
            |c: &Checkout| Release { order_id: c.order_id.clone() },
            |_: &mut Checkout, _reply| Ok(()),
        )]
    }

    async fn completed(self, _ctx: Context<Orders>) -> HandlerResult {
        Ok(())
    }

    async fn failed(self, _ctx: Context<Orders>, _reason: String) -> HandlerResult {
        Ok(())
    }
}

fn main() {}
