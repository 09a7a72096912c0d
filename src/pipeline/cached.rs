//! Phase 3 of a statement: the result cache. For a statement whose rule caches, the session
//! either answers from a fresh entry, answers from a stale one while exactly one request
//! refreshes it (`refresh = "background"`), waits for the identical query another session is
//! already running (single flight, bounded by the budget), or becomes that one request and
//! captures the result. Every statement the cache passes over gets a reason code. This file
//! also follows what each statement does to the session (SET, transaction blocks, writes).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::answer::Span;
use super::budget::{self, Budget};
use super::complete::{Enforced, Event, Served, note};
use super::fill::{Fill, Sent};
use super::phases::Ctx;
use super::state::Held;
use super::{Admitted, Fingerprinted, Gate, Matched, Pipeline, replies};
use crate::cache::session::{DESCRIBED, EXTENDED, SIMPLE};
use crate::cache::{
    Capture, Entry, FillTicket, Flight, Lookup, MissReason, Shape, plan::SessionEffect,
};
use crate::fingerprint;
use crate::rules::{CachePolicy, Fallback, Refresh, Rule};
use crate::stats::FingerprintStats;

/// Resolves when the fill a follower waits for ends (stored or not).
type FillDone = watch::Receiver<()>;
/// A cache key, as the session builds it.
type Key = Vec<u8>;

/// What the cache decided for a statement.
pub(super) enum CachePhase {
    /// Not the cache's business (no caching rule, or not cacheable: reason counted).
    Pass,
    /// pgward answered (a hit, a stale result, or an error); nothing goes upstream.
    Answered,
    /// Hold the frame until another session's identical query ends.
    Wait(Gate),
    /// Run it upstream and capture the result.
    Fill(Box<Fill>),
    /// The client was answered with a stale entry; run the query in the background (detached)
    /// to refresh it, if a concurrency slot is free right now.
    Refresh(Box<Fill>),
}

/// The statement as the cache keys it.
pub(super) struct Request<'a> {
    pub sql: &'a [u8],
    /// Extended protocol: the parameter type OIDs of the Parse (empty for a simple Query).
    pub types: &'a [u8],
    /// Extended protocol: the Bind's formats and values (empty for a simple Query).
    pub bind: &'a [u8],
    pub shape: Shape,
}

impl Request<'_> {
    fn protocol(&self) -> u8 {
        match self.shape {
            Shape::WithRowDescription => SIMPLE,
            Shape::RowsOnly => EXTENDED,
            Shape::Described => DESCRIBED,
        }
    }
}

/// A statement the cache keys, with what its fill would need.
struct Keyed<'a> {
    request: Request<'a>,
    statement: &'a Fingerprinted,
    handle: &'a Arc<FingerprintStats>,
    matched: &'a Matched,
    rule: &'a Rule,
    policy: CachePolicy,
    tables: Arc<[Box<str>]>,
    key: Key,
    /// Set when the frame comes back from waiting for another session's fill: since when.
    waited_since: Option<Instant>,
}

impl Keyed<'_> {
    fn received(&self, now: Instant) -> Instant {
        self.waited_since.unwrap_or(now)
    }

    fn span(&self, now: Instant) -> Span {
        Span {
            received: self.received(now),
            now,
        }
    }

    fn fill(&self, ticket: FillTicket, stale: Option<Arc<Entry>>) -> Box<Fill> {
        Box::new(Fill {
            ticket,
            capture: Capture::new(self.policy.max_entry_size),
            shape: self.request.shape,
            fingerprint: self.statement.id,
            policy: self.policy,
            tables: self.tables.clone(),
            rule: self.rule.name.clone(),
            stale,
            on_budget: self.rule.on_budget_exceeded,
            on_error: self.rule.on_upstream_error,
            serving_stale: None,
            sent: Sent::Nothing,
        })
    }
}

