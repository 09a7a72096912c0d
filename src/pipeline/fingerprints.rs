//! Statement text -> fingerprints, computed once per distinct text that repeats. A simple-protocol
//! Query string maps to one fingerprint per statement it contains; a Parse maps to exactly one.
//!
//! Texts with inlined literals rarely repeat, so caching every text would only churn memory: a
//! text enters the cache the second time it is seen (a lock-free "seen once" table of hashes
//! acts as the doorkeeper). Lookups hash the text once with xxh3 and compare it byte for byte on
//! a hit; nothing is allocated unless the text is new. The cache is bounded in entries and in
//! bytes (a client choosing huge texts must not make pgward keep them): texts over
//! [`MAX_CACHED_TEXT`] are never kept, and when either bound is reached the cache is cleared,
//! which costs one re-fingerprint per text still in use. Sessions with
//! `standard_conforming_strings = off` lex strings differently; their texts bypass the cache.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use dashmap::DashMap;
use xxhash_rust::xxh3::xxh3_64;

use crate::fingerprint::{self, FingerprintId, Strings};

/// Slots in the doorkeeper table (a power of two).
const DOORKEEPER_SLOTS: usize = 4096;
/// Longer statement texts are fingerprinted every time rather than kept.
pub const MAX_CACHED_TEXT: usize = 16 * 1024;
/// Bytes of statement text the cache keeps at most.
const MAX_CACHED_BYTES: usize = 32 * 1024 * 1024;

/// One statement's identity: stable id and normalized text (no literals).
#[derive(Debug, Clone)]
pub struct Fingerprinted {
    pub id: FingerprintId,
    pub text: Arc<str>,
}

struct Cached {
    sql: Box<[u8]>,
    statements: Arc<[Fingerprinted]>,
}

/// Bounded text -> fingerprints cache, shared by all sessions.
pub struct FingerprintCache {
    by_hash: DashMap<u64, Cached, BuildHasherDefault<PrehashedKey>>,
    seen_once: Box<[AtomicU64]>,
    capacity: usize,
    /// Bytes of text held (approximate under races; only a trigger for clearing).
    bytes: AtomicUsize,
}

