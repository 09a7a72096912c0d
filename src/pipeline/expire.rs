//! Where a passed time budget is enforced. The session's timer fires at
//! [`Pipeline::next_timer`] and calls [`Pipeline::on_timer`], which moves the running
//! statement's [`Budget`] through its one transition ([`Budget::pass`]) and says what the
//! session must do: cancel upstream (and end the session with [`Pipeline::cancel_ignored_error`]
//! if the grace passes too), nothing (observe mode), or send the answer pgward made from the
//! cache while the statement goes on, detached, to refresh it.

use std::sync::Arc;
use std::time::Instant;

use super::budget::{self, Budget, State, Step};
use super::complete::{Enforced, Event, FromCache, Outcome, Served, note};
use super::fill::{Fill, Sent};
use super::queue::{Client, Running};
use super::{Pipeline, replies};
use crate::cache::Entry;
use crate::eventlog::EventLog;
use crate::protocol::backend::TransactionStatus;
use crate::protocol::{build, sqlstate};
use crate::rules::Fallback;
use crate::stats::FingerprintStats;

/// What the session must do when a deadline passes.
pub enum Expiry {
    /// Send a CancelRequest upstream; close the session if the statement is still running at
    /// the returned instant.
    Cancel { grace_until: Instant },
    /// Observe mode (or nothing running): nothing to do.
    Nothing,
    /// pgward answered the client with these bytes (a stale cached result, or its 57014 while
    /// the query fills the cache); the statement keeps running upstream, detached.
    Answered(Vec<u8>),
}

/// The answer a statement filling the cache gets when its budget passes, instead of waiting
/// for its cancel.
struct Fallen {
    out: Vec<u8>,
    /// The client got this stale entry, of which `body` bytes (else its 57014).
    stale: Option<(Arc<Entry>, usize)>,
}

impl Fallen {
    /// The client's answer, as its statement's outcome (`span`: received, answered).
    fn outcome(&self, (received, now): (Instant, Instant)) -> Outcome<'_> {
        Outcome {
            elapsed: now.saturating_duration_since(received),
            rows: self.stale.as_ref().map_or(0, |(entry, _)| entry.rows),
            bytes_sent: self.out.len() as u64,
            error: match self.stale {
                Some(_) => None,
                None => Some(sqlstate::QUERY_CANCELED_BYTES),
            },
            cache: self.stale.as_ref().map(|(entry, body)| FromCache {
                entry,
                served: Served::Fallback,
                body: *body,
            }),
        }
    }
}

/// Counts (and logs, the first of a flood: [`EventLog`]) what the budget's transition means: a
/// budget observe mode only counts, one pgward enforces, or a detached refresh that ran too long.
fn count_transition(
    was: State,
    budget: &Budget,
    stats: Option<&FingerprintStats>,
    events: &EventLog,
) {
    let fingerprint = stats.map(FingerprintStats::id);
    let rule = budget.rule().map_or("(default)", |r| &**r);
    let limit = budget.limit();
    let enforced = match (was, budget.state()) {
        (State::Armed { .. }, State::Observed { .. }) => {
            if events.first(rule, "budget_observed") {
                tracing::info!(?fingerprint, rule, budget = ?limit, observe = true, "time budget exceeded");
            }
            Enforced::Observed
        }
        (State::Armed { .. }, State::Cancelling { .. }) => {
            if events.first(rule, "budget_exceeded") {
                tracing::info!(?fingerprint, rule, budget = ?limit, observe = false, "time budget exceeded");
            }
            Enforced::Yes
        }
        (State::Detached { .. }, State::Cancelling { .. }) => {
            if events.first(rule, "refresh_cancelled") {
                tracing::info!(
                    ?fingerprint,
                    rule,
                    "detached cache refresh ran too long: cancelled"
                );
            }
            return;
        }
        _ => return,
    };
    if let Some(stats) = stats {
        note(stats, Event::BudgetPassed(enforced));
    }
}

impl Pipeline {
    /// The next instant the session must act at: the running statement's deadline, the end
    /// of its cancel grace, or the end of its detached refresh.
    pub fn next_timer(&self) -> Option<Instant> {
        self.expected.running_budget()?.next_timer()
    }

