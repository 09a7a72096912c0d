//! A statement's time budget, its whole life in one place: the budget a rule (or the default)
//! gives it, the deadline it runs against, what happens when the deadline passes — cancel
//! upstream and wait `cancel_grace`, FATAL when the cancel had no effect; or, with a cached
//! result to fall back on, answer the client and let the statement go on detached to refresh
//! the cache, for a bounded time; or only count it (observe mode) — and the words of the 57014
//! the client gets, which name the rule. Budgets also bound the waits before a statement runs
//! (for a concurrency slot, for another session's identical query).
//!
//! The states and their one `match` of transitions are [`State`] and [`Budget::pass`]; the
//! session's timer asks [`super::Pipeline::next_timer`] and calls
//! [`super::Pipeline::on_timer`] (in `expire.rs`), which is where a passed budget is enforced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::replies::{self, Raised};
use crate::fingerprint::FingerprintId;
use crate::protocol::build::Severity;
use crate::protocol::sqlstate;
use crate::reload::ActiveRules;
use crate::rules::{Mode, Rule};

/// How long a detached refresh may run at most (and never longer than its entry's ttl).
const DETACHED_REFRESH_LIMIT: Duration = Duration::from_secs(30);
/// A detached refresh may take this many times the statement's budget (it holds a
/// concurrency slot meanwhile, so it must not hold it for long).
const DETACHED_BUDGET_FACTOR: u32 = 10;
/// How long a request of a rule without a budget waits for the identical query another
/// session runs, before it runs the query itself (uncached, `fill_wait`).
pub(super) const MAX_FILL_WAIT: Duration = Duration::from_secs(5);

/// Where a running statement's budget is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Within its budget, which passes at `at`.
    Armed { at: Instant },
    /// The budget passed at `since` (enforce mode) and the cancel went upstream; the statement
    /// must end by `since + cancel_grace`, or the session ends with a FATAL.
    Cancelling { since: Instant },
    /// The budget passed at `since` under an observe-mode rule: counted, nothing done.
    Observed { since: Instant },
    /// The client already has its answer (a stale result, or its 57014); the statement goes on
    /// upstream only to refresh the cache, until `until`, and is cancelled then.
    Detached { until: Instant },
}

/// A running statement's time budget.
#[derive(Debug)]
pub(super) struct Budget {
    /// The budget itself (for a refresh started detached: how long it may run).
    limit: Duration,
    /// The rule that set it; None for the default budget.
    rule: Option<Arc<str>>,
    fingerprint: FingerprintId,
    observe: bool,
    cancel_grace: Duration,
    state: State,
}

/// What the session does after [`Budget::pass`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Send a CancelRequest upstream; close the session if the statement still runs at
    /// `grace_until`.
    Cancel { grace_until: Instant },
    /// The statement runs on (observe mode, or detached for the cache).
    RunOn,
}

/// The budget of a statement matching `rule` (None: no rule matched), if it has one.
pub(super) fn limit_of(rules: &ActiveRules, rule: Option<&Rule>) -> Option<Duration> {
    match rule {
        Some(rule) => rule.budget(&rules.set),
        None => rules.set.default_budget,
    }
}

/// How long a detached query of a statement with this budget (if any) and cache ttl may run.
pub(super) fn detached_limit(budget: Option<Duration>, ttl: Duration) -> Duration {
    let cap = ttl.min(DETACHED_REFRESH_LIMIT);
    budget.map_or(cap, |b| {
        b.saturating_mul(DETACHED_BUDGET_FACTOR)
            .max(Duration::from_secs(1))
            .min(cap)
    })
}

/// How long a statement waits for a concurrency slot: its queue_timeout, and never past its
/// budget (a slot that comes later could not be used in time).
pub(super) fn slot_wait(budget: Option<Duration>, queue_timeout: Duration) -> Duration {
    budget.map_or(queue_timeout, |b| b.min(queue_timeout))
}

/// How long a statement waits for another session's identical query: its budget, or
/// [`MAX_FILL_WAIT`] without one (the leader's client may never read, so its fill never ends).
pub(super) fn fill_wait(budget: Option<Duration>) -> Duration {
    budget.unwrap_or(MAX_FILL_WAIT)
}

