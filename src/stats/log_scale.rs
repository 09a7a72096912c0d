//! Log-scale latency buckets, for histograms that must stay small (per-second and per-15-second
//! slots): `per_ln` buckets per natural-log unit of microseconds, the last one holding
//! everything slower. A quantile is reported at the upper end of its bucket, so it is never
//! lower than the truth (an objective is never thought kept when it is not).

use std::time::Duration;

/// The bucketing of one kind of histogram.
#[derive(Debug, Clone, Copy)]
pub struct LogScale {
    per_ln: f64,
    buckets: usize,
}

impl LogScale {
    pub const fn new(per_ln: f64, buckets: usize) -> LogScale {
        LogScale { per_ln, buckets }
    }

    /// The bucket of a latency.
    pub fn bucket(&self, latency: Duration) -> usize {
        let us = latency.as_secs_f64() * 1_000_000.0;
        if us <= 1.0 {
            return 0;
        }
        ((us.ln() * self.per_ln) as usize).min(self.buckets.saturating_sub(1))
    }

    /// The latency at the top of bucket `index`.
    pub fn upper_bound(&self, index: usize) -> Duration {
        Duration::from_secs_f64(((index + 1) as f64 / self.per_ln).exp() / 1_000_000.0)
    }

    /// The `q` quantile of `counts` (one per bucket): the upper end of the bucket holding the
    /// ceil(q x total)-th latency; `None` without any.
    pub fn quantile(&self, counts: &[u64], q: f64) -> Option<Duration> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        let index = counts
            .iter()
            .position(|c| {
                seen += c;
                seen >= rank
            })
            .unwrap_or(self.buckets.saturating_sub(1));
        Some(self.upper_bound(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_latencies_from_above() {
        let scale = LogScale::new(10.0, 185);
        for us in [1, 2, 50, 1_000, 123_456, 9_000_000] {
            let d = Duration::from_micros(us);
            let b = scale.bucket(d);
            assert!(scale.upper_bound(b) >= d, "{us} µs in bucket {b}");
            assert!(
                b == 0 || scale.upper_bound(b - 1) <= d * 2,
                "{us} µs: bucket too coarse"
            );
        }
        assert_eq!(
            scale.bucket(Duration::from_secs(3600)),
            184,
            "the last one holds the rest"
        );
        let mut counts = vec![0u64; 185];
        counts[scale.bucket(Duration::from_millis(1))] = 99;
        counts[scale.bucket(Duration::from_millis(100))] = 1;
        assert!(scale.quantile(&counts, 0.99).unwrap() < Duration::from_millis(2));
        assert!(scale.quantile(&counts, 1.0).unwrap() >= Duration::from_millis(100));
        assert_eq!(scale.quantile(&[0; 185], 0.5), None);
    }
}
