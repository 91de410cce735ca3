-- The storefront's view of each order, built from the orders, payments and shipping facts.
-- Each fact fills its own columns, so the view is the same whatever order the topics are read
-- in; timestamps are the facts' own (ce_time), so a rebuild gives the same answers.
CREATE TABLE storefront_orders (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT,
    amount_cents BIGINT,
    placed_at TEXT,
    charged_at TEXT,
    shipped_at TEXT,
    completed_at TEXT,
    cancelled_at TEXT,
    reason TEXT
);