impl Pipeline {
    /// The cache phase of one statement whose rule has a `cache` table. `pending` is the fill
    /// this statement already leads when its frame comes back from waiting for a slot.
    pub(super) fn cache_phase(
        &mut self,
        pending: Option<Box<Fill>>,
        request: Request<'_>,
        ctx: &Ctx,
        matched: &Matched,
        now: Instant,
    ) -> CachePhase {
        if let Some(fill) = pending {
            return CachePhase::Fill(fill);
        }
        let (Some(rule), Some(session)) = (matched.rule(), &self.cache) else {
            return CachePhase::Pass;
        };
        let Some(policy) = rule.cache else {
            return CachePhase::Pass;
        };
        let cache = self.shared.cache.clone();
        let plan = cache.plan(ctx.statement.id, &ctx.statement.text);
        if let Some(reason) = session.refusal(&plan) {
            self.held.end_fill_wait();
            // Counted once: not again when the frame comes back from waiting for a slot.
            if !self.held.readmitted() {
                note(&ctx.handle, Event::Miss(reason));
            }
            return CachePhase::Pass;
        }
        let key = session.key(request.protocol(), request.sql, request.types, request.bind);
        let keyed = Keyed {
            request,
            statement: &ctx.statement,
            handle: &ctx.handle,
            matched,
            rule,
            policy,
            tables: plan.reads.clone(),
            key,
            waited_since: self.held.end_fill_wait(),
        };
        match cache.lookup(&keyed.key, now) {
            Lookup::Fresh(entry) => {
                let shape = keyed.request.shape;
                self.answer_from_cache(
                    entry,
                    Vec::new(),
                    Served::Fresh,
                    shape,
                    keyed.handle,
                    keyed.span(now),
                );
                CachePhase::Answered
            }
            Lookup::Stale(entry) if policy.refresh == Refresh::Background => {
                self.revalidate(&keyed, entry, now)
            }
            Lookup::Stale(entry) => {
                self.lead_or_follow(&keyed, Some(entry), MissReason::Expired, now)
            }
            Lookup::Miss(reason) => self.lead_or_follow(&keyed, None, reason, now),
        }
    }

    /// Stale-while-revalidate (simple protocol): the request that leads the refresh gets the
    /// entry too, and its query refreshes it in the background. In the extended protocol the
    /// batch's ReadyForQuery comes after the Execute, so the leader waits for its refresh (up
    /// to its budget).
    fn revalidate(&mut self, keyed: &Keyed<'_>, entry: Arc<Entry>, now: Instant) -> CachePhase {
        let shape = keyed.request.shape;
        let detachable = shape == Shape::WithRowDescription && keyed.rule.rewrite.is_none();
        let refresh = match self.shared.cache.begin_fill(&keyed.key) {
            Flight::Leader(ticket) if !detachable => {
                note(keyed.handle, Event::Refresh);
                return CachePhase::Fill(keyed.fill(ticket, Some(entry)));
            }
            Flight::Leader(ticket) => Some(keyed.fill(ticket, None)),
            // Another request refreshes it: this one gets the entry as it is.
            Flight::Follower(_) => None,
        };
        self.answer_from_cache(
            entry,
            Vec::new(),
            Served::Revalidating,
            shape,
            keyed.handle,
            keyed.span(now),
        );
        refresh.map_or(CachePhase::Answered, CachePhase::Refresh)
    }

    /// A miss (or an expired entry, `stale`): the first request runs the query and fills the
    /// cache; identical requests meanwhile wait for it (single flight).
    fn lead_or_follow(
        &mut self,
        keyed: &Keyed<'_>,
        stale: Option<Arc<Entry>>,
        reason: MissReason,
        now: Instant,
    ) -> CachePhase {
        match self.shared.cache.begin_fill(&keyed.key) {
            Flight::Leader(ticket) => {
                if keyed.waited_since.is_none() {
                    note(keyed.handle, Event::Miss(reason));
                } else {
                    // The request it waited for failed or was not stored: this one runs it.
                    tracing::debug!(fingerprint = %keyed.statement.id, "cache fill it waited for ended without an entry");
                }
                CachePhase::Fill(keyed.fill(ticket, stale))
            }
            Flight::Follower(done) => self.follow(keyed, done, stale, reason, now),
        }
    }

