//! Tests of the Prometheus exposition: it parses with `prometheus-parse`, its
//! numbers equal the JSON snapshot's, it follows the `promtool check metrics`
//! lint rules (checked by a small local linter), and labels are escaped.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use prometheus_parse::{Scrape, Value as PValue};

use super::tests::{exec, failed};
use super::*;

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("exposition parses")
}

/// The subset of promtool's lint and format rules this renderer could break.
fn lint(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !helps.insert(name.to_owned()) {
                problems.push(format!("duplicate HELP for {name}"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            if !helps.contains(name) {
                problems.push(format!("no HELP before TYPE of {name}"));
            }
            if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                problems.push(format!("duplicate TYPE for {name}"));
            }
            if !valid_name(name) {
                problems.push(format!("bad metric name {name}"));
            }
            if (kind == "counter") != name.ends_with("_total") {
                problems.push(format!("{kind} {name}: only counters end in _total"));
            }
            for bad in ["_count", "_sum", "_bucket", "_milliseconds", "_ms", "_sec"] {
                if name.ends_with(bad) {
                    problems.push(format!("{name} ends in {bad}"));
                }
            }
        } else if line.starts_with('#') || line.is_empty() {
            problems.push(format!("unexpected line {line:?}"));
        } else {
            let (key, value) = line.rsplit_once(' ').unwrap_or((line, ""));
            let name = key.split('{').next().unwrap_or_default();
            let family = types.keys().find(|f| {
                name == f.as_str()
                    || (types[f.as_str()] == "summary"
                        && (name == format!("{f}_sum") || name == format!("{f}_count")))
            });
            match family {
                None => problems.push(format!("sample {name} has no family declared before it")),
                Some(f) if key.contains("quantile=") && types[f.as_str()] != "summary" => {
                    problems.push(format!("quantile label on non-summary {name}"))
                }
                Some(_) => {}
            }
            if value.parse::<f64>().is_err() && !["NaN", "+Inf", "-Inf"].contains(&value) {
                problems.push(format!("bad value in {line:?}"));
            }
            if !series.insert(key.to_owned()) {
                problems.push(format!("duplicate series {key}"));
            }
        }
    }
    problems
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
    a.bump(Counter::CacheMiss);
    a.record_queued(std::time::Duration::from_micros(1_500));
    let b = s.fingerprint(FingerprintId(0xb2), "UPDATE t SET y = $1");
    for _ in 0..10 {
        b.record(&exec(30, 1));
    }
    b.bump(Counter::Rewritten);
    let c = s.fingerprint(FingerprintId(0xc3), "SELECT 1");
    c.record(&failed(1, b"57P01"));
    let p = s.proxy();
    p.client_connections.inc();
    p.client_connections_total.fetch_add(4, Relaxed);
    p.client_connections_rejected.fetch_add(1, Relaxed);
    p.upstream_connections_failed.fetch_add(2, Relaxed);
    p.queries.fetch_add(53, Relaxed);
    p.errors.fetch_add(3, Relaxed);
    s
}

