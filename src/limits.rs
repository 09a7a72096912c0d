//! The runtime side of the limits a statement is admitted under: a rule's own
//! `max_concurrency`, or a shared `[limits.<name>]` (one bulkhead for every rule that names
//! it). A [`Limit`] holds the concurrency slots (a FIFO semaphore) and the database-time budget
//! ([`DbTime`]: a token bucket of upstream execution time, debited with each statement's
//! measured time, refilled at the configured rate). The pipeline's admit phase asks it; the
//! statement's completion pays for what it used.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::rules::{DbTimeSpec, LimitSpec, Rule, RuleSet};

/// A factor of 1 in per mille: the limit as configured.
pub const FULL: u32 = 1000;

/// One bulkhead: slots and/or a database-time budget.
pub struct Limit {
    /// The shared limit's name, or the rule's for its own `max_concurrency`.
    pub name: Arc<str>,
    /// Whether it is a `[limits.<name>]` table (messages name it so).
    pub shared: bool,
    /// `max_concurrency` and its slots.
    pub slots: Option<(usize, Arc<Semaphore>)>,
    /// How long a statement waits for a slot or for database time.
    pub queue_timeout: Duration,
    pub db_time: Option<DbTime>,
    /// Per mille of the configured limit in force: lowered while protected traffic misses
    /// its objective (`protect`); 0 admits nothing.
    factor: AtomicU32,
}

impl Limit {
    pub fn shared(spec: &LimitSpec, now: Instant) -> Limit {
        Limit {
            name: spec.name.clone(),
            shared: true,
            slots: spec
                .max_concurrency
                .map(|n| (n, Arc::new(Semaphore::new(n)))),
            queue_timeout: spec.queue_timeout,
            db_time: spec.db_time.map(|spec| DbTime::new(spec, now)),
            factor: AtomicU32::new(FULL),
        }
    }

    /// Per mille of the configured limit in force now.
    pub fn factor(&self) -> u32 {
        self.factor.load(Relaxed)
    }

    /// The protection controller lowers or restores the limit (the slots it holds back are
    /// its own business; this scales the database-time refill and says when nothing is
    /// admitted).
    pub fn set_factor(&self, factor: u32) {
        let factor = factor.min(FULL);
        self.factor.store(factor, Relaxed);
        if let Some(db) = &self.db_time {
            db.factor.store(factor, Relaxed);
        }
    }

    /// A rule's own `max_concurrency`, if it has one.
    pub fn of_rule(rule: &Rule) -> Option<Limit> {
        let n = rule.max_concurrency?;
        Some(Limit {
            name: rule.name.clone(),
            shared: false,
            slots: Some((n, Arc::new(Semaphore::new(n)))),
            queue_timeout: rule.queue_timeout,
            db_time: None,
            factor: AtomicU32::new(FULL),
        })
    }

    /// Carries the database time spent under the limit of the same name in the rules a reload
    /// replaces, so that a reload does not hand out a fresh budget.
    pub fn inherit(&self, previous: &Limit, now: Instant) {
        if let (Some(db), Some(old)) = (&self.db_time, &previous.db_time) {
            db.inherit(old, now);
        }
    }

    /// Slots in use now (0 without a cap).
    pub fn in_use(&self) -> usize {
        self.slots
            .as_ref()
            .map_or(0, |(n, s)| n.saturating_sub(s.available_permits()))
    }
}

/// The limit each rule of `set` is admitted under, by rule index: the shared one it names
/// (from `shared`, as `RuleSet::limits`), or its own `max_concurrency`.
pub fn by_rule(set: &RuleSet, shared: &[Arc<Limit>]) -> Vec<Option<Arc<Limit>>> {
    set.rules
        .iter()
        .map(|rule| match rule.limit {
            Some(index) => shared.get(index).cloned(),
            None => Limit::of_rule(rule).map(Arc::new),
        })
        .collect()
}

/// A limit as ops see it now (`GET /rules`, metrics): its settings and its state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LimitState {
    pub name: String,
    pub max_concurrency: Option<usize>,
    pub in_use: usize,
    pub queue_timeout_ms: f64,
    /// Database time per second of wall time, in milliseconds.
    pub max_db_time_ms_per_s: Option<f64>,
    pub db_time_burst_ms: Option<f64>,
    /// Database time available now (negative: owed), in milliseconds.
    pub db_time_available_ms: Option<f64>,
    /// Database time its statements used since the limit exists, in milliseconds.
    pub db_time_spent_ms: Option<f64>,
    /// Per mille of its configured limit in force (below 1000 while protected traffic is
    /// over its objective).
    pub factor: u32,
    /// `max_concurrency` scaled by `factor`: the slots protection leaves it (`in_use` also
    /// counts the free slots protection holds back).
    pub effective_max_concurrency: Option<usize>,
    /// `max_db_time` scaled by `factor`: the refill rate in force, ms per second.
    pub effective_db_time_ms_per_s: Option<f64>,
}

