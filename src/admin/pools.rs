//! The server connection pools on the admin endpoint: `GET /pools` (the `SHOW POOLS` rows and
//! every counter, as JSON) and the `pgward_pool_*` families of `/metrics`, both from one
//! snapshot of [`crate::pool::Pools`]. In session mode there are no pools: `/pools` says so and
//! the families have no series.

use std::fmt;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde_json::json;

use super::Handles;
use crate::pool::{PoolMode, PoolSnapshot, Pools, WAIT_BUCKETS_SECONDS};
use crate::stats::{Families, one};

/// `GET /pools`.
pub(super) async fn pools(State(app): State<Arc<Handles>>) -> Response {
    let (mode, pools) = match &app.pools {
        Some(pools) => (pools.mode(), pools.snapshot()),
        None => (PoolMode::Session, Vec::new()),
    };
    Json(json!({ "pool_mode": mode, "pools": pools })).into_response()
}

/// The pool families of one scrape.
#[derive(Debug)]
pub(super) struct PoolMetrics(Vec<PoolSnapshot>);

impl PoolMetrics {
    pub(super) fn new(pools: Option<&Pools>) -> PoolMetrics {
        PoolMetrics(pools.map(Pools::snapshot).unwrap_or_default())
    }
}

type Labels<'a> = [(&'static str, &'a str); 2];

fn labels(p: &PoolSnapshot) -> Labels<'_> {
    [("database", p.database.as_str()), ("user", p.user.as_str())]
}

fn with<'a>(
    p: &'a PoolSnapshot,
    key: &'static str,
    value: &'a str,
) -> [(&'static str, &'a str); 3] {
    [
        ("database", p.database.as_str()),
        ("user", p.user.as_str()),
        (key, value),
    ]
}

impl Collector for PoolMetrics {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut f = Families::new(encoder);
        gauges(&mut f, &self.0)?;
        counters(&mut f, &self.0)
    }
}

fn gauges(f: &mut Families, pools: &[PoolSnapshot]) -> fmt::Result {
    f.gauge(
        "pgward_pools",
        "Server connection pools (transaction mode)",
        one(pools.len() as u64),
    )?;
    f.gauge(
            "pgward_pool_servers",
            "Server connections of a pool by state: active (held by a client), idle, login (opening), tested (running the reset query)",
            pools.iter().flat_map(|p| {
                [
                    (with(p, "state", "active"), p.sv_active as u64),
                    (with(p, "state", "idle"), p.sv_idle as u64),
                    (with(p, "state", "login"), p.sv_login as u64),
                    (with(p, "state", "tested"), p.sv_tested as u64),
                ]
            }),
        )?;
    f.gauge(
        "pgward_pool_clients_waiting",
        "Clients waiting for a server connection",
        pools.iter().map(|p| (labels(p), p.cl_waiting as u64)),
    )?;
    f.gauge(
        "pgward_pool_max_wait_seconds",
        "How long the oldest waiting client has waited",
        pools
            .iter()
            .map(|p| (labels(p), p.maxwait as f64 + p.maxwait_us as f64 / 1e6)),
    )?;
    f.gauge(
        "pgward_pool_size",
        "pool_size: the most server connections of the pool",
        pools.iter().map(|p| (labels(p), p.pool_size as u64)),
    )?;
    Ok(())
}

fn counters(f: &mut Families, pools: &[PoolSnapshot]) -> fmt::Result {
    f.counter(
        "pgward_pool_checkouts",
        "Checkouts that returned a server connection",
        pools.iter().map(|p| (labels(p), p.checkouts)),
    )?;
    f.histogram(
        "pgward_pool_wait_seconds",
        "Time clients waited for a server connection (checkouts that found none idle)",
        &WAIT_BUCKETS_SECONDS,
        pools.iter().map(|p| {
            let sum = p.wait_time_us as f64 / 1e6;
            (labels(p), sum, p.waits, p.wait_buckets.to_vec())
        }),
    )?;
    f.counter(
        "pgward_pool_checkout_timeouts",
        "Checkouts that failed after query_wait_timeout",
        pools.iter().map(|p| (labels(p), p.checkout_timeouts)),
    )?;
    f.counter(
        "pgward_pool_queue_full",
        "Checkouts refused at once: max_waiting_clients were waiting",
        pools.iter().map(|p| (labels(p), p.queue_full)),
    )?;
    f.counter(
        "pgward_pool_servers_opened",
        "Server connections opened (logged in)",
        pools.iter().map(|p| (labels(p), p.servers_opened)),
    )?;
    f.counter(
        "pgward_pool_server_login_failures",
        "Server connections that could not be opened or logged in",
        pools.iter().map(|p| (labels(p), p.server_login_failures)),
    )?;
    f.counter(
        "pgward_pool_resets",
        "Reset queries (server_reset_query) that succeeded",
        pools.iter().map(|p| (labels(p), p.resets)),
    )?;
    f.counter(
        "pgward_pool_servers_closed",
        "Server connections closed, by reason",
        pools.iter().flat_map(|p| {
            p.servers_closed
                .by_reason()
                .map(|(reason, n)| (with(p, "reason", reason), n))
        }),
    )
}
