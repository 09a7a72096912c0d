//! Admin routes and their JSON error shape (`{"error": "..."}` with a 4xx/5xx status).
//! Everything but `/healthz` and the dashboard page (`/`) sits behind the optional token.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::Handles;
use super::guard::{Guard, check_request};
use super::{cache_routes, clip};
use crate::fingerprint::FingerprintId;
use crate::secret::constant_time_eq;
use crate::stats::SortKey;
use crate::stats::{Window, WindowStats};

const DEFAULT_LIMIT: usize = 100;

pub fn router(app: Arc<Handles>, guard: Arc<Guard>) -> Router {
    let guarded = Router::new()
        .route("/stats/queries", get(list_queries))
        .route("/stats/queries/{fingerprint}", get(one_query))
        .route("/stats/reset", post(reset))
        .route("/metrics", get(super::metrics::metrics))
        .route("/rules", get(rules))
        .route("/rules/reload", post(reload_rules))
        .route("/cache", get(cache_routes::cache))
        .route("/cache/invalidate", post(cache_routes::invalidate))
        .route("/sessions", get(sessions))
        .route("/sessions/{id}/terminate", post(terminate_session))
        .route("/pools", get(super::pools::pools))
        .route_layer(middleware::from_fn_with_state(guard.clone(), require_token));
    // Unguarded: /healthz for probes, and the dashboard page, which holds no data (its script
    // calls the guarded endpoints with the token from the page URL).
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(super::dashboard::page))
        .merge(guarded)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here".into(),
            )
        })
        .with_state(app)
        // Outermost: a foreign Host or a cross-site POST is refused before anything else.
        .layer(middleware::from_fn_with_state(guard, check_request))
}

pub(super) fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn require_token(
    State(guard): State<Arc<Guard>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &guard.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            );
        }
    }
    next.run(request).await
}

async fn list_queries(
    State(app): State<Arc<Handles>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    for key in params.keys() {
        if !["sort", "limit", "window"].contains(&key.as_str()) {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown parameter {:?}; use sort, limit and window",
                    clip(key)
                ),
            );
        }
    }
    let sort = match params.get("sort").map(|s| s.parse::<SortKey>()) {
        None => SortKey::TotalExecTime,
        Some(Ok(sort)) => sort,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let limit = match params.get("limit").map(|s| s.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) => limit,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "limit must be a non-negative integer".into(),
            );
        }
    };
    let window = match params.get("window").map(|w| Window::parse(w)) {
        None => None,
        Some(Some(window)) => Some(window),
        Some(None) => {
            return error(StatusCode::BAD_REQUEST, "window must be 1m or 5m".into());
        }
    };
    let snapshot = app.stats.snapshot();
    let queries = match window {
        None => json!(snapshot.sorted(sort, limit)),
        Some(window) => json!(windowed(&app, &snapshot, window, sort, limit)),
    };
    Json(
        json!({ "proxy": snapshot.proxy, "stats_reset": snapshot.stats_reset, "queries": queries }),
    )
    .into_response()
}

/// The fingerprints that ran in the last `window`, each with its `window` statistics, sorted
/// by the window's values (`mean_exec_time`: the window's total over its calls).
fn windowed(
    app: &Handles,
    snapshot: &crate::stats::Snapshot,
    window: Window,
    sort: SortKey,
    limit: usize,
) -> Vec<Value> {
    let mut rows: Vec<(&crate::stats::FingerprintSnapshot, WindowStats)> = snapshot
        .fingerprints
        .iter()
        .filter_map(|fp| {
            let stats = app.stats.existing(fp.id)?.window(window);
            (stats.calls > 0).then_some((fp, stats))
        })
        .collect();
    let key = |w: &WindowStats| match sort {
        SortKey::TotalExecTime => w.total_exec_time,
        SortKey::Calls => w.calls as f64,
        SortKey::MeanExecTime => w.total_exec_time / w.calls.max(1) as f64,
        SortKey::P99ExecTime => w.p99_exec_time.unwrap_or(0.0),
        SortKey::Errors => w.errors as f64,
    };
    rows.sort_by(|(a, wa), (b, wb)| key(wb).total_cmp(&key(wa)).then_with(|| a.id.cmp(&b.id)));
    rows.truncate(limit);
    rows.into_iter()
        .map(|(fp, stats)| {
            let mut row = json!(fp);
            row["window"] = json!(stats);
            row
        })
        .collect()
}

