//! ResultCache: lookups, single flight, invalidation epochs, the byte bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

fn cache(max: u64) -> Arc<ResultCache> {
    let settings = CacheSettings {
        max_size: ByteSize(max),
        ..CacheSettings::default()
    };
    ResultCache::new(&settings, Box::new(|_, _| {}))
}

fn filled(tables: &[&str], on_write: bool, size: usize) -> Filled {
    Filled {
        fingerprint: FingerprintId(7),
        bytes: vec![b'x'; size].into(),
        row_description_len: 0,
        rows: 1,
        ttl: Duration::from_secs(60),
        stale_for: Duration::from_secs(600),
        tables: tables.iter().map(|t| Box::from(*t)).collect(),
        invalidate_on_write: on_write,
    }
}

fn leader(cache: &Arc<ResultCache>, key: &[u8]) -> FillTicket {
    match cache.begin_fill(key) {
        Flight::Leader(ticket) => ticket,
        Flight::Follower(_) => panic!("expected to lead the fill"),
    }
}

#[test]
fn a_stored_fill_is_a_fresh_hit_then_stale_then_gone() {
    let c = cache(1 << 20);
    assert!(matches!(
        c.lookup(b"k", Instant::now()),
        Lookup::Miss(MissReason::Cold)
    ));
    let ticket = leader(&c, b"k");
    assert!(c.store(ticket, filled(&["t"], true, 10)));
    let now = Instant::now();
    assert!(matches!(c.lookup(b"k", now), Lookup::Fresh(_)));
    assert!(matches!(
        c.lookup(b"k", now + Duration::from_secs(61)),
        Lookup::Stale(_)
    ));
    assert!(matches!(
        c.lookup(b"k", now + Duration::from_secs(700)),
        Lookup::Miss(MissReason::Expired)
    ));
}

#[tokio::test]
async fn one_leader_per_key_and_followers_wake_when_it_ends() {
    let c = cache(1 << 20);
    let ticket = leader(&c, b"k");
    assert!(c.in_flight(b"k"));
    let Flight::Follower(mut waiting) = c.begin_fill(b"k") else {
        panic!("second request must follow");
    };
    // Another key is independent.
    assert!(matches!(c.begin_fill(b"other"), Flight::Leader(_)));
    let waiter = tokio::spawn(async move { waiting.changed().await.is_err() });
    assert!(c.store(ticket, filled(&["t"], true, 10)));
    assert!(
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task")
    );
    assert!(!c.in_flight(b"k"));
    assert!(matches!(c.begin_fill(b"k"), Flight::Leader(_)));
}

#[test]
fn writes_invalidate_readers_and_fills_that_raced_them() {
    let c = cache(1 << 20);
    c.store(leader(&c, b"reads-t"), filled(&["t"], true, 10));
    c.store(leader(&c, b"reads-u"), filled(&["u"], true, 10));
    c.store(leader(&c, b"ttl-only"), filled(&["t"], false, 10));
    c.writes_committed(&["t".into()], false);
    let now = Instant::now();
    assert!(matches!(
        c.lookup(b"reads-t", now),
        Lookup::Miss(MissReason::Invalidated)
    ));
    assert!(matches!(c.lookup(b"reads-u", now), Lookup::Fresh(_)));
    assert!(matches!(c.lookup(b"ttl-only", now), Lookup::Fresh(_)));

    // A fill whose query started before a write to its table is not stored.
    let ticket = leader(&c, b"racing");
    c.writes_committed(&["t".into()], false);
    assert!(!c.store(ticket, filled(&["t"], true, 10)));
    assert!(matches!(
        c.lookup(b"racing", now),
        Lookup::Miss(MissReason::Cold)
    ));

    // A write pgward cannot attribute drops every entry that invalidates on write.
    c.writes_committed(&[], true);
    assert!(matches!(
        c.lookup(b"reads-u", now),
        Lookup::Miss(MissReason::Invalidated)
    ));
    assert!(matches!(c.lookup(b"ttl-only", now), Lookup::Fresh(_)));
}

