//! Admin routes of the result cache: `GET /cache` (size, counters, the largest and hottest
//! entries by fingerprint, never values), `POST /cache/invalidate` (for writes that bypass
//! pgward) and the cache-wide lines of `/metrics`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Handles;
use super::clip;
use super::routes::error;
use crate::cache::CacheSnapshot;
use crate::fingerprint::FingerprintId;

/// Entries listed in each of `largest` and `hottest` unless `?limit=` says otherwise.
const DEFAULT_LISTED: usize = 20;

pub(super) async fn cache(
    State(app): State<Arc<Handles>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(key) = params.keys().find(|k| *k != "limit") {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {:?}; use limit", clip(key)),
        );
    }
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LISTED,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "limit must be a non-negative integer".into(),
            );
        }
    };
    Json(app.cache.snapshot(limit)).into_response()
}

/// `?table=NAME`, `?fingerprint=ID` or `?all`: exactly one.
pub(super) async fn invalidate(
    State(app): State<Arc<Handles>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let usage = "give exactly one of ?table=NAME, ?fingerprint=ID or ?all";
    if params.len() != 1 {
        return error(StatusCode::BAD_REQUEST, usage.into());
    }
    let Some((key, value)) = params.iter().next() else {
        return error(StatusCode::BAD_REQUEST, usage.into());
    };
    match key.as_str() {
        "all" => app.cache.purge_all(),
        "table" if !value.trim().is_empty() => {
            if let Err(e) = app.cache.purge_table(value.trim()) {
                return error(StatusCode::BAD_REQUEST, e.to_string());
            }
        }
        "fingerprint" => match value.parse::<FingerprintId>() {
            Ok(id) => app.cache.purge_fingerprint(id),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{:?} is not a fingerprint (16 hex digits)", clip(value)),
                );
            }
        },
        _ => return error(StatusCode::BAD_REQUEST, usage.into()),
    }
    // Both are bounded by now (a known key, a checked value), but clipped all the same.
    tracing::info!(key = %clip(key), value = %clip(value), "cache invalidated by admin request");
    Json(json!({ "invalidated": { key: value } })).into_response()
}

/// The cache-wide families of `/metrics`.
pub(super) fn render_cache_metrics(s: &CacheSnapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    family(
        "pgward_cache_size_bytes",
        "gauge",
        "Bytes held by result cache entries",
        s.size_bytes,
    );
    family(
        "pgward_cache_max_size_bytes",
        "gauge",
        "cache.max_size",
        s.max_size_bytes,
    );
    family(
        "pgward_cache_entries",
        "gauge",
        "Result cache entries",
        s.entries,
    );
    family(
        "pgward_cache_fills_in_flight",
        "gauge",
        "Queries running upstream to fill an entry",
        s.fills_in_flight,
    );
    family(
        "pgward_cache_hits_total",
        "counter",
        "Statements answered from the cache (fresh or stale)",
        s.hits,
    );
    family(
        "pgward_cache_misses_total",
        "counter",
        "Cache lookups that found no usable entry",
        s.misses,
    );
    family(
        "pgward_cache_stores_total",
        "counter",
        "Results stored",
        s.stores,
    );
    family(
        "pgward_cache_evictions_total",
        "counter",
        "Entries evicted to stay within cache.max_size",
        s.evictions,
    );
    family(
        "pgward_cache_expirations_total",
        "counter",
        "Entries removed after ttl + stale_for",
        s.expirations,
    );
    family(
        "pgward_cache_invalidations_total",
        "counter",
        "Invalidation events (committed writes seen, admin requests)",
        s.invalidations,
    );
    family(
        "pgward_cache_invalidated_entries_total",
        "counter",
        "Entries dropped because something they read was invalidated",
        s.invalidated_entries,
    );
    family(
        "pgward_cache_discarded_fills_total",
        "counter",
        "Results not stored because a table they read was written while they ran",
        s.discarded_fills,
    );
    out
}
