//! What one workload's requests came to: counts by outcome (SQLSTATE for statement errors),
//! HDR latency histograms in microseconds, the optional per-request log, and the JSON summary;
//! plus the process's own CPU time from /proc/self/stat.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies above this (one hour, in µs) are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// At most this many requests are kept for `--log`; later ones are only counted.
pub const MAX_LOG_RECORDS: usize = 20_000_000;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    /// PostgreSQL answered with an error (its SQLSTATE).
    Sql([u8; 5]),
    /// The connection broke during the request (no SQLSTATE); it is reconnected.
    Lost,
    /// pgload could not send it (a `\gset` variable unset, a value it cannot read).
    Client,
    /// Open loop: waited in the queue longer than the workload's timeout; never sent.
    Timeout,
    /// Open loop: the queue was full when it arrived; never sent.
    Dropped,
    /// Still queued or in flight when the run ended (after `--drain`).
    Unanswered,
}

impl Outcome {
    pub fn from_sqlstate(code: &str) -> Outcome {
        let mut c = *b"XX000";
        if code.len() == 5 {
            c.copy_from_slice(code.as_bytes());
        }
        Outcome::Sql(c)
    }

    fn key(&self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Sql(c) => String::from_utf8_lossy(c).into_owned(),
            Outcome::Lost => "conn".into(),
            Outcome::Client => "client".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Dropped => "dropped".into(),
            Outcome::Unanswered => "unanswered".into(),
        }
    }
}

struct Record {
    arrival: Instant,
    latency_us: u64,
    outcome: Outcome,
    rows: u64,
}

/// One workload's counters; shared by its connections behind a mutex held only to record.
pub struct Stats {
    /// Requests arriving before this are warm-up: run, not counted.
    measure_from: Instant,
    by_outcome: BTreeMap<Outcome, u64>,
    ok_us: Histogram<u64>,
    err_us: Histogram<u64>,
    rows: u64,
    /// Open loop: arrivals that found no idle connection and waited in the queue.
    queued: u64,
    pub reconnects: u64,
    pub connect_errors: u64,
    /// Every request sent to PostgreSQL, warm-up included (for CPU per request).
    pub executed: u64,
    log: Option<Vec<Record>>,
    log_skipped: u64,
}

fn histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    // 3 significant figures from 1 µs to an hour.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
}

impl Stats {
    pub fn new(measure_from: Instant, log: bool) -> Result<Stats, hdrhistogram::CreationError> {
        Ok(Stats {
            measure_from,
            by_outcome: BTreeMap::new(),
            ok_us: histogram()?,
            err_us: histogram()?,
            rows: 0,
            queued: 0,
            reconnects: 0,
            connect_errors: 0,
            executed: 0,
            log: log.then(Vec::new),
            log_skipped: 0,
        })
    }

    /// A request that arrived (was meant to be sent) at `arrival` ended now with `outcome`.
    pub fn record(&mut self, arrival: Instant, outcome: Outcome, rows: u64) {
        if matches!(outcome, Outcome::Ok | Outcome::Sql(_) | Outcome::Lost) {
            self.executed = self.executed.saturating_add(1);
        }
        if arrival < self.measure_from {
            return;
        }
        let us = u64::try_from(arrival.elapsed().as_micros()).unwrap_or(u64::MAX);
        let us = us.clamp(1, MAX_LATENCY_US);
        *self.by_outcome.entry(outcome).or_insert(0) += 1;
        match outcome {
            Outcome::Ok => {
                self.ok_us.saturating_record(us);
                self.rows = self.rows.saturating_add(rows);
            }
            Outcome::Sql(_) => self.err_us.saturating_record(us),
            _ => {}
        }
        if let Some(log) = &mut self.log {
            if log.len() < MAX_LOG_RECORDS {
                log.push(Record {
                    arrival,
                    latency_us: us,
                    outcome,
                    rows,
                });
            } else {
                self.log_skipped = self.log_skipped.saturating_add(1);
            }
        }
    }

    pub fn queued(&mut self, arrival: Instant) {
        if arrival >= self.measure_from {
            self.queued = self.queued.saturating_add(1);
        }
    }

    fn count(&self, o: Outcome) -> u64 {
        self.by_outcome.get(&o).copied().unwrap_or(0)
    }

