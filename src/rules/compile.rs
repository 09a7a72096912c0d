//! rules.toml text -> [`RuleSet`]: parse the TOML into spanned values, check every key and
//! value, and collect *all* problems (each with its line, column and rule name) before giving
//! up, so that one `pgward check` run lists everything a DBA has to fix. Only a file without
//! a single problem compiles.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::cache_policy::compile_cache;
use super::fields::{compile_action, compile_match};
use super::limits::{compile_limits, resolve_limit};
use super::protect::compile_protect;
use super::rewrite::Rewrite;
use super::schema::{
    CACHE_KEYS, DEFAULTS_KEYS, MATCH_KEYS, RULE_KEYS, RawDefaults, RawRule, TOP_KEYS,
};
use super::{Action, Budget, LimitSpec, Mode, Problem, Rule, RuleSet};
use crate::units::parse_duration;

/// Default `cancel_grace`.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(1);
/// Largest `max_concurrency`: far above any PostgreSQL's `max_connections`, and far below what
/// a semaphore can hold (a larger count panicked the reload).
pub const MAX_CONCURRENCY: usize = 100_000;

/// Default `queue_timeout` of a rule with `max_concurrency`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `sqlstate` of a reject rule (insufficient_privilege).
pub const DEFAULT_SQLSTATE: &str = "42501";

/// Collects problems against the file text.
pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
}

impl Ctx<'_> {
    pub(super) fn report(
        &mut self,
        span: Range<usize>,
        rule: Option<&str>,
        message: impl Into<String>,
    ) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            rule: rule.map(str::to_owned),
            message: message.into(),
        });
    }

    pub(super) fn unknown_keys(
        &mut self,
        table: &DeTable<'_>,
        known: &[&str],
        what: &str,
        rule: Option<&str>,
    ) -> bool {
        let mut clean = true;
        for key in table.keys() {
            if !known.contains(&key.get_ref().as_ref()) {
                clean = false;
                let msg = format!(
                    "unknown key `{}` in {what} (expected one of: {})",
                    key.get_ref(),
                    known.join(", ")
                );
                self.report(key.span(), rule, msg);
            }
        }
        clean
    }

    pub(super) fn duration(
        &mut self,
        v: &Spanned<String>,
        key: &str,
        rule: Option<&str>,
    ) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.report(v.span(), rule, format!("{key}: {e}"));
                None
            }
        }
    }

    /// A `max_concurrency`: 1..=[`MAX_CONCURRENCY`]. `key` is how messages name it.
    pub(super) fn concurrency(
        &mut self,
        value: &Spanned<i64>,
        key: &str,
        rule: Option<&str>,
    ) -> Option<usize> {
        match usize::try_from(*value.get_ref()) {
            Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Some(n),
            _ => {
                let msg = format!(
                    "{key} must be 1..={MAX_CONCURRENCY} (got {})",
                    value.get_ref()
                );
                self.report(value.span(), rule, msg);
                None
            }
        }
    }

    /// A budget: "off" or a duration greater than zero.
    fn budget(&mut self, v: &Spanned<String>, key: &str, rule: Option<&str>) -> Option<Budget> {
        if v.get_ref().trim() == "off" {
            return Some(Budget::Off);
        }
        let d = self.duration(v, key, rule)?;
        if d.is_zero() {
            self.report(
                v.span(),
                rule,
                format!("{key} must be greater than 0 (write \"off\" to disable)"),
            );
            return None;
        }
        Some(Budget::Limit(d))
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (before.matches('\n').count() + 1, column)
}

