-- bench/checkout.sql — one checkout (pgbench -f): create the order, add its items, take the
-- stock, all in one transaction. Customers uniform, items: one product drawn like the
-- popular ones plus two uniform ones.
\set cid random(1, 50000)
\set p1 random_zipfian(1, 10000, 1.1)
\set p2 random(1, 10000)
\set p3 random(1, 10000)
BEGIN;
INSERT INTO orders (customer_id) VALUES (:cid) RETURNING order_id \gset
INSERT INTO order_items (order_id, product_id, quantity, price)
SELECT :order_id, product_id, 1, price FROM products WHERE product_id IN (:p1, :p2, :p3);
UPDATE products SET stock = stock - 1 WHERE product_id = :p1;
COMMIT;