impl Budget {
    /// The budget of a statement received at `received`: its rule's, or the default.
    pub fn for_statement(
        rules: &ActiveRules,
        rule: Option<&Rule>,
        fingerprint: FingerprintId,
        received: Instant,
    ) -> Option<Budget> {
        let limit = limit_of(rules, rule)?;
        Some(Budget {
            limit,
            rule: rule.map(|r| r.name.clone()),
            fingerprint,
            observe: rule.is_some_and(|r| r.mode == Mode::Observe),
            cancel_grace: rules.set.cancel_grace,
            state: State::Armed {
                at: received.checked_add(limit).unwrap_or(received),
            },
        })
    }

    /// The budget of a refresh that starts detached (its client was answered from a stale
    /// entry): bounded by [`detached_limit`] even when the rule has no budget, since it holds
    /// a concurrency slot and nobody waits for it.
    pub fn for_refresh(
        rules: &ActiveRules,
        rule: &Rule,
        fingerprint: FingerprintId,
        ttl: Duration,
        now: Instant,
    ) -> Budget {
        let limit = detached_limit(rule.budget(&rules.set), ttl);
        Budget {
            limit,
            rule: Some(rule.name.clone()),
            fingerprint,
            observe: false,
            cancel_grace: rules.set.cancel_grace,
            state: State::Detached {
                until: now.checked_add(limit).unwrap_or(now),
            },
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    pub fn rule(&self) -> Option<&Arc<str>> {
        self.rule.as_ref()
    }

    pub fn fingerprint(&self) -> FingerprintId {
        self.fingerprint
    }

    pub fn observe(&self) -> bool {
        self.observe
    }

    /// The instant the session's timer must fire at, if any.
    pub fn next_timer(&self) -> Option<Instant> {
        match self.state {
            State::Armed { at } => Some(at),
            State::Cancelling { since } => Some(since.checked_add(self.cancel_grace)?),
            State::Observed { .. } => None,
            State::Detached { until } => Some(until),
        }
    }

    /// The timer passed at `now`: the one place a budget changes state. `detach_for` is how
    /// long the statement may go on detached when its client can be answered now instead
    /// (asked only when an enforced budget passes; None: cancel it).
    pub fn pass(
        &mut self,
        now: Instant,
        detach_for: impl FnOnce(&Budget) -> Option<Duration>,
    ) -> Step {
        let grace = self.cancel_grace;
        let grace_until = |since: Instant| since.checked_add(grace).unwrap_or(since);
        let current = self.state;
        let (state, step) = match current {
            State::Armed { .. } if self.observe => (State::Observed { since: now }, Step::RunOn),
            State::Armed { .. } => match detach_for(self) {
                Some(limit) => (
                    State::Detached {
                        until: now.checked_add(limit).unwrap_or(now),
                    },
                    Step::RunOn,
                ),
                None => (
                    State::Cancelling { since: now },
                    Step::Cancel {
                        grace_until: grace_until(now),
                    },
                ),
            },
            // A detached refresh ran too long: cancelled like any statement.
            State::Detached { .. } => (
                State::Cancelling { since: now },
                Step::Cancel {
                    grace_until: grace_until(now),
                },
            ),
            // The grace passed too (the session decides), or a spurious wake-up.
            State::Cancelling { since } => (
                current,
                Step::Cancel {
                    grace_until: grace_until(since),
                },
            ),
            State::Observed { .. } => (current, Step::RunOn),
        };
        self.state = state;
        step
    }

    /// True when the budget passed and pgward cancelled the statement: the 57014 PostgreSQL
    /// answers is pgward's, and is reworded to say so. (Any other 57014 — a statement_timeout,
    /// an observe-mode statement, a cancel from the client — passes unchanged.)
    pub fn rewords_cancel(&self) -> bool {
        matches!(self.state, State::Cancelling { .. })
    }

    /// True when the budget passed while the client waited (for the slow statement log).
    pub fn passed(&self) -> bool {
        matches!(
            self.state,
            State::Cancelling { .. } | State::Observed { .. }
        )
    }

    /// The 57014 the client gets for this statement, naming the rule.
    pub fn exceeded(&self) -> Raised {
        Raised {
            severity: Severity::Error,
            code: sqlstate::QUERY_CANCELED.into(),
            message: format!(
                "canceling statement: pgward time budget of {} exceeded ({})",
                replies::format_duration(self.limit),
                rule_label(self.rule.as_deref())
            ),
            detail: format!("fingerprint {}", self.fingerprint),
            hint: Some("Raise the budget in rules.toml, or make the query faster."),
        }
    }

    /// The FATAL that ends a session whose statement ignored its budget's cancel.
    pub fn cancel_ignored(&self) -> Raised {
        Raised {
            severity: Severity::Fatal,
            code: sqlstate::QUERY_CANCELED.into(),
            message: format!(
                "terminating connection: statement exceeded the pgward time budget of {} ({}) and did not stop within {} of its cancel",
                replies::format_duration(self.limit),
                rule_label(self.rule.as_deref()),
                replies::format_duration(self.cancel_grace)
            ),
            detail: format!(
                "fingerprint {}; the upstream connection was closed, so session state is lost",
                self.fingerprint
            ),
            hint: Some(
                "Reconnect. If this repeats, the upstream ignores cancels (e.g. a blocked backend).",
            ),
        }
    }
}

fn rule_label(rule: Option<&str>) -> String {
    match rule {
        Some(name) => format!("rule \"{name}\""),
        None => "the default budget".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(observe: bool, t0: Instant) -> Budget {
        Budget {
            limit: Duration::from_millis(200),
            rule: Some("reco".into()),
            fingerprint: FingerprintId(0xa1),
            observe,
            cancel_grace: Duration::from_secs(2),
            state: State::Armed {
                at: t0 + Duration::from_millis(200),
            },
        }
    }

    #[test]
    fn an_enforced_budget_cancels_then_waits_its_grace() {
        let t0 = Instant::now();
        let mut b = budget(false, t0);
        assert_eq!(b.next_timer(), Some(t0 + Duration::from_millis(200)));
        assert!(!b.rewords_cancel());
        let at = t0 + Duration::from_millis(200);
        let grace_until = at + Duration::from_secs(2);
        assert_eq!(b.pass(at, |_| None), Step::Cancel { grace_until });
        assert_eq!(b.state(), State::Cancelling { since: at });
        assert!(b.rewords_cancel() && b.passed());
        assert_eq!(b.next_timer(), Some(grace_until));
        // Firing again (grace over) keeps the first cancel's grace.
        assert_eq!(
            b.pass(grace_until, |_| panic!("not asked twice")),
            Step::Cancel { grace_until }
        );
    }

    #[test]
    fn observe_mode_counts_and_never_rewords_a_foreign_cancel() {
        let t0 = Instant::now();
        let mut b = budget(true, t0);
        let at = t0 + Duration::from_millis(200);
        assert_eq!(
            b.pass(at, |_| panic!("observe never detaches")),
            Step::RunOn
        );
        assert_eq!(b.state(), State::Observed { since: at });
        assert!(b.passed());
        assert!(
            !b.rewords_cancel(),
            "a statement_timeout's 57014 is not pgward's"
        );
        assert_eq!(b.next_timer(), None);
    }

    #[test]
    fn a_detached_statement_is_cancelled_when_its_refresh_limit_passes() {
        let t0 = Instant::now();
        let mut b = budget(false, t0);
        let at = t0 + Duration::from_millis(200);
        assert_eq!(b.pass(at, |_| Some(Duration::from_secs(2))), Step::RunOn);
        let until = at + Duration::from_secs(2);
        assert_eq!(b.state(), State::Detached { until });
        assert!(!b.passed() && !b.rewords_cancel());
        assert_eq!(b.next_timer(), Some(until));
        assert_eq!(
            b.pass(until, |_| None),
            Step::Cancel {
                grace_until: until + Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn detached_refreshes_are_bounded_with_or_without_a_budget() {
        let s = Duration::from_secs;
        assert_eq!(detached_limit(None, s(60)), s(30));
        assert_eq!(detached_limit(None, s(5)), s(5));
        assert_eq!(detached_limit(Some(Duration::from_millis(50)), s(60)), s(1));
        assert_eq!(
            detached_limit(Some(Duration::from_millis(500)), s(60)),
            s(5)
        );
        assert_eq!(detached_limit(Some(Duration::MAX), s(60)), s(30));
        assert_eq!(slot_wait(Some(s(1)), s(5)), s(1));
        assert_eq!(slot_wait(None, s(5)), s(5));
        assert_eq!(fill_wait(None), MAX_FILL_WAIT);
    }

    #[test]
    fn the_errors_name_the_rule_and_the_budget() {
        let b = budget(false, Instant::now());
        let mut out = Vec::new();
        b.exceeded().write_error_to(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("57014"), "{text}");
        assert!(
            text.contains("pgward time budget of 200ms exceeded (rule \"reco\")"),
            "{text}"
        );
        let mut out = Vec::new();
        b.cancel_ignored().write_error_to(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("FATAL") && text.contains("within 2s of its cancel"),
            "{text}"
        );
    }
}
