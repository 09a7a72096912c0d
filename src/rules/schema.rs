//! The shape of rules.toml as serde sees it: a `[defaults]` table and an array of `[[rule]]`
//! tables, every value kept as written (strings for durations, actions and modes) together with
//! its byte span, so that [`super::compile`] can check each value itself, report every problem
//! at once and point each one at its line and column. Unknown keys are refused both here
//! (`deny_unknown_fields`) and, earlier and all at once, by the key lists below.

use serde::Deserialize;
use toml::Spanned;

/// Keys allowed at the top of the file.
pub(super) const TOP_KEYS: &[&str] = &["defaults", "limits", "protect", "rule"];
/// Keys allowed in a `[[protect]]` table.
pub(super) const PROTECT_KEYS: &[&str] = &["rule", "application_name", "p99", "window"];
/// Keys allowed in a `[limits.<name>]` table.
pub(super) const LIMIT_KEYS: &[&str] = &[
    "max_concurrency",
    "queue_timeout",
    "max_db_time",
    "db_time_burst",
];
/// Keys allowed in `[defaults]`.
pub(super) const DEFAULTS_KEYS: &[&str] = &["budget", "cancel_grace"];
/// Keys allowed in a `[[rule]]` table.
pub(super) const RULE_KEYS: &[&str] = &[
    "name",
    "match",
    "budget",
    "max_concurrency",
    "queue_timeout",
    "limit",
    "rewrite",
    "action",
    "message",
    "sqlstate",
    "mode",
    "cache",
    "on_budget_exceeded",
    "on_upstream_error",
];
/// Keys allowed in a rule's `cache` table.
pub(super) const CACHE_KEYS: &[&str] = &[
    "ttl",
    "stale_for",
    "refresh",
    "max_entry_size",
    "invalidate",
];
/// Keys allowed in a rule's `match` table.
pub(super) const MATCH_KEYS: &[&str] = &[
    "query",
    "fingerprint",
    "pattern",
    "user",
    "database",
    "application_name",
];

/// `[defaults]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    /// Budget of every statement no rule gives its own: a duration or "off".
    pub budget: Option<Spanned<String>>,
    /// How long a cancelled statement may take to stop before the connection is closed.
    pub cancel_grace: Option<Spanned<String>>,
}

/// One `[[rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<RawMatch>>,
    pub budget: Option<Spanned<String>>,
    pub max_concurrency: Option<Spanned<i64>>,
    pub queue_timeout: Option<Spanned<String>>,
    /// The name of a `[limits.<name>]` this rule's statements count against.
    pub limit: Option<Spanned<String>>,
    pub rewrite: Option<Spanned<String>>,
    pub action: Option<Spanned<String>>,
    pub message: Option<Spanned<String>>,
    pub sqlstate: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub cache: Option<Spanned<RawCache>>,
    pub on_budget_exceeded: Option<Spanned<String>>,
    pub on_upstream_error: Option<Spanned<String>>,
}

/// One `[limits.<name>]`: a bulkhead several rules share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    pub max_concurrency: Option<Spanned<i64>>,
    pub queue_timeout: Option<Spanned<String>>,
    /// Database time per wall time: `"250ms/s"`.
    pub max_db_time: Option<Spanned<String>>,
    pub db_time_burst: Option<Spanned<String>>,
}

/// One `[[protect]]`: traffic whose latency objective the other traffic's limits give way to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProtect {
    pub rule: Option<Spanned<String>>,
    pub application_name: Option<Spanned<String>>,
    pub p99: Option<Spanned<String>>,
    pub window: Option<Spanned<String>>,
}

/// A rule's `cache` table: how long its results are fresh and usable.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub ttl: Option<Spanned<String>>,
    pub stale_for: Option<Spanned<String>>,
    pub refresh: Option<Spanned<String>>,
    pub max_entry_size: Option<Spanned<String>>,
    pub invalidate: Option<Spanned<String>>,
}

/// A rule's `match` table: one of query / fingerprint / pattern, plus optional filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    pub query: Option<Spanned<String>>,
    pub fingerprint: Option<Spanned<String>>,
    pub pattern: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub database: Option<Spanned<String>>,
    pub application_name: Option<Spanned<String>>,
}