    /// The JSON summary; `secs` is the measured duration.
    pub fn summary(&self, secs: f64) -> serde_json::Map<String, Value> {
        let requests: u64 = self.by_outcome.values().sum();
        let ok = self.count(Outcome::Ok);
        let mut errors = serde_json::Map::new();
        let mut sql_errors = 0u64;
        for (o, n) in &self.by_outcome {
            if let Outcome::Sql(_) = o {
                errors.insert(o.key(), json!(n));
                sql_errors = sql_errors.saturating_add(*n);
            }
        }
        let by_status: serde_json::Map<String, Value> = self
            .by_outcome
            .iter()
            .map(|(o, n)| (o.key(), json!(n)))
            .collect();
        let per_s = |n: u64| {
            if secs > 0.0 {
                round(n as f64 / secs, 2)
            } else {
                json!(null)
            }
        };
        let mut m = serde_json::Map::new();
        m.insert("requests".into(), json!(requests));
        m.insert("ok".into(), json!(ok));
        let pct = if requests > 0 {
            round(100.0 * ok as f64 / requests as f64, 3)
        } else {
            json!(null)
        };
        m.insert("answered_pct".into(), pct);
        m.insert("errors".into(), Value::Object(errors));
        m.insert("sql_errors".into(), json!(sql_errors));
        m.insert("lost".into(), json!(self.count(Outcome::Lost)));
        m.insert("client_errors".into(), json!(self.count(Outcome::Client)));
        m.insert(
            "late".into(),
            json!({
                "queued": self.queued,
                "timeout": self.count(Outcome::Timeout),
                "dropped": self.count(Outcome::Dropped),
            }),
        );
        m.insert("unanswered".into(), json!(self.count(Outcome::Unanswered)));
        m.insert("by_status".into(), Value::Object(by_status));
        m.insert("rows".into(), json!(self.rows));
        m.insert("reconnects".into(), json!(self.reconnects));
        m.insert("connect_errors".into(), json!(self.connect_errors));
        m.insert("ok_per_s".into(), per_s(ok));
        m.insert(
            "achieved_rate_per_s".into(),
            per_s(ok.saturating_add(sql_errors)),
        );
        m.insert("latency_us".into(), latency(&self.ok_us));
        m.insert("error_latency_us".into(), latency(&self.err_us));
        if self.log_skipped > 0 {
            m.insert("log_skipped".into(), json!(self.log_skipped));
        }
        m
    }

    /// `--log` lines: workload, arrival (unix seconds), latency_us, status, rows.
    pub fn write_log(
        &mut self,
        name: &str,
        epoch: (Instant, SystemTime),
        out: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        let base = epoch.1.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        if let Some(log) = &mut self.log {
            log.sort_by_key(|r| r.arrival);
        }
        for r in self.log.iter().flatten() {
            let t = base.saturating_add(r.arrival.saturating_duration_since(epoch.0));
            writeln!(
                out,
                "{name},{}.{:06},{},{},{}",
                t.as_secs(),
                t.subsec_micros(),
                r.latency_us,
                r.outcome.key(),
                r.rows
            )?;
        }
        Ok(())
    }
}

fn round(v: f64, digits: i32) -> Value {
    let f = 10f64.powi(digits);
    json!((v * f).round() / f)
}

fn latency(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": h.len(),
        "min": h.min(),
        "mean": round(h.mean(), 1),
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p95": h.value_at_quantile(0.95),
        "p99": h.value_at_quantile(0.99),
        "p99.9": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// User and system CPU seconds of this process (all threads), from /proc/self/stat.
pub fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 2 (the command) may hold spaces: count from the last ')'.
    let rest = stat.get(stat.rfind(')')?.saturating_add(2)..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3; utime and stime are fields 14 and 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let hz = clock_ticks();
    Some((utime / hz, stime / hz))
}

/// The kernel's clock tick for /proc times (AT_CLKTCK in the auxiliary vector; 100 otherwise).
fn clock_ticks() -> f64 {
    const AT_CLKTCK: u64 = 17;
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    for pair in auxv.chunks_exact(16) {
        let word = |b: &[u8]| b.try_into().map(u64::from_ne_bytes).unwrap_or(0);
        let (key, val) = pair.split_at(8);
        if word(key) == AT_CLKTCK && word(val) > 0 {
            return word(val) as f64;
        }
    }
    100.0
}
