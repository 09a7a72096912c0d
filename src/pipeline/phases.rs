//! The phases every statement goes through, in order, in one function: [`Pipeline::run_phases`].
//! A simple Query (each of its statements) and an Execute of a portal build the same
//! statement context ([`Ctx`]: fingerprint, stats handle, the rule it matched in one rules
//! snapshot) and differ only in what they feed in ([`Input`]):
//!
//! 1. reject   — an enforcing reject rule answers the whole Query (`reject_phase`; a Parse is
//!    rejected at Parse, `parse.rs`)
//! 2. cache    — answer a hit, wait for another session's identical query, or capture the
//!    result to fill the cache (`cache_step`, then `cached.rs`)
//! 3. admit    — a slot of the rule's concurrency cap: at once, after a wait, or shed
//!    (`admit.rs`)
//! 4. rewrite  — the rule's rewrite of the Query's text (`rewrite.rs`; a Parse is rewritten at
//!    Parse)
//! 5. run      — one expected completion per statement, each with its time budget
//!    (`budget.rs`), forwarded upstream (`run_phase`)
//! 6. complete — when PostgreSQL answers, the outcome is recorded (`complete.rs`)
//!
//! A phase either passes the statement on ([`Flow::Next`]) or ends the frame's way with what
//! the session does with it ([`Flow::Done`]).

use std::sync::Arc;
use std::time::Instant;

use super::admit::Admission;
use super::budget::Budget;
use super::cached::{CachePhase, Request};
use super::complete::{Enforced, Event, note};
use super::fill::Fill;
use super::queue::Running;
use super::{ClientAction, Fingerprinted, Matched, Pipeline, Statement, replies};
use crate::cache::{MissReason, Shape};
use crate::protocol::frontend::Execute;
use crate::reload::ActiveRules;
use crate::rules::{Action, Mode, Rule, SessionInfo};
use crate::stats::FingerprintStats;

/// What the phases are fed.
pub(super) enum Input<'a> {
    /// A simple Query's text (one context per statement in it).
    Query { sql: &'a [u8] },
    /// An Execute of a portal (one context), asking for `max_rows` (0: all).
    Execute {
        name: &'a [u8],
        portal: &'a Statement,
        max_rows: i32,
    },
}

/// One statement on its way through the phases.
pub(super) struct Ctx {
    pub statement: Fingerprinted,
    pub handle: Arc<FingerprintStats>,
    /// The first rule it matched, in `Frame::rules`.
    pub matched: Option<Matched>,
}

impl Ctx {
    pub fn rule(&self) -> Option<&Rule> {
        self.matched.as_ref().and_then(Matched::rule)
    }
}

/// A client frame's statements, decided under one rules snapshot.
pub(super) struct Frame<'a> {
    pub input: Input<'a>,
    pub rules: Arc<ActiveRules>,
    pub statements: Vec<Ctx>,
}

impl Frame<'_> {
    /// Simple Query answers carry RowDescription and end with ReadyForQuery; Execute answers
    /// are rows only, and a batch's Sync brings its ReadyForQuery.
    pub fn simple(&self) -> bool {
        matches!(self.input, Input::Query { .. })
    }
}

/// A phase's result.
pub(super) enum Flow<T> {
    /// On to the next phase, with what this one produced.
    Next(T),
    /// The statement's way ends here; the session does this with the frame.
    Done(ClientAction),
}

impl Pipeline {
    /// The rule `statement` matches first, in `rules`.
    pub(super) fn matched(
        &self,
        rules: &Arc<ActiveRules>,
        statement: &Fingerprinted,
    ) -> Option<Matched> {
        let session = SessionInfo {
            user: &self.identity.user,
            database: &self.identity.database,
            application_name: &self.identity.application_name,
        };
        let index = rules
            .set
            .evaluate_index(statement.id, &statement.text, &session)?;
        Some(Matched {
            rules: rules.clone(),
            index,
        })
    }

