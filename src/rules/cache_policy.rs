//! Checks of a rule's caching keys: the `cache` table (`ttl` required and above zero,
//! `stale_for`, `refresh`, `max_entry_size`, `invalidate`) and the two fallbacks
//! (`on_budget_exceeded`, `on_upstream_error`), which may only serve stale results from a rule
//! that caches. Problems go to the shared [`Ctx`].

use std::time::Duration;

use toml::Spanned;

use super::compile::Ctx;
use super::schema::RawRule;
use super::{Action, CachePolicy, Fallback, Invalidate, Mode, Refresh};
use crate::units::parse_size;

/// `cache.max_entry_size` when not set.
pub const DEFAULT_MAX_ENTRY_SIZE: u64 = 1024 * 1024;

/// The rule's cache policy and its two fallbacks.
pub(super) fn compile_cache(
    cx: &mut Ctx<'_>,
    raw: &RawRule,
    who: Option<&str>,
    action: Option<&Action>,
    mode: Mode,
) -> (Option<CachePolicy>, Fallback, Fallback) {
    let cache = raw.cache.as_ref().and_then(|c| {
        if matches!(action, Some(Action::Reject { .. })) {
            cx.report(c.span(), who, "a reject rule cannot also cache");
            return None;
        }
        if mode == Mode::Observe {
            cx.report(
                c.span(),
                who,
                "an observe-mode rule cannot cache (it must not change answers)",
            );
            return None;
        }
        let c = c.get_ref();
        let ttl = match &c.ttl {
            Some(t) => match cx.duration(t, "cache.ttl", who) {
                Some(d) if d.is_zero() => {
                    cx.report(t.span(), who, "cache.ttl must be greater than 0");
                    None
                }
                d => d,
            },
            None => None,
        };
        let stale_for = c.stale_for.as_ref().map_or(Some(Duration::ZERO), |s| {
            cx.duration(s, "cache.stale_for", who)
        });
        let refresh = match c.refresh.as_ref().map(|r| (r.span(), r.get_ref().as_str())) {
            None | Some((_, "background")) => Refresh::Background,
            Some((_, "blocking")) => Refresh::Blocking,
            Some((span, other)) => {
                let msg =
                    format!("cache.refresh must be \"background\" or \"blocking\", not {other:?}");
                cx.report(span, who, msg);
                Refresh::Background
            }
        };
        let invalidate = match c
            .invalidate
            .as_ref()
            .map(|r| (r.span(), r.get_ref().as_str()))
        {
            None | Some((_, "on_write")) => Invalidate::OnWrite,
            Some((_, "ttl")) => Invalidate::TtlOnly,
            Some((span, other)) => {
                let msg =
                    format!("cache.invalidate must be \"on_write\" or \"ttl\", not {other:?}");
                cx.report(span, who, msg);
                Invalidate::OnWrite
            }
        };
        let max_entry_size = match &c.max_entry_size {
            None => Some(DEFAULT_MAX_ENTRY_SIZE),
            Some(s) => match parse_size(s.get_ref()) {
                Ok(0) => {
                    cx.report(s.span(), who, "cache.max_entry_size must be greater than 0");
                    None
                }
                Ok(n) => Some(n),
                Err(e) => {
                    cx.report(s.span(), who, format!("cache.max_entry_size: {e}"));
                    None
                }
            },
        };
        if c.ttl.is_none() {
            cx.report(
                raw.cache.as_ref().map_or(0..0, Spanned::span),
                who,
                "cache needs a ttl (cache.ttl = \"60s\")",
            );
        }
        Some(CachePolicy {
            ttl: ttl?,
            stale_for: stale_for?,
            refresh,
            max_entry_size: max_entry_size?,
            invalidate,
        })
    });
    let fallback = |cx: &mut Ctx<'_>, value: &Option<Spanned<String>>, key: &str| {
        let Some(v) = value else {
            return Fallback::Error;
        };
        match v.get_ref().as_str() {
            "error" => Fallback::Error,
            "serve_stale" if raw.cache.is_none() => {
                let msg = format!("{key} = \"serve_stale\" needs a cache table on the rule");
                cx.report(v.span(), who, msg);
                Fallback::Error
            }
            "serve_stale" => Fallback::ServeStale,
            other => {
                let msg = format!("{key} must be \"error\" or \"serve_stale\", not {other:?}");
                cx.report(v.span(), who, msg);
                Fallback::Error
            }
        }
    };
    let on_budget = fallback(cx, &raw.on_budget_exceeded, "on_budget_exceeded");
    let on_error = fallback(cx, &raw.on_upstream_error, "on_upstream_error");
    (cache, on_budget, on_error)
}
