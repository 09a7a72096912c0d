//! `[limits.<name>]` tables: bulkheads several rules share — a concurrency cap and/or a
//! database-time budget (`max_db_time = "250ms/s"`, a token bucket of upstream execution time
//! with `db_time_burst` as its size) — checked like every other value, with every problem
//! reported at its line. Rules name a limit with `limit = "<name>"`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::compile::{Ctx, DEFAULT_QUEUE_TIMEOUT};
use super::schema::{LIMIT_KEYS, RawLimit};
use super::{DbTimeSpec, LimitSpec, RuleSet};

/// Smallest database-time rate or burst: below a millisecond a limit admits nothing useful.
pub const MIN_DB_TIME: Duration = Duration::from_millis(1);
/// Largest rate: 64 seconds of execution per second is 64 busy cores, more than any one
/// PostgreSQL server this is meant to protect.
pub const MAX_DB_TIME_RATE: Duration = Duration::from_secs(64);
/// Largest burst.
pub const MAX_DB_TIME_BURST: Duration = Duration::from_secs(60);

/// Compiles the `limits` table into `set.limits` (sorted by name, so indexes are stable for
/// one file).
pub(super) fn compile_limits(cx: &mut Ctx<'_>, value: &Spanned<DeValue<'_>>, set: &mut RuleSet) {
    let DeValue::Table(table) = value.get_ref() else {
        cx.report(
            value.span(),
            None,
            "`limits` must be a table of tables: write each one as [limits.<name>]",
        );
        return;
    };
    for (key, limit) in table.iter() {
        let name = key.get_ref().to_string();
        if name.trim().is_empty() {
            cx.report(key.span(), None, "a limit's name must not be empty");
            continue;
        }
        if let Some(spec) = compile_limit(cx, &name, limit) {
            set.limits.push(spec);
        }
    }
    set.limits.sort_by(|a, b| a.name.cmp(&b.name));
}

fn compile_limit(cx: &mut Ctx<'_>, name: &str, value: &Spanned<DeValue<'_>>) -> Option<LimitSpec> {
    let what = format!("[limits.{name}]");
    match value.get_ref() {
        DeValue::Table(t) => {
            if !cx.unknown_keys(t, LIMIT_KEYS, &what, None) {
                return None;
            }
        }
        _ => {
            cx.report(value.span(), None, format!("{what} must be a table"));
            return None;
        }
    }
    let raw = match RawLimit::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(raw) => raw,
        Err(e) => {
            let message = e.message().replace("expected i64", "expected an integer");
            cx.report(
                e.span().unwrap_or(value.span()),
                None,
                format!("{what}: {message}"),
            );
            return None;
        }
    };
    let before = cx.problems.len();
    let key = format!("{what}: max_concurrency");
    let max_concurrency = raw
        .max_concurrency
        .as_ref()
        .and_then(|m| cx.concurrency(m, &key, None));
    let queue_timeout = match &raw.queue_timeout {
        Some(q) => cx
            .duration(q, "queue_timeout", None)
            .unwrap_or(DEFAULT_QUEUE_TIMEOUT),
        None => DEFAULT_QUEUE_TIMEOUT,
    };
    let per_second = raw.max_db_time.as_ref().and_then(|r| rate(cx, r, &what));
    let burst = match (&raw.db_time_burst, per_second) {
        (Some(b), Some(_)) => bounded(cx, b, "db_time_burst", MAX_DB_TIME_BURST, &what),
        (Some(b), None) => {
            cx.report(
                b.span(),
                None,
                format!("{what}: db_time_burst only applies together with max_db_time"),
            );
            None
        }
        // One second's worth: a limit that was idle may spend what one second brings at once.
        (None, Some(rate)) => Some(rate.min(MAX_DB_TIME_BURST)),
        (None, None) => None,
    };
    if raw.max_concurrency.is_none() && raw.max_db_time.is_none() {
        cx.report(
            value.span(),
            None,
            format!("{what} limits nothing: give it max_concurrency and/or max_db_time"),
        );
    }
    if cx.problems.len() > before {
        return None;
    }
    Some(LimitSpec {
        name: Arc::from(name),
        max_concurrency,
        queue_timeout,
        db_time: per_second
            .zip(burst)
            .map(|(per_second, burst)| DbTimeSpec { per_second, burst }),
    })
}

/// A rule's `limit = "<name>"`: the index of that `[limits.<name>]`, which must exist; a rule
/// with its own `max_concurrency` cannot also name one.
pub(super) fn resolve_limit(
    cx: &mut Ctx<'_>,
    name: &Spanned<String>,
    own_cap: bool,
    limits: &[LimitSpec],
    rule: Option<&str>,
) -> Option<usize> {
    if own_cap {
        let msg = "a rule has either its own max_concurrency or a shared limit, not both";
        cx.report(name.span(), rule, msg);
        return None;
    }
    let index = limits.iter().position(|s| *s.name == **name.get_ref());
    if index.is_none() {
        let known: Vec<&str> = limits.iter().map(|s| &*s.name).collect();
        let defined = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        let msg = format!(
            "limit {:?} is not defined (defined: {defined}); add a [limits.{}] table",
            name.get_ref(),
            name.get_ref()
        );
        cx.report(name.span(), rule, msg);
    }
    index
}

/// `max_db_time`: `<duration>/<duration>` (`"250ms/s"`, `"1s/2s"`), as database time per
/// second of wall time.
fn rate(cx: &mut Ctx<'_>, value: &Spanned<String>, what: &str) -> Option<Duration> {
    let text = value.get_ref();
    let Some((time, per)) = text.split_once('/') else {
        cx.report(value.span(), None, format!("{what}: max_db_time must be database time per wall time, like \"250ms/s\" (got {text:?})"));
        return None;
    };
    let per = match per.trim() {
        "s" => Some(Duration::from_secs(1)),
        other => crate::units::parse_duration(other)
            .ok()
            .filter(|d| !d.is_zero()),
    };
    let (Ok(time), Some(per)) = (crate::units::parse_duration(time), per) else {
        cx.report(value.span(), None, format!("{what}: max_db_time: cannot read {text:?} as database time per wall time, like \"250ms/s\""));
        return None;
    };
    let per_second = Duration::from_secs_f64(time.as_secs_f64() / per.as_secs_f64());
    if !(MIN_DB_TIME..=MAX_DB_TIME_RATE).contains(&per_second) {
        let msg = format!(
            "{what}: max_db_time must be between 1ms/s and 64s/s (got {text:?}, {}ms per second)",
            per_second.as_millis()
        );
        cx.report(value.span(), None, msg);
        return None;
    }
    Some(per_second)
}

fn bounded(
    cx: &mut Ctx<'_>,
    value: &Spanned<String>,
    key: &str,
    max: Duration,
    what: &str,
) -> Option<Duration> {
    let d = cx.duration(value, key, None)?;
    if !(MIN_DB_TIME..=max).contains(&d) {
        let msg = format!("{what}: {key} must be between 1ms and {}s", max.as_secs());
        cx.report(value.span(), None, msg);
        return None;
    }
    Some(d)
}
