//! `GET /metrics`: gathers the snapshots of one scrape (query statistics, the result cache,
//! the rules and their reloads, the server connection pools, whether the upstream answers,
//! `/proc/self`) and encodes them
//! with the `prometheus-client` crate as Prometheus text 0.0.4. The cache, rules and build
//! families are written here; the query and process families live in [`crate::stats`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Handles;
use super::routes::error;
use crate::cache::CacheSnapshot;
use crate::limits::LimitState;
use crate::protocol::startup::encode_ssl_request;
use crate::protocol::tag::ssl;
use crate::stats::{Families, METRICS_CONTENT_TYPE, ProcessMetrics, QueryMetrics, one, render};
use crate::upstream::Upstream;

/// How long the upstream probe of `/healthz` and `pgward_upstream_up` waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) async fn metrics(State(app): State<Arc<Handles>>) -> Response {
    let up = probe_upstream(&app.upstream).await.is_ok();
    let status = app.rules.status();
    let active = app.rules.snapshot();
    let set = &active.set;
    let budgets = set
        .rules
        .iter()
        .filter_map(|r| Some((r.name.to_string(), r.budget(set)?.as_secs_f64())))
        .collect();
    let now = std::time::Instant::now();
    let pgward = PgwardMetrics {
        version: env!("CARGO_PKG_VERSION"),
        upstream_up: up,
        rules_version: status.version,
        rules_loaded: set.rules.len() as u64,
        budgets,
        reload_failures: status.reload_failures,
        reload_failing: status.last_error.is_some(),
        limits: crate::limits::states(&active.shared_limits, now),
        objectives: active
            .protection
            .objectives
            .iter()
            .map(|o| {
                let seen = o.observe(now);
                let p99 = seen
                    .p99
                    .filter(|_| seen.samples >= crate::protect::MIN_SAMPLES);
                (
                    o.name.to_string(),
                    p99.map(|d| d.as_secs_f64()),
                    o.p99.as_secs_f64(),
                )
            })
            .collect(),
        protection_factor: active.protection.factor(),
    };
    let collectors: Vec<Box<dyn Collector>> = vec![
        Box::new(pgward),
        Box::new(QueryMetrics::new(app.stats.snapshot(), app.metrics_top)),
        Box::new(CacheMetrics(app.cache.snapshot(0))),
        Box::new(super::pools::PoolMetrics::new(app.pools.as_deref())),
        Box::new(ProcessMetrics::read()),
    ];
    match render(collectors) {
        Ok(body) => {
            let mut response = body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(METRICS_CONTENT_TYPE),
            );
            response
        }
        Err(fmt::Error) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded".into(),
        ),
    }
}

/// Ok when the upstream accepts a connection and answers an SSLRequest like a PostgreSQL
/// server within [`PROBE_TIMEOUT`]; the reason otherwise.
pub(super) async fn probe_upstream(upstream: &Upstream) -> Result<(), String> {
    let probe = async {
        let mut tcp = upstream.connect_plain().await.map_err(|e| e.to_string())?;
        tcp.write_all(&encode_ssl_request())
            .await
            .map_err(|e| e.to_string())?;
        match tcp.read_u8().await.map_err(|e| e.to_string())? {
            ssl::ACCEPTED | ssl::REFUSED => Ok(()),
            other => Err(format!(
                "upstream answered SSLRequest with byte {other}, not like PostgreSQL"
            )),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| Err(format!("upstream did not answer within {PROBE_TIMEOUT:?}")))
}

/// Build, upstream and rules families.
#[derive(Debug)]
struct PgwardMetrics {
    version: &'static str,
    upstream_up: bool,
    rules_version: u64,
    rules_loaded: u64,
    /// (rule, budget in seconds) of the rules in force that have a budget.
    budgets: Vec<(String, f64)>,
    reload_failures: u64,
    reload_failing: bool,
    /// The shared limits in force, as they stand at the scrape.
    limits: Vec<LimitState>,
    /// (objective, p99 seconds now, objective seconds) of each `[[protect]]`.
    objectives: Vec<(String, Option<f64>, f64)>,
    /// Per mille of their limits the unprotected limits get.
    protection_factor: u32,
}

impl Collector for PgwardMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut f = Families::new(encoder);
        f.info(
            "pgward_build",
            "The pgward version running",
            [[("version", self.version)]],
        )?;
        f.gauge(
            "pgward_upstream_up",
            "1 when the upstream answered this scrape's probe like PostgreSQL, else 0",
            one(u64::from(self.upstream_up)),
        )?;
        f.gauge(
            "pgward_rules_version",
            "Version of the rules in force (1 at start, +1 per reload that changed them)",
            one(self.rules_version),
        )?;
        f.gauge(
            "pgward_rules_loaded",
            "Rules in force",
            one(self.rules_loaded),
        )?;
        f.gauge(
            "pgward_rule_budget_seconds",
            "Time budget of each rule in force that has one (the latency objective it enforces)",
            self.budgets
                .iter()
                .map(|(rule, seconds)| ([("rule", rule.as_str())], *seconds)),
        )?;
        f.counter(
            "pgward_rules_reload_failures",
            "Rules reloads rejected (the previous rules stayed in force)",
            one(self.reload_failures),
        )?;
        f.gauge(
            "pgward_rules_reload_failing",
            "1 while the latest rules reload was rejected, else 0",
            one(u64::from(self.reload_failing)),
        )?;
        self.encode_limits(&mut f)
    }
}

