//! The result cache shared by all sessions: entries (captured backend messages) by key, bounded
//! in bytes (moka: size-aware admission and eviction, per-entry expiry at ttl + stale_for),
//! single-flight registration so that concurrent misses on one key send one query upstream,
//! and invalidation. The session-side logic (keys, what a session may use) is in
//! [`session`]; the per-fingerprint cacheability in [`plan`].
//!
//! Invalidation is by epochs rather than by scanning: every invalidation (a committed write
//! seen by pgward, or `POST /cache/invalidate`) takes the next epoch number and records it
//! against the tables (or fingerprint, or everything) it covers. An entry remembers the epoch
//! at which its query started; it is valid only while nothing it depends on was invalidated
//! after that. The check runs on every hit (a few map lookups) and once more when a fill is
//! stored, so a result that raced with a write is never stored (ADR 0005).

pub mod entry;
pub mod functions;
mod marks;
mod miss;
pub mod plan;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use moka::notification::RemovalCause;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;

use marks::Marks;

pub use entry::{Capture, Entry, Shape};
pub use miss::MissReason;
pub use plan::{Plan, Writes};
pub use session::SessionCache;

use crate::fingerprint::FingerprintId;
use crate::units::ByteSize;
use functions::Functions;

/// Most fingerprints whose plan is remembered; the map is cleared beyond it.
const MAX_PLANS: usize = 20_000;
/// Bookkeeping bytes counted per entry on top of its key and messages.
const ENTRY_OVERHEAD: usize = 160;
/// Most invalidation marks of each kind (tables written, tables and fingerprints purged) kept
/// before the ones no entry or fill can need are pruned (`ResultCache::prune_marks`).
const MAX_MARKS: usize = 4096;
/// Longest table name `POST /cache/invalidate?table=` accepts: `"schema"."table"` with both
/// parts PostgreSQL identifiers of at most 63 bytes, quoted (2 x 65 + 1).
pub const MAX_TABLE_NAME: usize = 131;

/// A table name no PostgreSQL table can have.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "table name is {0} bytes; PostgreSQL names are at most {MAX_TABLE_NAME} (schema.table, \
     each an identifier of at most 63 bytes)"
)]
pub struct TableNameTooLong(pub usize);

/// `[cache]` configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Off: no statement is cached, whatever the rules say.
    pub enabled: bool,
    /// Upper bound of all entries together (messages + keys + bookkeeping).
    pub max_size: ByteSize,
    /// Functions never cached besides the built-in list (now(), random(), nextval(), ...);
    /// listing one also says it does not change session settings.
    pub volatile_functions: Vec<String>,
    /// Functions (`name` or `schema.name`) whose results may be cached, besides the built-in
    /// list: the DBA vouches they are immutable or stable and leave session settings alone.
    pub stable_functions: Vec<String>,
}

impl Default for CacheSettings {
    fn default() -> CacheSettings {
        CacheSettings {
            enabled: true,
            max_size: ByteSize(256 * 1024 * 1024),
            volatile_functions: Vec::new(),
            stable_functions: Vec::new(),
        }
    }
}

/// What a lookup found.
pub enum Lookup {
    Fresh(Arc<Entry>),
    /// Past its ttl but within stale_for.
    Stale(Arc<Entry>),
    Miss(MissReason),
}

/// The outcome of asking to fill a key.
pub enum Flight {
    /// This request runs the query; the ticket ends the flight when dropped.
    Leader(FillTicket),
    /// Another request is running it: wait on this until its ticket is dropped.
    Follower(watch::Receiver<()>),
}

/// Held by the one request filling a key; dropping it wakes the requests waiting for it.
pub struct FillTicket {
    cache: Arc<ResultCache>,
    key: Box<[u8]>,
    /// Invalidation epoch when the query started.
    epoch: u64,
    _done: watch::Sender<()>,
}

impl Drop for FillTicket {
    fn drop(&mut self) {
        self.cache.flights.remove(&*self.key);
    }
}