/// Parses and checks rules text; every problem found, sorted by position, on failure.
pub(super) fn compile(text: &str) -> Result<RuleSet, Vec<Problem>> {
    let mut cx = Ctx {
        text,
        problems: Vec::new(),
    };
    let root = match DeTable::parse(text) {
        Ok(root) => root.into_inner(),
        Err(e) => {
            cx.report(
                e.span().unwrap_or(0..0),
                None,
                e.message().trim().to_owned(),
            );
            return Err(cx.problems);
        }
    };
    cx.unknown_keys(&root, TOP_KEYS, "the file", None);
    let mut set = RuleSet::empty();
    set.source_hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
    if let Some(defaults) = root.get("defaults") {
        compile_defaults(&mut cx, defaults.clone(), &mut set);
    }
    if let Some(limits) = root.get("limits") {
        compile_limits(&mut cx, limits, &mut set);
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    match root.get("rule").map(|v| (v.span(), v.get_ref())) {
        None => {}
        Some((_, DeValue::Array(rules))) => {
            for raw in rules.iter() {
                if let Some(name) = raw.get_ref().get("name") {
                    let line = line_col(text, raw.span().start).0;
                    if let Some(n) = name.get_ref().as_str().filter(|n| !n.trim().is_empty()) {
                        match names.get(n) {
                            Some(first) => {
                                let msg = format!(
                                    "duplicate rule name (first used by the rule on line {first})"
                                );
                                cx.report(name.span(), Some(n), msg);
                            }
                            None => {
                                names.insert(n.to_owned(), line);
                            }
                        }
                    }
                }
                let limits = &set.limits;
                let rule = compile_rule(&mut cx, raw.clone(), limits);
                set.rules.extend(rule);
            }
        }
        Some((span, _)) => cx.report(
            span,
            None,
            "`rule` must be an array of tables: write each rule as [[rule]]",
        ),
    }
    if let Some(protect) = root.get("protect") {
        compile_protect(&mut cx, protect, &mut set);
    }
    if cx.problems.is_empty() {
        Ok(set)
    } else {
        cx.problems.sort_by_key(|p| (p.line, p.column));
        Err(cx.problems)
    }
}

fn compile_defaults(cx: &mut Ctx<'_>, value: Spanned<DeValue<'_>>, set: &mut RuleSet) {
    if let DeValue::Table(t) = value.get_ref()
        && !cx.unknown_keys(t, DEFAULTS_KEYS, "[defaults]", None)
    {
        return;
    }
    let raw = match RawDefaults::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(raw) => raw,
        Err(e) => {
            cx.report(
                e.span().unwrap_or(value.span()),
                None,
                format!("[defaults]: {}", e.message()),
            );
            return;
        }
    };
    if let Some(b) = &raw.budget {
        set.default_budget = match cx.budget(b, "budget", None) {
            Some(Budget::Limit(d)) => Some(d),
            _ => None,
        };
    }
    if let Some(g) = &raw.cancel_grace
        && let Some(d) = cx.duration(g, "cancel_grace", None)
    {
        set.cancel_grace = d;
    }
}

/// The key (`budget`, `match.user`) whose value has this span, for serde's messages.
fn key_at(value: &DeValue<'_>, span: &Range<usize>) -> Option<String> {
    let DeValue::Table(t) = value else {
        return None;
    };
    t.iter().find_map(|(k, v)| {
        if v.span() == *span {
            return Some(k.get_ref().to_string());
        }
        key_at(v.get_ref(), span).map(|inner| format!("{}.{inner}", k.get_ref()))
    })
}

/// serde's message in the words of the file.
fn serde_message(message: &str) -> String {
    message
        .replace("struct RawMatch", "a table (match.query = \"...\")")
        .replace("expected i64", "expected an integer")
        .replace("struct RawCache", "a table (cache.ttl = \"60s\")")
}

/// The rule's name as written, for messages about a rule that did not deserialize.
fn peek_name(value: &DeValue<'_>) -> Option<String> {
    value.get("name")?.get_ref().as_str().map(str::to_owned)
}

