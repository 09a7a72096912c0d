//! Protected traffic and the limits that give way to it. A `[[protect]]` names what must stay
//! fast (a rule's statements, or an `application_name`'s) and its p99 objective; each protected
//! statement's latency lands in its [`Objective`]'s sliding window. Once per step (one second,
//! `app.rs`) the [`Protection`] controller compares each window's p99 with its objective and
//! moves one factor for all the other limits, AIMD-style: halved while any objective is broken
//! (below 5 % it is zero: no database admissions, only cached or stale answers, the rest shed),
//! raised by a tenth of full while every objective holds. The factor scales the other limits'
//! concurrency (the controller holds back slots) and their database-time refill rate; a
//! protected rule's own limit never gives way.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use crate::limits::{FULL, Limit};
use crate::rules::{ProtectSpec, Protected, RuleSet};
use crate::stats::LogScale;

/// Protected statements a window needs before its p99 counts (fewer say too little).
pub const MIN_SAMPLES: u64 = 20;
/// Below this factor (per mille) the other traffic gets no database admissions at all.
const ZERO_BELOW: u32 = 50;
/// What the factor regains per step while every objective holds (per mille).
const INCREASE: u32 = 100;
/// Histogram buckets: 10 per natural-log unit of microseconds (about 10 % wide), up to
/// e^18.5 µs, about 100 s.
const BUCKETS: usize = 185;
const SCALE: LogScale = LogScale::new(10.0, BUCKETS);

/// One protected traffic's objective and its latencies over the last `window`.
pub struct Objective {
    pub name: Arc<str>,
    pub p99: Duration,
    pub window: Duration,
    /// The windows' clock starts here (the controller's epoch).
    epoch: Instant,
    seconds: Mutex<Ring>,
}

/// Per-second histograms of the last `window`, as a ring.
struct Ring {
    slots: Vec<Slot>,
}

struct Slot {
    /// The second (since `Ring`'s epoch) the slot holds; a slot from an older lap is stale.
    second: u64,
    counts: Box<[u32; BUCKETS]>,
}

/// The p99 of an objective's window as it stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub p99: Option<Duration>,
    pub samples: u64,
}

impl Objective {
    pub fn new(spec: &ProtectSpec, epoch: Instant) -> Objective {
        let seconds = usize::try_from(spec.window.as_secs().max(1)).unwrap_or(1);
        Objective {
            name: spec.name.clone(),
            p99: spec.p99,
            window: spec.window,
            epoch,
            seconds: Mutex::new(Ring {
                slots: (0..seconds)
                    .map(|_| Slot {
                        second: u64::MAX,
                        counts: Box::new([0; BUCKETS]),
                    })
                    .collect(),
            }),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.seconds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// A protected statement took `latency`, ending at `now`.
    pub fn record(&self, latency: Duration, now: Instant) {
        let second = self.second(now);
        let bucket = SCALE.bucket(latency);
        let mut ring = self.ring();
        let len = ring.slots.len() as u64;
        let Some(slot) = ring.slots.get_mut((second % len.max(1)) as usize) else {
            return;
        };
        if slot.second != second {
            slot.second = second;
            slot.counts.fill(0);
        }
        if let Some(count) = slot.counts.get_mut(bucket) {
            *count = count.saturating_add(1);
        }
    }

    /// The p99 over the window that ends at `now`.
    pub fn observe(&self, now: Instant) -> Observed {
        let second = self.second(now);
        let ring = self.ring();
        let len = ring.slots.len() as u64;
        let mut merged = [0u64; BUCKETS];
        for slot in &ring.slots {
            if slot.second <= second && second - slot.second < len {
                for (m, c) in merged.iter_mut().zip(slot.counts.iter()) {
                    *m += u64::from(*c);
                }
            }
        }
        Observed {
            p99: SCALE.quantile(&merged, 0.99),
            samples: merged.iter().sum(),
        }
    }
}

/// A change of the factor, for the one log line per change and for `/rules`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    /// Per mille of their configured limits the other traffic gets, before and after.
    pub from: u32,
    pub to: u32,
    /// Why: the objective that broke (with its p99), or that all hold again.
    pub reason: String,
}

/// The controller of one rules snapshot.
pub struct Protection {
    pub objectives: Vec<Arc<Objective>>,
    /// The objective of each rule's statements, by rule index.
    by_rule: Vec<Option<Arc<Objective>>>,
    by_application: Vec<(String, Arc<Objective>)>,
    /// The limits that give way: all limits no protected rule is under.
    yielding: Vec<Arc<Limit>>,
    factor: AtomicU32,
    state: Mutex<Controller>,
}

#[derive(Default)]
struct Controller {
    /// Slots held back from each yielding limit (same order as `yielding`).
    held: Vec<Vec<OwnedSemaphorePermit>>,
    last: Option<Change>,
}

impl Protection {
    /// `limits`: each rule's limit, by rule index (as `ActiveRules::limits`).
    pub fn new(set: &RuleSet, limits: &[Option<Arc<Limit>>], epoch: Instant) -> Protection {
        let mut by_rule = vec![None; set.rules.len()];
        let mut by_application = Vec::new();
        let mut objectives = Vec::new();
        for spec in &set.protect {
            let objective = Arc::new(Objective::new(spec, epoch));
            match &spec.traffic {
                Protected::Rule(i) => {
                    if let Some(slot) = by_rule.get_mut(*i) {
                        *slot = Some(objective.clone());
                    }
                }
                Protected::ApplicationName(app) => {
                    by_application.push((app.clone(), objective.clone()));
                }
            }
            objectives.push(objective);
        }
        let mut yielding: Vec<Arc<Limit>> = Vec::new();
        let protected: Vec<&Arc<Limit>> = limits
            .iter()
            .zip(&by_rule)
            .filter_map(|(l, o)| o.as_ref().and(l.as_ref()))
            .collect();
        for limit in limits.iter().flatten() {
            let guarded = protected.iter().any(|p| Arc::ptr_eq(p, limit));
            if !guarded && !yielding.iter().any(|y| Arc::ptr_eq(y, limit)) {
                yielding.push(limit.clone());
            }
        }
        let held = yielding.iter().map(|_| Vec::new()).collect();
        Protection {
            objectives,
            by_rule,
            by_application,
            yielding,
            factor: AtomicU32::new(FULL),
            state: Mutex::new(Controller { held, last: None }),
        }
    }

