//! A Parse: the prepared statement is fingerprinted once, recorded under its name (with its
//! text and parameter types when the cache may need them for keys), and decided by the rules:
//! rejected (the rest of the batch is then skipped, as PostgreSQL does after an error) or
//! rewritten. Each Execute of it later runs the statement phases (`phases.rs`).

use std::sync::Arc;

use super::complete::{Enforced, Event, note};
use super::statements::{Statement, Upstream};
use super::{ClientAction, Matched, Pipeline, replies};
use crate::protocol::frontend::Parse;
use crate::rules::{Action, Mode};

impl Pipeline {
    pub(super) fn on_parse(&mut self, parse: &Parse<'_>, body: &[u8]) -> ClientAction {
        if !self.recording() && !self.identity.pooled {
            return ClientAction::Forward;
        }
        let Some(statement) = self.shared.fingerprints.statement(parse.sql, self.strings) else {
            return ClientAction::Forward;
        };
        if let Some(refused) = self.refuse_parse(&statement) {
            // The batch is tracked in transaction mode: the error keeps its place, and the
            // rest of the batch is skipped until its Sync, as PostgreSQL would.
            self.expected.push_reply(refused, false);
            self.batch.fail();
            return ClientAction::Drop;
        }
        if !self.recording() {
            return ClientAction::Forward;
        }
        let rules = self.shared.rules.snapshot();
        let matched = self.matched(&rules, &statement);
        let keeps = self.keeps_text(&statement, rules.set.caches());
        let recorded = Statement {
            sql: keeps.then(|| Arc::from(parse.sql)),
            types: keeps.then(|| Arc::from(parse.param_types)),
            tracked: self.batch.tracked(),
            caches: matched
                .as_ref()
                .and_then(Matched::rule)
                .is_some_and(|r| r.cache.is_some()),
            fingerprint: statement.clone(),
            bind: None,
            upstream: Upstream::Sent,
        };
        let Some(rule) = matched.as_ref().and_then(Matched::rule) else {
            self.record_statement(parse.statement, recorded);
            return ClientAction::Forward;
        };
        let handle = self.shared.stats.fingerprint(statement.id, &statement.text);
        handle.set_rule(&rule.name);
        let observe = rule.mode == Mode::Observe;
        if let Action::Reject { message, sqlstate } = &rule.action {
            if observe {
                note(&handle, Event::Rejected(Enforced::Observed));
            } else {
                note(&handle, Event::Rejected(Enforced::Yes));
                self.expected.push_reply(
                    replies::rejected(&rule.name, sqlstate, message, statement.id),
                    false,
                );
                self.batch.fail();
                return ClientAction::Drop;
            }
        }
        let replaced = self.rewrite_parse(parse, rule, &handle);
        self.record_statement(parse.statement, recorded);
        if self.hold_parse(parse.statement, replaced.as_deref(), body) {
            return ClientAction::Drop;
        }
        match replaced {
            Some(frame) => ClientAction::Replace(frame),
            None => ClientAction::Forward,
        }
    }
}
