//! Which prepared statements one server connection holds, under the names pgward gave them
//! (`pgward_<hash of text and types>`), so that in transaction mode a client's statement is
//! prepared on whichever connection it lands on, once per connection, and a statement shared
//! by many clients is prepared once. Bounded: past [`MAX_PER_SERVER`] the least recently used
//! one is closed on the server before another is prepared. Emptied by the reset query
//! (`DISCARD ALL`) and by a client's `DEALLOCATE ALL` / `DISCARD ALL`.

use std::collections::HashMap;

/// Prepared statements one server connection keeps (PgBouncer's `max_prepared_statements`
/// defaults to 200; PostgreSQL itself has no limit, but each costs backend memory).
pub const MAX_PER_SERVER: usize = 500;

/// The statements a server connection has, with a use counter for eviction.
#[derive(Debug, Default)]
pub struct PreparedSet {
    names: HashMap<Box<[u8]>, u64>,
    clock: u64,
}

impl PreparedSet {
    /// Whether the server has `name`; a hit counts as a use.
    pub fn touch(&mut self, name: &[u8]) -> bool {
        self.clock = self.clock.wrapping_add(1);
        match self.names.get_mut(name) {
            Some(used) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.names.contains_key(name)
    }

    /// Makes room for one more: the least recently used name, which the caller closes on the
    /// server first, when the set is full.
    pub fn evict_for_one(&mut self) -> Option<Box<[u8]>> {
        if self.names.len() < MAX_PER_SERVER {
            return None;
        }
        let victim = self
            .names
            .iter()
            .min_by_key(|(_, used)| **used)
            .map(|(name, _)| name.clone())?;
        self.names.remove(&victim);
        Some(victim)
    }

    /// The server answered ParseComplete for `name`.
    pub fn insert(&mut self, name: &[u8]) {
        self.clock = self.clock.wrapping_add(1);
        if self.names.len() < MAX_PER_SERVER || self.names.contains_key(name) {
            self.names.insert(name.into(), self.clock);
        }
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.names.remove(name);
    }

    /// `DISCARD ALL`, `DEALLOCATE ALL`: the server has none any more.
    pub fn clear(&mut self) {
        self.names.clear();
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_statement_gives_way_when_full() {
        let mut set = PreparedSet::default();
        for i in 0..MAX_PER_SERVER {
            assert_eq!(set.evict_for_one(), None);
            set.insert(format!("s{i}").as_bytes());
        }
        assert!(set.touch(b"s0"));
        assert_eq!(set.evict_for_one().as_deref(), Some(&b"s1"[..]));
        assert!(!set.contains(b"s1"));
        assert_eq!(set.len(), MAX_PER_SERVER - 1);
        set.insert(b"new");
        assert_eq!(set.len(), MAX_PER_SERVER);
        // Never past the bound, even without an eviction first.
        set.insert(b"one more");
        assert_eq!(set.len(), MAX_PER_SERVER);
        set.clear();
        assert!(set.is_empty());
    }
}