/// The slots of `max` a limit at `factor` per mille admits: rounded up, so a lowered limit
/// keeps one slot until its factor reaches 0.
pub fn scaled_slots(max: usize, factor: u32) -> usize {
    let factor = u64::from(factor.min(FULL));
    let allowed = (max as u64)
        .saturating_mul(factor)
        .div_ceil(u64::from(FULL));
    usize::try_from(allowed).unwrap_or(max)
}

/// The shared limits as they stand at `now`: the one snapshot `GET /rules`, `/metrics` and the
/// console's `SHOW LIMITS` read.
pub fn states(limits: &[Arc<Limit>], now: Instant) -> Vec<LimitState> {
    limits.iter().map(|l| l.state(now)).collect()
}

impl Limit {
    pub fn state(&self, now: Instant) -> LimitState {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let db = self.db_time.as_ref();
        let factor = self.factor();
        let max_concurrency = self.slots.as_ref().map(|(n, _)| *n);
        LimitState {
            name: self.name.to_string(),
            max_concurrency,
            in_use: self.in_use(),
            queue_timeout_ms: ms(self.queue_timeout),
            max_db_time_ms_per_s: db.map(|d| ms(d.spec.per_second)),
            db_time_burst_ms: db.map(|d| ms(d.spec.burst)),
            db_time_available_ms: db.map(|d| d.available(now) * 1000.0),
            db_time_spent_ms: db.map(|d| d.spent() * 1000.0),
            factor,
            effective_max_concurrency: max_concurrency.map(|n| scaled_slots(n, factor)),
            effective_db_time_ms_per_s: db
                .map(|d| ms(d.spec.per_second) * f64::from(factor) / f64::from(FULL)),
        }
    }
}

/// A database-time budget: a bucket of microseconds of upstream execution time.
pub struct DbTime {
    pub spec: DbTimeSpec,
    bucket: Mutex<Bucket>,
    /// What a statement under this limit takes, smoothed (µs): reserved at admission, so a
    /// burst of admissions before any completes cannot overspend the bucket.
    estimate_us: AtomicU64,
    /// Database time debited, in all (µs).
    spent_us: AtomicU64,
    /// Per mille of `per_second` it refills at (the limit's factor).
    factor: AtomicU32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Microseconds of database time available; negative: owed (at most one burst).
    tokens: f64,
    at: Instant,
}

/// Database time reserved for one admitted statement, paid for at its completion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reserved {
    us: f64,
}

impl DbTime {
    pub fn new(spec: DbTimeSpec, now: Instant) -> DbTime {
        DbTime {
            spec,
            bucket: Mutex::new(Bucket {
                tokens: micros(spec.burst),
                at: now,
            }),
            estimate_us: AtomicU64::new(0),
            spent_us: AtomicU64::new(0),
            factor: AtomicU32::new(FULL),
        }
    }

    /// Database time per microsecond of wall time, as the limit's factor scales it.
    fn rate(&self) -> f64 {
        let factor = f64::from(self.factor.load(Relaxed)) / f64::from(FULL);
        micros(self.spec.per_second) / 1_000_000.0 * factor
    }

