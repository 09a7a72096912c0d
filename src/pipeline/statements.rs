//! The client's prepared statements and portals as pgward knows them (the statement
//! registry): for each name, the fingerprint, the text and parameter types when the cache may
//! key it, the Bind of a portal, and whether PostgreSQL has it ([`Upstream`]). A Parse or
//! Bind pgward answered itself (a cache hit with zero upstream messages, `deferred.rs`) is not
//! known upstream: the first message that needs it there sends its frame first, and
//! PostgreSQL's answer to that is swallowed. Changes a Parse or Close makes are undone when
//! PostgreSQL refuses or skips the message ([`Undo`]). SQL-level `DEALLOCATE`, `DISCARD ALL`
//! and `PREPARE` are followed here too, since they share the names.

use std::sync::Arc;

use super::queue::Owed;
use super::{Fingerprinted, Pipeline};
use crate::protocol::frame;
use crate::protocol::frontend::{self, Bind};

/// Named statements (and portals) a session's registry follows. Past it, new names are not
/// followed — their statements run as always, only never from the cache — so a client that
/// prepares without end cannot grow pgward's memory without bound (PostgreSQL keeps them all).
pub(super) const MAX_NAMES: usize = 10_000;

/// A prepared statement or portal: its fingerprint (rules are evaluated again at each
/// Execute, so a reload applies to long-lived prepared statements too).
#[derive(Clone)]
pub(super) struct Statement {
    pub fingerprint: Fingerprinted,
    /// The statement text, kept when the cache may need it (for keys or SET values).
    pub sql: Option<Arc<[u8]>>,
    /// The parameter type OIDs its Parse declared (kept with `sql`, for keys).
    pub types: Option<Arc<[u8]>>,
    /// Parsed in a batch whose answers pgward tracked: had PostgreSQL refused the Parse,
    /// pgward would have seen it and put back what the name meant before. Only such
    /// statements are cached; an untracked Parse may have failed unseen, and then its name
    /// still means an older statement upstream.
    pub tracked: bool,
    /// The rule it matched at Parse caches: its Parse, Bind and Describe may be held back
    /// until its Execute shows whether the cache answers it (`deferred.rs`).
    pub caches: bool,
    /// A portal's Bind after the names: parameter formats, values, result formats.
    pub bind: Option<Arc<[u8]>>,
    pub upstream: Upstream,
}

/// Whether PostgreSQL has a statement or portal under the client's name.
#[derive(Clone)]
pub(super) enum Upstream {
    /// Its Parse / Bind went upstream (or waits in the held chain, to go in order).
    Sent,
    /// pgward answered its Parse / Bind itself: PostgreSQL never got this frame, which goes
    /// upstream first when a later message needs the statement or portal there.
    Answered(Arc<[u8]>),
}

/// What a Parse or Close of a named statement changed in `prepared`, kept with its tracked
/// answer: if PostgreSQL refuses or skips the message (an error earlier in the batch, a
/// duplicate name), pgward puts the old statement back.
pub(super) struct Undo {
    pub name: Box<[u8]>,
    pub previous: Option<Statement>,
}

/// A SQL statement that acts on prepared statements by name.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SqlPrepared<'a> {
    /// `DEALLOCATE [PREPARE] name`
    Deallocate(&'a str),
    /// `DEALLOCATE [PREPARE] ALL`, `DISCARD ALL`: every statement and portal goes.
    DropAll,
    /// `PREPARE name ...`: a statement pgward does not see the text of.
    Prepare,
    /// `EXECUTE name ...`: runs a statement that must exist upstream.
    Execute(&'a str),
}

impl SqlPrepared<'_> {
    /// What a statement's normalized text does to prepared statements, if anything. Names
    /// are compared as PostgreSQL folds unquoted identifiers (lower case); a quoted name is
    /// taken as written.
    pub fn of(normalized: &str) -> Option<SqlPrepared<'_>> {
        let mut words = normalized.split_ascii_whitespace();
        let first = words.next()?;
        let word =
            |w: Option<&str>, expected: &str| w.is_some_and(|w| w.eq_ignore_ascii_case(expected));
        if first.eq_ignore_ascii_case("DISCARD") {
            return word(words.next(), "ALL").then_some(SqlPrepared::DropAll);
        }
        if first.eq_ignore_ascii_case("PREPARE") {
            return Some(SqlPrepared::Prepare);
        }
        if first.eq_ignore_ascii_case("EXECUTE") {
            return words.next().map(|name| SqlPrepared::Execute(name_of(name)));
        }
        if !first.eq_ignore_ascii_case("DEALLOCATE") {
            return None;
        }
        let mut name = words.next()?;
        if name.eq_ignore_ascii_case("PREPARE") {
            name = words.next()?;
        }
        if name.eq_ignore_ascii_case("ALL") {
            return Some(SqlPrepared::DropAll);
        }
        Some(SqlPrepared::Deallocate(name_of(name)))
    }
}

/// A name as written: `"Quoted"` -> `Quoted`, `Plain(` -> `Plain` (the caller compares
/// unquoted names case-insensitively).
fn name_of(word: &str) -> &str {
    let word = word.split(['(', ';']).next().unwrap_or(word);
    word.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .unwrap_or(word)
}

