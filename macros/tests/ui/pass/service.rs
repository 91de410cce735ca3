use atoll::{event_service, handlers, Context, Event, HandlerResult, Meta, Service};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "shop", name = "orders", partitions = 3)]
pub struct Orders;

#[event_service(company = "acme", namespace = "shop", name = "payments")]
pub struct Payments;

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "place_order", version = 1, service = Orders)]
pub struct PlaceOrder {
    #[event(key)]
    pub order_id: String,
}

#[derive(Serialize, Deserialize, Event)]
#[event(fact, name = "order_placed", version = 2, service = Orders)]
pub struct OrderPlaced(#[event(key)] pub u64);

#[derive(Serialize, Deserialize, Event)]
#[event(fact, name = "payment_charged", version = 1, service = Payments)]
pub enum PaymentCharged {
    Full,
    Partial(u32),
}

#[derive(Serialize, Deserialize, Event)]
#[event(command, name = "charge", version = 1, service = Payments)]
pub struct Charge {
    pub amount: u64,
}

#[handlers]
impl Orders {
    #[listener(name = "place-order")]
    async fn place(&self, ctx: Context<Self>, cmd: PlaceOrder) -> HandlerResult {
        ctx.emit(OrderPlaced(cmd.order_id.len() as u64)).await?;
        ctx.send(Charge { amount: 1 }).await?;
        Ok(())
    }

    #[listener(name = "payments")]
    async fn charged(&self, _meta: Meta, _ctx: Context<Self>, _fact: PaymentCharged) -> HandlerResult {
        Ok(())
    }

    fn not_a_handler(&self) {}
}

fn main() {
    assert_eq!(<Orders as Service>::ID.to_string(), "acme.shop.orders");
    assert_eq!(<Orders as Service>::PARTITIONS, 3);
    assert_eq!(<Payments as Service>::PARTITIONS, 6);
    assert_eq!(OrderPlaced::ce_type(), "acme.shop.orders.order_placed.v2");
    assert_eq!(OrderPlaced(7).key().as_deref(), Some("7"));
    assert_eq!(PaymentCharged::Full.key(), None);
    assert_eq!(PlaceOrder::topic().as_str(), "acme.shop.orders.commands");
    let listeners = <Orders as atoll::Handlers>::listeners();
    assert_eq!(listeners.len(), 2);
    assert_eq!(listeners[0].group_id().unwrap(), "acme.shop.orders-place-order");
    assert_eq!(listeners[1].topic().as_str(), "acme.shop.payments.events");
    Orders.not_a_handler();
    with_settings::check();
    results::check();
    returns::check();
    events::check();
}

mod events {
    use super::*;
    use atoll::Events;

    #[event_service(company = "acme", namespace = "shop", name = "storefront")]
    pub struct Storefront;

    #[derive(Serialize, Deserialize, Event)]
    #[event(fact, name = "order_cancelled", version = 1, service = Orders)]
    pub struct OrderCancelled {
        #[event(key)]
        pub order_id: String,
    }

    #[derive(Events)]
    pub enum OrderFacts {
        Placed(OrderPlaced),
        Cancelled(OrderCancelled),
    }

    #[handlers]
    impl Storefront {
        #[listener(name = "orders")]
        async fn order(&self, fact: OrderFacts) -> HandlerResult {
            match fact {
                OrderFacts::Placed(_) | OrderFacts::Cancelled(_) => Ok(()),
            }
        }
    }

    pub fn check() {
        let l = &<Storefront as atoll::Handlers>::listeners()[0];
        assert_eq!(l.topic().as_str(), "acme.shop.orders.events");
        assert_eq!(
            l.ce_types(),
            ["acme.shop.orders.order_placed.v2", "acme.shop.orders.order_cancelled.v1"]
        );
        assert!(l.declaration().is_ok());
    }
}

mod returns {
    use super::*;

    #[event_service(company = "acme", namespace = "shop", name = "shipping")]
    pub struct Shipping;

    #[derive(Serialize, Deserialize, Event)]
    #[event(command, name = "ship", version = 1, service = Shipping)]
    pub struct Ship {
        #[event(key)]
        pub order_id: String,
        pub parcels: u32,
    }

    #[derive(Serialize, Deserialize, Event)]
    #[event(fact, name = "shipped", version = 1, service = Shipping)]
    pub struct Shipped {
        #[event(key)]
        pub order_id: String,
    }

    #[derive(Serialize, Deserialize, Event)]
    #[event(fact, name = "parcel_sent", version = 1, service = Shipping)]
    pub struct ParcelSent {
        pub n: u32,
    }

    #[derive(Serialize, Deserialize, Event)]
    #[event(reply, name = "ship_result", version = 1, service = Shipping)]
    pub struct ShipResult {
        pub ok: bool,
    }

    #[handlers]
    impl Shipping {
        // Facts of its own, several, optional, and a reply: all returned.
        #[listener(name = "ship")]
        async fn ship(
            &self,
            cmd: Ship,
        ) -> HandlerResult<(Shipped, Vec<ParcelSent>, Option<ShipResult>)> {
            let parcels = (0..cmd.parcels).map(|n| ParcelSent { n }).collect();
            let shipped = Shipped {
                order_id: cmd.order_id,
            };
            Ok((shipped, parcels, Some(ShipResult { ok: true })))
        }

        #[listener(name = "paid")]
        async fn paid(&self, _fact: PaymentCharged) -> HandlerResult<Option<Shipped>> {
            Ok(None)
        }
    }

    pub fn check() {
        assert_eq!(<Shipping as atoll::Handlers>::listeners().len(), 2);
    }
}

mod results {
    use super::*;

    #[event_service(company = "acme", namespace = "shop", name = "analytics", results = true)]
    pub struct Analytics;

    #[derive(Serialize, Deserialize, Event)]
    #[event(result, name = "daily_sales", version = 1, service = Analytics)]
    pub struct DailySales {
        #[event(key)]
        pub day: String,
    }

    #[handlers]
    impl Analytics {
        #[listener(name = "sales", delivery = "exactly_once", ordering = "key")]
        async fn placed(&self, ctx: Context<Self>, _fact: OrderPlaced) -> HandlerResult {
            ctx.emit(DailySales { day: "2026-12-01".into() }).await?;
            Ok(())
        }
    }

    /// Anyone may listen to another service's results, like its facts.
    #[handlers]
    impl Payments {
        #[listener(name = "sales")]
        async fn sales(&self, _result: DailySales) -> HandlerResult {
            Ok(())
        }
    }

    pub fn check() {
        assert!(<Analytics as Service>::PUBLISHES_RESULTS);
        assert!(!<Orders as Service>::PUBLISHES_RESULTS);
        assert_eq!(DailySales::topic().as_str(), "acme.shop.analytics.results");
        assert_eq!(DailySales::KIND, atoll::EventKind::Result);
        let l = &<Analytics as atoll::Handlers>::listeners()[0];
        assert_eq!(l.settings().delivery, Some(atoll::config::DeliveryMode::ExactlyOnce));
        let topics: Vec<String> = atoll::contract::owned_topics::<Analytics>()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        assert!(topics.contains(&"acme.shop.analytics.results".to_owned()));
        assert!(!atoll::contract::owned_topics::<Orders>()
            .iter()
            .any(|t| t.name.as_str().ends_with(".results")));
        assert_eq!(<Payments as atoll::Handlers>::listeners()[0].topic().as_str(), "acme.shop.analytics.results");
    }
}

mod with_settings {
    use super::*;

    #[event_service(company = "acme", namespace = "shop", name = "billing")]
    pub struct Billing;

    #[handlers]
    impl Billing {
        #[listener(
            name = "charged",
            max_attempts = 5,
            retry = "non_blocking",
            retry_topic_delay_ms = 250,
            retry_topic_delays_ms = [500, 2000]
        )]
        async fn charged(&self, _fact: PaymentCharged) -> HandlerResult {
            Ok(())
        }
    }

    pub fn check() {
        let l = &<Billing as atoll::Handlers>::listeners()[0];
        assert_eq!(l.settings().max_attempts, Some(5));
        assert_eq!(l.settings().retry, Some(atoll::config::RetryMode::NonBlocking));
        assert_eq!(l.settings().retry_topic_delay_ms, Some(250));
        assert_eq!(l.settings().retry_topic_delays_ms, Some(vec![500, 2000]));
        assert_eq!(l.settings().backoff_ms, None);
        // The manifest lists the tiers of the ladder written in code.
        let topics: Vec<String> = atoll::describe::<Billing>()
            .unwrap()
            .topics
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        for tier in ["acme.shop.billing.private.retry-500", "acme.shop.billing.private.retry-2000"] {
            assert!(topics.contains(&tier.to_owned()), "{topics:?}");
        }
    }
}