    fn refilled(&self, now: Instant) -> std::sync::MutexGuard<'_, Bucket> {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = micros(now.saturating_duration_since(bucket.at));
        bucket.tokens = (bucket.tokens + elapsed * self.rate()).min(micros(self.spec.burst));
        bucket.at = bucket.at.max(now);
        bucket
    }

    /// Admits a statement when database time is left, reserving its expected share; otherwise
    /// how long until some is.
    pub fn reserve(&self, now: Instant) -> Result<Reserved, Duration> {
        let mut bucket = self.refilled(now);
        if bucket.tokens > 0.0 {
            let us = self.estimate_us.load(Relaxed) as f64;
            bucket.tokens -= us;
            return Ok(Reserved { us });
        }
        // Until the bucket is positive again (at least a millisecond, so a waiter does not
        // spin on a bucket that refills by microseconds).
        // With no refill at all (factor 0) the wait is the caller's bound.
        let rate = self.rate();
        if rate <= 0.0 {
            return Err(Duration::MAX);
        }
        let wait_us = (-bucket.tokens / rate).max(1_000.0);
        Err(Duration::from_secs_f64(wait_us / 1_000_000.0))
    }

    /// A statement admitted with `reserved` ran `used` upstream: the bucket pays the
    /// difference (debt is bounded by one burst, so one runaway statement blocks the limit
    /// for at most two bursts' refill), and the estimate follows.
    pub fn settle(&self, reserved: Reserved, used: Duration, now: Instant) {
        let used_us = micros(used);
        {
            let mut bucket = self.refilled(now);
            let burst = micros(self.spec.burst);
            bucket.tokens = (bucket.tokens - (used_us - reserved.us)).max(-burst);
        }
        self.spent_us.fetch_add(used_us as u64, Relaxed);
        // An exponential average with weight 1/8: follows a family getting slower within
        // a few statements, without one outlier doubling every reservation.
        let old = self.estimate_us.load(Relaxed);
        let new = if old == 0 {
            used_us as u64
        } else {
            (old.saturating_mul(7).saturating_add(used_us as u64)) / 8
        };
        self.estimate_us.store(new, Relaxed);
    }

    /// Database time available now (negative: owed).
    pub fn available(&self, now: Instant) -> f64 {
        self.refilled(now).tokens / 1_000_000.0
    }

    /// Database time debited since the limit was created, in seconds.
    pub fn spent(&self) -> f64 {
        self.spent_us.load(Relaxed) as f64 / 1_000_000.0
    }

    fn inherit(&self, previous: &DbTime, now: Instant) {
        let old = *previous.refilled(now);
        let mut bucket = self.refilled(now);
        bucket.tokens = old.tokens.min(micros(self.spec.burst));
        self.estimate_us
            .store(previous.estimate_us.load(Relaxed), Relaxed);
        self.spent_us
            .store(previous.spent_us.load(Relaxed), Relaxed);
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(per_second_ms: u64, burst_ms: u64, now: Instant) -> DbTime {
        DbTime::new(
            DbTimeSpec {
                per_second: Duration::from_millis(per_second_ms),
                burst: Duration::from_millis(burst_ms),
            },
            now,
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_bucket_admits_while_time_is_left_and_says_how_long_until_more() {
        let t0 = Instant::now();
        let db = bucket(250, 250, t0);
        // A statement that ran 300 ms spends the whole burst and owes 50 ms.
        let r = db.reserve(t0).unwrap();
        db.settle(r, ms(300), t0);
        assert!(
            (db.available(t0) + 0.050).abs() < 1e-9,
            "{}",
            db.available(t0)
        );
        // Owed 50 ms at 250 ms/s: 200 ms until it is positive again.
        let wait = db.reserve(t0).unwrap_err();
        assert_eq!(wait.as_millis(), 200);
        assert!(db.reserve(t0 + ms(199)).is_err());
        assert!(db.reserve(t0 + ms(201)).is_ok());
        assert!((db.spent() - 0.3).abs() < 1e-9);
    }

    #[test]
    fn reservations_follow_the_estimate_so_a_burst_cannot_overspend() {
        let t0 = Instant::now();
        let db = bucket(100, 100, t0);
        let first = db.reserve(t0).unwrap();
        db.settle(first, ms(40), t0);
        // 60 ms left; each admission now reserves the 40 ms estimate.
        assert!(db.reserve(t0).is_ok(), "60 ms were left");
        assert!(db.reserve(t0).is_ok(), "20 ms were left");
        assert!(db.reserve(t0).is_err(), "-20 ms: the next waits");
    }

    #[test]
    fn debt_is_bounded_by_one_burst_and_refills_cap_at_the_burst() {
        let t0 = Instant::now();
        let db = bucket(100, 200, t0);
        let r = db.reserve(t0).unwrap();
        db.settle(r, Duration::from_secs(60), t0);
        assert!(
            (db.available(t0) + 0.2).abs() < 1e-9,
            "owes at most one burst"
        );
        // A long idle time refills only up to the burst.
        assert!((db.available(t0 + Duration::from_secs(3600)) - 0.2).abs() < 1e-9);
        // A statement cheaper than its reservation gives the rest back.
        let db = bucket(100, 100, t0);
        let r = db.reserve(t0).unwrap();
        db.settle(r, ms(80), t0);
        let r = db.reserve(t0).unwrap();
        db.settle(r, ms(10), t0);
        assert!(
            (db.available(t0) - 0.010).abs() < 1e-9,
            "{}",
            db.available(t0)
        );
    }

    #[test]
    fn a_reload_keeps_the_spent_budget() {
        let t0 = Instant::now();
        let spec = LimitSpec {
            name: Arc::from("reco"),
            max_concurrency: Some(2),
            queue_timeout: ms(100),
            db_time: Some(DbTimeSpec {
                per_second: ms(100),
                burst: ms(100),
            }),
        };
        let old = Limit::shared(&spec, t0);
        let db = old.db_time.as_ref().unwrap();
        let r = db.reserve(t0).unwrap();
        db.settle(r, ms(150), t0);
        let new = Limit::shared(&spec, t0);
        new.inherit(&old, t0);
        assert!(new.db_time.as_ref().unwrap().reserve(t0).is_err());
        assert_eq!(new.in_use(), 0);
    }
}
