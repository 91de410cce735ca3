//! `#[derive(Events)]`: one listener takes several event types of one topic, each record
//! decoded as the variant its `ce_type` names (run through `atoll::testing`); an enum whose
//! types travel on different topics is refused at start.

use std::sync::Mutex;

use atoll::config::Config;
use atoll::testing::TestBed;
use atoll::{event_service, handlers, App, Event, Events, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "orders")]
struct Orders;

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(fact, name = "order_placed", version = 1, service = Orders)]
struct OrderPlaced {
    #[event(key)]
    order_id: String,
    total: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(fact, name = "order_cancelled", version = 1, service = Orders)]
struct OrderCancelled {
    #[event(key)]
    order_id: String,
    reason: String,
}

#[derive(Debug, PartialEq, Events)]
enum OrderFacts {
    Placed(OrderPlaced),
    Cancelled(OrderCancelled),
}

#[event_service(company = "acme", namespace = "test", name = "storefront")]
struct Storefront {
    seen: Mutex<Vec<OrderFacts>>,
}

#[handlers]
impl Storefront {
    #[listener(name = "orders")]
    async fn order(&self, fact: OrderFacts) -> HandlerResult {
        self.seen.lock().unwrap().push(fact);
        Ok(())
    }
}

#[tokio::test]
async fn each_record_becomes_the_variant_its_type_names() {
    let bed = TestBed::new(Storefront {
        seen: Mutex::default(),
    });
    let placed = || OrderPlaced {
        order_id: "o-1".into(),
        total: 30,
    };
    let cancelled = || OrderCancelled {
        order_id: "o-1".into(),
        reason: "no stock".into(),
    };
    bed.handle(placed()).await.unwrap();
    bed.handle(cancelled()).await.unwrap();
    assert_eq!(
        *bed.service().seen.lock().unwrap(),
        [
            OrderFacts::Placed(placed()),
            OrderFacts::Cancelled(cancelled())
        ]
    );
    let listeners = <Storefront as atoll::Handlers>::listeners();
    assert_eq!(listeners.len(), 1, "one listener, one consumer group");
    assert_eq!(listeners[0].topic().as_str(), "acme.test.orders.events");
}

#[event_service(company = "acme", namespace = "test", name = "payments")]
struct Payments;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(fact, name = "payment_charged", version = 1, service = Payments)]
struct PaymentCharged {
    order_id: String,
}

#[derive(Debug, Events)]
#[allow(dead_code)] // Refused before any record is read.
enum Mixed {
    Placed(OrderPlaced),
    Charged(PaymentCharged),
}

#[event_service(company = "acme", namespace = "test", name = "audit")]
struct Audit;

#[handlers]
impl Audit {
    #[listener(name = "everything")]
    async fn everything(&self, _fact: Mixed) -> HandlerResult {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_of_two_topics_are_refused_at_start() {
    let l = &<Audit as atoll::Handlers>::listeners()[0];
    let why = l.declaration().unwrap_err();
    assert!(why.contains("one listener reads one topic"), "{why}");
    let e = App::new(Config::default())
        .service(Audit)
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("listener `everything`") && e.contains("acme.test.payments.events"),
        "{e}"
    );
}