fn compile_rule(
    cx: &mut Ctx<'_>,
    value: Spanned<DeValue<'_>>,
    limits: &[LimitSpec],
) -> Option<Rule> {
    let header = value.span();
    let peeked = peek_name(value.get_ref());
    let who = peeked.as_deref();
    if let DeValue::Table(t) = value.get_ref() {
        let mut clean = cx.unknown_keys(t, RULE_KEYS, "[[rule]]", who);
        if let Some(DeValue::Table(m)) = t.get("match").map(Spanned::get_ref) {
            clean &= cx.unknown_keys(m, MATCH_KEYS, "match", who);
        }
        if let Some(DeValue::Table(c)) = t.get("cache").map(Spanned::get_ref) {
            clean &= cx.unknown_keys(c, CACHE_KEYS, "cache", who);
        }
        if !clean {
            return None;
        }
    }
    let keyed = value.clone();
    let raw = match RawRule::deserialize(ValueDeserializer::from(value)) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(header);
            let message = serde_message(e.message());
            let message = match key_at(keyed.get_ref(), &span) {
                Some(key) => format!("{key}: {message}"),
                None => message,
            };
            cx.report(span, who, message);
            return None;
        }
    };
    let before = cx.problems.len();
    let name = match &raw.name {
        Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().clone(),
        Some(n) => {
            cx.report(n.span(), None, "rule name must not be empty");
            String::new()
        }
        None => {
            cx.report(header.clone(), None, "rule has no `name`");
            String::new()
        }
    };
    let who = (!name.is_empty()).then_some(name.as_str());
    let (matcher, filters, slots) = compile_match(cx, raw.matcher.as_ref(), header.clone(), who);
    let budget = match &raw.budget {
        Some(b) => cx.budget(b, "budget", who).unwrap_or(Budget::Inherit),
        None => Budget::Inherit,
    };
    let max_concurrency = raw
        .max_concurrency
        .as_ref()
        .and_then(|m| cx.concurrency(m, "max_concurrency", who));
    let queue_timeout = match &raw.queue_timeout {
        Some(q) if raw.max_concurrency.is_none() => {
            cx.report(
                q.span(),
                who,
                "queue_timeout only applies together with max_concurrency",
            );
            DEFAULT_QUEUE_TIMEOUT
        }
        Some(q) => cx
            .duration(q, "queue_timeout", who)
            .unwrap_or(DEFAULT_QUEUE_TIMEOUT),
        None => DEFAULT_QUEUE_TIMEOUT,
    };
    let limit = raw
        .limit
        .as_ref()
        .and_then(|l| resolve_limit(cx, l, raw.max_concurrency.is_some(), limits, who));
    let action = compile_action(cx, &raw, who);
    let mode = match raw.mode.as_ref().map(|m| (m.span(), m.get_ref().as_str())) {
        None | Some((_, "enforce")) => Mode::Enforce,
        Some((_, "observe")) => Mode::Observe,
        Some((span, other)) => {
            cx.report(
                span,
                who,
                format!("mode must be \"enforce\" or \"observe\", not {other:?}"),
            );
            Mode::Enforce
        }
    };
    let rewrite = raw.rewrite.as_ref().and_then(|r| {
        let refuse = if matches!(action, Some(Action::Reject { .. })) {
            Some("a reject rule cannot also rewrite")
        } else if raw.matcher.as_ref().is_some_and(|m| m.get_ref().query.is_none()) {
            Some("rewrite needs match.query: with match.fingerprint or match.pattern pgward cannot check which $k the statement has")
        } else {
            None
        };
        if let Some(msg) = refuse {
            cx.report(r.span(), who, msg);
            return None;
        }
        Rewrite::compile(r.get_ref(), slots?).map_err(|e| cx.report(r.span(), who, e)).ok()
    });
    let (cache, on_budget_exceeded, on_upstream_error) =
        compile_cache(cx, &raw, who, action.as_ref(), mode);
    if cx.problems.len() > before {
        return None;
    }
    Some(Rule {
        name: Arc::from(name),
        line: line_col(cx.text, header.start).0,
        matcher: matcher?,
        filters,
        budget,
        max_concurrency,
        queue_timeout,
        limit,
        rewrite,
        action: action?,
        mode,
        cache,
        on_budget_exceeded,
        on_upstream_error,
    })
}
