//! Each shop service's handlers, unit-tested with `atoll::testing`: no broker, the records they
//! produce read back typed.

use atoll::config::StoreConfig;
use atoll::testing::{SagaStatus, TestBed};
use atoll::Store;
use example_shop::analytics::{Analytics, DailySales};
use example_shop::inventory::{
    self, ExpireReservation, Inventory, ReleaseStock, ReserveStock, StockRelease, StockReleased,
    StockReservation, StockReserved,
};
use example_shop::migrations;
use example_shop::orders::{
    Item, OrderCancelled, OrderCompleted, OrderPlaced, OrderSaga, Orders, PlaceOrder,
};
use example_shop::payments::{
    ChargePayment, ChargeResult, PaymentCharged, PaymentDeclined, PaymentRefunded, Payments,
    RefundPayment, RefundResult,
};
use example_shop::shipping::{ArrangeShipment, ShipmentResult, ShipmentScheduled, Shipping};
use example_shop::storefront::{self, Storefront};

fn apples(qty: i64) -> Vec<Item> {
    vec![Item {
        sku: "apple".into(),
        qty,
    }]
}

fn order(id: &str, amount_cents: i64) -> PlaceOrder {
    PlaceOrder {
        order_id: id.into(),
        customer_id: "c-1".into(),
        items: apples(2),
        amount_cents,
    }
}

fn saga(id: &str) -> OrderSaga {
    OrderSaga {
        order_id: id.into(),
        customer_id: "c-1".into(),
        items: apples(2),
        amount_cents: 700,
    }
}

#[tokio::test]
async fn orders_places_a_valid_order_and_cancels_an_invalid_one() {
    let bed = TestBed::new(Orders::default());
    bed.handle(order("o-1", 700)).await.unwrap();
    let placed = bed.emitted::<OrderPlaced>();
    assert_eq!(placed.len(), 1);
    assert_eq!(
        (placed[0].order_id.as_str(), placed[0].amount_cents),
        ("o-1", 700)
    );
    // The saga was started on the service's reply topic, keyed by the order.
    let start = bed
        .records()
        .into_iter()
        .find(|r| r.topic == "acme.shop.orders.private.reply")
        .expect("a saga start");
    assert_eq!(start.key.as_deref(), Some("o-1"));
    assert!(bed.emitted::<OrderCancelled>().is_empty());

    bed.clear();
    let invalid = PlaceOrder {
        items: vec![],
        ..order("o-2", 700)
    };
    bed.handle(invalid).await.unwrap();
    let cancelled = bed.emitted::<OrderCancelled>();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].reason, "invalid order: the order has no items");
    assert!(bed.emitted::<OrderPlaced>().is_empty());
    assert!(bed
        .records()
        .iter()
        .all(|r| !r.topic.ends_with(".private.reply")));
}

#[tokio::test]
async fn the_order_saga_completes_when_every_step_succeeds() {
    let bed = TestBed::new(Orders::default());
    let run = bed.saga::<OrderSaga>();
    run.start(saga("o-1")).await.unwrap();
    assert_eq!(
        run.status(),
        SagaStatus::Running {
            step: "reserve-stock"
        }
    );
    let reserve: ReserveStock = run.request();
    assert_eq!(
        (reserve.order_id.as_str(), reserve.items.clone()),
        ("o-1", apples(2))
    );

    run.reply(StockReservation {
        order_id: "o-1".into(),
        reserved: true,
        reason: None,
    })
    .await
    .unwrap();
    let charge: ChargePayment = run.request();
    assert_eq!(charge.amount_cents, 700);
    run.reply(ChargeResult {
        order_id: "o-1".into(),
        charged: true,
        reason: None,
    })
    .await
    .unwrap();
    let ship: ArrangeShipment = run.request();
    assert_eq!(ship.customer_id, "c-1");
    run.reply(ShipmentResult {
        order_id: "o-1".into(),
        scheduled: true,
        reason: None,
    })
    .await
    .unwrap();

    assert_eq!(run.status(), SagaStatus::Completed);
    assert_eq!(bed.emitted::<OrderCompleted>().len(), 1);
    assert!(bed.emitted::<OrderCancelled>().is_empty());
}

