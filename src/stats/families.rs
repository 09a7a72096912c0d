//! The few shapes `/metrics` writes, on top of the `prometheus-client` crate's Prometheus text
//! (0.0.4) encoder: [`Families`] turns one family's samples (label set, value) into one
//! `# HELP`/`# TYPE` pair and its series, and [`render`] encodes a set of collectors. The crate
//! owns the format (name suffixes `_total`/`_info`, escaping, float spelling, histogram
//! `_bucket`/`_sum`/`_count` and `le="+Inf"`); pgward only supplies snapshot values at scrape
//! time, so the statement path never touches it.
//!
//! Names given here are family names: a counter's samples get `_total` appended by the crate.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
    NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::record::{LATENCY_BUCKETS_MICROS, LatencyBuckets};

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A series without labels.
pub const NO_LABELS: [(&str, &str); 0] = [];

/// The samples of a family with one unlabeled series.
pub fn one<V>(value: V) -> [([(&'static str, &'static str); 0], V); 1] {
    [(NO_LABELS, value)]
}

/// Encodes `collectors`, in order, as Prometheus text.
pub fn render(collectors: Vec<Box<dyn Collector>>) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    for collector in collectors {
        registry.register_collector(collector);
    }
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// One latency histogram's values: exact sum and count, and the bucket counts derived from
/// the record's hdrhistogram (see [`LATENCY_BUCKETS_MICROS`]).
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub sum_seconds: f64,
    pub count: u64,
    pub buckets: LatencyBuckets,
}

/// Writes families into one collector's encoder.
pub struct Families<'a>(DescriptorEncoder<'a>);

impl<'a> Families<'a> {
    pub fn new(encoder: DescriptorEncoder<'a>) -> Families<'a> {
        Families(encoder)
    }

    /// A counter family; `name` without `_total`.
    pub fn counter<L, V>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result
    where
        L: EncodeLabelSet,
        V: EncodeCounterValue,
    {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in samples {
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge family.
    pub fn gauge<L, V>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result
    where
        L: EncodeLabelSet,
        V: EncodeGaugeValue,
    {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in samples {
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// An info family (`name` without `_info`): one series of value 1 per label set.
    pub fn info<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = L>,
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Info)?;
        for labels in samples {
            family.encode_info(&labels)?;
        }
        Ok(())
    }

    /// A histogram family with the upper `bounds` given (`+Inf` added); each sample is
    /// (labels, sum, count, per-bucket counts, not cumulative: one per bound, then the
    /// overflow). The crate makes the counts cumulative.
    pub fn histogram<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[f64],
        samples: impl IntoIterator<Item = (L, f64, u64, Vec<u64>)>,
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, sum, count, counts) in samples {
            let buckets: Vec<(f64, u64)> = bounds
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(counts)
                .collect();
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }

    /// A latency histogram family in seconds; buckets are [`LATENCY_BUCKETS_MICROS`].
    pub fn latency<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, Latency)>,
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, latency) in samples {
            // Per-bucket counts; the crate makes them cumulative and adds le="+Inf" = count.
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_MICROS
                .iter()
                .map(|us| *us as f64 / 1_000_000.0)
                .zip(latency.buckets)
                .collect();
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    latency.sum_seconds,
                    latency.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}
