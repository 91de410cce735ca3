-- Each order's payment state: 'charged' (with the amount) or 'refunded'.
CREATE TABLE payments_orders (
    order_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    amount_cents BIGINT NOT NULL
);

-- The ledger: one row per charge or refund. No unique key on purpose: the service's own
-- logic keeps each order charged at most once, and tests check it in SQL.
CREATE TABLE payments_ledger (
    order_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX payments_ledger_order ON payments_ledger (order_id);
