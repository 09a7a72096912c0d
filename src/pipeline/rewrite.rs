//! The rewrite phase: a rule's rewrite applied to the statement text — each statement of a
//! simple Query that an enforcing rule rewrites, or a Parse (whose parameter types follow the
//! rewritten text). The bytes sent upstream are a new, length-checked frame; everything else
//! is forwarded as the client sent it.

use super::Pipeline;
use super::complete::{Enforced, Event, note};
use super::phases::{Frame, Input};
use crate::fingerprint;
use crate::protocol::frontend::Parse;
use crate::protocol::{MAX_PARAMETERS, build};
use crate::rules::{Mode, Rule};
use crate::stats::FingerprintStats;

impl Pipeline {
    /// Rewrites the statements of a simple Query whose (enforcing) rule has a rewrite; None
    /// when none does.
    pub(super) fn rewrite_phase(&self, frame: &Frame<'_>) -> Option<Vec<u8>> {
        let Input::Query { sql } = frame.input else {
            return None; // an Execute runs what its Parse became
        };
        let statements = &frame.statements;
        if !statements
            .iter()
            .any(|ctx| ctx.rule().is_some_and(|r| r.rewrite.is_some()))
        {
            return None;
        }
        let text = String::from_utf8_lossy(sql);
        let ranges = fingerprint::split_statements_with(&text, self.strings);
        if ranges.len() != statements.len() {
            return None;
        }
        let mut out = String::with_capacity(text.len() + 64);
        let mut copied = 0;
        let mut changed = false;
        for (range, ctx) in ranges.into_iter().zip(statements) {
            let handle = &ctx.handle;
            let Some(rule) = ctx.rule() else {
                continue;
            };
            let Some(rewrite) = &rule.rewrite else {
                continue;
            };
            if rule.mode == Mode::Observe {
                note(handle, Event::Rewritten(Enforced::Observed, rewrite.target));
                continue;
            }
            let Some(original) = text.get(range.clone()) else {
                continue;
            };
            let normalized = fingerprint::normalize_with(original, self.strings);
            out.push_str(text.get(copied..range.start)?);
            out.push_str(&rewrite.apply_to_text(original, &normalized));
            copied = range.end;
            changed = true;
            note(handle, Event::Rewritten(Enforced::Yes, rewrite.target));
        }
        if !changed {
            return None;
        }
        out.push_str(text.get(copied..)?);
        let mut frame = Vec::new();
        build::query(&mut frame, &out)?;
        Some(frame)
    }

    /// The Parse frame a rule's rewrite makes of `parse`, if it has one and enforces.
    pub(super) fn rewrite_parse(
        &self,
        parse: &Parse<'_>,
        rule: &Rule,
        handle: &FingerprintStats,
    ) -> Option<Vec<u8>> {
        let observe = rule.mode == Mode::Observe;
        match &rule.rewrite {
            Some(rewrite) if observe => {
                note(handle, Event::Rewritten(Enforced::Observed, rewrite.target));
                None
            }
            Some(rewrite) => {
                let text = String::from_utf8_lossy(parse.sql);
                let normalized = fingerprint::normalize_with(&text, self.strings);
                let declared: Vec<u32> = (0..usize::from(parse.param_type_count))
                    .map(|i| parse.param_type(i))
                    .collect();
                // `$k` beyond the protocol's limit: PostgreSQL refuses the statement itself, so
                // it goes on unchanged to get that error.
                highest_parameter(&text, &normalized).and_then(|highest| {
                    let referenced = highest.max(declared.len());
                    let (sql, oids) =
                        rewrite.apply_to_parse(&text, &normalized, &declared, referenced);
                    let mut frame = Vec::new();
                    build::parse(&mut frame, parse.statement, &sql, &oids)?;
                    note(handle, Event::Rewritten(Enforced::Yes, rewrite.target));
                    Some(frame)
                })
            }
            None => None,
        }
    }
}

/// The highest `$k` parameter the original statement uses.
/// The highest `$k` among the statement's slots (0 for none); `None` when one is beyond
/// [`MAX_PARAMETERS`] (or too long to be a number at all).
fn highest_parameter(sql: &str, normalized: &fingerprint::Normalized) -> Option<usize> {
    let mut highest = 0;
    for range in &normalized.slots {
        let Some(digits) = sql
            .get(range.clone())
            .and_then(|s| s.strip_prefix('$'))
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue; // a literal, such as a dollar-quoted string
        };
        let k = digits
            .parse::<usize>()
            .ok()
            .filter(|&k| k <= MAX_PARAMETERS)?;
        highest = highest.max(k);
    }
    Some(highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn highest(sql: &str) -> Option<usize> {
        highest_parameter(sql, &fingerprint::normalize(sql))
    }

    #[test]
    fn parameter_numbers_past_the_protocol_limit_are_refused() {
        assert_eq!(highest("select $1, $3, 'x'"), Some(3));
        assert_eq!(highest("select $$dollar$$, 5"), Some(0));
        assert_eq!(highest("select $65535"), Some(MAX_PARAMETERS));
        assert_eq!(highest("select $65536"), None);
        assert_eq!(highest("select $99999999999999"), None);
        assert_eq!(highest("select $999999999999999999999999999999"), None);
    }

    #[test]
    fn parse_frames_carry_at_most_the_protocol_limit_of_types() {
        let mut out = Vec::new();
        assert!(build::parse(&mut out, b"s", "select 1", &vec![0; MAX_PARAMETERS + 1]).is_none());
        assert!(out.is_empty());
        build::parse(&mut out, b"s", "select $1", &[23]).unwrap();
        assert_eq!(out, b"P\0\0\0\x16s\0select $1\0\0\x01\0\0\0\x17");
    }
}
