-- pgbench script of the compose demo load (docker/compose.yml, service demo-load): the
-- shop's "customers who bought X also bought" query, the one rules.toml caches, budgets and caps.
-- Product ids are drawn from the range bench/shop.sql loads.
\set product_id random_zipfian(1, 10000, 1.1)
SELECT p.product_id, p.name
FROM order_items a
JOIN order_items b ON b.order_id = a.order_id AND b.product_id <> a.product_id
JOIN products p ON p.product_id = b.product_id
WHERE a.product_id = :product_id
GROUP BY p.product_id, p.name
ORDER BY count(*) DESC
LIMIT 10;