impl std::fmt::Debug for FillTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillTicket")
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// What a completed fill stores.
pub struct Filled {
    pub fingerprint: FingerprintId,
    pub bytes: Box<[u8]>,
    pub row_description_len: usize,
    pub rows: u64,
    pub ttl: Duration,
    pub stale_for: Duration,
    pub tables: Arc<[Box<str>]>,
    pub invalidate_on_write: bool,
}

/// Cache-wide counters.
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    invalidated_entries: AtomicU64,
    invalidations: AtomicU64,
    discarded_fills: AtomicU64,
}

/// The process-wide result cache.
pub struct ResultCache {
    enabled: bool,
    max_size: u64,
    entries: moka::sync::Cache<Box<[u8]>, Arc<Entry>>,
    /// Key -> invalidation epoch when its fill started, and the fill's completion signal.
    flights: DashMap<Box<[u8]>, (u64, watch::Receiver<()>)>,
    plans: DashMap<FingerprintId, Arc<Plan>>,
    functions: Functions,
    epoch: AtomicU64,
    /// Table key -> epoch of the last committed write pgward saw to it; the floor is the last
    /// write pgward could not attribute to tables.
    written: Marks<Box<str>>,
    /// Table key -> epoch of the last `POST /cache/invalidate?table=`.
    purged_tables: Marks<Box<str>>,
    purged_fingerprints: Marks<FingerprintId>,
    purged_all: AtomicU64,
    /// One thread at a time prunes the marks; the others go on.
    pruning: AtomicBool,
    /// Something was cached once: from then on writes must be tracked.
    active: AtomicBool,
    counters: Counters,
    /// Told of each entry the cache drops on its own (per-fingerprint stats live above the
    /// cache, which knows nothing of them).
    on_removed: OnRemoved,
}

/// Why the cache dropped an entry on its own, as reported to [`OnRemoved`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// Evicted to stay within `cache.max_size`.
    Evicted,
    /// Found invalid (a write, or an admin purge) at lookup.
    Invalidated,
}

/// A callback for entries the cache drops on its own: the entry's fingerprint and why.
pub type OnRemoved = Box<dyn Fn(FingerprintId, Removed) + Send + Sync>;

struct EntryExpiry;

impl moka::Expiry<Box<[u8]>, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Box<[u8]>,
        entry: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.ttl + entry.stale_for)
    }
}

