//! Unit tests of one record and its snapshot: derived numbers, error classes,
//! outcome counters, sorting and settings. Table-wide behaviour (eviction,
//! reset, concurrency) is in `table_tests.rs`, Prometheus output in
//! `prometheus_tests.rs`; both reuse the helpers here.

use std::time::Duration;

use super::*;

pub(super) fn exec(ms: u64, rows: u64) -> Execution {
    Execution {
        elapsed: Duration::from_millis(ms),
        rows,
        bytes_sent: rows * 10,
        error_sqlstate: None,
    }
}

pub(super) fn failed(ms: u64, sqlstate: &[u8; 5]) -> Execution {
    Execution {
        elapsed: Duration::from_millis(ms),
        rows: 0,
        bytes_sent: 0,
        error_sqlstate: Some(*sqlstate),
    }
}

pub(super) fn stats(max: usize) -> Stats {
    Stats::new(&StatsSettings {
        max_fingerprints: max,
        ..StatsSettings::default()
    })
}

pub(super) fn close(actual: f64, expected: f64, rel: f64) -> bool {
    (actual - expected).abs() <= expected.abs() * rel + 1e-9
}

#[test]
fn record_derives_exact_aggregates_and_close_percentiles() {
    let s = stats(10);
    let fp = s.fingerprint(FingerprintId(7), "SELECT $1");
    for ms in 1..=100 {
        fp.record(&exec(ms, ms));
    }
    let snap = s.get(FingerprintId(7)).expect("tracked");
    assert_eq!(snap.queryid, "0000000000000007");
    assert_eq!(snap.query, "SELECT $1");
    assert_eq!(snap.calls, 100);
    assert_eq!(snap.rows, 5050);
    assert_eq!(snap.bytes_sent, 50_500);
    assert_eq!(snap.errors, 0);
    assert!(close(snap.total_exec_time, 5050.0, 1e-12));
    assert_eq!(snap.min_exec_time, 1.0);
    assert_eq!(snap.max_exec_time, 100.0);
    assert!(close(snap.mean_exec_time, 50.5, 1e-12));
    // Population stddev of 1..=n is sqrt((n^2 - 1) / 12).
    let expected_sd = (9999.0f64 / 12.0).sqrt();
    assert!(
        close(snap.stddev_exec_time, expected_sd, 1e-9),
        "{}",
        snap.stddev_exec_time
    );
    // Nearest-rank percentiles, within the histogram's 1% precision (2 significant digits).
    assert!(
        close(snap.p50_exec_time, 50.0, 1e-2),
        "{}",
        snap.p50_exec_time
    );
    assert!(
        close(snap.p95_exec_time, 95.0, 1e-2),
        "{}",
        snap.p95_exec_time
    );
    assert!(
        close(snap.p99_exec_time, 99.0, 1e-2),
        "{}",
        snap.p99_exec_time
    );
}

#[test]
fn stddev_handles_constant_and_sub_millisecond_values() {
    let s = stats(10);
    let fp = s.fingerprint(FingerprintId(1), "q");
    for _ in 0..1000 {
        fp.record(&Execution {
            elapsed: Duration::from_micros(250),
            ..Execution::default()
        });
    }
    let snap = fp.snapshot();
    assert_eq!(snap.stddev_exec_time, 0.0);
    assert_eq!(snap.mean_exec_time, 0.25);
    // Clamped into [min, max], so constant inputs give exact percentiles.
    assert_eq!(snap.p50_exec_time, 0.25);
    assert_eq!(snap.p99_exec_time, 0.25);

    // Two values 1ms and 3ms: population stddev is exactly 1ms.
    let fp2 = s.fingerprint(FingerprintId(2), "q2");
    fp2.record(&exec(1, 0));
    fp2.record(&exec(3, 0));
    assert!(close(fp2.snapshot().stddev_exec_time, 1.0, 1e-12));
}