#[tokio::test]
async fn a_declined_payment_releases_the_stock_and_cancels_the_order() {
    let bed = TestBed::new(Orders::default());
    let run = bed.saga::<OrderSaga>();
    run.start(saga("o-2")).await.unwrap();
    run.reply(StockReservation {
        order_id: "o-2".into(),
        reserved: true,
        reason: None,
    })
    .await
    .unwrap();
    run.reply(ChargeResult {
        order_id: "o-2".into(),
        charged: false,
        reason: Some("over the limit".into()),
    })
    .await
    .unwrap();
    // The step before the failed one is compensated.
    assert_eq!(
        run.status(),
        SagaStatus::Compensating {
            step: "reserve-stock"
        }
    );
    let release: ReleaseStock = run.request();
    assert_eq!(release.order_id, "o-2");
    run.reply(StockRelease {
        order_id: "o-2".into(),
        released: true,
    })
    .await
    .unwrap();

    assert_eq!(
        run.status(),
        SagaStatus::Failed {
            reason: "payment declined: over the limit".into()
        }
    );
    let cancelled = bed.emitted::<OrderCancelled>();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].reason, "payment declined: over the limit");
}

#[tokio::test]
async fn a_timed_out_step_is_compensated_with_the_steps_before_it() {
    let bed = TestBed::new(Orders::default());
    let run = bed.saga::<OrderSaga>();
    run.start(saga("o-3")).await.unwrap();
    run.reply(StockReservation {
        order_id: "o-3".into(),
        reserved: true,
        reason: None,
    })
    .await
    .unwrap();
    run.time_out().await.unwrap();
    // The charge may have happened: it is refunded, then the stock released.
    let refund: RefundPayment = run.request();
    assert_eq!(refund.order_id, "o-3");
    run.reply(RefundResult {
        order_id: "o-3".into(),
        refunded_cents: 0,
    })
    .await
    .unwrap();
    let _: ReleaseStock = run.request();
    run.reply(StockRelease {
        order_id: "o-3".into(),
        released: true,
    })
    .await
    .unwrap();
    assert!(matches!(run.status(), SagaStatus::Failed { reason } if reason.contains("timed out")));
    assert_eq!(bed.emitted::<OrderCancelled>().len(), 1);
}

/// A fresh SQLite store in a temporary directory, migrated with `migrator`.
async fn store(name: &str, migrator: sqlx::migrate::Migrator) -> (Store, TempDir) {
    let dir = TempDir::new(name);
    let mut config = StoreConfig::default();
    config.path = dir.0.join("store.db");
    let store = Store::connect(&config).await.expect("a SQLite store");
    store
        .migrate(&migrator)
        .await
        .expect("the shop's migrations");
    (store, dir)
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("shop-handlers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn inventory_holds_a_reservation_until_it_expires_unless_released_or_sold() {
    let (store, _dir) = store("inventory-hold", migrations::inventory()).await;
    let hold = std::time::Duration::from_secs(120);
    let bed = TestBed::new(Inventory {
        reservation_hold: hold,
    })
    .with_store(store.clone());
    let reserve = |id: &str| ReserveStock {
        order_id: id.into(),
        items: apples(2),
    };
    let start = std::time::SystemTime::now();
    for id in ["kept", "released", "sold"] {
        bed.request(reserve(id)).await.unwrap();
    }
    // A reservation asked again is no new reservation: no second expiry.
    bed.request(reserve("kept")).await.unwrap();
    let scheduled = bed.scheduled().await.unwrap();
    let orders: Vec<String> = scheduled
        .iter()
        .map(|s| s.record.decode::<ExpireReservation>().order_id)
        .collect();
    assert_eq!(orders, ["kept", "released", "sold"]);
    let due = scheduled[0].due.duration_since(start).unwrap();
    assert!(due >= hold - std::time::Duration::from_secs(1), "{due:?}");
    assert_eq!(apple_stock(&store).await, Inventory::INITIAL_STOCK - 6);

    // A release cancels its expiry; so does the order's completion, which sells the stock.
    bed.request(ReleaseStock {
        order_id: "released".into(),
    })
    .await
    .unwrap();
    bed.handle(OrderCompleted {
        order_id: "sold".into(),
    })
    .await
    .unwrap();
    let left: Vec<String> = bed
        .scheduled()
        .await
        .unwrap()
        .iter()
        .map(|s| s.key.to_string())
        .collect();
    assert_eq!(left, ["acme.shop.inventory.expire_reservation/kept"]);

    // Its time come, the kept reservation expires: its stock is back, once.
    bed.clear();
    assert_eq!(bed.run_scheduled().await.unwrap(), 1);
    let expiries = bed.sent::<ExpireReservation>();
    assert_eq!(expiries.len(), 1);
    for _ in 0..2 {
        bed.handle(expiries[0].clone()).await.unwrap();
    }
    // An expiry arriving late (its cancel lost the race) leaves a sold order sold.
    bed.handle(ExpireReservation {
        order_id: "sold".into(),
    })
    .await
    .unwrap();
    let released: Vec<String> = bed
        .emitted::<StockReleased>()
        .into_iter()
        .map(|f| f.order_id)
        .collect();
    assert_eq!(released, ["kept"]);
    assert_eq!(apple_stock(&store).await, Inventory::INITIAL_STOCK - 2);
    // An order completing after its reservation expired (its saga outlived the hold) takes
    // its stock again: the goods left. A release of it then puts nothing back.
    bed.handle(OrderCompleted {
        order_id: "kept".into(),
    })
    .await
    .unwrap();
    assert_eq!(apple_stock(&store).await, Inventory::INITIAL_STOCK - 4);
    bed.request(ReleaseStock {
        order_id: "kept".into(),
    })
    .await
    .unwrap();
    assert_eq!(apple_stock(&store).await, Inventory::INITIAL_STOCK - 4);
}

#[tokio::test]
async fn an_order_completing_after_its_expiry_with_the_stock_gone_is_dead_lettered() {
    let (store, _dir) = store("inventory-short", migrations::inventory()).await;
    let bed = TestBed::new(Inventory::default()).with_store(store.clone());
    let reserve = |id: &str, qty| ReserveStock {
        order_id: id.into(),
        items: apples(qty),
    };
    bed.request(reserve("late", 2)).await.unwrap();
    bed.run_scheduled().await.unwrap();
    for expiry in bed.sent::<ExpireReservation>() {
        bed.handle(expiry).await.unwrap();
    }
    // Every apple is reserved by another order meanwhile.
    bed.request(reserve("all", Inventory::INITIAL_STOCK))
        .await
        .unwrap();
    assert_eq!(apple_stock(&store).await, 0);
    let err = bed
        .handle(OrderCompleted {
            order_id: "late".into(),
        })
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("counted short"), "{err}");
    // Rolled back: nothing taken, the order still expired, its expiry's movement kept.
    assert_eq!(apple_stock(&store).await, 0);
}

