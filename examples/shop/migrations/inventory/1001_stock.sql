-- Stock per SKU; every SKU the shop sells starts with 10,000 units (Inventory::INITIAL_STOCK).
CREATE TABLE inventory_stock (
    sku TEXT PRIMARY KEY,
    qty BIGINT NOT NULL CHECK (qty >= 0)
);
INSERT INTO inventory_stock (sku, qty) VALUES
    ('apple', 10000), ('banana', 10000), ('cherry', 10000), ('date', 10000), ('elderberry', 10000);

-- Each order's reservation state: 'reserved' or 'released'. `prior` is the state a release
-- found, so a release knows whether it put stock back.
CREATE TABLE inventory_orders (
    order_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    prior TEXT
);

-- Every stock movement: a reservation takes (negative delta), a release puts back. No unique
-- key on purpose: the service's own logic keeps each movement single, and tests check it.
CREATE TABLE inventory_movements (
    order_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    delta BIGINT NOT NULL,
    kind TEXT NOT NULL
);
CREATE INDEX inventory_movements_order ON inventory_movements (order_id);
