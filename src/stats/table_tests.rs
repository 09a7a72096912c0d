//! Unit tests of the table as a whole: the `max_fingerprints` bound and
//! least-used eviction, reset, and a concurrency smoke test with exact totals.

use std::sync::Arc;
use std::time::Duration;

use super::tests::{close, exec, failed, stats};
use super::*;

#[test]
fn eviction_keeps_the_bound_and_drops_least_used() {
    let s = stats(100);
    let mut handles = Vec::new();
    for i in 0..100u64 {
        let fp = s.fingerprint(FingerprintId(i), "q");
        for _ in 0..i {
            fp.record(&exec(1, 1));
        }
        handles.push(fp);
    }
    assert_eq!(s.tracked(), 100);
    assert_eq!(
        s.proxy()
            .fingerprints_evicted
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    let newcomer = s.fingerprint(FingerprintId(1_000), "new");
    // A batch of 5% (5 entries) made room for the newcomer.
    assert_eq!(s.tracked(), 96);
    for i in 0..5u64 {
        assert!(
            s.get(FingerprintId(i)).is_none(),
            "fingerprint {i} should be evicted"
        );
        assert!(handles[i as usize].is_detached());
    }
    for i in 5..100u64 {
        assert!(
            s.get(FingerprintId(i)).is_some(),
            "fingerprint {i} should stay"
        );
    }
    assert!(!newcomer.is_detached());
    let snap = s.snapshot();
    assert_eq!(snap.proxy.fingerprints_evicted, 5);
    assert_eq!(snap.proxy.fingerprints_tracked, 96);
    // Totals keep what evicted fingerprints had recorded: sum of 0..100.
    assert_eq!(snap.totals.calls, 4950);
    assert_eq!(
        snap.fingerprints.iter().map(|f| f.calls).sum::<u64>(),
        4950 - 10
    );

    for i in 2_000..3_000u64 {
        s.fingerprint(FingerprintId(i), "churn");
        assert!(s.tracked() <= 100);
    }
    // Heavily used fingerprints survive the churn.
    assert!(s.get(FingerprintId(99)).is_some());
    assert_eq!(s.snapshot().totals.calls, 4950);
}

#[test]
fn zero_capacity_is_treated_as_one() {
    let s = stats(0);
    s.fingerprint(FingerprintId(1), "a");
    s.fingerprint(FingerprintId(2), "b");
    assert_eq!(s.tracked(), 1);
    assert!(s.get(FingerprintId(2)).is_some());
}

#[test]
fn reset_clears_records_and_counters_but_not_gauges() {
    let s = stats(10);
    let fp = s.fingerprint(FingerprintId(1), "q");
    fp.record(&exec(5, 1));
    let p = s.proxy();
    p.client_connections.inc();
    p.client_connections.inc();
    p.client_connections.dec();
    p.client_connections_total
        .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    p.upstream_connections.inc();
    p.queries.fetch_add(7, std::sync::atomic::Ordering::Relaxed);
    let before = s.snapshot();
    assert_eq!(before.fingerprints.len(), 1);
    assert_eq!(before.proxy.queries, 7);
    std::thread::sleep(Duration::from_millis(3));

    s.reset();
    let after = s.snapshot();
    assert!(after.fingerprints.is_empty());
    assert_eq!(after.totals, Totals::default());
    assert_eq!(after.proxy.client_connections, 1);
    assert_eq!(after.proxy.upstream_connections, 1);
    assert_eq!(after.proxy.client_connections_total, 0);
    assert_eq!(after.proxy.queries, 0);
    assert!(
        after.stats_reset > before.stats_reset,
        "{} vs {}",
        after.stats_reset,
        before.stats_reset
    );
    assert!(fp.is_detached());
    let fresh = s.fingerprint(FingerprintId(1), "q");
    assert!(!Arc::ptr_eq(&fp, &fresh));
    assert_eq!(fresh.snapshot().calls, 0);
}

#[test]
fn concurrent_recording_keeps_exact_totals() {
    const THREADS: u64 = 8;
    const SHARED: u64 = 5_000;
    const OWN: u64 = 1_000;
    let s = Arc::new(stats(100));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..SHARED {
                    // Look up every time on purpose, to race the insert path.
                    s.fingerprint(FingerprintId(u64::MAX), "shared")
                        .record(&exec(i % 7, 2));
                    s.proxy()
                        .queries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let own = s.fingerprint(FingerprintId(t), "own");
                for _ in 0..OWN {
                    own.record(&failed(1, b"57014"));
                    own.bump(Counter::Shed);
                }
            })
        })
        .collect();
    for w in workers {
        assert!(w.join().is_ok(), "worker panicked");
    }
    let snap = s.snapshot();
    let shared = snap.get(FingerprintId(u64::MAX)).expect("shared tracked");
    assert_eq!(shared.calls, THREADS * SHARED);
    assert_eq!(shared.rows, THREADS * SHARED * 2);
    let per_thread_ms: u64 = (0..SHARED).map(|i| i % 7).sum();
    assert!(close(
        shared.total_exec_time,
        (THREADS * per_thread_ms) as f64,
        1e-12
    ));
    for t in 0..THREADS {
        let own = snap.get(FingerprintId(t)).expect("own tracked");
        assert_eq!((own.calls, own.errors), (OWN, OWN));
        assert_eq!(own.outcomes.get(Counter::Shed), OWN);
        assert_eq!(own.errors_by_class.get("57"), Some(&OWN));
    }
    assert_eq!(snap.totals.calls, THREADS * (SHARED + OWN));
    assert_eq!(snap.proxy.queries, THREADS * SHARED);
    assert_eq!(snap.proxy.fingerprints_tracked, THREADS + 1);
}