#[test]
fn out_of_range_durations_saturate_instead_of_failing() {
    let s = stats(10);
    let fp = s.fingerprint(FingerprintId(3), "q");
    fp.record(&Execution::default()); // zero duration
    let zero = fp.snapshot();
    assert_eq!(
        (zero.calls, zero.p50_exec_time, zero.max_exec_time),
        (1, 0.0, 0.0)
    );
    fp.record(&Execution {
        elapsed: Duration::from_secs(7_200),
        ..Execution::default()
    });
    fp.record(&Execution {
        elapsed: Duration::MAX,
        ..Execution::default()
    });
    let snap = fp.snapshot();
    assert_eq!(snap.calls, 3);
    // The histogram caps at one hour; exact max tracks the real value (saturated to u64 ns).
    assert!(
        close(snap.p99_exec_time, 3_600_000.0, 1e-2),
        "{}",
        snap.p99_exec_time
    );
    assert!(snap.max_exec_time > 1e12);
}

#[test]
fn errors_are_counted_by_sqlstate_class() {
    let s = stats(10);
    let fp = s.fingerprint(FingerprintId(9), "q");
    for _ in 0..3 {
        fp.record(&failed(2, b"57014"));
    }
    fp.record(&failed(2, b"23505"));
    fp.record(&failed(2, b"23503"));
    fp.record(&failed(2, b"2\x00000"));
    fp.record(&exec(2, 1));
    let snap = fp.snapshot();
    assert_eq!(snap.calls, 7);
    assert_eq!(snap.errors, 6);
    let classes: Vec<(&str, u64)> = snap
        .errors_by_class
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(classes, vec![("23", 2), ("2?", 1), ("57", 3)]);
    let json = serde_json::to_value(&snap).expect("serializes");
    assert_eq!(json["errors_by_class"]["57"], 3);
}

#[test]
fn sort_keys_order_descending_and_limit() {
    let s = stats(10);
    // a: many fast calls; b: few slow calls; c: errors and a slow tail.
    let a = s.fingerprint(FingerprintId(0xa), "a");
    for _ in 0..100 {
        a.record(&exec(1, 0));
    }
    let b = s.fingerprint(FingerprintId(0xb), "b");
    for _ in 0..3 {
        b.record(&exec(50, 0));
    }
    let c = s.fingerprint(FingerprintId(0xc), "c");
    for _ in 0..9 {
        c.record(&failed(1, b"40001"));
    }
    c.record(&exec(90, 0));
    let snap = s.snapshot();
    let order = |key: &str, limit: usize| -> Vec<String> {
        let key: SortKey = key.parse().expect("valid key");
        snap.sorted(key, limit)
            .iter()
            .map(|f| f.query.clone())
            .collect()
    };
    assert_eq!(order("total_exec_time", 10), ["b", "a", "c"]);
    assert_eq!(order("calls", 10), ["a", "c", "b"]);
    assert_eq!(order("mean_exec_time", 10), ["b", "c", "a"]);
    assert_eq!(order("p99_exec_time", 10), ["c", "b", "a"]);
    assert_eq!(order("errors", 2), ["c", "a"]);
    assert_eq!(order("calls", 0), Vec::<String>::new());
    assert_eq!(SortKey::default(), SortKey::TotalExecTime);

    let err = "bogus".parse::<SortKey>().expect_err("invalid key");
    let msg = err.to_string();
    assert!(msg.contains("bogus"), "{msg}");
    for key in SortKey::ALL {
        assert!(msg.contains(key.as_str()), "{msg}");
        assert_eq!(key.as_str().parse::<SortKey>(), Ok(key));
    }
}