impl Pipeline {
    /// A Bind names a portal after a statement (its parameters kept when the cache keys it).
    pub(super) fn on_bind(&mut self, bind: &Bind<'_>) {
        match self.prepared.get(bind.statement) {
            Some(statement) => {
                let mut portal = statement.clone();
                if portal.sql.is_some() {
                    portal.bind = Some(Arc::from(bind.rest));
                }
                // The Bind goes upstream (or is held to go in order); a hit marks it answered.
                portal.upstream = Upstream::Sent;
                let full = self.portals.len() >= MAX_NAMES;
                if full && !bind.portal.is_empty() && !self.portals.contains_key(bind.portal) {
                    return;
                }
                self.portals.insert(bind.portal.into(), portal)
            }
            None => self.portals.remove(bind.portal),
        };
    }

    /// Records a statement under its name, keeping what the name meant for [`Undo`].
    pub(super) fn record_statement(&mut self, name: &[u8], statement: Statement) {
        let full = self.prepared.len() >= MAX_NAMES;
        // The unnamed statement is always followed: it is what most drivers use.
        if full && !name.is_empty() && !self.prepared.contains_key(name) {
            return;
        }
        let previous = self.prepared.insert(name.into(), statement);
        self.note_undo(name, previous);
    }

    pub(super) fn note_undo(&mut self, name: &[u8], previous: Option<Statement>) {
        // Only a tracked answer can carry it back; an untracked batch pays nothing.
        if !self.batch.tracked() {
            return;
        }
        self.undo = Some(Box::new(Undo {
            name: name.into(),
            previous,
        }));
    }

    /// PostgreSQL refused or skipped the Parse / Close behind `undo`.
    pub(super) fn apply_undo(&mut self, undo: Undo) {
        match undo.previous {
            Some(previous) => self.prepared.insert(undo.name, previous),
            None => self.prepared.remove(&undo.name),
        };
    }

    /// Makes sure PostgreSQL has the statement `name` before a message that needs it: one
    /// pgward answered itself is parsed upstream now, its ParseComplete swallowed.
    pub(super) fn ensure_statement(&mut self, name: &[u8]) {
        let Some(statement) = self.prepared.get_mut(name) else {
            return;
        };
        if let Upstream::Answered(frame) =
            std::mem::replace(&mut statement.upstream, Upstream::Sent)
        {
            self.outbound.extend_from_slice(&frame);
            self.expected.push_response(Owed::Own);
        }
    }

    /// Makes sure PostgreSQL has the portal `name` (and its statement) before a message that
    /// needs it there.
    pub(super) fn ensure_portal(&mut self, name: &[u8]) {
        let Some(portal) = self.portals.get_mut(name) else {
            return;
        };
        let Upstream::Answered(frame) = std::mem::replace(&mut portal.upstream, Upstream::Sent)
        else {
            return;
        };
        let body = frame.get(frame::HEADER_LEN..).unwrap_or_default();
        if let Some(bind) = frontend::bind(body) {
            self.ensure_statement(bind.statement);
        }
        self.outbound.extend_from_slice(&frame);
        self.expected.push_response(Owed::Own);
    }

    /// Follows a simple Query's statements that act on prepared statements by name.
    pub(super) fn follow_sql_prepared(&mut self, normalized: &str) {
        match SqlPrepared::of(normalized) {
            None => {}
            Some(SqlPrepared::DropAll) => {
                self.prepared.clear();
                self.portals.clear();
            }
            Some(SqlPrepared::Prepare) => self.sql_prepare = true,
            Some(SqlPrepared::Deallocate(name)) | Some(SqlPrepared::Execute(name)) => {
                // Whatever the name means, PostgreSQL must have it: a DEALLOCATE of a
                // statement only pgward knew would otherwise fail with 26000.
                let key = self
                    .prepared
                    .keys()
                    .find(|k| k.eq_ignore_ascii_case(name.as_bytes()))
                    .cloned();
                if let Some(key) = key {
                    self.ensure_statement(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SqlPrepared::{self, *};

    #[test]
    fn sql_level_statements_on_prepared_names() {
        assert_eq!(SqlPrepared::of("DEALLOCATE s1"), Some(Deallocate("s1")));
        assert_eq!(
            SqlPrepared::of("deallocate prepare S1"),
            Some(Deallocate("S1"))
        );
        assert_eq!(
            SqlPrepared::of("DEALLOCATE \"Mixed\""),
            Some(Deallocate("Mixed"))
        );
        assert_eq!(SqlPrepared::of("DEALLOCATE ALL"), Some(DropAll));
        assert_eq!(SqlPrepared::of("DEALLOCATE PREPARE ALL"), Some(DropAll));
        assert_eq!(SqlPrepared::of("DISCARD ALL"), Some(DropAll));
        assert_eq!(SqlPrepared::of("DISCARD PLANS"), None);
        assert_eq!(SqlPrepared::of("PREPARE q AS SELECT $1"), Some(Prepare));
        assert_eq!(SqlPrepared::of("EXECUTE q(1)"), Some(Execute("q")));
        assert_eq!(SqlPrepared::of("SELECT 1"), None);
        assert_eq!(SqlPrepared::of(""), None);
        assert_eq!(SqlPrepared::of("DEALLOCATE"), None);
    }
}
