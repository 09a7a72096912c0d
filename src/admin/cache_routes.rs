//! Admin routes of the result cache: `GET /cache` (size, counters, the largest and hottest
//! entries by fingerprint, never values), `POST /cache/invalidate` (for writes that bypass
//! pgward). The cache-wide families of `/metrics` are in `metrics.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Handles;
use super::clip;
use super::routes::error;
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
