//! Tests of the `/metrics` query families: the text passes the local linter
//! (`prometheus_lint.rs`), parses with `prometheus-parse`, its numbers equal the JSON
//! snapshot's, histogram buckets agree with the `/stats` percentiles, and the normalized text
//! appears once per fingerprint, escaped, in `pgward_query_info`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value as PValue};

use super::prometheus_lint::lint;
use super::tests::{exec, failed};
use super::*;

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("exposition parses")
}

fn text(snapshot: &Snapshot, top: usize) -> String {
    render(vec![
        Box::new(QueryMetrics::new(snapshot.clone(), top)),
        Box::new(ProcessMetrics::read()),
    ])
    .expect("encodes")
}

fn populated() -> Stats {
    let s = Stats::new(&StatsSettings::default());
    let a = s.fingerprint(FingerprintId(0xa1), "SELECT a FROM t WHERE x = $1");
    for ms in 1..=40 {
        a.record(&exec(ms, 3));
    }
    a.record(&failed(7, b"57014"));
    a.record(&failed(9, b"23505"));
    a.bump(Counter::BudgetExceeded);
    a.add(Counter::CacheBytesServed, 321);
    a.set_rule("hot");
    a.record_miss(crate::cache::MissReason::ALL[0]);
    a.record_queued(Duration::from_micros(1_500));
    let b = s.fingerprint(FingerprintId(0xb2), "UPDATE t SET y = $1");
    for _ in 0..10 {
        b.record(&exec(30, 1));
    }
    b.record(&exec(90_000, 1)); // past the last finite bucket
    b.bump(Counter::Rewritten);
    let c = s.fingerprint(FingerprintId(0xc3), "SELECT 1");
    c.record(&failed(1, b"57P01"));
    let p = s.proxy();
    p.client_connections.inc();
    p.client_connections_total.fetch_add(4, Relaxed);
    p.client_connections_rejected.fetch_add(1, Relaxed);
    p.upstream_connections_failed.fetch_add(2, Relaxed);
    p.queries.fetch_add(54, Relaxed);
    p.errors.fetch_add(3, Relaxed);
    s
}

