//! Where a passed time budget is enforced. The session's timer fires at
//! [`Pipeline::next_timer`] and calls [`Pipeline::on_timer`], which moves the running
//! statement's [`Budget`] through its one transition ([`Budget::pass`]) and says what the
//! session must do: cancel upstream (and end the session with [`Pipeline::cancel_ignored_error`]
//! if the grace passes too), nothing (observe mode), or send the answer pgward made from the
//! cache while the statement goes on, detached, to refresh it.

use std::time::Instant;

use super::budget::{self, Budget, State, Step};
use super::expect::{Fill, Running};
use super::{Pipeline, replies};
use crate::protocol::backend::TransactionStatus;
use crate::protocol::{build, sqlstate};
use crate::rules::Fallback;
use crate::stats::{Counter, Execution};

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
    /// The client got a stale result of this many bytes (else its 57014).
    stale: Option<usize>,
}

impl Pipeline {
    /// The next instant the session must act at: the running statement's deadline, the end
    /// of its cancel grace, or the end of its detached refresh.
    pub fn next_timer(&self) -> Option<Instant> {
        self.expected.front_budget()?.next_timer()
    }

    /// Called when [`Pipeline::next_timer`] has passed.
    pub fn on_timer(&mut self, now: Instant) -> Expiry {
        let last = self.expected.front_is_last();
        let status = self.expected.transaction;
        let Some(Running {
            budget: Some(budget),
            fill,
            stats,
            received,
            detached,
            counts_call,
            ..
        }) = self.expected.front_running()
        else {
            return Expiry::Nothing;
        };
        let was = budget.state();
        let mut fallen = None;
        let step = budget.pass(now, |budget| {
            // Only the last statement before its ReadyForQuery can be answered early.
            let fill = fill.as_deref_mut().filter(|_| last)?;
            let answer = fall_back(fill, budget, now, status)?;
            let limit = budget::detached_limit(Some(budget.limit()), fill.policy.ttl);
            fallen = Some(answer);
            Some(limit)
        });
        let fingerprint = stats.as_ref().map(|s| s.id());
        let rule = budget.rule().map_or("(default)", |r| &**r).to_owned();
        let limit = budget.limit();
        match (was, budget.state()) {
            (State::Armed { .. }, State::Observed { .. }) => {
                if let Some(stats) = &stats {
                    stats.bump(Counter::WouldTimeout);
                }
                tracing::info!(?fingerprint, rule, budget = ?limit, observe = true, "time budget exceeded");
            }
            (State::Armed { .. }, State::Cancelling { .. }) => {
                if let Some(stats) = &stats {
                    stats.bump(Counter::BudgetExceeded);
                }
                tracing::info!(?fingerprint, rule, budget = ?limit, observe = false, "time budget exceeded");
            }
            (State::Detached { .. }, State::Cancelling { .. }) => {
                tracing::info!(
                    ?fingerprint,
                    "detached cache refresh ran too long: cancelled"
                );
            }
            _ => {}
        }
        if let Some(Fallen { out, stale }) = fallen {
            *detached = true;
            if let Some(stats) = &stats {
                stats.bump(Counter::BudgetExceeded);
                if let Some(bytes) = stale {
                    stats.bump(Counter::StaleServed);
                    stats.add(Counter::CacheBytesServed, bytes as u64);
                } else {
                    // Its client's answer, recorded now; the refresh records nothing more.
                    stats.record(&Execution {
                        elapsed: now.saturating_duration_since(*received),
                        rows: 0,
                        bytes_sent: out.len() as u64,
                        error_sqlstate: Some(sqlstate::QUERY_CANCELED_BYTES),
                    });
                }
            }
            match stale {
                Some(_) => self.shared.cache.count_stale_hit(),
                None => *counts_call = false,
            }
            self.expected.detach_front_ready();
            tracing::info!(?fingerprint, rule, budget = ?limit, stale = stale.is_some(), "time budget exceeded: client answered, query detached to fill the cache");
            return Expiry::Answered(out);
        }
        match step {
            Step::Cancel { grace_until } => Expiry::Cancel { grace_until },
            Step::RunOn => Expiry::Nothing,
        }
    }

    /// The FATAL error for a statement that ignored its budget cancel.
    pub fn cancel_ignored_error(&self, out: &mut Vec<u8>) {
        match self.expected.front_budget() {
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
    if fill.on_budget != Fallback::ServeStale || fill.rows_started {
        return None;
    }
    let limit = replies::format_duration(budget.limit());
    let Some(entry) = fill.usable_stale(fill.on_budget, now).cloned() else {
        if fill.row_description_sent {
            return None;
        }
        let mut out = Vec::new();
        budget.exceeded().write_error_to(&mut out);
        build::ready_for_query(&mut out, status);
        return Some(Fallen { out, stale: None });
    };
    if fill.row_description_sent {
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
    entry.count_hit();
    Some(Fallen {
        out,
        stale: Some(body.len()),
    })
}
