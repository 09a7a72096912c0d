//! A rule as ops see it (`GET /rules`, the console's `SHOW RULES`): every setting in force,
//! durations in milliseconds, never the compiled internals.

use serde_json::{Value, json};

use super::{Action, Fallback, Invalidate, Matcher, Mode, Refresh, Rule, RuleSet};

/// One rule as ops see it on `GET /rules` and `SHOW RULES`.
pub fn describe(rule: &Rule, set: &RuleSet) -> Value {
    let matcher = match &rule.matcher {
        Matcher::Fingerprint(id) => json!({ "fingerprint": id.to_string() }),
        Matcher::Pattern(regex) => json!({ "pattern": regex.as_str() }),
    };
    let (action, message, sqlstate) = match &rule.action {
        Action::Allow => ("allow", None, None),
        Action::Reject { message, sqlstate } => ("reject", Some(message), Some(sqlstate)),
    };
    json!({
        "name": &*rule.name,
        "line": rule.line,
        "match": matcher,
        "user": rule.filters.user,
        "database": rule.filters.database,
        "application_name": rule.filters.application_name,
        "budget_ms": rule.budget(set).map(|d| d.as_secs_f64() * 1000.0),
        "max_concurrency": rule.max_concurrency,
        "queue_timeout_ms": rule.queue_timeout.as_secs_f64() * 1000.0,
        "limit": rule.limit.and_then(|i| set.limits.get(i)).map(|l| &*l.name),
        "rewrite": rule.rewrite.as_ref().map(|r| json!({ "replacement": r.replacement, "fingerprint": r.target.to_string() })),
        "action": action,
        "message": message,
        "sqlstate": sqlstate,
        "mode": match rule.mode { Mode::Enforce => "enforce", Mode::Observe => "observe" },
        "cache": rule.cache.map(|c| json!({
            "ttl_ms": c.ttl.as_secs_f64() * 1000.0,
            "stale_for_ms": c.stale_for.as_secs_f64() * 1000.0,
            "refresh": match c.refresh { Refresh::Background => "background", Refresh::Blocking => "blocking" },
            "max_entry_size": c.max_entry_size,
            "invalidate": match c.invalidate { Invalidate::OnWrite => "on_write", Invalidate::TtlOnly => "ttl" },
        })),
        "on_budget_exceeded": fallback(rule.on_budget_exceeded),
        "on_upstream_error": fallback(rule.on_upstream_error),
    })
}

fn fallback(f: Fallback) -> &'static str {
    match f {
        Fallback::Error => "error",
        Fallback::ServeStale => "serve_stale",
    }
}