    /// Called when [`Pipeline::next_timer`] has passed.
    pub fn on_timer(&mut self, now: Instant) -> Expiry {
        let status = self.expected.transaction;
        let Some((
            Running {
                budget: Some(budget),
                fill,
                stats,
                received,
                client,
                ..
            },
            at,
        )) = self.expected.running_for_timer()
        else {
            return Expiry::Nothing;
        };
        // Only the last statement before its ReadyForQuery can be answered early, and only
        // when nothing is owed to the client before it.
        let early = at.last && !at.answers_owed;
        let was = budget.state();
        let mut fallen = None;
        let step = budget.pass(now, |budget| {
            let fill = fill.as_deref_mut().filter(|_| early)?;
            let answer = fall_back(fill, budget, now, status)?;
            let limit = budget::detached_limit(Some(budget.limit()), fill.policy.ttl);
            fallen = Some(answer);
            Some(limit)
        });
        count_transition(was, budget, stats.as_deref(), &self.shared.events);
        let Some(fallen) = fallen else {
            return match step {
                Step::Cancel { grace_until } => Expiry::Cancel { grace_until },
                Step::RunOn => Expiry::Nothing,
            };
        };
        // The client is answered now; the statement runs on only to refresh the cache.
        *client = Client::Answered;
        let span = (*received, now);
        let (stats, fingerprint) = (stats.clone(), stats.as_ref().map(|s| s.id()));
        let (rule, limit) = (budget.rule().cloned(), budget.limit());
        if let Some(stats) = &stats {
            note(stats, Event::BudgetPassed(Enforced::Yes));
            self.record(stats, &fallen.outcome(span));
        }
        self.expected.detach_front_ready();
        let rule = rule.as_deref().unwrap_or("(default)");
        if self.shared.events.first(rule, "budget_exceeded_detached") {
            tracing::info!(?fingerprint, rule, budget = ?limit, stale = fallen.stale.is_some(), "time budget exceeded: client answered, query detached to fill the cache");
        }
        Expiry::Answered(fallen.out)
    }

    /// The FATAL error for a statement that ignored its budget cancel.
    pub fn cancel_ignored_error(&self, out: &mut Vec<u8>) {
        match self.expected.running_budget() {
            Some(budget) => budget.cancel_ignored().write_error_to(out),
            None => build::Report::fatal(
                sqlstate::QUERY_CANCELED,
                "pgward: statement did not stop after its cancel",
            )
            .write_error(out),
        }
    }
}

/// A statement filling the cache passed its (enforced) budget: what its client gets now, if
/// anything. With `on_budget_exceeded = "serve_stale"` and nothing of the result sent yet: the
/// stale entry when there is one, otherwise its 57014 at once — either way the query goes on
/// so that the next request finds a fresh entry. When PostgreSQL already sent the
/// RowDescription, the stale rows replace its result once the cancel lands (`serving_stale`).
fn fall_back(
    fill: &mut Fill,
    budget: &Budget,
    now: Instant,
    status: TransactionStatus,
) -> Option<Fallen> {
    if fill.on_budget != Fallback::ServeStale || fill.sent == Sent::Rows {
        return None;
    }
    let limit = replies::format_duration(budget.limit());
    let Some(entry) = fill.usable_stale(fill.on_budget, now).cloned() else {
        if fill.sent == Sent::RowDescription {
            return None;
        }
        let mut out = Vec::new();
        budget.exceeded().write_error_to(&mut out);
        build::ready_for_query(&mut out, status);
        return Some(Fallen { out, stale: None });
    };
    if fill.sent == Sent::RowDescription {
        fill.serving_stale = Some(format!(
            "the time budget of {limit} passed; the query was cancelled"
        ));
        return None;
    }
    let why = format!(
        "the time budget of {limit} passed; the query goes on in the background to refresh it"
    );
    let mut out = replies::stale_served(entry.age(now), &why, &fill.rule, fill.fingerprint);
    let body = entry.answer(fill.shape);
    out.extend_from_slice(body);
    build::ready_for_query(&mut out, status);
    let body = body.len();
    Some(Fallen {
        out,
        stale: Some((entry, body)),
    })
}