impl PgwardMetrics {
    /// The shared limits' and the protection's families.
    fn encode_limits(&self, f: &mut Families<'_>) -> fmt::Result {
        let by_limit = |value: fn(&LimitState) -> Option<f64>| {
            self.limits
                .iter()
                .filter_map(move |l| Some(([("limit", l.name.as_str())], value(l)?)))
        };
        f.gauge(
            "pgward_limit_in_use",
            "Statements of each shared limit running upstream now",
            by_limit(|l| Some(l.in_use as f64)),
        )?;
        f.gauge(
            "pgward_limit_max_concurrency",
            "max_concurrency of each shared limit that has one",
            by_limit(|l| l.max_concurrency.map(|n| n as f64)),
        )?;
        f.gauge(
            "pgward_limit_db_time_available_seconds",
            "Database time each shared limit with max_db_time can still spend now (negative: owed)",
            by_limit(|l| l.db_time_available_ms.map(|ms| ms / 1000.0)),
        )?;
        f.gauge(
            "pgward_limit_max_db_time_ratio",
            "max_db_time of each shared limit: seconds of database time per second",
            by_limit(|l| l.max_db_time_ms_per_s.map(|ms| ms / 1000.0)),
        )?;
        f.counter(
            "pgward_limit_db_time_seconds",
            "Database time the statements of each shared limit used (measured upstream time)",
            by_limit(|l| l.db_time_spent_ms.map(|ms| ms / 1000.0)),
        )?;
        f.gauge(
            "pgward_limit_factor_ratio",
            "Share of its configured limit each shared limit gets now (below 1 while protected traffic is over its objective)",
            by_limit(|l| Some(f64::from(l.factor) / 1000.0)),
        )?;
        f.gauge(
            "pgward_protect_p99_seconds",
            "p99 latency of each protected traffic over its window (absent without enough statements)",
            self.objectives
                .iter()
                .filter_map(|(name, p99, _)| Some(([("protect", name.as_str())], (*p99)?))),
        )?;
        f.gauge(
            "pgward_protect_objective_seconds",
            "The p99 objective of each protected traffic",
            self.objectives
                .iter()
                .map(|(name, _, objective)| ([("protect", name.as_str())], *objective)),
        )?;
        f.gauge(
            "pgward_protect_factor_ratio",
            "Share of their configured limits the unprotected limits get now (1: untouched, 0: no database admissions)",
            one(f64::from(self.protection_factor) / 1000.0),
        )
    }
}

/// The cache-wide families.
#[derive(Debug)]
struct CacheMetrics(CacheSnapshot);

impl Collector for CacheMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut f = Families::new(encoder);
        for (name, help, value) in self.gauges() {
            f.gauge(name, help, one(value))?;
        }
        for (name, help, value) in self.counters() {
            f.counter(name, help, one(value))?;
        }
        Ok(())
    }
}

/// (family, help, value) of one cache-wide series.
type CacheSeries = (&'static str, &'static str, u64);

impl CacheMetrics {
    fn gauges(&self) -> [CacheSeries; 4] {
        let s = &self.0;
        [
            (
                "pgward_cache_size_bytes",
                "Bytes held by result cache entries",
                s.size_bytes,
            ),
            (
                "pgward_cache_max_size_bytes",
                "cache.max_size",
                s.max_size_bytes,
            ),
            ("pgward_cache_entries", "Result cache entries", s.entries),
            (
                "pgward_cache_fills_in_flight",
                "Queries running upstream to fill an entry",
                s.fills_in_flight,
            ),
        ]
    }

    fn counters(&self) -> [CacheSeries; 8] {
        let s = &self.0;
        [
            (
                "pgward_cache_hits",
                "Statements answered from the cache (fresh or stale)",
                s.hits,
            ),
            (
                "pgward_cache_misses",
                "Cache lookups that found no usable entry",
                s.misses,
            ),
            ("pgward_cache_stores", "Results stored", s.stores),
            (
                "pgward_cache_evictions",
                "Entries evicted to stay within cache.max_size",
                s.evictions,
            ),
            (
                "pgward_cache_expirations",
                "Entries removed after ttl + stale_for",
                s.expirations,
            ),
            (
                "pgward_cache_invalidations",
                "Invalidation events (committed writes seen, admin requests)",
                s.invalidations,
            ),
            (
                "pgward_cache_invalidated_entries",
                "Entries dropped because something they read was invalidated",
                s.invalidated_entries,
            ),
            (
                "pgward_cache_discarded_fills",
                "Results not stored because a table they read was written while they ran",
                s.discarded_fills,
            ),
        ]
    }
}