#[test]
fn admin_purges_reach_ttl_only_entries_too() {
    let c = cache(1 << 20);
    c.store(leader(&c, b"a"), filled(&["t"], false, 10));
    c.purge_table("other.t").unwrap();
    assert!(matches!(
        c.lookup(b"a", Instant::now()),
        Lookup::Miss(MissReason::Invalidated)
    ));
    c.store(leader(&c, b"b"), filled(&["u"], false, 10));
    c.purge_fingerprint(FingerprintId(7));
    assert!(matches!(
        c.lookup(b"b", Instant::now()),
        Lookup::Miss(MissReason::Invalidated)
    ));
    c.store(leader(&c, b"c"), filled(&["u"], false, 10));
    c.purge_all();
    assert!(!matches!(c.lookup(b"c", Instant::now()), Lookup::Fresh(_)));
}

#[test]
fn a_key_flood_stays_within_max_size() {
    let max = 256 * 1024;
    let c = cache(max);
    for i in 0..5_000u32 {
        let key = i.to_be_bytes();
        c.store(leader(&c, &key), filled(&["t"], true, 1000));
    }
    let snapshot = c.snapshot(5);
    assert!(
        snapshot.size_bytes <= max,
        "{} > {max}",
        snapshot.size_bytes
    );
    assert!(
        snapshot.entries > 0 && snapshot.entries < 5_000,
        "{}",
        snapshot.entries
    );
    assert!(snapshot.largest.len() <= 5);
}

#[test]
fn invalidation_marks_stay_bounded_and_long_names_are_refused() {
    let c = cache(1 << 20);
    let long = "x".repeat(40 * 1024);
    for i in 0..1_000 {
        let name = format!("{long}{i}");
        assert_eq!(c.purge_table(&name), Err(TableNameTooLong(name.len())));
    }
    assert_eq!(c.marks(), 0, "refused names leave no mark");
    // 10,000 distinct names of the longest allowed length, with an entry cached meanwhile.
    c.store(leader(&c, b"kept"), filled(&["kept"], false, 10));
    for i in 0..10_000 {
        let name = format!("{i:0>width$}", width = MAX_TABLE_NAME);
        c.purge_table(&name).unwrap();
        c.writes_committed(&[name.into_boxed_str()], false);
        assert!(c.marks() <= 2 * (MAX_MARKS + 1), "{} marks", c.marks());
    }
    // Nothing refers to those names: pruning left fewer than the cap, and the unrelated entry
    // is still served.
    assert!(c.marks() < 2 * MAX_MARKS, "{} marks", c.marks());
    assert!(matches!(
        c.lookup(b"kept", Instant::now()),
        Lookup::Fresh(_)
    ));
    // A write to a name longer than any table's leaves no mark but invalidates conservatively.
    c.store(leader(&c, b"on-write"), filled(&["t"], true, 10));
    c.writes_committed(&[long.clone().into_boxed_str()], false);
    assert!(matches!(
        c.lookup(b"on-write", Instant::now()),
        Lookup::Miss(MissReason::Invalidated)
    ));
}

#[test]
fn pruning_never_forgets_a_mark_that_an_entry_or_a_running_fill_needs() {
    let c = cache(1 << 20);
    c.store(leader(&c, b"stale"), filled(&["t"], false, 10));
    let running = leader(&c, b"running");
    c.purge_table("t").unwrap();
    // Enough other names to prune several times over.
    for i in 0..3 * MAX_MARKS {
        c.purge_table(&format!("other{i}")).unwrap();
    }
    assert!(matches!(
        c.lookup(b"stale", Instant::now()),
        Lookup::Miss(_)
    ));
    assert!(
        !c.store(running, filled(&["t"], false, 10)),
        "a fill that started before the purge must not be stored"
    );
    // With the fill gone, the marks it kept alive are pruned on the next overflow.
    for i in 0..MAX_MARKS + 1 {
        c.purge_table(&format!("again{i}")).unwrap();
    }
    assert!(c.marks() <= MAX_MARKS, "{} marks", c.marks());
}
