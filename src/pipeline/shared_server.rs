//! Transaction mode's refusals: statements whose effect outlives the transaction on a server
//! connection the next client gets (LISTEN, SQL-level PREPARE and DEALLOCATE of one name,
//! cursors WITH HOLD, temporary tables that survive the commit, session-level advisory locks,
//! a SET inside a multi-statement query) are answered 0A000 naming transaction mode, never run
//! silently wrong. What pgward carries instead (SET alone, DEALLOCATE ALL, DISCARD ALL) is in
//! `server::pooled`; docs/pooling.md lists each.

use super::replies::Raised;
use super::{Fingerprinted, Pipeline};
use crate::protocol::build::Severity;
use crate::protocol::sqlstate;

/// The session feature a statement (its normalized text) uses that transaction mode cannot
/// give it, if any; `alone` is false for one statement of several in a simple Query.
pub(super) fn refusal(normalized: &str, alone: bool) -> Option<&'static str> {
    let mut words = normalized.split_ascii_whitespace();
    let first = words.next()?;
    let is = |w: &str, expected: &str| w.eq_ignore_ascii_case(expected);
    let rest: Vec<&str> = words.take(8).collect();
    let has = |expected: &str| rest.iter().any(|w| is(w, expected));
    if is(first, "LISTEN") {
        return Some("LISTEN");
    }
    if is(first, "PREPARE") {
        return Some("SQL-level PREPARE (use the protocol's prepared statements)");
    }
    if is(first, "DEALLOCATE") && !rest.iter().any(|w| is(w.trim_end_matches(';'), "ALL")) {
        return Some("DEALLOCATE of one statement (use the protocol's Close, or DEALLOCATE ALL)");
    }
    if is(first, "DECLARE") && normalized.to_ascii_uppercase().contains("WITH HOLD") {
        return Some("cursors WITH HOLD");
    }
    if is(first, "CREATE")
        && (has("TEMP") || has("TEMPORARY"))
        && !normalized.to_ascii_uppercase().contains("ON COMMIT DROP")
    {
        return Some("temporary objects that outlive the transaction (add ON COMMIT DROP)");
    }
    if (is(first, "SET") || is(first, "RESET"))
        && !alone
        && !rest.first().is_some_and(|w| is(w, "LOCAL"))
    {
        return Some("SET in a multi-statement query (send it alone, or use SET LOCAL)");
    }
    let lower = normalized.to_ascii_lowercase();
    if lower.contains("advisory_lock") || lower.contains("advisory_unlock") {
        return Some("session-level advisory locks (use pg_advisory_xact_lock)");
    }
    None
}

/// The 0A000 a refused statement gets.
pub(super) fn refused(feature: &str) -> Vec<u8> {
    Raised {
        severity: Severity::Error,
        code: sqlstate::FEATURE_NOT_SUPPORTED.into(),
        message: format!("pgward transaction mode does not support {feature}"),
        detail: "In pool_mode = \"transaction\" clients share PostgreSQL connections between \
                 transactions, so session state would reach another client or be lost."
            .into(),
        hint: Some("Use session mode for this client, or see docs/pooling.md."),
    }
    .into_bytes()
}

impl Pipeline {
    /// Transaction mode: the refusal of a simple Query, if one of its statements needs one.
    pub(super) fn refuse_query(&self, statements: &[Fingerprinted]) -> Option<Vec<u8>> {
        if !self.identity.pooled {
            return None;
        }
        let alone = statements.len() <= 1;
        statements
            .iter()
            .find_map(|statement| refusal(&statement.text, alone))
            .map(refused)
    }

    /// Transaction mode: the refusal of a Parse's statement, if it needs one.
    pub(super) fn refuse_parse(&self, statement: &Fingerprinted) -> Option<Vec<u8>> {
        if !self.identity.pooled {
            return None;
        }
        refusal(&statement.text, true).map(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn session_features_are_refused_and_transaction_scoped_ones_are_not() {
        for sql in [
            "LISTEN jobs",
            "PREPARE p AS SELECT $1",
            "DEALLOCATE p",
            "DECLARE c CURSOR WITH HOLD FOR SELECT $1",
            "CREATE TEMP TABLE t (a int)",
            "CREATE TEMPORARY TABLE t AS SELECT $1",
            "SELECT pg_advisory_lock($1)",
            "SELECT pg_try_advisory_lock($1)",
            "SELECT pg_advisory_unlock_all()",
        ] {
            assert!(refusal(sql, true).is_some(), "{sql}");
        }
        assert!(refusal("SET work_mem = $1", false).is_some());
        for sql in [
            "SELECT $1",
            "DEALLOCATE ALL",
            "DEALLOCATE PREPARE ALL",
            "UNLISTEN *",
            "CREATE TEMP TABLE t (a int) ON COMMIT DROP",
            "SELECT pg_advisory_xact_lock($1)",
            "DECLARE c CURSOR FOR SELECT $1",
            "SET work_mem = $1",
        ] {
            assert!(refusal(sql, true).is_none(), "{sql}");
        }
        assert!(refusal("SET LOCAL work_mem = $1", false).is_none());
    }
}