    /// Waits for the identical query another session runs, up to this statement's budget (or
    /// a bound without one); past it, the stale entry or the 57014, or it runs uncached.
    fn follow(
        &mut self,
        keyed: &Keyed<'_>,
        mut done: FillDone,
        stale: Option<Arc<Entry>>,
        reason: MissReason,
        now: Instant,
    ) -> CachePhase {
        let (handle, received) = (keyed.handle, keyed.received(now));
        let budget = Budget::for_statement(
            &keyed.matched.rules,
            Some(keyed.rule),
            keyed.statement.id,
            received,
        );
        let until = received + budget::fill_wait(budget.as_ref().map(Budget::limit));
        if keyed.waited_since.is_some() && now >= until {
            match budget {
                Some(budget) if !budget.observe() => {
                    note(handle, Event::BudgetPassed(Enforced::Yes));
                    let serve_stale = keyed.rule.on_budget_exceeded == Fallback::ServeStale;
                    let stale = stale.filter(|_| serve_stale);
                    self.follower_out_of_time(&budget, stale, keyed, now);
                    return CachePhase::Answered;
                }
                // Observe mode counts, and the request runs upstream itself.
                Some(_) => note(handle, Event::BudgetPassed(Enforced::Observed)),
                None => {}
            }
            // Without a budget the wait is bounded too: the leader's client may have stopped
            // reading, and then its fill never ends. Past the bound this request runs
            // upstream itself, uncached.
            note(handle, Event::Miss(MissReason::FillWait));
            return CachePhase::Pass;
        }
        if keyed.waited_since.is_none() {
            note(handle, Event::Miss(reason));
            note(handle, Event::Coalesced);
        }
        self.held = Held::ForFill { since: received };
        let wait = until.saturating_duration_since(now);
        CachePhase::Wait(Gate(Box::pin(async move {
            let _ = tokio::time::timeout(wait, done.changed()).await;
            Admitted::CacheFill
        })))
    }

    /// A request waited for another session's identical query until its budget passed: the
    /// stale entry (`stale`: when its rule serves stale), otherwise its 57014.
    fn follower_out_of_time(
        &mut self,
        budget: &Budget,
        stale: Option<Arc<Entry>>,
        keyed: &Keyed<'_>,
        now: Instant,
    ) {
        let (shape, handle, span) = (keyed.request.shape, keyed.handle, keyed.span(now));
        match stale.filter(|e| e.is_usable(now)) {
            Some(entry) => {
                let why = format!(
                    "the time budget of {} passed while the same query ran for another client",
                    replies::format_duration(budget.limit())
                );
                let rule = budget.rule().map_or("", |r| &**r);
                let notice =
                    replies::stale_served(entry.age(now), &why, rule, budget.fingerprint());
                self.answer_from_cache(entry, notice, Served::Fallback, shape, handle, span);
            }
            None => {
                let error = budget.exceeded().into_bytes();
                self.answer_canceled(error, shape, handle, span);
            }
        }
    }

    /// Follows what the statements of a simple Query do to the session (SET, BEGIN/COMMIT,
    /// temporary tables, writes to invalidate at commit).
    pub(super) fn follow_statements(&mut self, sql: &[u8], statements: &[Ctx]) {
        let Some(session) = &mut self.cache else {
            return;
        };
        let text = String::from_utf8_lossy(sql);
        let mut ranges = None;
        for (i, ctx) in statements.iter().enumerate() {
            let statement = &ctx.statement;
            let plan = self.shared.cache.plan(statement.id, &statement.text);
            let original = if plan.session == SessionEffect::Set && statements.len() > 1 {
                let ranges = ranges
                    .get_or_insert_with(|| fingerprint::split_statements_with(&text, self.strings));
                ranges
                    .get(i)
                    .and_then(|r| text.get(r.clone()))
                    .unwrap_or("")
            } else {
                &text
            };
            session.on_statement(&plan, original);
        }
    }

    /// Follows what an Execute'd prepared statement does to the session.
    pub(super) fn follow_prepared(&mut self, statement: &Fingerprinted, sql: Option<&[u8]>) {
        let Some(session) = &mut self.cache else {
            return;
        };
        let plan = self.shared.cache.plan(statement.id, &statement.text);
        let text = sql.map(String::from_utf8_lossy).unwrap_or_default();
        session.on_statement(&plan, &text);
    }

    /// True when Parse must keep the statement's text: some rule caches, or the statement
    /// changes settings that are part of cache keys.
    pub(super) fn keeps_text(&self, statement: &Fingerprinted, caching: bool) -> bool {
        self.cache.is_some()
            && (caching
                || self
                    .shared
                    .cache
                    .plan(statement.id, &statement.text)
                    .session
                    != SessionEffect::None)
    }
}
