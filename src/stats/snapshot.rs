//! Point-in-time, serializable views of the statistics: [`Snapshot`] (the
//! whole table plus proxy counters and all-fingerprint [`Totals`]),
//! [`FingerprintSnapshot`] (one row, named like `pg_stat_statements`, times in
//! milliseconds), [`Outcomes`] and the [`SortKey`] used to rank rows.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::proxy::ProxySnapshot;
use super::record::{Counter, LatencyBuckets};
use crate::fingerprint::FingerprintId;

/// Values of every [`Counter`]; serializes as `{"budget_exceeded": n, ...}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes([u64; Counter::COUNT]);

impl Outcomes {
    pub fn from_fn(mut f: impl FnMut(Counter) -> u64) -> Outcomes {
        Outcomes(Counter::ALL.map(&mut f))
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter.index()]
    }

    fn add(&mut self, other: &Outcomes) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.saturating_add(b);
        }
    }
}

impl Serialize for Outcomes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Counter::COUNT))?;
        for counter in Counter::ALL {
            map.serialize_entry(counter.name(), &self.get(counter))?;
        }
        map.end()
    }
}

/// One fingerprint's statistics. Times are milliseconds; percentiles come
/// from a 2-significant-digit histogram (within 1%), the rest are exact.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FingerprintSnapshot {
    #[serde(skip)]
    pub id: FingerprintId,
    /// The fingerprint as 16 lowercase hex digits.
    pub queryid: String,
    /// Normalized query text.
    pub query: String,
    pub calls: u64,
    pub rows: u64,
    pub total_exec_time: f64,
    pub min_exec_time: f64,
    pub max_exec_time: f64,
    pub mean_exec_time: f64,
    /// Population standard deviation.
    pub stddev_exec_time: f64,
    pub p50_exec_time: f64,
    pub p95_exec_time: f64,
    pub p99_exec_time: f64,
    /// Executions that ended in an error.
    pub errors: u64,
    /// SQLSTATE class (2 characters) -> errors.
    pub errors_by_class: BTreeMap<String, u64>,
    pub bytes_sent: u64,
    /// Total time spent waiting in concurrency queues.
    pub queue_time: f64,
    /// Executions per `/metrics` latency bucket (not cumulative), taken with the percentiles.
    #[serde(skip)]
    pub latency_buckets: LatencyBuckets,
    /// RFC 3339 UTC.
    pub first_seen: String,
    /// RFC 3339 UTC.
    pub last_seen: String,
    /// Last rule that matched this fingerprint.
    pub rule: Option<String>,
    /// Fingerprint of the statement the rule last rewrote this one into (16 hex digits).
    pub rewritten_to: Option<String>,
    #[serde(flatten)]
    pub outcomes: Outcomes,
    /// Why cacheable-by-rule executions missed the result cache (non-zero reasons only).
    pub cache_miss_reasons: BTreeMap<&'static str, u64>,
}

/// Sums over every fingerprint since the last reset, including those since
/// evicted, so these only grow until a reset.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Totals {
    pub calls: u64,
    pub rows: u64,
    pub total_exec_time: f64,
    pub errors: u64,
    pub errors_by_class: BTreeMap<String, u64>,
    pub bytes_sent: u64,
    pub queue_time: f64,
    /// Executions per `/metrics` latency bucket (not cumulative).
    #[serde(skip)]
    pub latency_buckets: LatencyBuckets,
    #[serde(flatten)]
    pub outcomes: Outcomes,
}

impl Totals {
    pub(crate) fn add(&mut self, fp: &FingerprintSnapshot) {
        self.calls = self.calls.saturating_add(fp.calls);
        self.rows = self.rows.saturating_add(fp.rows);
        self.total_exec_time += fp.total_exec_time;
        self.errors = self.errors.saturating_add(fp.errors);
        for (class, n) in &fp.errors_by_class {
            let slot = self.errors_by_class.entry(class.clone()).or_insert(0);
            *slot = slot.saturating_add(*n);
        }
        self.bytes_sent = self.bytes_sent.saturating_add(fp.bytes_sent);
        self.queue_time += fp.queue_time;
        for (a, b) in self.latency_buckets.iter_mut().zip(fp.latency_buckets) {
            *a = a.saturating_add(b);
        }
        self.outcomes.add(&fp.outcomes);
    }
}

/// Everything the stats module knows, copied at one moment.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Snapshot {
    /// RFC 3339 UTC time the snapshot was taken.
    pub taken_at: String,
    /// RFC 3339 UTC time of the last reset (or of startup).
    pub stats_reset: String,
    pub proxy: ProxySnapshot,
    pub totals: Totals,
    /// Tracked fingerprints, in no particular order (see [`Snapshot::sorted`]).
    pub fingerprints: Vec<FingerprintSnapshot>,
}

impl Snapshot {
    /// The `limit` largest rows by `sort`, descending; ties are broken by
    /// queryid so the order is stable.
    pub fn sorted(&self, sort: SortKey, limit: usize) -> Vec<&FingerprintSnapshot> {
        let mut rows: Vec<&FingerprintSnapshot> = self.fingerprints.iter().collect();
        rows.sort_by(|a, b| {
            sort.value(b)
                .total_cmp(&sort.value(a))
                .then_with(|| a.id.cmp(&b.id))
        });
        rows.truncate(limit);
        rows
    }

    /// Sums per rule name over the tracked fingerprints that a rule last matched.
    pub fn by_rule(&self) -> BTreeMap<String, Totals> {
        let mut out: BTreeMap<String, Totals> = BTreeMap::new();
        for fp in &self.fingerprints {
            if let Some(rule) = &fp.rule {
                out.entry(rule.clone()).or_default().add(fp);
            }
        }
        out
    }

    /// The row of one fingerprint, if tracked.
    pub fn get(&self, id: FingerprintId) -> Option<&FingerprintSnapshot> {
        self.fingerprints.iter().find(|fp| fp.id == id)
    }
}

/// Orders for [`Snapshot::sorted`]; parses from the snapshot field names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortKey {
    #[default]
    TotalExecTime,
    Calls,
    MeanExecTime,
    P99ExecTime,
    Errors,
}

impl SortKey {
    pub const ALL: [SortKey; 5] = [
        SortKey::TotalExecTime,
        SortKey::Calls,
        SortKey::MeanExecTime,
        SortKey::P99ExecTime,
        SortKey::Errors,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::TotalExecTime => "total_exec_time",
            SortKey::Calls => "calls",
            SortKey::MeanExecTime => "mean_exec_time",
            SortKey::P99ExecTime => "p99_exec_time",
            SortKey::Errors => "errors",
        }
    }

    fn value(self, fp: &FingerprintSnapshot) -> f64 {
        match self {
            SortKey::TotalExecTime => fp.total_exec_time,
            SortKey::Calls => fp.calls as f64,
            SortKey::MeanExecTime => fp.mean_exec_time,
            SortKey::P99ExecTime => fp.p99_exec_time,
            SortKey::Errors => fp.errors as f64,
        }
    }
}

impl fmt::Display for SortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sort key that is not one of [`SortKey::ALL`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownSortKey(pub String);

impl fmt::Display for UnknownSortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown sort key {:?}; valid keys are: ", self.0)?;
        for (i, key) in SortKey::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(key.as_str())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownSortKey {}

impl FromStr for SortKey {
    type Err = UnknownSortKey;

    fn from_str(s: &str) -> Result<SortKey, UnknownSortKey> {
        SortKey::ALL
            .into_iter()
            .find(|key| key.as_str() == s)
            .ok_or_else(|| UnknownSortKey(s.to_owned()))
    }
}
