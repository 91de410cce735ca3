//! What a handler returns is produced, as `#[derive(Event)]` and `#[handlers]` generate it:
//! facts emitted in order, an `Option` that is `None` producing nothing, each of a `Vec`, and a
//! reply sent to the command's reply topic (run through `atoll::testing`, which runs the
//! runtime's delivery).

use atoll::testing::TestBed;
use atoll::{event_service, handlers, Event, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "test", name = "shipping")]
struct Shipping;

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(command, name = "ship", version = 1, service = Shipping, reply = ShipResult)]
struct Ship {
    #[event(key)]
    order_id: String,
    parcels: u32,
    express: bool,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(fact, name = "shipped", version = 1, service = Shipping)]
struct Shipped {
    #[event(key)]
    order_id: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(fact, name = "parcel_sent", version = 1, service = Shipping)]
struct ParcelSent {
    n: u32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(fact, name = "express_booked", version = 1, service = Shipping)]
struct ExpressBooked {
    order_id: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(reply, name = "ship_result", version = 1, service = Shipping)]
struct ShipResult {
    parcels: u32,
}

#[handlers]
impl Shipping {
    #[listener(name = "ship")]
    async fn ship(
        &self,
        cmd: Ship,
    ) -> HandlerResult<(Shipped, Vec<ParcelSent>, Option<ExpressBooked>, ShipResult)> {
        let parcels = (1..=cmd.parcels).map(|n| ParcelSent { n }).collect();
        let express = cmd.express.then(|| ExpressBooked {
            order_id: cmd.order_id.clone(),
        });
        let shipped = Shipped {
            order_id: cmd.order_id,
        };
        Ok((
            shipped,
            parcels,
            express,
            ShipResult {
                parcels: cmd.parcels,
            },
        ))
    }
}

fn ship(order_id: &str, parcels: u32, express: bool) -> Ship {
    Ship {
        order_id: order_id.into(),
        parcels,
        express,
    }
}

#[tokio::test]
async fn returned_outputs_are_produced_in_order() {
    let bed = TestBed::new(Shipping);
    bed.request(ship("o-1", 2, true)).await.unwrap();
    let types: Vec<String> = bed
        .records()
        .iter()
        .map(|r| r.envelope.ce_type.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        [
            "acme.test.shipping.shipped.v1",
            "acme.test.shipping.parcel_sent.v1",
            "acme.test.shipping.parcel_sent.v1",
            "acme.test.shipping.express_booked.v1",
            "acme.test.shipping.ship_result.v1",
        ]
    );
    assert_eq!(
        bed.emitted::<ParcelSent>(),
        [ParcelSent { n: 1 }, ParcelSent { n: 2 }]
    );
    // Keyed by their own key, or else by the command's.
    let keys: Vec<Option<String>> = bed.records().iter().map(|r| r.key.clone()).collect();
    assert!(keys.iter().all(|k| k.as_deref() == Some("o-1")), "{keys:?}");
    assert_eq!(bed.replies::<ShipResult>(), [ShipResult { parcels: 2 }]);
}

#[tokio::test]
async fn none_and_empty_produce_nothing_and_no_reply_is_sent_unasked() {
    let bed = TestBed::new(Shipping);
    // Not a request: the command names no reply topic, so the reply goes nowhere.
    bed.handle(ship("o-2", 0, false)).await.unwrap();
    assert_eq!(
        bed.emitted::<Shipped>(),
        [Shipped {
            order_id: "o-2".into()
        }]
    );
    assert_eq!(bed.records().len(), 1, "{:?}", bed.records());
}
