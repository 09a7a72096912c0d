//! Statement text -> fingerprints, computed once per distinct text. A simple-protocol Query string
//! maps to one fingerprint per statement it contains; a Parse maps to exactly one. The cache is
//! bounded: when full it is cleared, which costs one re-fingerprint per text still in use.

use std::sync::Arc;

use dashmap::DashMap;

use crate::fingerprint::{self, FingerprintId};

/// One statement's identity: stable id and normalized text (no literals).
#[derive(Debug, Clone)]
pub struct Fingerprinted {
    pub id: FingerprintId,
    pub text: Arc<str>,
}

/// Bounded text -> fingerprints cache, shared by all sessions.
pub struct FingerprintCache {
    by_text: DashMap<Box<[u8]>, Arc<[Fingerprinted]>>,
    capacity: usize,
}

impl FingerprintCache {
    pub fn new(capacity: usize) -> Self {
        FingerprintCache {
            by_text: DashMap::with_capacity(capacity.min(4096)),
            capacity,
        }
    }

    /// Fingerprints of every statement in a simple-protocol Query string, in order.
    pub fn query(&self, sql: &[u8]) -> Arc<[Fingerprinted]> {
        self.lookup(sql, |text| {
            fingerprint::split_statements(text)
                .into_iter()
                .filter_map(|range| text.get(range))
                .map(fingerprinted)
                .collect()
        })
    }

    /// The fingerprint of one extended-protocol statement (the text of a Parse).
    pub fn statement(&self, sql: &[u8]) -> Option<Fingerprinted> {
        self.lookup(sql, |text| vec![fingerprinted(text)])
            .first()
            .cloned()
    }

    fn lookup(
        &self,
        sql: &[u8],
        compute: impl FnOnce(&str) -> Vec<Fingerprinted>,
    ) -> Arc<[Fingerprinted]> {
        if let Some(hit) = self.by_text.get(sql) {
            return hit.clone();
        }
        let text = String::from_utf8_lossy(sql);
        let value: Arc<[Fingerprinted]> = compute(&text).into();
        if self.by_text.len() >= self.capacity {
            self.by_text.clear();
        }
        self.by_text.insert(sql.into(), value.clone());
        value
    }
}

fn fingerprinted(text: &str) -> Fingerprinted {
    let normalized = fingerprint::normalize(text);
    Fingerprinted {
        id: normalized.id,
        text: normalized.text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_statement_query_yields_one_fingerprint_each() {
        let cache = FingerprintCache::new(16);
        let fps = cache.query(b"select 1; select 2; update t set a = 3");
        assert_eq!(fps.len(), 3);
        assert_eq!(fps[0].id, fps[1].id);
        assert_ne!(fps[0].id, fps[2].id);
    }

    #[test]
    fn simple_and_extended_forms_share_an_id() {
        let cache = FingerprintCache::new(16);
        let simple = cache.query(b"SELECT * FROM t WHERE id = 42");
        let extended = cache.statement(b"select * from t where id = $1").unwrap();
        assert_eq!(simple[0].id, extended.id);
    }

    #[test]
    fn cache_stays_bounded() {
        let cache = FingerprintCache::new(4);
        for i in 0..10 {
            cache.query(format!("select {i}").as_bytes());
        }
        assert!(cache.by_text.len() <= 4);
    }
}
