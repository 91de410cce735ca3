//! The reference system of atoll (see `docs/architecture.md#the-reference-shop`): `orders`,
//! `inventory`, `payments`, `shipping` and `storefront` under `acme.shop`. Each order is a saga
//! orchestrated by `orders` over its reply topic:
//!
//! ```text
//! place_order → orders: order_placed, saga:
//!   reserve_stock (inventory) → charge_payment (payments) → arrange_shipment (shipping)
//!     → order_completed
//!   declined charge   → release_stock                  → order_cancelled
//!   failed shipment   → refund_payment → release_stock → order_cancelled
//! ```
//!
//! `inventory` and `payments` keep their state in their store with transactional listeners;
//! `storefront` builds a view of every order from the facts and serves `GET /orders/{id}`;
//! `analytics`, a pipeline, turns each order's outcome into a `daily_sales` result, exactly
//! once (Kafka transactions).

pub mod analytics;
pub mod driver;
pub mod inventory;
pub mod migrations;
pub mod orders;
pub mod payments;
pub mod shipping;
pub mod storefront;
pub mod topics;

use atoll::contract::{owned_topics, ServiceDescription, TopicSpec};
use atoll::{describe, App};

/// The services of the shop, by name.
pub const SERVICES: &[&str] = &[
    "orders",
    "inventory",
    "payments",
    "shipping",
    "storefront",
    "analytics",
];

/// How the shop's services behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// The probability that a charge fails transiently, from 0 (never) to below 1.
    pub flaky_payments: f64,
    /// Fault injection: the orders service dead-letters every order (see
    /// [`orders::Orders::refuse`]).
    pub refuse_orders: bool,
    /// How long inventory holds a reservation before it expires (see
    /// [`inventory::Inventory::reservation_hold`]).
    pub reservation_hold: std::time::Duration,
}

/// The shortest reservation hold [`Options::check`] accepts.
pub const MIN_RESERVATION_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for Options {
    /// Reliable payments, orders accepted, reservations held for 30 minutes.
    fn default() -> Self {
        Self {
            flaky_payments: 0.0,
            refuse_orders: false,
            reservation_hold: inventory::Inventory::RESERVATION_HOLD,
        }
    }
}

impl Options {
    /// `Err` when a value is out of range.
    pub fn check(&self) -> anyhow::Result<()> {
        if !(0.0..1.0).contains(&self.flaky_payments) {
            anyhow::bail!(
                "--flaky-payments must be at least 0 and below 1, not {}",
                self.flaky_payments
            );
        }
        // The orders saga's three steps time out after 15 s each: a hold shorter than a
        // minute would expire reservations of orders still on their way.
        if self.reservation_hold < MIN_RESERVATION_HOLD {
            anyhow::bail!(
                "--reservation-hold-ms must be at least {} (a minute), not {}",
                MIN_RESERVATION_HOLD.as_millis(),
                self.reservation_hold.as_millis()
            );
        }
        Ok(())
    }
}

/// Registers one service by name.
pub fn with_service(app: App, name: &str, options: &Options) -> anyhow::Result<App> {
    Ok(match name {
        "orders" => app.service(orders::Orders::new(options.refuse_orders)),
        "inventory" => app
            .service(inventory::Inventory {
                reservation_hold: options.reservation_hold,
            })
            .migrations(migrations::inventory()),
        "payments" => app
            .service(payments::Payments::new(options.flaky_payments))
            .layer::<payments::Payments, _>(atoll::layer::from_fn(payments::orders_only))
            .migrations(migrations::payments()),
        "shipping" => app.service(shipping::Shipping),
        "storefront" => app
            .service(storefront::Storefront)
            .migrations(migrations::storefront())
            .routes(storefront::routes()),
        "analytics" => app.service(analytics::Analytics),
        other => anyhow::bail!(
            "unknown service `{other}`; the shop's services are {}",
            SERVICES.join(", ")
        ),
    })
}

/// Registers every service.
pub fn with_all(app: App, options: &Options) -> App {
    SERVICES.iter().fold(app, |app, s| {
        with_service(app, s, options).expect("known service")
    })
}

/// Every topic the shop declares.
pub fn all_topics() -> Vec<TopicSpec> {
    [
        owned_topics::<orders::Orders>(),
        owned_topics::<inventory::Inventory>(),
        owned_topics::<payments::Payments>(),
        owned_topics::<shipping::Shipping>(),
        owned_topics::<storefront::Storefront>(),
        owned_topics::<analytics::Analytics>(),
    ]
    .concat()
}

/// What every service declares.
pub fn descriptions() -> Vec<ServiceDescription> {
    [
        describe::<orders::Orders>(),
        describe::<inventory::Inventory>(),
        describe::<payments::Payments>(),
        describe::<shipping::Shipping>(),
        describe::<storefront::Storefront>(),
        describe::<analytics::Analytics>(),
    ]
    .into_iter()
    .map(|d| d.expect("the shop's names are valid"))
    .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn flakiness_must_be_a_probability() {
        assert!(super::Options {
            flaky_payments: 0.3,
            ..Default::default()
        }
        .check()
        .is_ok());
        assert!(super::Options {
            flaky_payments: 1.0,
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(super::Options {
            reservation_hold: std::time::Duration::from_secs(59),
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(super::Options {
            flaky_payments: -0.1,
            ..Default::default()
        }
        .check()
        .is_err());
    }

    #[test]
    fn unknown_service_is_a_clear_error() {
        let e = super::with_service(
            atoll::App::new(atoll::config::Config::default()),
            "billing",
            &super::Options::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("orders, inventory, payments, shipping, storefront"),
            "{e}"
        );
    }
}
