-- bench/reco.sql — "customers who bought X also bought" (pgbench -f; simple protocol).
-- Product ids are drawn zipfian (PG15's random_zipfian takes a parameter in [1.001, 1000]):
-- with 1.1 over 10000 products, product 1 is ~15% of the calls, the top 10 ~41%.
-- The statement text must stay as it is: rules.toml matches it by fingerprint.
\set pid random_zipfian(1, 10000, 1.1)
SELECT p.product_id, p.name
FROM order_items a
JOIN order_items b ON b.order_id = a.order_id AND b.product_id <> a.product_id
JOIN products p ON p.product_id = b.product_id
WHERE a.product_id = :pid
GROUP BY p.product_id, p.name
ORDER BY count(*) DESC
LIMIT 10;