    /// Whether anything is protected (the controller has nothing to do otherwise).
    pub fn active(&self) -> bool {
        !self.objectives.is_empty()
    }

    /// The objective a statement of rule `rule` (index) in a session of `application_name`
    /// counts toward.
    pub fn objective(
        &self,
        rule: Option<usize>,
        application_name: &str,
    ) -> Option<&Arc<Objective>> {
        if let Some(o) = rule
            .and_then(|i| self.by_rule.get(i))
            .and_then(Option::as_ref)
        {
            return Some(o);
        }
        self.by_application
            .iter()
            .find(|(app, _)| app == application_name)
            .map(|(_, o)| o)
    }

    /// Per mille of their limits the other traffic gets now.
    pub fn factor(&self) -> u32 {
        self.factor.load(Relaxed)
    }

    /// The last change, if any.
    pub fn last_change(&self) -> Option<Change> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .clone()
    }

    /// Starts from the factor of the rules a reload replaced (their limits were held back
    /// too); applied to these limits at the next step.
    pub fn inherit(&self, previous: &Protection) {
        self.factor.store(previous.factor(), Relaxed);
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last = previous.last_change();
    }

    /// One control step at `now`: the new factor, applied to the yielding limits; the change
    /// when there was one.
    pub fn step(&self, now: Instant) -> Option<Change> {
        let seen: Vec<Observed> = self.objectives.iter().map(|o| o.observe(now)).collect();
        let broken = self.objectives.iter().zip(&seen).find_map(|(o, seen)| {
            let p99 = seen
                .p99
                .filter(|p| seen.samples >= MIN_SAMPLES && *p > o.p99)?;
            Some(format!(
                "{} p99 {:.1}ms over its objective of {:.1}ms ({} statements in {}s)",
                o.name,
                p99.as_secs_f64() * 1000.0,
                o.p99.as_secs_f64() * 1000.0,
                seen.samples,
                o.window.as_secs()
            ))
        });
        // Too few statements to tell: the share stays where it is (an idle protected traffic,
        // with none at all, lets it grow back).
        let unsure = seen
            .iter()
            .any(|s| s.samples > 0 && s.samples < MIN_SAMPLES);
        let from = self.factor();
        let (to, reason) = match broken {
            Some(reason) => {
                let half = from / 2;
                (if half < ZERO_BELOW { 0 } else { half }, reason)
            }
            None if unsure => (from, String::new()),
            None => (
                (from + INCREASE).min(FULL),
                "every protected objective holds".to_owned(),
            ),
        };
        self.factor.store(to, Relaxed);
        self.apply(to);
        if to == from {
            return None;
        }
        let change = Change { from, to, reason };
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last = Some(change.clone());
        Some(change)
    }

    /// Holds back slots of each yielding limit down to `factor` of its max (taking only free
    /// ones: statements running are never disturbed), and scales its database-time refill.
    fn apply(&self, factor: u32) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (limit, held) in self.yielding.iter().zip(state.held.iter_mut()) {
            limit.set_factor(factor);
            let Some((max, slots)) = &limit.slots else {
                continue;
            };
            let keep_back = max.saturating_sub(crate::limits::scaled_slots(*max, factor));
            held.truncate(keep_back);
            while held.len() < keep_back {
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => held.push(permit),
                    // The rest is taken at a later step, as statements finish.
                    Err(_) => break,
                }
            }
        }
    }

    /// The limits that give way (for `/rules`).
    pub fn yielding(&self) -> impl Iterator<Item = &Arc<Limit>> {
        self.yielding.iter()
    }
}

#[cfg(test)]
mod tests;
