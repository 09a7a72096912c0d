//! The admit phase: a slot of the rule's concurrency cap (`max_concurrency`) for a statement
//! about to run — at once; after waiting, in FIFO order, at a [`Gate`] the session awaits
//! (bounded by queue_timeout and the budget, `budget::slot_wait`); or shed with 53000 (or a
//! stale cached result, when the rule serves stale) when none came in time. Observe-mode rules
//! only count what they would have shed.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::answer::Span;
use super::budget::{self, Budget};
use super::complete::{Enforced, Event, Served, note};
use super::fill::Fill;
use super::phases::{Ctx, Flow, Frame};
use super::queue::{Client, Running};
use super::{Admitted, ClientAction, Fingerprinted, Gate, Matched, Pipeline, replies};
use crate::limits::{Limit, Reserved};
use crate::rules::{Fallback, Mode, Rule};
use crate::stats::FingerprintStats;

/// A statement cleared to run: the cache fill it leads, its slot, and since when it counts
/// (its wait for the slot is part of its latency and its budget).
pub(super) struct Admission {
    pub fill: Option<Box<Fill>>,
    pub permit: Option<OwnedSemaphorePermit>,
    pub received: Instant,
    /// The database time it reserved under its limit.
    pub debit: Option<Debit>,
}

impl Pipeline {
    /// One slot, of the first capped rule among the frame's statements.
    pub(super) fn admit_phase(
        &mut self,
        frame: &Frame<'_>,
        fill: Option<Box<Fill>>,
        now: Instant,
    ) -> Flow<Admission> {
        let capped = frame.statements.iter().find_map(|ctx| {
            let matched = ctx.matched.as_ref()?;
            matched.rules.limits.get(matched.index)?.as_ref()?;
            Some((ctx, matched))
        });
        let Some((ctx, matched)) = capped else {
            return Flow::Next(Admission {
                fill,
                permit: None,
                received: now,
                debit: None,
            });
        };
        match self.take_slot(&ctx.statement, &ctx.handle, matched, now) {
            Slot::Granted(permit, received, debit) => Flow::Next(Admission {
                fill,
                permit,
                received,
                debit,
            }),
            Slot::Wait(gate) => {
                self.held.wait_for_slot(now, fill);
                Flow::Done(ClientAction::Wait(gate))
            }
            Slot::WaitDbTime {
                gate,
                permit,
                since,
            } => {
                self.held.wait_for_db_time(since, permit, fill);
                Flow::Done(ClientAction::Wait(gate))
            }
            Slot::Shed(bytes) => {
                let shape = (frame.statements.len(), frame.simple());
                Flow::Done(self.answer_shed(bytes, fill, &ctx.handle, shape, now))
            }
        }
    }