async fn one_query(State(app): State<Arc<Handles>>, Path(fingerprint): Path<String>) -> Response {
    let Ok(id) = fingerprint.parse::<FingerprintId>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{:?} is not a fingerprint (16 hex digits)",
                clip(&fingerprint)
            ),
        );
    };
    match app.stats.get(id) {
        Some(query) => Json(query).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no stats for fingerprint {id}"),
        ),
    }
}

async fn reset(State(app): State<Arc<Handles>>) -> Response {
    app.stats.reset();
    Json(json!({ "reset": true })).into_response()
}

/// The rules in force and the state of reloading.
async fn rules(State(app): State<Arc<Handles>>) -> Response {
    let active = app.rules.snapshot();
    let mut outcomes = app.stats.snapshot().by_rule();
    let rules: Vec<Value> = active
        .set
        .rules
        .iter()
        .map(|rule| {
            let mut described = crate::rules::describe(rule, &active.set);
            described["stats"] = json!(outcomes.remove(&*rule.name).unwrap_or_default());
            described
        })
        .collect();
    let now = std::time::Instant::now();
    let limits = crate::limits::states(&active.shared_limits, now);
    Json(json!({
        "status": app.rules.status(),
        "default_budget": active.set.default_budget.map(|d| d.as_secs_f64() * 1000.0),
        "cancel_grace": active.set.cancel_grace.as_secs_f64() * 1000.0,
        "rules": rules,
        "limits": limits,
        "protection": protection(&active, now),
    }))
    .into_response()
}

/// The protected objectives as they stand, and what the controller did last.
fn protection(active: &crate::reload::ActiveRules, now: std::time::Instant) -> Value {
    let p = &active.protection;
    let objectives: Vec<Value> = p
        .objectives
        .iter()
        .map(|o| {
            let seen = o.observe(now);
            json!({
                "name": &*o.name,
                "p99_objective_ms": o.p99.as_secs_f64() * 1000.0,
                "window_ms": o.window.as_secs_f64() * 1000.0,
                "p99_ms": seen.p99.map(|d| d.as_secs_f64() * 1000.0),
                "samples": seen.samples,
            })
        })
        .collect();
    let yielding: Vec<&str> = p.yielding().map(|l| &*l.name).collect();
    json!({
        "objectives": objectives,
        "factor_permille": p.factor(),
        "yielding_limits": yielding,
        "last_change": p.last_change(),
    })
}

async fn reload_rules(State(app): State<Arc<Handles>>) -> Response {
    match app.rules.reload() {
        Ok(changed) => Json(json!({ "reloaded": true, "changed": changed, "status": app.rules.status() })).into_response(),
        Err(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "rules file rejected; the previous rules stay in force", "problems": problems })),
        )
            .into_response(),
    }
}

/// Every client session (`SHOW SESSIONS` in the console lists the same rows).
async fn sessions(State(app): State<Arc<Handles>>) -> Response {
    Json(json!({ "sessions": app.sessions.list() })).into_response()
}

/// Ends a session as `KILL` does: its client gets 57P01 and what it runs is cancelled.
async fn terminate_session(State(app): State<Arc<Handles>>, Path(id): Path<String>) -> Response {
    let Ok(number) = id.parse::<u64>() else {
        let message = format!("{:?} is not a session id", clip(&id));
        return error(StatusCode::BAD_REQUEST, message);
    };
    if !app.sessions.terminate(number) {
        return error(StatusCode::NOT_FOUND, format!("no session {number}"));
    }
    tracing::info!(session = number, "session terminated by admin request");
    Json(json!({ "terminated": number })).into_response()
}

/// 200 when the upstream accepts a connection and answers an SSLRequest like a PostgreSQL
/// server; 503 with the reason otherwise.
async fn healthz(State(app): State<Arc<Handles>>) -> Response {
    let result = super::metrics::probe_upstream(&app.upstream).await;
    let upstream = app.upstream.address();
    match result {
        Ok(()) => Json(json!({ "status": "ok", "upstream": upstream })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "upstream": upstream, "reason": reason })),
        )
            .into_response(),
    }
}
