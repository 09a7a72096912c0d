//! The query-statistics families of `/metrics`, encoded from one [`Snapshot`] at scrape time
//! by [`QueryMetrics`] (a `prometheus-client` collector): per-fingerprint series for the top
//! fingerprints by total time (keyed by `queryid`; the normalized text appears once, in
//! `pgward_query_info`), totals over all fingerprints, per-rule sums and the proxy-wide
//! counters and gauges. Latencies are histograms whose buckets come from the records'
//! hdrhistograms, so they agree with `/stats` and can be aggregated over time and instances.
//! docs/stats.md lists every family.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::families::{Families, Latency, NO_LABELS, one};
use super::record::Counter;
use super::snapshot::{FingerprintSnapshot, Snapshot, SortKey, Totals};

/// The query-statistics families of one snapshot.
#[derive(Debug)]
pub struct QueryMetrics {
    snapshot: Snapshot,
    /// Fingerprints exported individually (`stats.metrics_top`).
    top: usize,
}

impl QueryMetrics {
    pub fn new(snapshot: Snapshot, top: usize) -> QueryMetrics {
        QueryMetrics { snapshot, top }
    }
}

impl Collector for QueryMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut f = Families::new(encoder);
        let rows = self.snapshot.sorted(SortKey::TotalExecTime, self.top);
        per_fingerprint(&mut f, &rows)?;
        per_fingerprint_outcomes(&mut f, &rows)?;
        totals(&mut f, &self.snapshot.totals)?;
        proxy(&mut f, &self.snapshot)?;
        per_rule(&mut f, &self.snapshot)
    }
}