    pub(super) fn on_query(&mut self, sql: &[u8], now: Instant) -> ClientAction {
        // Fingerprinted once, for the stats and (transaction mode) the refusals alike.
        let fingerprinted = (self.recording() || self.identity.pooled)
            .then(|| self.shared.fingerprints.query(sql, self.strings));
        if let Some(refused) = fingerprinted.as_deref().and_then(|f| self.refuse_query(f)) {
            self.count_queries(1);
            self.expected.push_reply(refused, true);
            return ClientAction::Drop;
        }
        let (Some(fingerprinted), true) = (fingerprinted, self.recording()) else {
            self.count_queries(1);
            self.expected.push_running(Running::untracked(now));
            self.expected.push_ready();
            return ClientAction::Forward;
        };
        let rules = self.shared.rules.snapshot();
        // Always: an SQL PREPARE before any protocol Parse must be seen too (one word compared).
        for statement in fingerprinted.iter() {
            self.follow_sql_prepared(&statement.text);
        }
        let statements = fingerprinted
            .iter()
            .map(|statement| {
                let ctx = self.context(&rules, statement.clone());
                if let Some(rule) = ctx.rule() {
                    ctx.handle.set_rule(&rule.name);
                }
                ctx
            })
            .collect();
        let frame = Frame {
            input: Input::Query { sql },
            rules,
            statements,
        };
        self.run_phases(frame, now)
    }

    pub(super) fn on_execute(
        &mut self,
        execute: Option<Execute<'_>>,
        now: Instant,
    ) -> ClientAction {
        let max_rows = execute.as_ref().map_or(0, |e| e.max_rows);
        let name = execute.as_ref().map_or(&b""[..], |e| e.portal);
        self.release_unless_for(name);
        let Some(portal) = self.portals.get(name).cloned() else {
            self.release_chain(false);
            self.count_queries(1);
            self.expected.push_running(Running::untracked(now));
            return ClientAction::Forward;
        };
        let rules = self.shared.rules.snapshot();
        let ctx = self.context(&rules, portal.fingerprint.clone());
        let frame = Frame {
            input: Input::Execute {
                name,
                portal: &portal,
                max_rows,
            },
            rules,
            statements: vec![ctx],
        };
        self.run_phases(frame, now)
    }

    fn context(&self, rules: &Arc<ActiveRules>, statement: Fingerprinted) -> Ctx {
        Ctx {
            matched: self.matched(rules, &statement),
            handle: self.shared.stats.fingerprint(statement.id, &statement.text),
            statement,
        }
    }

    /// The phases, top to bottom.
    fn run_phases(&mut self, frame: Frame<'_>, now: Instant) -> ClientAction {
        if let Flow::Done(action) = self.reject_phase(&frame) {
            return action;
        }
        let fill = match self.cache_step(&frame, now) {
            Flow::Next(fill) => fill,
            Flow::Done(action) => return action,
        };
        self.held.end_fill_wait();
        self.before_upstream(&frame, fill.as_deref());
        let admission = match self.admit_phase(&frame, fill, now) {
            Flow::Next(admission) => admission,
            Flow::Done(action) => return action,
        };
        let replaced = self.rewrite_phase(&frame);
        self.run_phase(frame, admission);
        match replaced {
            Some(bytes) => ClientAction::Replace(bytes),
            None => ClientAction::Forward,
        }
    }

    /// The statement is going to run upstream (or be refused there by admission): what the
    /// client's Execute needs up there goes first — its held chain (with the Describe's
    /// RowDescription captured when it fills the cache), or its portal pgward had answered.
    fn before_upstream(&mut self, frame: &Frame<'_>, fill: Option<&Fill>) {
        if let Input::Execute { name, .. } = frame.input {
            self.release_chain(fill.is_some_and(|f| f.shape == Shape::Described));
            self.ensure_portal(name);
        }
    }

    /// An enforcing reject rule on any statement answers the whole Query.
    fn reject_phase(&mut self, frame: &Frame<'_>) -> Flow<()> {
        if !frame.simple() {
            return Flow::Next(());
        }
        for ctx in &frame.statements {
            let Some(rule) = ctx.rule() else { continue };
            let Action::Reject { message, sqlstate } = &rule.action else {
                continue;
            };
            if rule.mode == Mode::Observe {
                note(&ctx.handle, Event::Rejected(Enforced::Observed));
                continue;
            }
            note(&ctx.handle, Event::Rejected(Enforced::Yes));
            self.count_queries(frame.statements.len());
            let reply = replies::rejected(&rule.name, sqlstate, message, ctx.statement.id);
            self.expected.push_reply(reply, true);
            return Flow::Done(ClientAction::Drop);
        }
        Flow::Next(())
    }