/// Rows of `sql` (one text and one integer column).
async fn rows(store: &Store, sql: &'static str) -> Vec<(String, i64)> {
    sqlx::query_as(sql).fetch_all(store.pool()).await.unwrap()
}

async fn apple_stock(store: &Store) -> i64 {
    let mut conn = store.pool().acquire().await.unwrap();
    inventory::levels(&mut conn).await.unwrap()["apple"]
}

#[tokio::test]
async fn inventory_reserves_all_or_nothing_and_releases_once() {
    let (store, _dir) = store("inventory", migrations::inventory()).await;
    let bed = TestBed::new(Inventory::default()).with_store(store.clone());
    let mut conn = store.pool().acquire().await.unwrap();
    let levels = inventory::levels(&mut conn).await.unwrap();
    drop(conn);
    assert!(
        inventory::SKUS
            .iter()
            .all(|sku| levels[*sku] == Inventory::INITIAL_STOCK),
        "the migration stocks every SKU: {levels:?}"
    );
    bed.request(ReserveStock {
        order_id: "o-1".into(),
        items: apples(3),
    })
    .await
    .unwrap();
    let replies = bed.replies::<StockReservation>();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].reserved);
    assert_eq!(bed.emitted::<StockReserved>().len(), 1);
    assert_eq!(apple_stock(&store).await, Inventory::INITIAL_STOCK - 3);

    // Out of stock, or an unknown SKU after one that was available: refused with a reason,
    // nothing taken (the apple taken first is put back), no fact.
    let kiwi = || Item {
        sku: "kiwi".into(),
        qty: 1,
    };
    for (id, items, why) in [
        (
            "o-2",
            apples(Inventory::INITIAL_STOCK),
            "out of stock: apple",
        ),
        (
            "o-3",
            [apples(1), vec![kiwi()]].concat(),
            "out of stock: kiwi",
        ),
    ] {
        bed.clear();
        bed.request(ReserveStock {
            order_id: id.into(),
            items,
        })
        .await
        .unwrap();
        let refused = &bed.replies::<StockReservation>()[0];
        assert!(!refused.reserved, "{id}");
        assert_eq!(refused.reason.as_deref(), Some(why));
        assert!(bed.emitted::<StockReserved>().is_empty());
        assert_eq!(apple_stock(&store).await, Inventory::INITIAL_STOCK - 3);
    }

    // A release puts the stock back once; a second one finds nothing.
    bed.clear();
    for _ in 0..2 {
        bed.request(ReleaseStock {
            order_id: "o-1".into(),
        })
        .await
        .unwrap();
    }
    let released: Vec<bool> = bed
        .replies::<StockRelease>()
        .iter()
        .map(|r| r.released)
        .collect();
    assert_eq!(released, [true, false]);
    assert_eq!(bed.emitted::<StockReleased>().len(), 1);
    assert_eq!(apple_stock(&store).await, Inventory::INITIAL_STOCK);

    // A reservation arriving after its order's release (a late command) is refused.
    bed.clear();
    bed.request(ReserveStock {
        order_id: "o-1".into(),
        items: apples(1),
    })
    .await
    .unwrap();
    let late = &bed.replies::<StockReservation>()[0];
    assert_eq!(
        late.reason.as_deref(),
        Some("the order was released already")
    );
    assert_eq!(apple_stock(&store).await, Inventory::INITIAL_STOCK);

    // Each movement happened once, and the movements add up to the stock.
    let movements = rows(
        &store,
        "SELECT order_id || ' ' || kind, COUNT(*) FROM inventory_movements
         GROUP BY order_id, sku, kind ORDER BY 1",
    )
    .await;
    assert_eq!(
        movements,
        [("o-1 release".to_owned(), 1), ("o-1 reserve".to_owned(), 1)]
    );
}