#[test]
fn snapshot_json_uses_pg_stat_statements_names_and_counters() {
    let s = stats(10);
    let fp = s.fingerprint(FingerprintId(0xdead_beef), "SELECT * FROM t WHERE id = $1");
    fp.record(&exec(4, 2));
    fp.bump(Counter::BudgetExceeded);
    fp.bump(Counter::CacheHit);
    fp.add(Counter::CacheMiss, 3);
    fp.record_queued(Duration::from_millis(12));
    fp.set_rule("slow-reports");
    let snap = s.snapshot();
    let json = serde_json::to_value(&snap).expect("serializes");
    let row = &json["fingerprints"][0];
    assert_eq!(row["queryid"], "00000000deadbeef");
    assert_eq!(row["rule"], "slow-reports");
    assert_eq!(row["budget_exceeded"], 1);
    assert_eq!(row["cache_hits"], 1);
    assert_eq!(row["cache_misses"], 3);
    assert_eq!(row["queued"], 1);
    assert_eq!(row["shed"], 0);
    assert_eq!(row["queue_time"], 12.0);
    for field in [
        "query",
        "calls",
        "rows",
        "total_exec_time",
        "min_exec_time",
        "max_exec_time",
        "mean_exec_time",
        "stddev_exec_time",
        "p50_exec_time",
        "p95_exec_time",
        "p99_exec_time",
        "errors",
        "errors_by_class",
        "bytes_sent",
        "first_seen",
        "last_seen",
        "rejected",
        "rewritten",
        "stale_served",
    ] {
        assert!(row.get(field).is_some(), "missing {field}: {row}");
    }
    assert!(row.get("id").is_none());
    let seen = row["first_seen"].as_str().unwrap_or_default();
    assert_eq!(seen.len(), 24, "{seen}");
    assert!(seen.ends_with('Z') && seen.as_bytes()[10] == b'T', "{seen}");
    assert!(row["last_seen"].as_str() >= row["first_seen"].as_str());
    assert_eq!(json["totals"]["budget_exceeded"], 1);
    assert_eq!(json["proxy"]["fingerprints_tracked"], 1);

    fp.set_rule("other");
    assert_eq!(
        s.get(FingerprintId(0xdead_beef))
            .and_then(|f| f.rule)
            .as_deref(),
        Some("other")
    );
    assert!(s.get(FingerprintId(1)).is_none());
}

#[test]
fn settings_default_and_deserialize_strictly() {
    let d = StatsSettings::default();
    assert_eq!(
        (d.max_fingerprints, d.metrics_top, d.show_literals),
        (5000, 50, false)
    );
    let partial: StatsSettings =
        serde_json::from_str(r#"{"max_fingerprints": 10}"#).expect("valid settings");
    assert_eq!(partial.max_fingerprints, 10);
    assert_eq!(partial.metrics_top, 50);
    assert!(serde_json::from_str::<StatsSettings>(r#"{"max_fingerprint": 10}"#).is_err());
    let s = Stats::new(&partial);
    assert_eq!(s.settings(), &partial);
}

#[test]
fn a_record_keeps_at_most_max_stored_query_bytes_of_text() {
    let stats = stats(10);
    // Multi-byte characters straddle the cut: it must land on a character boundary.
    let huge = format!("SELECT '{}'", "é".repeat(100_000));
    let record = stats.fingerprint(FingerprintId(1), &huge);
    let kept = record.query();
    assert!(
        kept.len() <= MAX_STORED_QUERY + '…'.len_utf8(),
        "{} bytes kept",
        kept.len()
    );
    assert!(kept.ends_with('…'));
    assert!(huge.starts_with(kept.trim_end_matches('…')));
    let short = stats.fingerprint(FingerprintId(2), "SELECT $1");
    assert_eq!(short.query(), "SELECT $1");
}

#[test]
fn entries_the_cache_drops_count_on_their_fingerprint_if_it_is_tracked() {
    use crate::cache::Removed;
    let stats = std::sync::Arc::new(stats(10));
    let tracked = FingerprintId(1);
    let record = stats.fingerprint(tracked, "SELECT ?");
    let on_removed = stats.on_cache_removed();
    on_removed(tracked, Removed::Evicted);
    on_removed(tracked, Removed::Invalidated);
    on_removed(tracked, Removed::Invalidated);
    // A fingerprint no longer tracked is not brought back by its cache entry.
    on_removed(FingerprintId(2), Removed::Evicted);
    assert_eq!(record.counter(Counter::CacheEvicted), 1);
    assert_eq!(record.counter(Counter::CacheInvalidated), 2);
    assert!(stats.existing(FingerprintId(2)).is_none());
}
