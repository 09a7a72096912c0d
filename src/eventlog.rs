//! Log lines that survive an incident. A flood of sheds or exceeded budgets is thousands of
//! identical events a second; one INFO line each would bury everything else in the log and cost
//! the proxy its CPU. [`EventLog`] keeps the first occurrence of each (rule, outcome) verbatim —
//! the caller logs it — and counts the rest; every interval [`EventLog::flush`] turns the counts
//! into one summary line per (rule, outcome). A key quiet for a whole interval is forgotten, so
//! its next occurrence is logged verbatim again. The number of keys is capped: events of keys
//! beyond the cap are counted together. Time is passed in, so tests need no clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How often the counts become summary lines.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// (rule, outcome) pairs tracked at once; rules are few, so this bounds memory, not function.
pub const MAX_KEYS: usize = 1024;

/// Repeated events, counted between summaries.
pub struct EventLog {
    inner: Mutex<Inner>,
    max_keys: usize,
}

struct Inner {
    /// Events counted (not logged) since the last summary, per outcome (`"shed"`, ...) and
    /// rule, for the keys seen in this interval. Nested so a repeat is found without
    /// allocating a key.
    repeats: HashMap<&'static str, HashMap<Arc<str>, u64>>,
    /// Keys in `repeats`.
    keys: usize,
    /// Events of keys that found the map full.
    overflow: u64,
    last_flush: Instant,
}

/// One summary line: `count` more events of `rule`/`outcome` over `over`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `None` for the events of keys beyond [`MAX_KEYS`].
    pub rule: Option<Arc<str>>,
    pub outcome: &'static str,
    pub count: u64,
    pub over: Duration,
}

impl EventLog {
    pub fn new(now: Instant) -> EventLog {
        EventLog::with_max_keys(now, MAX_KEYS)
    }

    pub fn with_max_keys(now: Instant, max_keys: usize) -> EventLog {
        EventLog {
            inner: Mutex::new(Inner {
                repeats: HashMap::new(),
                keys: 0,
                overflow: 0,
                last_flush: now,
            }),
            max_keys,
        }
    }

    /// Notes one event; `true` when the caller should log it verbatim (the first of its key
    /// since the key was last quiet).
    pub fn first(&self, rule: &str, outcome: &'static str) -> bool {
        // A panic elsewhere while holding the lock leaves counts, never broken invariants.
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        if let Some(count) = inner.repeats.get_mut(outcome).and_then(|r| r.get_mut(rule)) {
            *count = count.saturating_add(1);
            return false;
        }
        if inner.keys >= self.max_keys {
            inner.overflow = inner.overflow.saturating_add(1);
            return false;
        }
        inner.keys = inner.keys.saturating_add(1);
        inner
            .repeats
            .entry(outcome)
            .or_default()
            .insert(Arc::from(rule), 0);
        true
    }

    /// The summary lines for the interval ending `now`, in a stable order; keys with no repeat
    /// in it are forgotten.
    pub fn flush(&self, now: Instant) -> Vec<Summary> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let over = now.saturating_duration_since(inner.last_flush);
        inner.last_flush = now;
        let mut lines = Vec::new();
        for (outcome, rules) in &mut inner.repeats {
            rules.retain(|_, count| *count > 0);
            lines.extend(rules.iter_mut().map(|(rule, count)| Summary {
                rule: Some(rule.clone()),
                outcome,
                count: std::mem::take(count),
                over,
            }));
        }
        inner.repeats.retain(|_, rules| !rules.is_empty());
        inner.keys = lines.len();
        lines.sort_by(|a, b| (&a.rule, a.outcome).cmp(&(&b.rule, b.outcome)));
        if inner.overflow > 0 {
            lines.push(Summary {
                rule: None,
                outcome: "any",
                count: std::mem::take(&mut inner.overflow),
                over,
            });
        }
        lines
    }
}

/// Logs the summaries every [`SUMMARY_INTERVAL`] until shutdown, then once more.
pub async fn summarize(log: Arc<EventLog>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SUMMARY_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        emit(&log.flush(Instant::now()));
    }
    emit(&log.flush(Instant::now()));
}

fn emit(lines: &[Summary]) {
    for line in lines {
        let over_s = line.over.as_secs();
        match &line.rule {
            Some(rule) => tracing::info!(
                rule = &**rule,
                outcome = line.outcome,
                count = line.count,
                over_s,
                "repeated events (the first was logged above)"
            ),
            None => tracing::info!(
                count = line.count,
                over_s,
                "events of further rules/outcomes, not itemized (key cap reached)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_becomes_one_verbatim_line_and_one_summary_per_interval() {
        let start = Instant::now();
        let log = EventLog::new(start);
        let verbatim = (0..10_000).filter(|_| log.first("reco", "shed")).count();
        let also = (0..500)
            .filter(|_| log.first("reco", "budget_exceeded"))
            .count();
        assert_eq!((verbatim, also), (1, 1));
        let second = start + SUMMARY_INTERVAL;
        let lines = log.flush(second);
        let counts: Vec<_> = lines.iter().map(|l| (l.outcome, l.count, l.over)).collect();
        assert_eq!(
            counts,
            [
                ("budget_exceeded", 499, SUMMARY_INTERVAL),
                ("shed", 9_999, SUMMARY_INTERVAL)
            ]
        );
        // The flood goes on: no verbatim line, the next summary counts only the new events.
        assert_eq!((0..3).filter(|_| log.first("reco", "shed")).count(), 0);
        let lines = log.flush(second + SUMMARY_INTERVAL);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0].outcome, lines[0].count), ("shed", 3));
        // Quiet for an interval: forgotten, so the next event is logged verbatim again.
        assert!(log.flush(second + 2 * SUMMARY_INTERVAL).is_empty());
        assert!(log.first("reco", "shed"));
    }

    #[test]
    fn keys_beyond_the_cap_are_counted_together() {
        let start = Instant::now();
        let log = EventLog::with_max_keys(start, 2);
        assert!(log.first("a", "shed"));
        assert!(log.first("b", "shed"));
        for rule in ["c", "d", "e"] {
            assert!(!log.first(rule, "shed"), "{rule} went past the cap");
        }
        assert!(!log.first("a", "shed"));
        let lines = log.flush(start);
        let overflow = lines.iter().find(|l| l.rule.is_none()).unwrap();
        assert_eq!(overflow.count, 3);
        assert_eq!(lines.len(), 2, "{lines:?}");
    }
}