    /// Sends a statement already answered from a stale entry upstream, detached, to refresh
    /// the entry: only when its rule's concurrency slot is free now (otherwise a later request
    /// refreshes). Its result is captured and swallowed.
    pub(super) fn refresh_detached(
        &mut self,
        fill: Box<Fill>,
        ctx: &Ctx,
        matched: &Matched,
        now: Instant,
    ) -> ClientAction {
        let (handle, statement) = (&ctx.handle, &ctx.statement);
        let limit = matched.rules.limits.get(matched.index).cloned().flatten();
        let permit = match limit.as_ref().and_then(|l| l.slots.as_ref()) {
            Some((_, slots)) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return ClientAction::Drop,
            },
            None => None,
        };
        // The refresh uses database time too: only when the limit has some now.
        let debit = match limit {
            Some(limit) => match limit.db_time.as_ref().map(|db| db.reserve(now)) {
                Some(Ok(reserved)) => Some(Debit {
                    reserved,
                    admitted: now,
                    limit,
                }),
                Some(Err(_)) => return ClientAction::Drop,
                None => None,
            },
            None => None,
        };
        note(handle, Event::Refresh);
        let budget = matched.rule().map(|rule| {
            Budget::for_refresh(&matched.rules, rule, statement.id, fill.policy.ttl, now)
        });
        let mut running = Running::new(handle.clone(), now, budget, permit);
        running.fill = Some(fill);
        running.client = Client::Answered;
        running.debit = debit;
        self.expected.push_running(running);
        self.expected.push_detached_ready();
        ClientAction::Forward
    }

    /// A simple Query of `statements` (`simple`) or an Execute that found no concurrency slot:
    /// the stale entry its fill carries when its rule says so, otherwise the 53000 in `shed`.
    fn answer_shed(
        &mut self,
        shed: Vec<u8>,
        fill: Option<Box<Fill>>,
        handle: &Arc<FingerprintStats>,
        (statements, simple): (usize, bool),
        now: Instant,
    ) -> ClientAction {
        if let Some(fill) = fill
            && self.answer_stale_when_shed(fill, handle, now)
        {
            return ClientAction::Drop;
        }
        self.count_queries(statements);
        self.expected.push_reply(shed, simple);
        if !simple {
            self.batch.fail();
        }
        ClientAction::Drop
    }

    /// A statement that found no concurrency slot gets the stale entry its fill carries,
    /// when its rule says so. Returns false when there is none to give.
    fn answer_stale_when_shed(
        &mut self,
        fill: Box<Fill>,
        handle: &Arc<FingerprintStats>,
        now: Instant,
    ) -> bool {
        let usable = fill.on_budget == Fallback::ServeStale;
        let Some(entry) = fill.stale.filter(|e| usable && e.is_usable(now)) else {
            return false;
        };
        let notice = replies::stale_served(
            entry.age(now),
            "no concurrency slot was free in time",
            &fill.rule,
            fill.fingerprint,
        );
        let span = Span { received: now, now };
        self.answer_from_cache(entry, notice, Served::Fallback, fill.shape, handle, span);
        true
    }

    /// Admission under the statement's limit: a concurrency slot (at once, after waiting at
    /// a gate, or shed), then database time (at once, after waiting for the budget to refill
    /// with the slot held, or shed).
    fn take_slot(
        &mut self,
        statement: &Fingerprinted,
        handle: &FingerprintStats,
        matched: &Matched,
        now: Instant,
    ) -> Slot {
        let (Some(rule), Some(Some(limit))) =
            (matched.rule(), matched.rules.limits.get(matched.index))
        else {
            return Slot::Granted(None, now, None);
        };
        if limit.factor() == 0 && rule.mode == Mode::Enforce {
            // Protected traffic is over its objective: nothing of this limit reaches the
            // database now (a wait it was in ends here too).
            let _ = (self.held.take_refilled(), self.held.take_admission());
            note(handle, Event::Shed(Enforced::Yes));
            if self.shared.events.first(&limit.name, "protected") {
                tracing::info!(fingerprint = %statement.id, rule = &*rule.name, limit = &*limit.name, "statement shed: protected traffic over its objective");
            }
            return Slot::Shed(replies::shed_protected(
                &limit_label(rule, limit),
                statement.id,
            ));
        }
        let (permit, since) = if let Some(back) = self.held.take_refilled() {
            back
        } else if let Some((permit, since)) = self.held.take_admission() {
            note(handle, Event::Queued(now.saturating_duration_since(since)));
            match permit {
                Some(permit) => (Some(permit), since),
                None => return self.slot_timed_out(statement, handle, matched, limit, since, now),
            }
        } else {
            match &limit.slots {
                None => (None, now),
                Some((_, slots)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => (Some(permit), now),
                    Err(_) if rule.mode == Mode::Observe => {
                        note(handle, Event::Shed(Enforced::Observed));
                        (None, now)
                    }
                    Err(_) => {
                        let wait =
                            budget::slot_wait(rule.budget(&matched.rules.set), limit.queue_timeout);
                        let slots = slots.clone();
                        return Slot::Wait(Gate(Box::pin(async move {
                            Admitted::Slot(
                                tokio::time::timeout(wait, slots.acquire_owned())
                                    .await
                                    .ok()
                                    .and_then(Result::ok),
                            )
                        })));
                    }
                },
            }
        };
        self.take_db_time(statement, handle, matched, limit, permit, since, now)
    }

    /// The slot wait passed queue_timeout (or the budget): the budget's 57014 when that ran
    /// out first, otherwise the shed.
    fn slot_timed_out(
        &mut self,
        statement: &Fingerprinted,
        handle: &FingerprintStats,
        matched: &Matched,
        limit: &Limit,
        since: Instant,
        now: Instant,
    ) -> Slot {
        let Some(rule) = matched.rule() else {
            return Slot::Granted(None, since, None);
        };
        if let Some(budget) = self.budget_first(matched, limit, statement, since) {
            note(handle, Event::BudgetPassed(Enforced::Yes));
            return Slot::Shed(budget);
        }
        note(handle, Event::Shed(Enforced::Yes));
        if self.shared.events.first(&rule.name, "shed") {
            tracing::info!(fingerprint = %statement.id, rule = &*rule.name, limit = &*limit.name, "statement shed: no concurrency slot");
        }
        let slots = limit.slots.as_ref().map_or(0, |(n, _)| *n);
        let waited = now.saturating_duration_since(since);
        Slot::Shed(replies::shed(
            &limit_label(rule, limit),
            slots,
            waited,
            statement.id,
        ))
    }

    /// The budget's 57014, when the budget (not queue_timeout) bounded the wait.
    fn budget_first(
        &self,
        matched: &Matched,
        limit: &Limit,
        statement: &Fingerprinted,
        since: Instant,
    ) -> Option<Vec<u8>> {
        let budget = Budget::for_statement(&matched.rules, matched.rule(), statement.id, since)
            .filter(|b| !b.observe() && b.limit() <= limit.queue_timeout)?;
        Some(budget.exceeded().into_bytes())
    }

    /// Database time of the statement's limit, with its slot (`permit`) in hand.
    #[allow(clippy::too_many_arguments)]
    fn take_db_time(
        &mut self,
        statement: &Fingerprinted,
        handle: &FingerprintStats,
        matched: &Matched,
        limit: &Arc<Limit>,
        permit: Option<OwnedSemaphorePermit>,
        since: Instant,
        now: Instant,
    ) -> Slot {
        let (Some(rule), Some(db)) = (matched.rule(), &limit.db_time) else {
            return Slot::Granted(permit, since, None);
        };
        let refill = match db.reserve(now) {
            Ok(reserved) => {
                let debit = Debit {
                    limit: limit.clone(),
                    reserved,
                    admitted: now,
                };
                return Slot::Granted(permit, since, Some(debit));
            }
            Err(refill) => refill,
        };
        if rule.mode == Mode::Observe {
            note(handle, Event::Shed(Enforced::Observed));
            return Slot::Granted(permit, since, None);
        }
        let bound = budget::slot_wait(rule.budget(&matched.rules.set), limit.queue_timeout);
        let waited = now.saturating_duration_since(since);
        if waited >= bound {
            if let Some(budget) = self.budget_first(matched, limit, statement, since) {
                note(handle, Event::BudgetPassed(Enforced::Yes));
                return Slot::Shed(budget);
            }
            note(handle, Event::Shed(Enforced::Yes));
            if self.shared.events.first(&limit.name, "db_time") {
                tracing::info!(fingerprint = %statement.id, rule = &*rule.name, limit = &*limit.name, "statement shed: database-time budget spent");
            }
            let who = limit_label(rule, limit);
            return Slot::Shed(replies::shed_db_time(
                &who,
                db.spec.per_second,
                waited,
                statement.id,
            ));
        }
        let wait = refill.min(bound - waited);
        Slot::WaitDbTime {
            gate: Gate(Box::pin(async move {
                tokio::time::sleep(wait).await;
                Admitted::DbTime
            })),
            permit,
            since,
        }
    }
}

/// How a shed names what was full: the rule, and the shared limit it counts against.
fn limit_label(rule: &Rule, limit: &Limit) -> String {
    if limit.shared {
        format!("limit \"{}\" (rule \"{}\")", limit.name, rule.name)
    } else {
        format!("rule \"{}\"", rule.name)
    }
}

/// Database time an admitted statement reserved, paid at its completion with what it used.
pub(super) struct Debit {
    pub limit: Arc<Limit>,
    pub reserved: Reserved,
    /// When it was admitted: it could not run upstream before.
    pub admitted: Instant,
}

enum Slot {
    /// Admitted: its slot, since when it waited, and the database time it reserved.
    Granted(Option<OwnedSemaphorePermit>, Instant, Option<Debit>),
    /// Wait for a slot.
    Wait(Gate),
    /// Wait for database time, keeping the slot.
    WaitDbTime {
        gate: Gate,
        permit: Option<OwnedSemaphorePermit>,
        since: Instant,
    },
    Shed(Vec<u8>),
}
