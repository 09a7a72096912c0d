//! Benchmarks of the fingerprint hot path (`normalize`, cold: a text never seen), the text
//! cache hit that repeated texts take instead, and the once-per-id slow path (`analyze`), on
//! typical OLTP statements and one ~5 KB reporting query.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgward::fingerprint::Strings;
use pgward::fingerprint::{analyze, normalize};
use pgward::pipeline::FingerprintCache;

const OLTP: &[(&str, &str)] = &[
    (
        "pk_lookup",
        "SELECT id, name, email FROM users WHERE id = 42",
    ),
    (
        "pk_lookup_param",
        "SELECT id, name, email FROM users WHERE id = $1",
    ),
    (
        "insert",
        "INSERT INTO orders (user_id, total, status) VALUES (17, 99.95, 'new') RETURNING id",
    ),
    (
        "update",
        "UPDATE accounts SET balance = balance - 100.00 WHERE id = 7 AND balance >= 100.00",
    ),
    (
        "delete",
        "DELETE FROM sessions WHERE expires_at < '2024-01-01 00:00:00'",
    ),
    (
        "in_list",
        "SELECT * FROM items WHERE id IN (1, 2, 3, 4, 5, 6, 7, 8) AND deleted = false",
    ),
    (
        "join",
        "SELECT o.id, u.name FROM orders o JOIN users u ON u.id = o.user_id WHERE o.id = 1001",
    ),
    (
        "multi_values",
        "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z'), (4, 'w')",
    ),
    (
        "upsert",
        "INSERT INTO kv (k, v) VALUES ('key', 'val') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
    ),
    ("begin", "BEGIN"),
];

fn report_query() -> String {
    let mut q = String::from(
        "WITH monthly AS (\n  SELECT date_trunc('month', o.created_at) AS month, c.region,\n    \
         sum(oi.quantity * oi.unit_price) AS revenue, count(DISTINCT o.id) AS orders\n  \
         FROM public.orders o\n  JOIN public.order_items oi ON oi.order_id = o.id\n  \
         JOIN public.customers c ON c.id = o.customer_id\n  \
         WHERE o.created_at >= DATE '2023-01-01' AND o.status IN ('paid', 'shipped', 'delivered')\n  \
         GROUP BY 1, 2\n)\nSELECT m.month, m.region, m.revenue, m.orders",
    );
    let mut i = 0;
    while q.len() < 4800 {
        q.push_str(&format!(
            ",\n  /* metric {i} */ CASE WHEN m.revenue > {} THEN 'tier_{i}' ELSE NULL END AS tier_{i}, \
             coalesce(m.orders::numeric / NULLIF(m.revenue, 0), -1.5e-3) * {}.25 AS ratio_{i}",
            1000 * (i + 1),
            i + 2
        ));
        i += 1;
    }
    q.push_str(
        "\nFROM monthly m\nWHERE m.region = ANY(ARRAY['eu', 'us', 'apac'])\n\
         ORDER BY m.month DESC, m.revenue DESC\nLIMIT 500",
    );
    q
}

fn bench(c: &mut Criterion) {
    let report = report_query();
    let mut g = c.benchmark_group("normalize");
    for (name, sql) in OLTP {
        g.throughput(Throughput::Elements(1));
        g.bench_function(*name, |b| b.iter(|| normalize(black_box(sql))));
    }
    g.bench_function("report_5kb", |b| b.iter(|| normalize(black_box(&report))));
    g.finish();

    // The session's path for a repeated text: one xxh3 of the text and a map hit.
    let cache = FingerprintCache::new(1024);
    let mut g = c.benchmark_group("text_cache_hit");
    for (name, sql) in OLTP {
        cache.query(sql.as_bytes(), Strings::Standard);
        cache.query(sql.as_bytes(), Strings::Standard);
        g.bench_function(*name, |b| {
            b.iter(|| cache.query(black_box(sql.as_bytes()), Strings::Standard))
        });
    }
    cache.query(report.as_bytes(), Strings::Standard);
    cache.query(report.as_bytes(), Strings::Standard);
    g.bench_function("report_5kb", |b| {
        b.iter(|| cache.query(black_box(report.as_bytes()), Strings::Standard))
    });
    g.finish();

    let mut g = c.benchmark_group("analyze");
    for (name, sql) in OLTP {
        g.bench_function(*name, |b| b.iter(|| analyze(black_box(sql))));
    }
    g.bench_function("report_5kb", |b| b.iter(|| analyze(black_box(&report))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