impl ResultCache {
    // moka's weigher and expiry callbacks take `&K`, and K is `Box<[u8]>`.
    #[allow(clippy::borrowed_box)]
    pub fn new(settings: &CacheSettings, on_removed: OnRemoved) -> Arc<ResultCache> {
        Arc::new_cyclic(|weak: &std::sync::Weak<ResultCache>| {
            let listener = weak.clone();
            let entries = moka::sync::Cache::builder()
                .max_capacity(settings.max_size.0)
                .weigher(|key: &Box<[u8]>, entry: &Arc<Entry>| {
                    let weight = key.len() + entry.bytes.len() + ENTRY_OVERHEAD;
                    u32::try_from(weight).unwrap_or(u32::MAX)
                })
                .expire_after(EntryExpiry)
                .eviction_listener(move |_key, entry: Arc<Entry>, cause| {
                    if let Some(cache) = listener.upgrade() {
                        cache.on_removed(&entry, cause);
                    }
                })
                .build();
            let functions =
                Functions::new(&settings.volatile_functions, &settings.stable_functions);
            ResultCache {
                enabled: settings.enabled,
                max_size: settings.max_size.0,
                entries,
                flights: DashMap::new(),
                plans: DashMap::new(),
                functions,
                epoch: AtomicU64::new(0),
                written: Marks::new(MAX_MARKS),
                purged_tables: Marks::new(MAX_MARKS),
                purged_fingerprints: Marks::new(MAX_MARKS),
                purged_all: AtomicU64::new(0),
                pruning: AtomicBool::new(false),
                active: AtomicBool::new(false),
                counters: Counters::default(),
                on_removed,
            }
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// True once anything was cached: sessions then report the writes they see.
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    fn on_removed(&self, entry: &Entry, cause: RemovalCause) {
        match cause {
            RemovalCause::Size => {
                self.counters.evictions.fetch_add(1, Relaxed);
                (self.on_removed)(entry.fingerprint, Removed::Evicted);
            }
            RemovalCause::Expired => {
                self.counters.expirations.fetch_add(1, Relaxed);
            }
            RemovalCause::Explicit | RemovalCause::Replaced => {}
        }
    }

    /// The cache's view of a statement, computed once per fingerprint.
    pub fn plan(&self, id: FingerprintId, normalized: &str) -> Arc<Plan> {
        if let Some(plan) = self.plans.get(&id) {
            return plan.clone();
        }
        let plan = Arc::new(plan::plan(normalized, &self.functions));
        if self.plans.len() >= MAX_PLANS {
            self.plans.clear();
        }
        self.plans.insert(id, plan.clone());
        plan
    }

    /// Looks a key up. An entry found invalid is dropped and reported as `Invalidated`.
    pub fn lookup(&self, key: &[u8], now: Instant) -> Lookup {
        let Some(entry) = self.entries.get(key) else {
            self.counters.misses.fetch_add(1, Relaxed);
            return Lookup::Miss(MissReason::Cold);
        };
        if !self.still_valid(&entry) {
            self.entries.invalidate(key);
            self.counters.invalidated_entries.fetch_add(1, Relaxed);
            self.counters.misses.fetch_add(1, Relaxed);
            (self.on_removed)(entry.fingerprint, Removed::Invalidated);
            return Lookup::Miss(MissReason::Invalidated);
        }
        if entry.is_fresh(now) {
            self.counters.hits.fetch_add(1, Relaxed);
            Lookup::Fresh(entry)
        } else if entry.is_usable(now) {
            Lookup::Stale(entry)
        } else {
            self.counters.misses.fetch_add(1, Relaxed);
            Lookup::Miss(MissReason::Expired)
        }
    }

    /// Counts a stale entry served (to a request while another refreshes it, or on timeout).
    pub fn count_stale_hit(&self) {
        self.counters.hits.fetch_add(1, Relaxed);
    }

    fn invalidated_after(&self, epoch: u64, entry_tables: &[Box<str>], on_write: bool) -> bool {
        if self.purged_all.load(SeqCst) > epoch
            || self.purged_tables.floor_after(epoch)
            || self.purged_fingerprints.floor_after(epoch)
            || on_write && self.written.floor_after(epoch)
        {
            return true;
        }
        entry_tables.iter().any(|t| {
            self.purged_tables.after(&**t, epoch) || on_write && self.written.after(&**t, epoch)
        })
    }

    fn still_valid(&self, entry: &Entry) -> bool {
        !self
            .purged_fingerprints
            .after(&entry.fingerprint, entry.epoch)
            && !self.invalidated_after(entry.epoch, &entry.tables, entry.invalidate_on_write)
    }

    /// Registers this request as the one filling `key`, unless another already is.
    pub fn begin_fill(self: &Arc<Self>, key: &[u8]) -> Flight {
        if let Some(flight) = self.flights.get(key) {
            return Flight::Follower(flight.1.clone());
        }
        match self.flights.entry(key.into()) {
            dashmap::Entry::Occupied(o) => Flight::Follower(o.get().1.clone()),
            dashmap::Entry::Vacant(v) => {
                let (done, waiting) = watch::channel(());
                // Read while the flight's shard is locked: pruning relies on a fill it cannot
                // see yet having started at an epoch no older than the marks it looked at.
                let epoch = self.epoch.load(SeqCst);
                v.insert((epoch, waiting));
                Flight::Leader(FillTicket {
                    cache: self.clone(),
                    key: key.into(),
                    epoch,
                    _done: done,
                })
            }
        }
    }

    /// True while another request fills `key`.
    pub fn in_flight(&self, key: &[u8]) -> bool {
        self.flights.contains_key(key)
    }

    /// Stores a completed fill, unless something it read was invalidated since its query
    /// started. Returns whether it was stored.
    pub fn store(&self, ticket: FillTicket, filled: Filled) -> bool {
        let Filled {
            fingerprint,
            bytes,
            row_description_len,
            rows,
            ttl,
            stale_for,
            tables,
            invalidate_on_write,
        } = filled;
        let epoch = ticket.epoch;
        let raced = self.purged_fingerprints.after(&fingerprint, epoch)
            || self.invalidated_after(epoch, &tables, invalidate_on_write);
        if raced {
            self.counters.discarded_fills.fetch_add(1, Relaxed);
            return false;
        }
        let entry = Arc::new(Entry {
            fingerprint,
            bytes,
            row_description_len,
            rows,
            created: Instant::now(),
            ttl,
            stale_for,
            tables,
            invalidate_on_write,
            epoch,
            hits: AtomicU64::new(0),
        });
        self.active.store(true, Relaxed);
        self.entries.insert(ticket.key.clone(), entry);
        self.counters.stores.fetch_add(1, Relaxed);
        true
    }

    fn next_epoch(&self) -> u64 {
        self.counters.invalidations.fetch_add(1, Relaxed);
        self.epoch.fetch_add(1, SeqCst).saturating_add(1)
    }

    /// A committed write seen by pgward: entries that read these tables (and invalidate on
    /// write) are dropped. `Writes::Unknown` drops every such entry.
    pub fn writes_committed(&self, tables: &[Box<str>], unknown: bool) {
        if tables.is_empty() && !unknown {
            return;
        }
        let epoch = self.next_epoch();
        // A name longer than any PostgreSQL table's is not kept: it counts as unknown, which
        // invalidates at least as much.
        if unknown || tables.iter().any(|t| t.len() > MAX_TABLE_NAME) {
            self.written.raise_floor(epoch);
            return;
        }
        let mut over = false;
        for table in tables {
            over |= self.written.mark(table.clone(), epoch);
        }
        if over {
            self.prune_marks();
        }
    }

    /// `POST /cache/invalidate?table=`: drops every entry that read the table.
    pub fn purge_table(&self, table: &str) -> Result<(), TableNameTooLong> {
        if table.len() > MAX_TABLE_NAME {
            return Err(TableNameTooLong(table.len()));
        }
        let epoch = self.next_epoch();
        if self.purged_tables.mark(plan::table_key(table), epoch) {
            self.prune_marks();
        }
        Ok(())
    }

    /// `POST /cache/invalidate?fingerprint=`.
    pub fn purge_fingerprint(&self, id: FingerprintId) {
        let epoch = self.next_epoch();
        if self.purged_fingerprints.mark(id, epoch) {
            self.prune_marks();
        }
    }

    /// `POST /cache/invalidate?all`.
    pub fn purge_all(&self) {
        let epoch = self.next_epoch();
        self.purged_all.fetch_max(epoch, SeqCst);
        self.entries.invalidate_all();
    }

    /// Invalidation marks held (tables written, tables and fingerprints purged): at most
    /// about `MAX_MARKS` of each kind.
    pub fn marks(&self) -> usize {
        self.written.len() + self.purged_tables.len() + self.purged_fingerprints.len()
    }

    /// Drops the marks no entry or fill can still need. A mark matters only to an entry or a
    /// fill older than it: entries it invalidates are dropped here, fills still running keep
    /// marks newer than the oldest of them. The order of the steps is what makes this safe
    /// against concurrent fills: marks are read first, then the fills (a fill not yet visible
    /// started after the marks were read), then the entries (a fill that finished stored its
    /// entry before it left the fills).
    fn prune_marks(&self) {
        if self.pruning.swap(true, SeqCst) {
            return;
        }
        let written = self.written.snapshot();
        let tables = self.purged_tables.snapshot();
        let fingerprints = self.purged_fingerprints.snapshot();
        let oldest_fill = self.flights.iter().map(|f| f.value().0).min();
        let horizon = oldest_fill.unwrap_or(u64::MAX);
        let invalid: Vec<Box<[u8]>> = self
            .entries
            .iter()
            .filter(|(_, e)| !self.still_valid(e))
            .map(|(key, _)| Box::<[u8]>::from(&key[..]))
            .collect();
        for key in &invalid {
            if self.entries.remove(key).is_some() {
                self.counters.invalidated_entries.fetch_add(1, Relaxed);
            }
        }
        self.written.forget(written, horizon);
        self.purged_tables.forget(tables, horizon);
        self.purged_fingerprints.forget(fingerprints, horizon);
        // Fills that run for long keep their marks: past the cap, the oldest are folded.
        let folded =
            self.written.shed() + self.purged_tables.shed() + self.purged_fingerprints.shed();
        if folded > 0 {
            tracing::debug!(folded, "cache invalidation marks folded into a floor epoch");
        }
        self.pruning.store(false, SeqCst);
    }

    /// Size, counters and the largest and hottest entries (fingerprints only, no values).
    pub fn snapshot(&self, top: usize) -> CacheSnapshot {
        self.entries.run_pending_tasks();
        let now = Instant::now();
        // Listing walks every entry: skipped when nothing is asked for (`/metrics`).
        let mut listed: Vec<EntrySummary> = self
            .entries
            .iter()
            .take_while(|_| top > 0)
            .filter(|(_, e)| self.still_valid(e))
            .map(|(key, e)| EntrySummary {
                fingerprint: e.fingerprint.to_string(),
                bytes: (key.len() + e.bytes.len()) as u64,
                rows: e.rows,
                hits: e.hits.load(Relaxed),
                age_seconds: e.age(now).as_secs_f64(),
                fresh: e.is_fresh(now),
                tables: e.tables.iter().map(|t| t.to_string()).collect(),
            })
            .collect();
        listed.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        let largest = listed.iter().take(top).cloned().collect();
        listed.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.fingerprint.cmp(&b.fingerprint)));
        listed.truncate(top);
        let c = &self.counters;
        CacheSnapshot {
            enabled: self.enabled,
            max_size_bytes: self.max_size,
            size_bytes: self.entries.weighted_size(),
            entries: self.entries.entry_count(),
            fills_in_flight: self.flights.len() as u64,
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            stores: c.stores.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            expirations: c.expirations.load(Relaxed),
            invalidations: c.invalidations.load(Relaxed),
            invalidated_entries: c.invalidated_entries.load(Relaxed),
            discarded_fills: c.discarded_fills.load(Relaxed),
            invalidation_marks: self.marks() as u64,
            largest,
            hottest: listed,
        }
    }
}

/// One entry in `GET /cache`.
#[derive(Clone, Debug, Serialize)]
pub struct EntrySummary {
    pub fingerprint: String,
    pub bytes: u64,
    pub rows: u64,
    pub hits: u64,
    pub age_seconds: f64,
    pub fresh: bool,
    pub tables: Vec<String>,
}

/// `GET /cache`.
#[derive(Clone, Debug, Serialize)]
pub struct CacheSnapshot {
    pub enabled: bool,
    pub max_size_bytes: u64,
    pub size_bytes: u64,
    pub entries: u64,
    pub fills_in_flight: u64,
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub evictions: u64,
    pub expirations: u64,
    /// Invalidation events (committed writes seen, admin requests).
    pub invalidations: u64,
    /// Entries found invalid and dropped.
    pub invalidated_entries: u64,
    /// Fills not stored because a table they read was written while they ran.
    pub discarded_fills: u64,
    /// Invalidation marks held (bounded; see `MAX_MARKS`).
    pub invalidation_marks: u64,
    pub largest: Vec<EntrySummary>,
    pub hottest: Vec<EntrySummary>,
}

#[cfg(test)]
mod tests;
