//! Checks of the two parts of a rule that have the most ways to go wrong: its `match` table
//! (exactly one of query / fingerprint / pattern, each of which must parse, plus filters) and
//! its action (`allow` / `reject` with a message and a well-formed SQLSTATE). Problems go to
//! the shared [`Ctx`]; a `None` result means at least one was reported.

use std::ops::Range;
use std::str::FromStr;

use toml::Spanned;

use super::compile::{Ctx, DEFAULT_SQLSTATE};
use super::rewrite::parse_one;
use super::schema::{RawMatch, RawRule};
use super::{Action, Filters, Matcher};
use crate::fingerprint::{FingerprintId, normalize};

/// One-line form of a regex error (its Display spans several lines).
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.split_whitespace().collect::<Vec<_>>().join(" "),
            str::to_owned,
        )
}

/// The matcher, the filters and (for match.query) the number of values of the example.
pub(super) fn compile_match(
    cx: &mut Ctx<'_>,
    raw: Option<&Spanned<RawMatch>>,
    header: Range<usize>,
    who: Option<&str>,
) -> (Option<Matcher>, Filters, Option<usize>) {
    let Some(m) = raw else {
        cx.report(
            header,
            who,
            "rule has no match: set one of match.query, match.fingerprint, match.pattern",
        );
        return (None, Filters::default(), None);
    };
    let filters = Filters {
        user: m.get_ref().user.as_ref().map(|s| s.get_ref().clone()),
        database: m.get_ref().database.as_ref().map(|s| s.get_ref().clone()),
        application_name: m
            .get_ref()
            .application_name
            .as_ref()
            .map(|s| s.get_ref().clone()),
    };
    let m = m.get_ref();
    let given: Vec<(&str, &Spanned<String>)> = [
        ("query", &m.query),
        ("fingerprint", &m.fingerprint),
        ("pattern", &m.pattern),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v.as_ref()?)))
    .collect();
    let (kind, value) = match given.as_slice() {
        [one] => *one,
        [] => {
            cx.report(
                header,
                who,
                "match needs one of match.query, match.fingerprint, match.pattern",
            );
            return (None, filters, None);
        }
        [(first, _), (second, v), ..] => {
            let msg = format!(
                "match.{first} and match.{second} are both set: a rule matches on exactly one of query, fingerprint, pattern"
            );
            cx.report(v.span(), who, msg);
            return (None, filters, None);
        }
    };
    let text = value.get_ref();
    match kind {
        "query" => match parse_one(text) {
            Ok(()) => {
                let n = normalize(text);
                (
                    Some(Matcher::Fingerprint(n.id)),
                    filters,
                    Some(n.slots.len()),
                )
            }
            Err(e) => {
                cx.report(
                    value.span(),
                    who,
                    format!("match.query does not parse: {e}"),
                );
                (None, filters, None)
            }
        },
        "fingerprint" => match FingerprintId::from_str(text.trim()) {
            Ok(id) => (Some(Matcher::Fingerprint(id)), filters, None),
            Err(e) => {
                cx.report(
                    value.span(),
                    who,
                    format!("match.fingerprint {text:?}: {e} (see `pgward fingerprint \"SQL\"`)"),
                );
                (None, filters, None)
            }
        },
        _ => match regex::Regex::new(text) {
            Ok(re) => (Some(Matcher::Pattern(re)), filters, None),
            Err(e) => {
                cx.report(
                    value.span(),
                    who,
                    format!("match.pattern is not a valid regex: {}", regex_message(&e)),
                );
                (None, filters, None)
            }
        },
    }
}

pub(super) fn compile_action(cx: &mut Ctx<'_>, raw: &RawRule, who: Option<&str>) -> Option<Action> {
    let reject = match raw
        .action
        .as_ref()
        .map(|a| (a.span(), a.get_ref().as_str()))
    {
        None | Some((_, "allow")) => false,
        Some((_, "reject")) => true,
        Some((span, other)) => {
            cx.report(
                span,
                who,
                format!("action must be \"allow\" or \"reject\", not {other:?}"),
            );
            return None;
        }
    };
    if !reject {
        for v in [&raw.message, &raw.sqlstate].into_iter().flatten() {
            cx.report(
                v.span(),
                who,
                "message and sqlstate only apply to action = \"reject\"",
            );
        }
        return Some(Action::Allow);
    }
    let sqlstate = match &raw.sqlstate {
        None => DEFAULT_SQLSTATE.to_owned(),
        Some(s) => {
            let code = s.get_ref();
            if code.len() != 5
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            {
                cx.report(
                    s.span(),
                    who,
                    format!("sqlstate {code:?} must be 5 characters of 0-9 and A-Z"),
                );
                return None;
            }
            code.clone()
        }
    };
    let message = match &raw.message {
        Some(m) => m.get_ref().clone(),
        None => format!(
            "statement rejected by pgward rule \"{}\"",
            who.unwrap_or("")
        ),
    };
    Some(Action::Reject { message, sqlstate })
}
