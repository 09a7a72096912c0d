-- bench/shop.sql — the shop schema and its data, used by bench/run.sh (cache and incident
-- modes) and by the demo (scripts/run.sh).
--
--   psql -X -v ON_ERROR_STOP=1 [-v scale=0.1] -d shop -f bench/shop.sql
--
-- scale 1 (default): products 10k, customers 50k, orders 250k, order_items ~1M.
-- Other scales multiply customers, orders and order_items (products stay 10k, so product
-- ids 1..10000 are valid at every scale). Drops and recreates the four tables.
--
-- Product popularity is skewed: an order item's product is 1 + floor(10000 * random()^3), so
-- product 1 is in ~4.6% of all order items and product 42 in ~0.1%. The recommendation query
-- (bench/reco.sql) therefore takes tens of ms for the popular products and about 1 ms for the
-- rare ones; bench/reco.sql draws product ids zipfian, so popular ones dominate the load.

\set ON_ERROR_STOP 1
\if :{?scale}
\else
\set scale 1
\endif

SET client_min_messages = warning;
SET synchronous_commit = off;
SET maintenance_work_mem = '256MB';

DROP TABLE IF EXISTS order_items, orders, customers, products CASCADE;

CREATE TABLE products (
    product_id int PRIMARY KEY,
    name       text NOT NULL,
    price      numeric(10, 2) NOT NULL,
    stock      int NOT NULL
);

CREATE TABLE customers (
    customer_id int PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL
);

CREATE TABLE orders (
    order_id    bigserial PRIMARY KEY,
    customer_id int NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE order_items (
    order_id   bigint NOT NULL,
    product_id int NOT NULL,
    quantity   int NOT NULL,
    price      numeric(10, 2) NOT NULL
);

-- deterministic data: the same numbers on every run
SELECT setseed(0.42) \g /dev/null

INSERT INTO products (product_id, name, price, stock)
SELECT i,
       'product ' || i,
       round((1 + random() * 199)::numeric, 2),
       1000000
FROM generate_series(1, 10000) AS i;

INSERT INTO customers (customer_id, name, email)
SELECT i, 'customer ' || i, 'customer' || i || '@example.com'
FROM generate_series(1, greatest(1, (50000 * :scale)::int)) AS i;

-- order_id comes from the bigserial: 1..N, and checkouts continue after it
INSERT INTO orders (customer_id, created_at)
SELECT 1 + floor(random() * greatest(1, (50000 * :scale)::int))::int,
       now() - random() * interval '365 days'
FROM generate_series(1, greatest(1, (250000 * :scale)::int)) AS i;

-- ~4 items per order (Poisson-ish: each item picks a random order)
INSERT INTO order_items (order_id, product_id, quantity, price)
SELECT x.order_id, x.product_id, 1 + floor(random() * 3)::int, p.price
FROM (
    SELECT 1 + floor(random() * greatest(1, (250000 * :scale)::int))::bigint AS order_id,
           1 + floor(10000 * random() ^ 3)::int AS product_id
    FROM generate_series(1, greatest(1, (1000000 * :scale)::int)) AS i
) AS x
JOIN products p ON p.product_id = x.product_id;

CREATE INDEX order_items_product_id_idx ON order_items (product_id);
CREATE INDEX order_items_order_id_idx ON order_items (order_id);
CREATE INDEX orders_customer_id_idx ON orders (customer_id);

VACUUM ANALYZE products, customers, orders, order_items;