fn scalar(v: &PValue) -> f64 {
    match v {
        PValue::Counter(x) | PValue::Gauge(x) | PValue::Untyped(x) => *x,
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The JSON field a per-fingerprint or totals family mirrors.
fn json_field(family: &str) -> &str {
    match family {
        "sent_bytes" => "bytes_sent",
        "cache_served_bytes" => "cache_bytes_served",
        other => other,
    }
}

/// The value `/stats` gives for a scalar sample, if it mirrors one.
fn expected(sample: &Sample, snap: &Snapshot, json: &serde_json::Value) -> Option<f64> {
    let metric = sample.metric.as_str();
    if let Some(id) = sample.labels.get("queryid") {
        let fp = snap.fingerprints.iter().find(|f| f.queryid == id)?;
        let row = serde_json::to_value(fp).ok()?;
        let field = metric
            .strip_prefix("pgward_query_")?
            .trim_end_matches("_total");
        return Some(match field {
            "exec_seconds_sum" => fp.total_exec_time / 1_000.0,
            "exec_seconds_count" => fp.calls as f64,
            "queue_seconds" => fp.queue_time / 1_000.0,
            "errors" => fp.errors_by_class[sample.labels.get("class")?] as f64,
            "cache_misses_by_reason" => fp.cache_miss_reasons[sample.labels.get("reason")?] as f64,
            other => row[json_field(other)].as_f64()?,
        });
    }
    if let Some(field) = metric.strip_prefix("pgward_all_queries_") {
        let t = &json["totals"];
        return match field.trim_end_matches("_total") {
            "exec_seconds_sum" => Some(snap.totals.total_exec_time / 1_000.0),
            "exec_seconds_count" => Some(snap.totals.calls as f64),
            "queue_seconds" => Some(snap.totals.queue_time / 1_000.0),
            "errors" => t["errors_by_class"][sample.labels.get("class")?].as_f64(),
            other => t[json_field(other)].as_f64(),
        };
    }
    let proxy = match metric.strip_prefix("pgward_")?.trim_end_matches("_total") {
        "client_connections_open" => "client_connections",
        "client_connections_opened" => "client_connections_total",
        "upstream_connections_open" => "upstream_connections",
        "upstream_connections_opened" => "upstream_connections_total",
        other => other,
    };
    json["proxy"][proxy].as_f64()
}

#[test]
fn exposition_is_clean_and_agrees_with_the_snapshot() {
    let snap = populated().snapshot();
    let text = text(&snap, 2);
    assert_eq!(lint(&text), Vec::<String>::new(), "{text}");
    let scrape = parse(&text);
    let json = serde_json::to_value(&snap).expect("serializes");
    let mut checked = 0;
    for sample in &scrape.samples {
        if sample.metric.starts_with("process_") || sample.metric.starts_with("pgward_rule_") {
            continue;
        }
        if let PValue::Histogram(_) = sample.value {
            continue; // checked in histogram_buckets_agree_with_the_stats_percentiles
        }
        if sample.metric == "pgward_query_info" {
            continue;
        }
        let want = expected(sample, &snap, &json);
        let want = want.unwrap_or_else(|| panic!("no /stats value for {sample:?}"));
        assert_eq!(scalar(&sample.value), want, "{}", sample.metric);
        checked += 1;
    }
    assert!(checked > 60, "only {checked} samples");
    assert!(
        !text.contains("00000000000000c3"),
        "non-top fingerprint exported"
    );
    for line in [
        "pgward_all_queries_calls_total 54",
        "pgward_all_queries_errors_total{class=\"57\"} 2",
        "pgward_query_errors_total{queryid=\"00000000000000a1\",class=\"23\"} 1",
        "pgward_query_budget_exceeded_total{queryid=\"00000000000000a1\"} 1",
        "pgward_query_cache_served_bytes_total{queryid=\"00000000000000a1\"} 321",
        "pgward_query_rewritten_total{queryid=\"00000000000000b2\"} 1",
        "pgward_rule_budget_exceeded_total{rule=\"hot\"} 1",
        "pgward_client_connections_open 1",
        "pgward_client_connections_opened_total 4",
        "pgward_fingerprints_tracked 3",
        "# TYPE pgward_query_exec_seconds histogram",
        "# TYPE process_cpu_seconds_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// The cumulative count of the `le` buckets of one histogram series, by bound.
fn buckets(scrape: &Scrape, metric: &str, label: Option<(&str, &str)>) -> Vec<(f64, f64)> {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {metric} {label:?}"));
    match &sample.value {
        PValue::Histogram(h) => h.iter().map(|b| (b.less_than, b.count)).collect(),
        other => panic!("{metric} is not a histogram: {other:?}"),
    }
}

/// The all-queries histogram is the sum over fingerprints, bucket by bucket.
fn totals_are_the_sum_of_the_fingerprints(scrape: &Scrape, snap: &Snapshot) {
    let all = buckets(scrape, "pgward_all_queries_exec_seconds", None);
    for (i, (le, n)) in all.iter().enumerate() {
        let sum: f64 = snap
            .fingerprints
            .iter()
            .map(|fp| {
                let b = buckets(
                    scrape,
                    "pgward_query_exec_seconds",
                    Some(("queryid", &fp.queryid)),
                );
                b.get(i).map_or(f64::NAN, |(_, n)| *n)
            })
            .sum();
        assert_eq!(*n, sum, "le {le}");
    }
}

#[test]
fn histogram_buckets_agree_with_the_stats_percentiles() {
    let stats = populated();
    // Exactly on a bound: hdrhistogram's bucket for 1 ms reaches past it, the exact max not.
    let d = stats.fingerprint(FingerprintId(0xd4), "SELECT d");
    for _ in 0..5 {
        d.record(&exec(1, 1));
    }
    let snap = stats.snapshot();
    let scrape = parse(&text(&snap, 4));
    for fp in &snap.fingerprints {
        let b = buckets(
            &scrape,
            "pgward_query_exec_seconds",
            Some(("queryid", &fp.queryid)),
        );
        assert_eq!(b.last(), Some(&(f64::INFINITY, fp.calls as f64)), "{b:?}");
        for (q, p_ms) in [
            (0.5, fp.p50_exec_time),
            (0.95, fp.p95_exec_time),
            (0.99, fp.p99_exec_time),
        ] {
            // The nearest-rank value /stats reports falls in the first bucket at or above it.
            let rank = (q * fp.calls as f64).ceil();
            let p = p_ms / 1_000.0;
            let at_or_above = b.iter().find(|(le, _)| *le >= p).map(|(_, n)| *n);
            let below = b
                .iter()
                .rev()
                .find(|(le, _)| *le < p)
                .map_or(0.0, |(_, n)| *n);
            assert!(at_or_above.is_some_and(|n| n >= rank), "{q} {p} {b:?}");
            assert!(below < rank, "{q} {p} {b:?}");
        }
    }
    totals_are_the_sum_of_the_fingerprints(&scrape, &snap);
    // The 90 s execution is only in +Inf; 1..=40 ms executions fill the 1-50 ms buckets.
    let b = buckets(
        &scrape,
        "pgward_query_exec_seconds",
        Some(("queryid", "00000000000000b2")),
    );
    assert_eq!(b.iter().rev().nth(1), Some(&(60.0, 10.0)), "{b:?}");
    let a = buckets(
        &scrape,
        "pgward_query_exec_seconds",
        Some(("queryid", "00000000000000a1")),
    );
    assert!(
        a.contains(&(0.0005, 0.0)) && a.contains(&(0.05, 42.0)),
        "{a:?}"
    );
    let d = buckets(
        &scrape,
        "pgward_query_exec_seconds",
        Some(("queryid", "00000000000000d4")),
    );
    assert!(
        d.contains(&(0.0005, 0.0)) && d.contains(&(0.001, 5.0)),
        "{d:?}"
    );
}

#[test]
fn query_text_is_in_one_escaped_info_series() {
    let s = Stats::new(&StatsSettings::default());
    let fp = s.fingerprint(FingerprintId(1), "SELECT \"a\\b\"\nFROM t");
    fp.record(&exec(1, 1));
    fp.set_rule("r");
    let text = text(&s.snapshot(), 10);
    assert_eq!(lint(&text), Vec::<String>::new(), "{text}");
    let expected = "pgward_query_info{queryid=\"0000000000000001\",\
                    query=\"SELECT \\\"a\\\\b\\\"\\nFROM t\",rule=\"r\"} 1";
    assert!(text.lines().any(|l| l == expected), "{text}");
    assert_eq!(text.matches("query=\"").count(), 1, "{text}");
}

#[test]
fn empty_and_idle_snapshots_render_cleanly() {
    let s = Stats::new(&StatsSettings::default());
    let empty = text(&s.snapshot(), 50);
    assert_eq!(lint(&empty), Vec::<String>::new(), "{empty}");
    assert!(!empty.contains("queryid"));
    assert!(empty.contains("\npgward_all_queries_calls_total 0\n"));
    assert!(empty.contains("\npgward_all_queries_exec_seconds_bucket{le=\"+Inf\"} 0\n"));

    s.fingerprint(FingerprintId(5), "idle"); // seen but never recorded
    let idle = text(&s.snapshot(), 50);
    assert_eq!(lint(&idle), Vec::<String>::new(), "{idle}");
    assert!(idle.contains(
        "\npgward_query_exec_seconds_bucket{queryid=\"0000000000000005\",le=\"+Inf\"} 0\n"
    ));
    assert!(idle.contains("\npgward_query_exec_seconds_count{queryid=\"0000000000000005\"} 0\n"));
}

#[test]
fn linter_catches_bad_expositions() {
    let cases = [
        ("# TYPE foo_total gauge\nfoo_total 1\n", "no HELP"),
        (
            "# HELP foo_total x\n# TYPE foo_total gauge\nfoo_total 1\n",
            "only counters",
        ),
        ("# HELP a x\n# TYPE a gauge\na 1\na 1\n", "duplicate series"),
        ("bar 2\n", "no family"),
        (
            "# HELP c x\n# TYPE c gauge\nc 1\n# HELP c_total x\n# TYPE c_total counter\nc_total 1\n",
            "family clash",
        ),
        (
            "# HELP h x\n# TYPE h histogram\n# HELP h_count x\n# TYPE h_count gauge\n",
            "family clash",
        ),
        (
            "# HELP q_bytes_sent_total x\n# TYPE q_bytes_sent_total counter\n",
            "not last",
        ),
        ("# HELP t_ms x\n# TYPE t_ms gauge\n", "ends in _ms"),
        (
            "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 4\n\
             h_bucket{le=\"+Inf\"} 5\nh_sum 1\nh_count 5\n",
            "not ascending and cumulative",
        ),
        (
            "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_sum 1\nh_count 5\n",
            "not +Inf",
        ),
    ];
    for (text, want) in cases {
        let problems = lint(text);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{want:?} not in {problems:?} for\n{text}"
        );
    }
}
