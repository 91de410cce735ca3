//! The reference system of atoll (design §8): `orders`, `inventory`, `payments` and
//! `shipping` under `acme.shop`, as a choreography of facts:
//!
//! ```text
//! place_order → orders: order_placed → inventory: stock_reserved | stock_unavailable
//!   stock_reserved → payments: payment_charged | payment_declined
//!   payment_charged → shipping: shipment_scheduled → orders: order_completed
//!   stock_unavailable | payment_declined → orders: order_cancelled → inventory: stock_released
//! ```

pub mod driver;
pub mod inventory;
pub mod orders;
pub mod payments;
pub mod shipping;
pub mod topics;

use atoll::{describe, owned_topics, App, ServiceDescription, TopicSpec};

/// The services of the shop, by name.
pub const SERVICES: &[&str] = &["orders", "inventory", "payments", "shipping"];

/// Registers one service by name.
pub fn with_service(app: App, name: &str) -> anyhow::Result<App> {
    Ok(match name {
        "orders" => app.service(orders::Orders),
        "inventory" => app.service(inventory::Inventory::default()),
        "payments" => app.service(payments::Payments),
        "shipping" => app.service(shipping::Shipping),
        other => anyhow::bail!(
            "unknown service `{other}`; the shop's services are {}",
            SERVICES.join(", ")
        ),
    })
}

/// Registers every service.
pub fn with_all(app: App) -> App {
    SERVICES
        .iter()
        .fold(app, |app, s| with_service(app, s).expect("known service"))
}

/// Every topic the shop declares.
pub fn all_topics() -> Vec<TopicSpec> {
    [
        owned_topics::<orders::Orders>(),
        owned_topics::<inventory::Inventory>(),
        owned_topics::<payments::Payments>(),
        owned_topics::<shipping::Shipping>(),
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
    ]
    .into_iter()
    .map(|d| d.expect("the shop's names are valid"))
    .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_service_is_a_clear_error() {
        let e =
            super::with_service(atoll::App::new(atoll::Config::default()), "billing").unwrap_err();
        assert!(
            e.to_string()
                .contains("orders, inventory, payments, shipping"),
            "{e}"
        );
    }
}