fn scalar(v: &PValue) -> f64 {
    match v {
        PValue::Counter(x) | PValue::Gauge(x) | PValue::Untyped(x) => *x,
        other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn exposition_parses_and_agrees_with_the_snapshot() {
    let snap = populated().snapshot();
    let text = render_prometheus(&snap, 2, false);
    assert_eq!(lint(&text), Vec::<String>::new(), "{text}");
    let scrape = parse(&text);
    let json = serde_json::to_value(&snap).expect("serializes");
    let top: Vec<&FingerprintSnapshot> = snap.sorted(SortKey::TotalExecTime, 2);
    assert_eq!(top.len(), 2);
    let mut checked = 0;
    for sample in &scrape.samples {
        let value = |fp: &FingerprintSnapshot| -> Option<f64> {
            let row = json["fingerprints"]
                .as_array()?
                .iter()
                .find(|r| r["queryid"] == fp.queryid.as_str())?;
            let field = sample
                .metric
                .strip_prefix("pgward_query_")?
                .trim_end_matches("_total");
            Some(match field {
                "exec_seconds_sum" => fp.total_exec_time / 1_000.0,
                "exec_seconds_count" => fp.calls as f64,
                "queue_seconds" => fp.queue_time / 1_000.0,
                "errors" => fp.errors_by_class[sample.labels.get("class")?] as f64,
                other => row[other].as_f64()?,
            })
        };
        if let Some(id) = sample.labels.get("queryid") {
            let fp = top
                .iter()
                .find(|f| f.queryid == id)
                .expect("only top fingerprints exported");
            assert!(sample.labels.get("query").is_none());
            if let PValue::Summary(qs) = &sample.value {
                let want = [fp.p50_exec_time, fp.p95_exec_time, fp.p99_exec_time];
                let got: Vec<f64> = qs.iter().map(|q| q.count).collect();
                assert_eq!(got, want.map(|ms| ms / 1_000.0));
                assert_eq!(
                    qs.iter().map(|q| q.quantile).collect::<Vec<_>>(),
                    [0.5, 0.95, 0.99]
                );
            } else {
                let expected = value(fp).unwrap_or_else(|| panic!("unknown {}", sample.metric));
                assert_eq!(scalar(&sample.value), expected, "{}", sample.metric);
            }
        } else if let Some(field) = sample.metric.strip_prefix("pgward_all_queries_") {
            let field = field.trim_end_matches("_total");
            let t = &json["totals"];
            let expected = match field {
                "exec_seconds" => snap.totals.total_exec_time / 1_000.0,
                "queue_seconds" => snap.totals.queue_time / 1_000.0,
                "errors" => t["errors_by_class"][sample.labels.get("class").unwrap_or("")]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                other => t[other].as_f64().unwrap_or(f64::NAN),
            };
            assert_eq!(scalar(&sample.value), expected, "{}", sample.metric);
        } else {
            let field = sample
                .metric
                .trim_start_matches("pgward_")
                .trim_end_matches("_total");
            let field = if field == "client_connections" && sample.metric.ends_with("_total") {
                "client_connections_total"
            } else if field == "upstream_connections" && sample.metric.ends_with("_total") {
                "upstream_connections_total"
            } else {
                field
            };
            let expected = json["proxy"][field].as_f64();
            assert_eq!(Some(scalar(&sample.value)), expected, "{}", sample.metric);
        }
        checked += 1;
    }
    // Families with samples for both top fingerprints, totals and proxy metrics.
    assert!(checked > 40, "only {checked} samples");
    assert!(
        !text.contains("00000000000000c3"),
        "non-top fingerprint exported"
    );
    assert_eq!(snap.totals.calls, 53);
    for line in [
        "pgward_all_queries_calls_total 53",
        "pgward_all_queries_errors_total{class=\"57\"} 2",
        "pgward_query_errors_total{queryid=\"00000000000000a1\",class=\"23\"} 1",
        "pgward_query_budget_exceeded_total{queryid=\"00000000000000a1\"} 1",
        "pgward_query_rewritten_total{queryid=\"00000000000000b2\"} 1",
        "pgward_client_connections 1",
        "pgward_client_connections_total 4",
        "pgward_fingerprints_tracked 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    for family in [
        "pgward_query_calls_total",
        "pgward_query_exec_seconds",
        "pgward_queries_total",
    ] {
        assert!(scrape.docs.contains_key(family), "no HELP for {family}");
    }
}

#[test]
fn query_label_is_optional_and_escaped() {
    let s = Stats::new(&StatsSettings::default());
    s.fingerprint(FingerprintId(1), "SELECT \"a\\b\"\nFROM t")
        .record(&exec(1, 1));
    let snap = s.snapshot();
    let without = render_prometheus(&snap, 10, false);
    assert!(!without.contains("query=\""), "{without}");
    let with = render_prometheus(&snap, 10, true);
    assert_eq!(lint(&with), Vec::<String>::new(), "{with}");
    let expected = "pgward_query_calls_total{queryid=\"0000000000000001\",\
                    query=\"SELECT \\\"a\\\\b\\\"\\nFROM t\"} 1";
    assert!(with.lines().any(|l| l == expected), "{with}");
    assert_eq!(with.lines().count(), without.lines().count());
}

#[test]
fn empty_and_idle_snapshots_render_cleanly() {
    let s = Stats::new(&StatsSettings::default());
    let empty = render_prometheus(&s.snapshot(), 50, false);
    assert_eq!(lint(&empty), Vec::<String>::new(), "{empty}");
    assert!(!empty.contains("queryid"));
    assert!(empty.contains("pgward_all_queries_calls_total 0\n"));

    s.fingerprint(FingerprintId(5), "idle"); // seen but never recorded
    let idle = render_prometheus(&s.snapshot(), 50, false);
    assert_eq!(lint(&idle), Vec::<String>::new(), "{idle}");
    assert!(idle.contains(
        "pgward_query_exec_seconds{queryid=\"0000000000000005\",quantile=\"0.5\"} NaN\n"
    ));
    assert!(idle.contains("pgward_query_exec_seconds_count{queryid=\"0000000000000005\"} 0\n"));
}

#[test]
fn linter_catches_bad_expositions() {
    let bad = "# TYPE foo_total gauge\nfoo_total 1\nfoo_total 1\nbar 2\n";
    let problems = lint(bad);
    assert!(
        problems.iter().any(|p| p.contains("no HELP")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("only counters")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("duplicate series")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("no family")),
        "{problems:?}"
    );
}