impl FingerprintCache {
    pub fn new(capacity: usize) -> Self {
        FingerprintCache {
            by_hash: DashMap::with_capacity_and_hasher(
                capacity.min(4096),
                BuildHasherDefault::default(),
            ),
            seen_once: (0..DOORKEEPER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            capacity,
            bytes: AtomicUsize::new(0),
        }
    }

    /// Fingerprints of every statement in a simple-protocol Query string, in order.
    pub fn query(&self, sql: &[u8], strings: Strings) -> Arc<[Fingerprinted]> {
        self.lookup(sql, strings, |text| {
            if !text.contains(';') {
                // One statement (the common case): skip the splitting pass over the text.
                let single = fingerprinted(text, strings);
                return if single.text.is_empty() {
                    Vec::new()
                } else {
                    vec![single]
                };
            }
            fingerprint::split_statements_with(text, strings)
                .into_iter()
                .filter_map(|range| text.get(range))
                .map(|text| fingerprinted(text, strings))
                .collect()
        })
    }

    /// The fingerprint of one extended-protocol statement (the text of a Parse).
    pub fn statement(&self, sql: &[u8], strings: Strings) -> Option<Fingerprinted> {
        self.lookup(sql, strings, |text| vec![fingerprinted(text, strings)])
            .first()
            .cloned()
    }

    fn lookup(
        &self,
        sql: &[u8],
        strings: Strings,
        compute: impl FnOnce(&str) -> Vec<Fingerprinted>,
    ) -> Arc<[Fingerprinted]> {
        if strings != Strings::Standard || sql.len() > MAX_CACHED_TEXT {
            return compute(&String::from_utf8_lossy(sql)).into();
        }
        let hash = xxh3_64(sql);
        if let Some(hit) = self.by_hash.get(&hash)
            && *hit.sql == *sql
        {
            return hit.statements.clone();
        }
        let text = String::from_utf8_lossy(sql);
        let statements: Arc<[Fingerprinted]> = compute(&text).into();
        let slot = &self.seen_once[hash as usize & (DOORKEEPER_SLOTS - 1)];
        if slot.swap(hash, Relaxed) == hash {
            let held = self.bytes.fetch_add(sql.len(), Relaxed);
            if self.by_hash.len() >= self.capacity || held >= MAX_CACHED_BYTES {
                self.by_hash.clear();
                self.bytes.store(sql.len(), Relaxed);
            }
            self.by_hash.insert(
                hash,
                Cached {
                    sql: sql.into(),
                    statements: statements.clone(),
                },
            );
        }
        statements
    }

    /// Texts currently cached.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

fn fingerprinted(text: &str, strings: Strings) -> Fingerprinted {
    let normalized = fingerprint::normalize_with(text, strings);
    Fingerprinted {
        id: normalized.id,
        text: normalized.text.into(),
    }
}

/// The map's keys are already xxh3 hashes: use them as they are.
#[derive(Default)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in deterministically.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STD: Strings = Strings::Standard;

    #[test]
    fn multi_statement_query_yields_one_fingerprint_each() {
        let cache = FingerprintCache::new(16);
        let fps = cache.query(b"select 1; select 2; update t set a = 3", STD);
        assert_eq!(fps.len(), 3);
        assert_eq!(fps[0].id, fps[1].id);
        assert_ne!(fps[0].id, fps[2].id);
    }

    #[test]
    fn simple_and_extended_forms_share_an_id() {
        let cache = FingerprintCache::new(16);
        let simple = cache.query(b"SELECT * FROM t WHERE id = 42", STD);
        let extended = cache
            .statement(b"select * from t where id = $1", STD)
            .unwrap();
        assert_eq!(simple[0].id, extended.id);
    }

    #[test]
    fn texts_are_cached_from_their_second_sighting() {
        let cache = FingerprintCache::new(16);
        let first = cache.statement(b"select $1", STD).unwrap();
        assert_eq!(cache.len(), 0, "a text seen once is not cached");
        let second = cache.statement(b"select $1", STD).unwrap();
        assert_eq!(cache.len(), 1);
        let third = cache.statement(b"select $1", STD).unwrap();
        assert!(
            Arc::ptr_eq(&second.text, &third.text),
            "third lookup is a hit"
        );
        assert_eq!(first.id, third.id);
    }

    #[test]
    fn empty_and_comment_only_queries_have_no_statements() {
        let cache = FingerprintCache::new(16);
        assert_eq!(cache.query(b"", STD).len(), 0);
        assert_eq!(cache.query(b"  -- nothing here\n", STD).len(), 0);
        assert_eq!(cache.query(b" ; ; ", STD).len(), 0);
        assert_eq!(cache.query(b"select 1 -- trailing", STD).len(), 1);
    }

    #[test]
    fn cache_stays_bounded() {
        let cache = FingerprintCache::new(4);
        for i in 0..10 {
            let sql = format!("select {i}");
            cache.query(sql.as_bytes(), STD);
            cache.query(sql.as_bytes(), STD);
        }
        assert!(cache.len() <= 4);
    }

    #[test]
    fn long_texts_are_never_kept() {
        let cache = FingerprintCache::new(16);
        let sql = format!("select '{}'", "x".repeat(MAX_CACHED_TEXT));
        for _ in 0..3 {
            assert_eq!(cache.query(sql.as_bytes(), STD).len(), 1);
        }
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn backslash_strings_hide_escaped_quotes() {
        let cache = FingerprintCache::new(16);
        let sql = br"select 'x\' leaked' from t";
        for _ in 0..2 {
            let fp = &cache.query(sql, Strings::Backslash)[0];
            assert_eq!(&*fp.text, "select $1 from t");
        }
        assert_eq!(
            cache.len(),
            0,
            "non-standard strings bypass the shared cache"
        );
        let standard = &cache.query(sql, STD)[0];
        assert!(
            standard.text.contains("leaked"),
            "the standard lexing differs"
        );
    }
}