    /// The result cache, for a single statement whose rule caches: the fill it leads, if it
    /// runs upstream to fill the cache. A fill this frame led before waiting for a slot, and
    /// the start of a wait for another session's fill, belong to this frame only.
    fn cache_step(&mut self, frame: &Frame<'_>, now: Instant) -> Flow<Option<Box<Fill>>> {
        let pending = self.held.take_fill();
        if self.cache.is_none() {
            return Flow::Next(None);
        }
        let [ctx] = &frame.statements[..] else {
            if !self.held.readmitted() {
                for ctx in &frame.statements {
                    if ctx.rule().is_some_and(|r| r.cache.is_some()) {
                        note(&ctx.handle, Event::Miss(MissReason::MultiStatement));
                    }
                }
            }
            return Flow::Next(None);
        };
        let Some(matched) = &ctx.matched else {
            return Flow::Next(None);
        };
        let request = match frame.input {
            Input::Query { sql } => Request {
                sql,
                types: &[],
                bind: &[],
                shape: Shape::WithRowDescription,
            },
            Input::Execute {
                portal, max_rows, ..
            } => {
                if ctx.rule().is_none_or(|r| r.cache.is_none()) || !portal.tracked {
                    return Flow::Next(None);
                }
                if max_rows != 0 {
                    if !self.held.readmitted() {
                        note(&ctx.handle, Event::Miss(MissReason::Partial));
                    }
                    return Flow::Next(None);
                }
                match (&portal.sql, &portal.bind) {
                    (Some(sql), Some(bind)) if self.batch.tracked() => Request {
                        sql,
                        types: portal.types.as_deref().unwrap_or_default(),
                        bind,
                        shape: if self.chain.describes() {
                            Shape::Described
                        } else {
                            Shape::RowsOnly
                        },
                    },
                    // Prepared before a caching rule existed, or mid-batch when rules changed.
                    _ => return Flow::Next(None),
                }
            }
        };
        match self.cache_phase(pending, request, ctx, matched, now) {
            CachePhase::Pass => Flow::Next(None),
            CachePhase::Fill(fill) => Flow::Next(Some(fill)),
            CachePhase::Answered => Flow::Done(ClientAction::Drop),
            CachePhase::Wait(gate) => Flow::Done(ClientAction::Wait(gate)),
            CachePhase::Refresh(fill) if frame.simple() => {
                Flow::Done(self.refresh_detached(fill, ctx, matched, now))
            }
            // Only the simple protocol refreshes in the background.
            CachePhase::Refresh(_) => Flow::Done(ClientAction::Drop),
        }
    }

    /// One expected completion per statement, each with its budget; the slot goes with the
    /// last statement (it is held until the whole Query is done), the fill with the only one.
    fn run_phase(&mut self, frame: Frame<'_>, admission: Admission) {
        let Admission {
            mut fill,
            mut permit,
            received,
            mut debit,
        } = admission;
        match frame.input {
            Input::Query { sql } => self.follow_statements(sql, &frame.statements),
            Input::Execute { portal, .. } => {
                if let [ctx] = &frame.statements[..] {
                    self.follow_prepared(&ctx.statement, portal.sql.as_deref());
                }
            }
        }
        let count = frame.statements.len();
        self.count_queries(count);
        for (i, ctx) in frame.statements.into_iter().enumerate() {
            let rule = ctx.rule();
            let budget = Budget::for_statement(&frame.rules, rule, ctx.statement.id, received);
            let last = i + 1 == count;
            let permit = if last { permit.take() } else { None };
            let mut running = Running::new(ctx.handle, received, budget, permit);
            running.fill = fill.take();
            // The limit is paid by the statement that holds its slot: the Query's last.
            running.debit = if last { debit.take() } else { None };
            if frame.rules.protection.active() {
                let index = ctx.matched.as_ref().map(|m| m.index);
                let app = &self.identity.application_name;
                running.objective = frame.rules.protection.objective(index, app).cloned();
            }
            self.expected.push_running(running);
        }
        if let Input::Query { .. } = frame.input {
            self.expected.push_ready();
        }
    }
}
