//! `[[protect]]` tables: traffic that must stay fast — a rule's statements, or every statement
//! of an `application_name` — with its p99 objective over a sliding window. Compiled after the
//! rules, since a protect names one.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::compile::Ctx;
use super::schema::{PROTECT_KEYS, RawProtect};
use super::{ProtectSpec, Protected, RuleSet};

/// Default `window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5);
const MIN_P99: Duration = Duration::from_micros(100);
const MAX_P99: Duration = Duration::from_secs(60);
const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(60);

pub(super) fn compile_protect(cx: &mut Ctx<'_>, value: &Spanned<DeValue<'_>>, set: &mut RuleSet) {
    let DeValue::Array(items) = value.get_ref() else {
        cx.report(
            value.span(),
            None,
            "`protect` must be an array of tables: write each one as [[protect]]",
        );
        return;
    };
    for item in items.iter() {
        if let Some(spec) = compile_one(cx, item, set) {
            if set.protect.iter().any(|p| p.name == spec.name) {
                let msg = format!("{} is protected twice", spec.name);
                cx.report(item.span(), None, msg);
                continue;
            }
            set.protect.push(spec);
        }
    }
}

fn compile_one(
    cx: &mut Ctx<'_>,
    item: &Spanned<DeValue<'_>>,
    set: &RuleSet,
) -> Option<ProtectSpec> {
    if let DeValue::Table(t) = item.get_ref()
        && !cx.unknown_keys(t, PROTECT_KEYS, "[[protect]]", None)
    {
        return None;
    }
    let raw = match RawProtect::deserialize(ValueDeserializer::from(item.clone())) {
        Ok(raw) => raw,
        Err(e) => {
            cx.report(
                e.span().unwrap_or(item.span()),
                None,
                format!("[[protect]]: {}", e.message()),
            );
            return None;
        }
    };
    let before = cx.problems.len();
    let traffic = match (&raw.rule, &raw.application_name) {
        (Some(rule), None) => {
            let index = set.rules.iter().position(|r| *r.name == **rule.get_ref());
            if index.is_none() {
                let msg = format!("[[protect]]: rule {:?} is not defined", rule.get_ref());
                cx.report(rule.span(), None, msg);
            }
            index.map(Protected::Rule)
        }
        (None, Some(app)) if !app.get_ref().is_empty() => {
            Some(Protected::ApplicationName(app.get_ref().clone()))
        }
        _ => {
            let msg = "[[protect]] needs exactly one of rule = \"<rule name>\" or application_name = \"...\"";
            cx.report(item.span(), None, msg);
            None
        }
    };
    let p99 = match &raw.p99 {
        Some(p) => bounded(cx, p, "p99", MIN_P99, MAX_P99, "100us and 60s"),
        None => {
            cx.report(
                item.span(),
                None,
                "[[protect]] needs its objective: p99 = \"20ms\"",
            );
            None
        }
    };
    let window = match &raw.window {
        Some(w) => bounded(cx, w, "window", MIN_WINDOW, MAX_WINDOW, "1s and 60s"),
        None => Some(DEFAULT_WINDOW),
    };
    if cx.problems.len() > before {
        return None;
    }
    let traffic = traffic?;
    let name = match &traffic {
        Protected::Rule(i) => format!("rule:{}", set.rules.get(*i).map_or("", |r| &*r.name)),
        Protected::ApplicationName(app) => format!("application_name:{app}"),
    };
    Some(ProtectSpec {
        name: Arc::from(name),
        traffic,
        p99: p99?,
        window: window?,
    })
}

fn bounded(
    cx: &mut Ctx<'_>,
    value: &Spanned<String>,
    key: &str,
    min: Duration,
    max: Duration,
    range: &str,
) -> Option<Duration> {
    let d = cx.duration(value, key, None)?;
    if !(min..=max).contains(&d) {
        cx.report(
            value.span(),
            None,
            format!("[[protect]]: {key} must be between {range}"),
        );
        return None;
    }
    Some(d)
}
