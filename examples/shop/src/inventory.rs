//! `acme.shop.inventory`: reserves stock for placed orders and releases it for cancelled ones.
//!
//! Stock lives in memory: each process starts from [`Inventory::INITIAL_STOCK`] per SKU.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use atoll::{event_service, handlers, Context, Event, HandlerResult};
use serde::{Deserialize, Serialize};

use crate::orders::{Item, OrderCancelled, OrderPlaced};

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
}

/// Fact: stock was reserved for an order.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(fact, name = "stock_reserved", version = 1, service = Inventory)]
pub struct StockReserved {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// Total to charge, in cents.
    pub amount_cents: i64,
}

/// Fact: an order could not be reserved.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(fact, name = "stock_unavailable", version = 1, service = Inventory)]
pub struct StockUnavailable {
    /// The order.
    #[event(key)]
    pub order_id: String,
    /// The first SKU short of stock (or unknown).
    pub sku: String,
}

/// Command: report the current stock levels (for operators and tests).
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(command, name = "report_stock", version = 1, service = Inventory)]
pub struct ReportStock {
    /// Echoed in the report, to match it with the request.
    #[event(key)]
    pub request_id: String,
}

/// Fact: the stock levels at the time of a `report_stock` command.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
#[event(fact, name = "stock_reported", version = 1, service = Inventory)]
pub struct StockReported {
    /// The request this answers.
    #[event(key)]
    pub request_id: String,
    /// Units per SKU.
    pub levels: BTreeMap<String, i64>,
}

/// Fact: a cancelled order's stock was put back.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
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
                reserved: HashMap::new(),
            }),
        }
    }
}

impl Inventory {
    /// Units of each SKU a process starts with.
    pub const INITIAL_STOCK: i64 = 10_000;

    /// Current stock of every SKU.
    pub fn levels(&self) -> BTreeMap<String, i64> {
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

    /// Reserves every item, or nothing; `Err(sku)` names the first one short.
    fn reserve(&self, order_id: &str, items: &[Item]) -> Result<(), String> {
        let mut st = self.state.lock().expect("poisoned");
        if st.reserved.contains_key(order_id) {
            return Ok(());
        }
        for item in items {
            if st.stock.get(&item.sku).copied().unwrap_or(0) < item.qty {
                return Err(item.sku.clone());
            }
        }
        for item in items {
            *st.stock.get_mut(&item.sku).expect("checked") -= item.qty;
        }
        st.reserved.insert(order_id.to_owned(), items.to_vec());
        Ok(())
    }

    /// Puts an order's reservation back; whether there was one.
    fn release(&self, order_id: &str) -> bool {
        let mut st = self.state.lock().expect("poisoned");
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

    /// Reserves the stock of a placed order.
    #[listener(name = "reserve-stock")]
    async fn reserve_stock(&self, ctx: Context<Self>, order: OrderPlaced) -> HandlerResult {
        match self.reserve(&order.order_id, &order.items) {
            Ok(()) => {
                let OrderPlaced {
                    order_id,
                    customer_id,
                    amount_cents,
                    ..
                } = order;
                ctx.emit(StockReserved {
                    order_id,
                    customer_id,
                    amount_cents,
                })
                .await?;
            }
            Err(sku) => {
                ctx.emit(StockUnavailable {
                    order_id: order.order_id,
                    sku,
                })
                .await?
            }
        }
        Ok(())
    }

    /// Releases the stock of a cancelled order.
    #[listener(name = "release-stock")]
    async fn release_stock(&self, ctx: Context<Self>, order: OrderCancelled) -> HandlerResult {
        if self.release(&order.order_id) {
            ctx.emit(StockReleased {
                order_id: order.order_id,
            })
            .await?;
        }
        Ok(())
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
        inv.reserve("o1", &items(3)).unwrap();
        inv.reserve("o1", &items(3)).unwrap();
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
        assert_eq!(inv.reserve("o2", &too_many), Err("kiwi".into()));
        assert_eq!(inv.stock("apple"), Inventory::INITIAL_STOCK);
    }
}