#[tokio::test]
async fn payments_charges_once_declines_over_the_limit_and_refunds_once() {
    let (store, _dir) = store("payments", migrations::payments()).await;
    let bed = TestBed::new(Payments::new(0.0)).with_store(store.clone());
    let charge = |order_id: &str, amount_cents| ChargePayment {
        order_id: order_id.into(),
        customer_id: "c-1".into(),
        amount_cents,
    };
    bed.request(charge("o-1", 700)).await.unwrap();
    bed.request(charge("o-1", 700)).await.unwrap();
    let charged: Vec<bool> = bed
        .replies::<ChargeResult>()
        .iter()
        .map(|r| r.charged)
        .collect();
    assert_eq!(
        charged,
        [true, true],
        "a repeated charge succeeds without charging again"
    );
    assert_eq!(bed.emitted::<PaymentCharged>().len(), 1);

    bed.request(charge("o-2", Payments::LIMIT_CENTS + 1))
        .await
        .unwrap();
    let declined = bed.emitted::<PaymentDeclined>();
    assert_eq!(declined.len(), 1);
    assert!(
        declined[0].reason.contains("exceeds the limit"),
        "{}",
        declined[0].reason
    );

    for _ in 0..2 {
        bed.request(RefundPayment {
            order_id: "o-1".into(),
        })
        .await
        .unwrap();
    }
    let refunded: Vec<i64> = bed
        .replies::<RefundResult>()
        .iter()
        .map(|r| r.refunded_cents)
        .collect();
    assert_eq!(refunded, [700, 0]);
    assert_eq!(bed.emitted::<PaymentRefunded>()[0].amount_cents, 700);

    // A charge arriving after its order's refund is declined.
    bed.clear();
    bed.request(charge("o-1", 700)).await.unwrap();
    let late = &bed.replies::<ChargeResult>()[0];
    assert!(!late.charged);
    assert_eq!(
        late.reason.as_deref(),
        Some("the order was refunded already")
    );

    // The ledger, in SQL: one charge and one refund for o-1, nothing for the declined o-2.
    let ledger = rows(
        &store,
        "SELECT order_id || ' ' || kind, SUM(amount_cents) FROM payments_ledger GROUP BY order_id, kind ORDER BY 1",
    )
    .await;
    assert_eq!(
        ledger,
        [
            ("o-1 charge".to_owned(), 700),
            ("o-1 refund".to_owned(), 700)
        ]
    );
}

#[tokio::test]
async fn commands_with_impossible_amounts_are_refused_for_good() {
    let (stock, _dir) = store("amounts", migrations::inventory()).await;
    let bed = TestBed::new(Inventory::default()).with_store(stock.clone());
    let err = bed
        .handle(ReserveStock {
            order_id: "o-1".into(),
            items: apples(-5),
        })
        .await
        .unwrap_err();
    assert!(
        err.is_permanent() && err.to_string().contains("at least 1"),
        "{err}"
    );
    assert_eq!(
        apple_stock(&stock).await,
        Inventory::INITIAL_STOCK,
        "no stock minted"
    );

    let (ledger, _dir) = store("negative", migrations::payments()).await;
    let bed = TestBed::new(Payments::new(0.0)).with_store(ledger.clone());
    let err = bed
        .handle(ChargePayment {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            amount_cents: -1,
        })
        .await
        .unwrap_err();
    assert!(
        err.is_permanent() && err.to_string().contains("negative"),
        "{err}"
    );
    assert!(rows(
        &ledger,
        "SELECT order_id, amount_cents FROM payments_ledger"
    )
    .await
    .is_empty());
}

