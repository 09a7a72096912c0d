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
use crate::rules::{Fallback, Mode};
use crate::stats::FingerprintStats;

/// A statement cleared to run: the cache fill it leads, its slot, and since when it counts
/// (its wait for the slot is part of its latency and its budget).
pub(super) struct Admission {
    pub fill: Option<Box<Fill>>,
    pub permit: Option<OwnedSemaphorePermit>,
    pub received: Instant,
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
            matched.rules.limiters.get(matched.index)?.as_ref()?;
            Some((ctx, matched))
        });
        let Some((ctx, matched)) = capped else {
            return Flow::Next(Admission {
                fill,
                permit: None,
                received: now,
            });
        };
        match self.take_slot(&ctx.statement, &ctx.handle, matched, now) {
            Slot::Granted(permit, received) => Flow::Next(Admission {
                fill,
                permit,
                received,
            }),
            Slot::Wait(gate) => {
                self.held.wait_for_slot(now, fill);
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
        let permit = match matched.rules.limiters.get(matched.index) {
            Some(Some(limiter)) => match limiter.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return ClientAction::Drop,
            },
            _ => None,
        };
        note(handle, Event::Refresh);
        let budget = matched.rule().map(|rule| {
            Budget::for_refresh(&matched.rules, rule, statement.id, fill.policy.ttl, now)
        });
        let mut running = Running::new(handle.clone(), now, budget, permit);
        running.fill = Some(fill);
        running.client = Client::Answered;
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

    /// A concurrency slot for a capped rule: at once, after waiting at a gate, or shed.
    fn take_slot(
        &mut self,
        statement: &Fingerprinted,
        handle: &FingerprintStats,
        matched: &Matched,
        now: Instant,
    ) -> Slot {
        let (Some(rule), Some(Some(limiter))) =
            (matched.rule(), matched.rules.limiters.get(matched.index))
        else {
            return Slot::Granted(None, now);
        };
        if let Some((permit, since)) = self.held.take_admission() {
            note(handle, Event::Queued(now.saturating_duration_since(since)));
            return match permit {
                Some(permit) => Slot::Granted(Some(permit), since),
                None => {
                    // The wait counts against the budget: when that ran out first, the
                    // budget's 57014 is the answer, not a shed.
                    let budget =
                        Budget::for_statement(&matched.rules, Some(rule), statement.id, since)
                            .filter(|b| !b.observe() && b.limit() <= rule.queue_timeout);
                    if let Some(budget) = budget {
                        note(handle, Event::BudgetPassed(Enforced::Yes));
                        return Slot::Shed(budget.exceeded().into_bytes());
                    }
                    note(handle, Event::Shed(Enforced::Yes));
                    if self.shared.events.first(&rule.name, "shed") {
                        tracing::info!(fingerprint = %statement.id, rule = &*rule.name, "statement shed: no concurrency slot");
                    }
                    let slots = rule.max_concurrency.unwrap_or(0);
                    Slot::Shed(replies::shed(
                        &rule.name,
                        slots,
                        now.saturating_duration_since(since),
                        statement.id,
                    ))
                }
            };
        }
        match limiter.clone().try_acquire_owned() {
            Ok(permit) => Slot::Granted(Some(permit), now),
            Err(_) if rule.mode == Mode::Observe => {
                note(handle, Event::Shed(Enforced::Observed));
                Slot::Granted(None, now)
            }
            Err(_) => {
                let wait = budget::slot_wait(rule.budget(&matched.rules.set), rule.queue_timeout);
                let limiter = limiter.clone();
                Slot::Wait(Gate(Box::pin(async move {
                    Admitted::Slot(
                        tokio::time::timeout(wait, limiter.acquire_owned())
                            .await
                            .ok()
                            .and_then(Result::ok),
                    )
                })))
            }
        }
    }
}

enum Slot {
    Granted(Option<tokio::sync::OwnedSemaphorePermit>, Instant),
    Wait(Gate),
    Shed(Vec<u8>),
}
