//! `acme.shop.inventory`: reserves stock for placed orders and releases it for cancelled ones.
//!
//! Stock lives in memory: each process starts from [`Inventory::INITIAL_STOCK`] per SKU.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use apache_avro::AvroSchema;
use atoll::{event_service, handlers, Context, Event, HandlerResult};
use serde::{Deserialize, Serialize};

use crate::orders::Item;

/// The SKUs the shop sells.
pub const SKUS: &[&str] = &["apple", "banana", "cherry", "date", "elderberry"];

/// The inventory service.
#[event_service(company = "acme", namespace = "shop", name = "inventory")]
#[derive(Debug)]
pub struct Inventory {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    stock: HashMap<String, i64>,
    /// Reservations by order id, so that a redelivered record reserves nothing twice.
    reserved: HashMap<String, Vec<Item>>,
    /// Orders released: a reservation that arrives after its release (a timed-out step whose
    /// command was late) is refused, so no stock leaks.
    released: HashSet<String>,
}

/// Command: reserve every item of an order, or nothing (a step of the orders saga).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "reserve_stock", version = 1, service = Inventory, reply = StockReservation)]
pub struct ReserveStock {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// What to reserve.
    pub items: Vec<Item>,
}

/// Reply to [`ReserveStock`].
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(reply, name = "stock_reservation", version = 1, service = Inventory)]
pub struct StockReservation {
    /// The order.
    pub order_id: String,
    /// Whether every item is reserved.
    pub reserved: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// Command: put an order's reservation back (the compensation of [`ReserveStock`]).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "release_stock", version = 1, service = Inventory, reply = StockRelease)]
pub struct ReleaseStock {
    /// The order.
    #[event(key)]
    pub order_id: String,
}

/// Reply to [`ReleaseStock`].
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(reply, name = "stock_release", version = 1, service = Inventory)]
pub struct StockRelease {
    /// The order.
    pub order_id: String,
    /// Whether a reservation was put back (`false`: there was none).
    pub released: bool,
}

/// Fact: stock was reserved for an order.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "stock_reserved", version = 1, service = Inventory)]
pub struct StockReserved {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// What was reserved.
    pub items: Vec<Item>,
}

/// Command: report the current stock levels (for operators and tests).
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(command, name = "report_stock", version = 1, service = Inventory)]
pub struct ReportStock {
    /// Echoed in the report, to match it with the request.
    #[event(key)]
    pub request_id: String,
}

/// Fact: the stock levels at the time of a `report_stock` command.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "stock_reported", version = 1, service = Inventory)]
pub struct StockReported {
    /// The request this answers.
    #[event(key)]
    pub request_id: String,
    /// Units per SKU.
    pub levels: HashMap<String, i64>,
}

/// Fact: an order's reserved stock was put back.
#[derive(Debug, Clone, Serialize, Deserialize, Event, AvroSchema)]
#[event(fact, name = "stock_released", version = 1, service = Inventory)]
pub struct StockReleased {
    /// The order.
    #[event(key)]
    pub order_id: String,
}

impl Default for Inventory {
    fn default() -> Self {
        let stock = SKUS
            .iter()
            .map(|s| ((*s).to_owned(), Self::INITIAL_STOCK))
            .collect();
        Self {
            state: Mutex::new(State {
                stock,
                ..State::default()
            }),
        }
    }
}

impl Inventory {
    /// Units of each SKU a process starts with.
    pub const INITIAL_STOCK: i64 = 10_000;