fn id(fp: &FingerprintSnapshot) -> [(&'static str, &str); 1] {
    [("queryid", fp.queryid.as_str())]
}

fn fingerprint_latency(fp: &FingerprintSnapshot) -> Latency {
    Latency {
        sum_seconds: fp.total_exec_time / 1_000.0,
        count: fp.calls,
        buckets: fp.latency_buckets,
    }
}

fn totals_latency(t: &Totals) -> Latency {
    Latency {
        sum_seconds: t.total_exec_time / 1_000.0,
        count: t.calls,
        buckets: t.latency_buckets,
    }
}

fn per_fingerprint(f: &mut Families, rows: &[&FingerprintSnapshot]) -> fmt::Result {
    f.info(
        "pgward_query",
        "Normalized text and last matching rule of each exported fingerprint",
        rows.iter().map(|fp| {
            let mut labels = vec![("queryid", fp.queryid.as_str()), ("query", &fp.query)];
            if let Some(rule) = &fp.rule {
                labels.push(("rule", rule));
            }
            labels
        }),
    )?;
    f.counter(
        "pgward_query_calls",
        "Executions of the query fingerprint",
        rows.iter().map(|fp| (id(fp), fp.calls)),
    )?;
    f.counter(
        "pgward_query_rows",
        "Rows returned or affected by the query fingerprint",
        rows.iter().map(|fp| (id(fp), fp.rows)),
    )?;
    f.latency(
        "pgward_query_exec_seconds",
        "Execution time of the query fingerprint",
        rows.iter().map(|fp| (id(fp), fingerprint_latency(fp))),
    )?;
    f.counter(
        "pgward_query_errors",
        "Failed executions of the query fingerprint by SQLSTATE class",
        rows.iter().flat_map(|fp| {
            fp.errors_by_class.iter().map(|(class, n)| {
                let labels = [("queryid", fp.queryid.as_str()), ("class", class.as_str())];
                (labels, *n)
            })
        }),
    )?;
    f.counter(
        "pgward_query_sent_bytes",
        "Bytes sent to clients for the query fingerprint",
        rows.iter().map(|fp| (id(fp), fp.bytes_sent)),
    )?;
    f.counter(
        "pgward_query_queue_seconds",
        "Time executions of the query fingerprint waited in queues",
        rows.iter().map(|fp| (id(fp), fp.queue_time / 1_000.0)),
    )
}

fn per_fingerprint_outcomes(f: &mut Families, rows: &[&FingerprintSnapshot]) -> fmt::Result {
    for counter in Counter::ALL {
        f.counter(
            &format!("pgward_query_{}", counter.metric_name()),
            counter.help(),
            rows.iter().map(|fp| (id(fp), fp.outcomes.get(counter))),
        )?;
    }
    f.counter(
        "pgward_query_cache_misses_by_reason",
        "Cache misses of the query fingerprint by reason (reasons seen so far only)",
        rows.iter().flat_map(|fp| {
            fp.cache_miss_reasons.iter().map(|(reason, n)| {
                let labels = [("queryid", fp.queryid.as_str()), ("reason", *reason)];
                (labels, *n)
            })
        }),
    )
}

fn totals(f: &mut Families, t: &Totals) -> fmt::Result {
    let all = "over all fingerprints since the last reset";
    f.counter(
        "pgward_all_queries_calls",
        &format!("Executions {all}"),
        one(t.calls),
    )?;
    f.counter(
        "pgward_all_queries_rows",
        &format!("Rows returned or affected {all}"),
        one(t.rows),
    )?;
    f.latency(
        "pgward_all_queries_exec_seconds",
        &format!("Execution time {all}"),
        [(NO_LABELS, totals_latency(t))],
    )?;
    f.counter(
        "pgward_all_queries_errors",
        &format!("Failed executions by SQLSTATE class {all}"),
        t.errors_by_class
            .iter()
            .map(|(class, n)| ([("class", class.as_str())], *n)),
    )?;
    f.counter(
        "pgward_all_queries_sent_bytes",
        &format!("Bytes sent to clients {all}"),
        one(t.bytes_sent),
    )?;
    f.counter(
        "pgward_all_queries_queue_seconds",
        &format!("Time waited in queues {all}"),
        [(NO_LABELS, t.queue_time / 1_000.0)],
    )?;
    for counter in Counter::ALL {
        f.counter(
            &format!("pgward_all_queries_{}", counter.metric_name()),
            &format!("{} {all}", counter.help()),
            one(t.outcomes.get(counter)),
        )?;
    }
    Ok(())
}

fn proxy(f: &mut Families, snapshot: &Snapshot) -> fmt::Result {
    let p = &snapshot.proxy;
    let counters = [
        (
            "pgward_client_connections_opened",
            "Client connections accepted",
            p.client_connections_total,
        ),
        (
            "pgward_client_connections_rejected",
            "Client connections refused",
            p.client_connections_rejected,
        ),
        (
            "pgward_upstream_connections_opened",
            "Upstream connections established",
            p.upstream_connections_total,
        ),
        (
            "pgward_upstream_connections_failed",
            "Upstream connection attempts that failed",
            p.upstream_connections_failed,
        ),
        (
            "pgward_queries",
            "Statements executed through the proxy",
            p.queries,
        ),
        (
            "pgward_errors",
            "Statements that ended in an error",
            p.errors,
        ),
        (
            "pgward_fingerprints_evicted",
            "Query fingerprints evicted to respect max_fingerprints",
            p.fingerprints_evicted,
        ),
    ];
    f.gauge(
        "pgward_client_connections_open",
        "Client connections open now",
        one(p.client_connections),
    )?;
    f.gauge(
        "pgward_upstream_connections_open",
        "Upstream connections open now",
        one(p.upstream_connections),
    )?;
    for (name, help, value) in counters {
        f.counter(name, help, one(value))?;
    }
    f.gauge(
        "pgward_fingerprints_tracked",
        "Query fingerprints tracked now",
        one(p.fingerprints_tracked),
    )
}

fn per_rule(f: &mut Families, snapshot: &Snapshot) -> fmt::Result {
    let by_rule = snapshot.by_rule();
    let rule = |name: &str| [("rule", name.to_owned())];
    f.counter(
        "pgward_rule_calls",
        "Executions of fingerprints a rule matched",
        by_rule.iter().map(|(r, t)| (rule(r), t.calls)),
    )?;
    f.latency(
        "pgward_rule_exec_seconds",
        "Execution time of fingerprints a rule matched",
        by_rule.iter().map(|(r, t)| (rule(r), totals_latency(t))),
    )?;
    f.counter(
        "pgward_rule_queue_seconds",
        "Time statements of a rule waited for a concurrency slot",
        by_rule
            .iter()
            .map(|(r, t)| (rule(r), t.queue_time / 1_000.0)),
    )?;
    for counter in Counter::ALL {
        f.counter(
            &format!("pgward_rule_{}", counter.metric_name()),
            &format!("{}, per rule", counter.help()),
            by_rule
                .iter()
                .map(|(r, t)| (rule(r), t.outcomes.get(counter))),
        )?;
    }
    Ok(())
}
