//! The orders saga's three paths on a real broker (tansu): the facts each path publishes, and
//! the compensations it runs, in reverse order.

use std::time::{Duration, Instant};

use atoll::{App, Event, Service};
use atoll_testkit::{header, read_topic, text, Tansu};
use example_shop::inventory::{
    Inventory, ReportStock, StockReleased, StockReported, StockReserved,
};
use example_shop::orders::{Item, OrderCancelled, OrderCompleted, Orders, PlaceOrder};
use example_shop::payments::{ChargePayment, PaymentCharged, PaymentRefunded, Payments};
use example_shop::shipping::{ShipmentScheduled, Shipping};
use example_shop::{with_all, Options};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;

fn order(id: &str, customer: &str, qty: i64, amount_cents: i64) -> PlaceOrder {
    PlaceOrder {
        order_id: id.into(),
        customer_id: customer.into(),
        items: vec![Item {
            sku: "apple".into(),
            qty,
        }],
        amount_cents,
    }
}

/// The records of `topic` once `done` holds for them (or after 90 s).
fn records_when(
    broker: &Tansu,
    topic: &str,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = read_topic(
            &broker.bootstrap(),
            topic,
            usize::MAX,
            Duration::from_secs(1),
        );
        if done(&got) || Instant::now() > deadline {
            return got;
        }
    }
}

/// The records of type `ce_type` for order `key`.
fn of<'a>(records: &'a [OwnedMessage], key: &str, ce_type: &str) -> Vec<&'a OwnedMessage> {
    records
        .iter()
        .filter(|m| m.key() == Some(key.as_bytes()) && header(*m, "ce_type") == Some(ce_type))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_path_publishes_its_facts_and_runs_its_compensations() {
    let broker = Tansu::start();
    let mut config = broker.config();
    example_shop::analytics::without_transactions(&mut config);
    let running = with_all(App::new(config), &Options::default())
        .start()
        .await
        .expect("shop");
    let client = running.client("test");
    let limit = Payments::LIMIT_CENTS;
    for o in [
        order("happy", "c-1", 2, 1_000),
        order("declined", "c-2", 3, limit + 1),
        order("unshippable", "remote-1", 5, 2_000),
    ] {
        client.send(&o).await.unwrap();
    }

    let orders = Orders::ID.events().to_string();
    let (completed, cancelled) = (OrderCompleted::ce_type(), OrderCancelled::ce_type());
    let outcomes = records_when(&broker, &orders, |r| {
        of(r, "happy", completed).len()
            + of(r, "declined", cancelled).len()
            + of(r, "unshippable", cancelled).len()
            >= 3
    });
    let reason = |key| -> String {
        let m = of(&outcomes, key, cancelled);
        assert_eq!(m.len(), 1, "one order_cancelled for {key}");
        serde_json::from_str::<OrderCancelled>(text(m[0]))
            .unwrap()
            .reason
    };
    assert_eq!(of(&outcomes, "happy", completed).len(), 1);
    assert!(of(&outcomes, "happy", cancelled).is_empty());
    assert!(
        reason("declined").starts_with("payment declined:"),
        "{}",
        reason("declined")
    );
    assert!(
        reason("unshippable")
            .starts_with("shipping failed: no carrier delivers to customer remote-1"),
        "{}",
        reason("unshippable")
    );
    assert!(of(&outcomes, "declined", completed).is_empty());
    assert!(of(&outcomes, "unshippable", completed).is_empty());

    // Compensations: a declined charge releases the stock; a failed shipment refunds the
    // charge, then releases the stock.
    let stock = records_when(&broker, Inventory::ID.events().as_ref(), |r| {
        of(r, "declined", StockReleased::ce_type()).len()
            + of(r, "unshippable", StockReleased::ce_type()).len()
            >= 2
    });
    let payments = records_when(&broker, Payments::ID.events().as_ref(), |r| {
        !of(r, "unshippable", PaymentRefunded::ce_type()).is_empty()
    });
    for key in ["happy", "declined", "unshippable"] {
        assert_eq!(
            of(&stock, key, StockReserved::ce_type()).len(),
            1,
            "{key} reserved once"
        );
    }
    assert!(of(&stock, "happy", StockReleased::ce_type()).is_empty());
    assert_eq!(of(&stock, "declined", StockReleased::ce_type()).len(), 1);
    let released = of(&stock, "unshippable", StockReleased::ce_type());
    assert_eq!(released.len(), 1);
    assert_eq!(of(&payments, "happy", PaymentCharged::ce_type()).len(), 1);
    assert!(of(&payments, "declined", PaymentCharged::ce_type()).is_empty());
    assert!(of(&payments, "declined", PaymentRefunded::ce_type()).is_empty());
    assert!(of(&payments, "happy", PaymentRefunded::ce_type()).is_empty());
    let refunded = of(&payments, "unshippable", PaymentRefunded::ce_type());
    assert_eq!(refunded.len(), 1);
    let at = |m: &OwnedMessage| m.timestamp().to_millis().unwrap();
    assert!(
        at(refunded[0]) <= at(released[0]),
        "the refund (step 2's compensation) runs before the release (step 1's)"
    );
    let shipped = records_when(&broker, Shipping::ID.events().as_ref(), |r| {
        !of(r, "happy", ShipmentScheduled::ce_type()).is_empty()
    });
    assert_eq!(of(&shipped, "happy", ShipmentScheduled::ce_type()).len(), 1);
    assert!(of(&shipped, "unshippable", ShipmentScheduled::ce_type()).is_empty());

    // Payments takes commands from orders only (an interceptor): a charge sent by anyone
    // else is dead-lettered, naming the sender, and charges nothing.
    running
        .client("mallory")
        .send(&ChargePayment {
            order_id: "stolen".into(),
            customer_id: "c-9".into(),
            amount_cents: 1_000,
        })
        .await
        .unwrap();
    let dead = records_when(&broker, Payments::ID.dlq().as_ref(), |r| {
        r.iter().any(|m| m.key() == Some(&b"stolen"[..]))
    });
    let stolen: Vec<_> = dead
        .iter()
        .filter(|m| m.key() == Some(&b"stolen"[..]))
        .collect();
    assert_eq!(stolen.len(), 1, "dead-lettered once");
    assert_eq!(
        header(stolen[0], "atoll_dlq_error"),
        Some("payments takes commands from acme.shop.orders only, not from mallory")
    );
    assert_eq!(header(stolen[0], "atoll_dlq_attempts"), Some("1"));
    let charged = read_topic(
        &broker.bootstrap(),
        Payments::ID.events().as_ref(),
        usize::MAX,
        Duration::from_secs(2),
    );
    assert!(
        of(&charged, "stolen", PaymentCharged::ce_type()).is_empty(),
        "nothing charged"
    );

    // Only the completed order holds stock.
    client
        .send(&ReportStock {
            request_id: "levels".into(),
        })
        .await
        .unwrap();
    let reports = records_when(&broker, Inventory::ID.events().as_ref(), |r| {
        !of(r, "levels", StockReported::ce_type()).is_empty()
    });
    let report: StockReported =
        serde_json::from_str(text(of(&reports, "levels", StockReported::ce_type())[0])).unwrap();
    assert_eq!(report.levels["apple"], Inventory::INITIAL_STOCK - 2);
    running.shutdown().await;
}