    /// Current stock of every SKU.
    pub fn levels(&self) -> HashMap<String, i64> {
        let st = self.state.lock().expect("poisoned");
        st.stock.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Current stock of `sku`.
    pub fn stock(&self, sku: &str) -> i64 {
        self.state
            .lock()
            .expect("poisoned")
            .stock
            .get(sku)
            .copied()
            .unwrap_or(0)
    }

    /// Reserves every item, or nothing; `Err` says why not. `Ok(true)` when this call
    /// reserved, `Ok(false)` when the order was reserved already.
    fn reserve(&self, order_id: &str, items: &[Item]) -> Result<bool, String> {
        let mut st = self.state.lock().expect("poisoned");
        if st.reserved.contains_key(order_id) {
            return Ok(false);
        }
        if st.released.contains(order_id) {
            return Err("the order was released already".into());
        }
        for item in items {
            if st.stock.get(&item.sku).copied().unwrap_or(0) < item.qty {
                return Err(format!("out of stock: {}", item.sku));
            }
        }
        for item in items {
            *st.stock.get_mut(&item.sku).expect("checked") -= item.qty;
        }
        st.reserved.insert(order_id.to_owned(), items.to_vec());
        Ok(true)
    }

    /// Puts an order's reservation back; whether there was one. Later reservations of the
    /// order are refused.
    fn release(&self, order_id: &str) -> bool {
        let mut st = self.state.lock().expect("poisoned");
        st.released.insert(order_id.to_owned());
        let Some(items) = st.reserved.remove(order_id) else {
            return false;
        };
        for item in items {
            *st.stock.entry(item.sku).or_default() += item.qty;
        }
        true
    }
}

#[handlers]
impl Inventory {
    /// Reports the stock levels as a fact.
    #[listener(name = "report-stock")]
    async fn report_stock(&self, ctx: Context<Self>, cmd: ReportStock) -> HandlerResult {
        ctx.emit(StockReported {
            request_id: cmd.request_id,
            levels: self.levels(),
        })
        .await?;
        Ok(())
    }

    /// Reserves an order's stock, all or nothing, and replies with the outcome.
    #[listener(name = "reserve-stock")]
    async fn reserve_stock(
        &self,
        ctx: Context<Self>,
        cmd: ReserveStock,
    ) -> HandlerResult<StockReservation> {
        let ReserveStock { order_id, items } = cmd;
        let outcome = self.reserve(&order_id, &items);
        if outcome == Ok(true) {
            ctx.emit(StockReserved {
                order_id: order_id.clone(),
                items,
            })
            .await?;
        }
        Ok(StockReservation {
            order_id,
            reserved: outcome.is_ok(),
            reason: outcome.err(),
        })
    }

    /// Releases an order's reservation, if it has one, and replies.
    #[listener(name = "release-stock")]
    async fn release_stock(
        &self,
        ctx: Context<Self>,
        cmd: ReleaseStock,
    ) -> HandlerResult<StockRelease> {
        let released = self.release(&cmd.order_id);
        if released {
            ctx.emit(StockReleased {
                order_id: cmd.order_id.clone(),
            })
            .await?;
        }
        Ok(StockRelease {
            order_id: cmd.order_id,
            released,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(qty: i64) -> Vec<Item> {
        vec![
            Item {
                sku: "apple".into(),
                qty,
            },
            Item {
                sku: "banana".into(),
                qty: 1,
            },
        ]
    }

    #[test]
    fn reserves_once_and_releases_once() {
        let inv = Inventory::default();
        assert_eq!(inv.reserve("o1", &items(3)), Ok(true));
        assert_eq!(inv.reserve("o1", &items(3)), Ok(false));
        assert_eq!(inv.stock("apple"), Inventory::INITIAL_STOCK - 3);
        assert!(inv.release("o1"));
        assert!(!inv.release("o1"));
        assert_eq!(inv.stock("apple"), Inventory::INITIAL_STOCK);
    }

    #[test]
    fn all_or_nothing() {
        let inv = Inventory::default();
        let too_many = vec![
            Item {
                sku: "apple".into(),
                qty: 1,
            },
            Item {
                sku: "kiwi".into(),
                qty: 1,
            },
        ];
        assert_eq!(
            inv.reserve("o2", &too_many),
            Err("out of stock: kiwi".into())
        );
        assert_eq!(inv.stock("apple"), Inventory::INITIAL_STOCK);
    }

    #[test]
    fn a_reservation_after_its_release_is_refused() {
        let inv = Inventory::default();
        assert!(!inv.release("late"));
        assert_eq!(
            inv.reserve("late", &items(1)),
            Err("the order was released already".into())
        );
        assert_eq!(inv.stock("apple"), Inventory::INITIAL_STOCK);
    }
}
