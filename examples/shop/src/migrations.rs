//! The shop's database migrations: one set per service that keeps state, numbered apart
//! (inventory 1000s, payments 2000s, storefront 3000s) so that services sharing a database —
//! the demo runs them all in one process — keep one history. The SQL runs on PostgreSQL and
//! SQLite alike.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::SqlSafeStr;

/// A migrator of `(version, description, sql)` steps.
fn set(steps: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        steps
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Inventory's tables: stock, reservations, movements.
pub fn inventory() -> Migrator {
    set(&[(
        1001,
        "stock",
        include_str!("../migrations/inventory/1001_stock.sql"),
    )])
}

/// Payments' tables: payment state per order and the ledger.
pub fn payments() -> Migrator {
    set(&[(
        2001,
        "ledger",
        include_str!("../migrations/payments/2001_ledger.sql"),
    )])
}

/// The storefront's view.
pub fn storefront() -> Migrator {
    set(&[(
        3001,
        "order status",
        include_str!("../migrations/storefront/3001_order_status.sql"),
    )])
}
