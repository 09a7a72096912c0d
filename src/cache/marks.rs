//! Invalidation marks: for each table (or fingerprint) the epoch of its last invalidation, plus
//! a floor epoch that stands for every mark given up. The map is bounded: past `cap` records
//! the cache prunes the ones no entry or fill can still need ([`super::ResultCache`]), and if
//! that is not enough [`Marks::shed`] folds the oldest into the floor. Folding only ever
//! invalidates more (an entry older than the floor counts as invalidated), never less.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use dashmap::DashMap;

/// A bounded map of key -> epoch of its last invalidation, with a floor.
pub(crate) struct Marks<K: Eq + Hash> {
    map: DashMap<K, u64>,
    cap: usize,
    /// Entries older than this epoch count as invalidated whatever their keys.
    floor: AtomicU64,
}

impl<K: Eq + Hash + Clone> Marks<K> {
    pub(crate) fn new(cap: usize) -> Marks<K> {
        Marks {
            map: DashMap::new(),
            cap: cap.max(2),
            floor: AtomicU64::new(0),
        }
    }

    /// Records that `key` was invalidated at `epoch`; true when the map is over its cap and
    /// should be pruned.
    pub(crate) fn mark(&self, key: K, epoch: u64) -> bool {
        let mut slot = self.map.entry(key).or_insert(epoch);
        *slot = (*slot).max(epoch);
        drop(slot);
        self.map.len() > self.cap
    }

    /// Everything was invalidated at `epoch` (for this kind of mark).
    pub(crate) fn raise_floor(&self, epoch: u64) {
        self.floor.fetch_max(epoch, SeqCst);
    }

    /// True when everything of this kind was invalidated after `epoch`.
    pub(crate) fn floor_after(&self, epoch: u64) -> bool {
        self.floor.load(SeqCst) > epoch
    }

    /// True when `key` itself was invalidated after `epoch` (the floor is checked separately).
    pub(crate) fn after<Q>(&self, key: &Q, epoch: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key).is_some_and(|e| *e > epoch)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The records as they are now, for a later [`Marks::forget`].
    pub(crate) fn snapshot(&self) -> Vec<(K, u64)> {
        self.map
            .iter()
            .map(|r| (r.key().clone(), *r.value()))
            .collect()
    }

    /// Drops the snapshot records of at most epoch `horizon` that were not marked again since.
    pub(crate) fn forget(&self, records: Vec<(K, u64)>, horizon: u64) {
        for (key, epoch) in records {
            if epoch <= horizon {
                self.map.remove_if(&key, |_, now| *now == epoch);
            }
        }
    }

    /// Still over the cap after pruning: folds the oldest records into the floor until half
    /// the cap is left. Returns how many records were folded.
    pub(crate) fn shed(&self) -> usize {
        let len = self.map.len();
        if len <= self.cap {
            return 0;
        }
        let mut epochs: Vec<u64> = self.map.iter().map(|r| *r.value()).collect();
        epochs.sort_unstable();
        let fold = len.saturating_sub(self.cap / 2);
        let Some(&threshold) = fold.checked_sub(1).and_then(|i| epochs.get(i)) else {
            return 0;
        };
        // Raise the floor first: a record must never vanish before the floor covers it.
        self.raise_floor(threshold);
        let before = self.map.len();
        self.map.retain(|_, epoch| *epoch > threshold);
        before.saturating_sub(self.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shedding_keeps_the_newest_half_and_covers_the_rest_with_the_floor() {
        let marks: Marks<String> = Marks::new(100);
        let mut over = false;
        for epoch in 1..=101u64 {
            over = marks.mark(format!("t{epoch}"), epoch);
        }
        assert!(over);
        assert_eq!(marks.shed(), 51);
        assert_eq!(marks.len(), 50);
        // Every folded record still invalidates what it did: entries older than epoch 51.
        assert!(marks.floor_after(50) && !marks.floor_after(51));
        assert!(marks.after("t101", 100) && !marks.after("t3", 0));
    }

    #[test]
    fn forget_keeps_records_marked_again_or_past_the_horizon() {
        let marks: Marks<&str> = Marks::new(10);
        marks.mark("a", 1);
        marks.mark("b", 2);
        marks.mark("c", 5);
        let records = marks.snapshot();
        marks.mark("a", 6);
        marks.forget(records, 4);
        assert!(marks.after("a", 5), "marked again after the snapshot");
        assert!(!marks.after("b", 0), "forgotten");
        assert!(marks.after("c", 4), "newer than the horizon");
    }
}