#[tokio::test]
async fn the_storefront_shows_each_order_whatever_order_its_facts_come_in() {
    let (store, _dir) = store("storefront", migrations::storefront()).await;
    let bed = TestBed::new(Storefront).with_store(store.clone());
    // o-1's end arrives before its placement (they are on different topics).
    bed.handle(OrderCompleted {
        order_id: "o-1".into(),
    })
    .await
    .unwrap();
    bed.handle(PaymentCharged {
        order_id: "o-1".into(),
        amount_cents: 700,
    })
    .await
    .unwrap();
    bed.handle(OrderPlaced {
        order_id: "o-1".into(),
        customer_id: "c-1".into(),
        items: apples(2),
        amount_cents: 700,
    })
    .await
    .unwrap();
    bed.handle(OrderCancelled {
        order_id: "o-2".into(),
        reason: "payment declined".into(),
    })
    .await
    .unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    let o1 = storefront::order_status(&mut conn, "o-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o1.status, "completed");
    assert_eq!(o1.customer_id.as_deref(), Some("c-1"));
    assert_eq!(o1.amount_cents, Some(700));
    assert!(o1.placed_at.is_some() && o1.charged_at.is_some() && o1.completed_at.is_some());
    let o2 = storefront::order_status(&mut conn, "o-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (o2.status.as_str(), o2.reason.as_deref()),
        ("cancelled", Some("payment declined"))
    );
    assert!(storefront::order_status(&mut conn, "o-3")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_flaky_gateway_fails_transiently() {
    let (store, _dir) = store("flaky", migrations::payments()).await;
    let bed = TestBed::new(Payments::new(1.0)).with_store(store.clone());
    let err = bed
        .handle(ChargePayment {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            amount_cents: 1,
        })
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert!(bed.records().is_empty(), "a failed charge produces nothing");
}

#[tokio::test]
async fn shipping_schedules_or_explains_why_not() {
    let bed = TestBed::new(Shipping);
    bed.request(ArrangeShipment {
        order_id: "o-1".into(),
        customer_id: "c-1".into(),
    })
    .await
    .unwrap();
    assert!(bed.replies::<ShipmentResult>()[0].scheduled);
    assert_eq!(bed.emitted::<ShipmentScheduled>().len(), 1);

    bed.clear();
    let customer = format!("{}42", Shipping::UNREACHABLE_PREFIX);
    bed.request(ArrangeShipment {
        order_id: "o-2".into(),
        customer_id: customer.clone(),
    })
    .await
    .unwrap();
    let result = &bed.replies::<ShipmentResult>()[0];
    assert!(!result.scheduled);
    assert_eq!(
        result.reason.as_deref(),
        Some(format!("no carrier delivers to customer {customer}").as_str())
    );
    assert!(bed.emitted::<ShipmentScheduled>().is_empty());
}

#[tokio::test]
async fn analytics_writes_a_line_per_ended_order_one_call_a_batch() {
    let bed = TestBed::new(Analytics);
    let completed = |id: &str| OrderCompleted {
        order_id: id.into(),
    };
    let results = bed
        .handle_batch(vec![completed("o-1"), completed("o-2"), completed("o-3")])
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let lines = bed.emitted::<DailySales>();
    let orders: Vec<&str> = lines.iter().map(|l| l.order_id.as_str()).collect();
    assert_eq!(orders, ["o-1", "o-2", "o-3"], "in the batch's order");
    // Dated by the fact's `ce_time` (the bed's is now, in UTC).
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(
        lines.iter().all(|l| l.completed && l.day == today),
        "{lines:?}"
    );
    // A cancelled order, alone (a batch of one), is a line too.
    bed.handle(OrderCancelled {
        order_id: "o-4".into(),
        reason: "declined".into(),
    })
    .await
    .unwrap();
    let last = bed.emitted::<DailySales>().pop().unwrap();
    assert_eq!((last.order_id.as_str(), last.completed), ("o-4", false));
}
