//! Per-fingerprint statistics over the last minutes, for watching an incident: calls, errors,
//! database time and p50/p95/p99 over the last 1 or 5 minutes (`/stats/queries?window=1m`),
//! not only since start. A ring of 15-second slots, each a count, an error count, a time sum
//! and a log-scale latency histogram (buckets about 28 % wide; a percentile is reported at its
//! bucket's upper end). Slots are allocated when a fingerprint first runs, at most
//! [`SLOTS`] of them: about 6 KiB per active fingerprint, bounded by `max_fingerprints`.

use std::time::Duration;

use super::log_scale::LogScale;

/// Seconds one slot covers.
pub const SLOT_SECONDS: u64 = 15;
/// Slots in the ring: five minutes.
pub const SLOTS: usize = 20;
/// Buckets: 4 per natural-log unit of microseconds, up to e^(74/4) µs, about 108 s; slower
/// statements land in the last one.
const BUCKETS: usize = 74;
const SCALE: LogScale = LogScale::new(4.0, BUCKETS);

/// The windows `/stats/queries` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    OneMinute,
    FiveMinutes,
}

impl Window {
    pub fn parse(text: &str) -> Option<Window> {
        match text {
            "1m" => Some(Window::OneMinute),
            "5m" => Some(Window::FiveMinutes),
            _ => None,
        }
    }

    pub fn seconds(self) -> u64 {
        match self {
            Window::OneMinute => 60,
            Window::FiveMinutes => 300,
        }
    }
}

#[derive(Clone)]
struct Slot {
    /// Which 15-second period (seconds since the Unix epoch / 15) it holds.
    period: u64,
    calls: u64,
    errors: u64,
    total_us: u64,
    counts: [u32; BUCKETS],
}

/// The ring of one fingerprint.
#[derive(Default)]
pub struct Windows {
    slots: Vec<Slot>,
}

/// A fingerprint's statistics over one window.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WindowStats {
    pub seconds: u64,
    pub calls: u64,
    pub calls_per_s: f64,
    pub errors: u64,
    /// Database time in the window, milliseconds (the sum of the statements' times).
    pub total_exec_time: f64,
    pub p50_exec_time: Option<f64>,
    pub p95_exec_time: Option<f64>,
    pub p99_exec_time: Option<f64>,
}

impl Windows {
    /// One execution of `elapsed` that ended at `now_secs` (Unix seconds).
    pub fn record(&mut self, elapsed: Duration, error: bool, now_secs: u64) {
        let period = now_secs / SLOT_SECONDS;
        let index = (period % SLOTS as u64) as usize;
        if self.slots.len() < SLOTS {
            let blank = Slot {
                period: u64::MAX,
                calls: 0,
                errors: 0,
                total_us: 0,
                counts: [0; BUCKETS],
            };
            self.slots.resize(SLOTS, blank);
        }
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if slot.period != period {
            *slot = Slot {
                period,
                calls: 0,
                errors: 0,
                total_us: 0,
                counts: [0; BUCKETS],
            };
        }
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        slot.calls += 1;
        slot.errors += u64::from(error);
        slot.total_us = slot.total_us.saturating_add(us);
        if let Some(count) = slot.counts.get_mut(SCALE.bucket(elapsed)) {
            *count = count.saturating_add(1);
        }
    }

    /// The statistics of `window` ending at `now_secs`: the slots whose period lies in it
    /// (the current, partly filled one included).
    pub fn stats(&self, window: Window, now_secs: u64) -> WindowStats {
        let now = now_secs / SLOT_SECONDS;
        let periods = window.seconds() / SLOT_SECONDS;
        let mut merged = [0u64; BUCKETS];
        let (mut calls, mut errors, mut total_us) = (0u64, 0u64, 0u64);
        for slot in &self.slots {
            if slot.period <= now && now - slot.period < periods {
                calls += slot.calls;
                errors += slot.errors;
                total_us = total_us.saturating_add(slot.total_us);
                for (m, c) in merged.iter_mut().zip(slot.counts.iter()) {
                    *m += u64::from(*c);
                }
            }
        }
        let quantile = |q: f64| SCALE.quantile(&merged, q).map(|d| d.as_secs_f64() * 1000.0);
        WindowStats {
            seconds: window.seconds(),
            calls,
            calls_per_s: calls as f64 / window.seconds() as f64,
            errors,
            total_exec_time: total_us as f64 / 1000.0,
            p50_exec_time: quantile(0.50),
            p95_exec_time: quantile(0.95),
            p99_exec_time: quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_minute_and_the_last_five() {
        let mut w = Windows::default();
        let t = 1_000_000 * SLOT_SECONDS;
        // Five minutes ago (still in the 5m window): 100 slow statements.
        for _ in 0..100 {
            w.record(Duration::from_millis(200), false, t);
        }
        // Just now: 1000 fast ones, 10 of them failed.
        for i in 0..1000 {
            w.record(Duration::from_millis(2), i < 10, t + 285);
        }
        let one = w.stats(Window::OneMinute, t + 285);
        assert_eq!((one.calls, one.errors), (1000, 10));
        assert!((one.total_exec_time - 2000.0).abs() < 1.0, "{one:?}");
        let p99 = one.p99_exec_time.unwrap();
        assert!(
            (2.0..2.9).contains(&p99),
            "{one:?}: within a bucket above 2 ms"
        );
        let five = w.stats(Window::FiveMinutes, t + 285);
        assert_eq!(five.calls, 1100);
        assert!(
            five.p99_exec_time.unwrap() >= 200.0,
            "{five:?}: the slow ones are 9 %"
        );
        assert!((five.calls_per_s - 1100.0 / 300.0).abs() < 1e-9);
        // Another five minutes on, both windows are empty.
        let later = w.stats(Window::FiveMinutes, t + 600);
        assert_eq!(later.calls, 0);
        assert_eq!(later.p99_exec_time, None);
    }

    #[test]
    fn a_slot_is_reused_for_a_later_period() {
        let mut w = Windows::default();
        w.record(Duration::from_secs(3), true, 0);
        let lap = SLOT_SECONDS * SLOTS as u64;
        w.record(Duration::from_micros(1), false, lap);
        let now = w.stats(Window::FiveMinutes, lap);
        assert_eq!(
            (now.calls, now.errors),
            (1, 0),
            "the old lap's slot was cleared"
        );
        assert!(now.p50_exec_time.unwrap() < 0.01);
        assert_eq!(Window::parse("1m"), Some(Window::OneMinute));
        assert_eq!(Window::parse("10m"), None);
    }
}
