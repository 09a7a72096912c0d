//! Phase 3 of a statement: the result cache. For a statement whose rule caches, the session
//! either answers from a fresh entry, answers from a stale one while exactly one request
//! refreshes it (`refresh = "background"`), waits for the identical query another session is
//! already running (single flight, bounded by the budget), or becomes that one request and
//! captures the result. Every statement the cache passes over gets a reason code. This file
//! also follows what each statement does to the session (SET, transaction blocks, writes).

use std::sync::Arc;
use std::time::Instant;

use super::budget::{self, Budget};
use super::expect::Fill;
use super::phases::Ctx;
use super::state::Held;
use super::{Admitted, Fingerprinted, Gate, Matched, Pipeline, replies};
use crate::cache::session::{EXTENDED, SIMPLE};
use crate::cache::{Capture, Entry, Flight, Lookup, MissReason, Shape, plan::SessionEffect};
use crate::fingerprint;
use crate::rules::{Fallback, Refresh};
use crate::stats::{Counter, Execution, FingerprintStats};

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
        }
    }
}

impl Pipeline {
    /// The cache phase of one statement whose rule has a `cache` table. `pending` is the fill
    /// this statement already leads when its frame comes back from waiting for a slot.
    pub(super) fn cache_phase(
        &mut self,
        pending: Option<Box<Fill>>,
        request: Request<'_>,
        statement: &Fingerprinted,
        handle: &Arc<FingerprintStats>,
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
        let plan = cache.plan(statement.id, &statement.text);
        if let Some(reason) = session.refusal(&plan) {
            self.held.end_fill_wait();
            // Counted once: not again when the frame comes back from waiting for a slot.
            if !self.held.readmitted() {
                handle.record_miss(reason);
            }
            return CachePhase::Pass;
        }
        let key = session.key(request.protocol(), request.sql, request.types, request.bind);
        let waited_since = self.held.end_fill_wait();
        let received = waited_since.unwrap_or(now);
        let fill = |ticket, stale: Option<Arc<Entry>>| {
            Box::new(Fill {
                ticket,
                capture: Capture::new(policy.max_entry_size),
                shape: request.shape,
                fingerprint: statement.id,
                policy,
                tables: plan.reads.clone(),
                rule: rule.name.clone(),
                stale,
                on_budget: rule.on_budget_exceeded,
                on_error: rule.on_upstream_error,
                serving_stale: None,
                rows_started: false,
                row_description_sent: false,
            })
        };
        let (stale, reason) = match cache.lookup(&key, now) {
            Lookup::Fresh(entry) => {
                self.answer_from_cache(entry, Vec::new(), request.shape, handle, received, now);
                return CachePhase::Answered;
            }
            Lookup::Stale(entry) if policy.refresh == Refresh::Background => {
                // Stale-while-revalidate (simple protocol): the request that leads the refresh
                // gets the entry too, and its query refreshes it in the background. In the
                // extended protocol the batch's ReadyForQuery comes after the Execute, so the
                // leader waits for its refresh (up to its budget).
                let detachable =
                    request.shape == Shape::WithRowDescription && rule.rewrite.is_none();
                let refresh = match cache.begin_fill(&key) {
                    Flight::Leader(ticket) if !detachable => {
                        handle.bump(Counter::CacheRefresh);
                        return CachePhase::Fill(fill(ticket, Some(entry)));
                    }
                    Flight::Leader(ticket) => Some(fill(ticket, None)),
                    // Another request refreshes it: this one gets the entry as it is.
                    Flight::Follower(_) => None,
                };
                cache.count_stale_hit();
                self.answer_from_cache(entry, Vec::new(), request.shape, handle, received, now);
                return refresh.map_or(CachePhase::Answered, CachePhase::Refresh);
            }
            Lookup::Stale(entry) => (Some(entry), MissReason::Expired),
            Lookup::Miss(reason) => (None, reason),
        };
        match cache.begin_fill(&key) {
            Flight::Leader(ticket) => {
                if waited_since.is_none() {
                    handle.record_miss(reason);
                } else {
                    // The request it waited for failed or was not stored: this one runs it.
                    tracing::debug!(fingerprint = %statement.id, "cache fill it waited for ended without an entry");
                }
                CachePhase::Fill(fill(ticket, stale))
            }
            Flight::Follower(mut done) => {
                let budget =
                    Budget::for_statement(&matched.rules, Some(rule), statement.id, received);
                let until = received + budget::fill_wait(budget.as_ref().map(Budget::limit));
                if waited_since.is_some() && now >= until {
                    match budget {
                        Some(budget) if !budget.observe() => {
                            handle.bump(Counter::BudgetExceeded);
                            let serve_stale = rule.on_budget_exceeded == Fallback::ServeStale;
                            let stale = stale.filter(|_| serve_stale);
                            self.follower_out_of_time(
                                &budget,
                                stale,
                                request.shape,
                                handle,
                                received,
                                now,
                            );
                            return CachePhase::Answered;
                        }
                        // Observe mode counts, and the request runs upstream itself.
                        Some(_) => handle.bump(Counter::WouldTimeout),
                        None => {}
                    }
                    // Without a budget the wait is bounded too: the leader's client may have
                    // stopped reading, and then its fill never ends. Past the bound this
                    // request runs upstream itself, uncached.
                    handle.record_miss(MissReason::FillWait);
                    return CachePhase::Pass;
                }
                if waited_since.is_none() {
                    handle.record_miss(reason);
                    handle.bump(Counter::CacheCoalesced);
                }
                self.held = Held::ForFill { since: received };
                let wait = until.saturating_duration_since(now);
                CachePhase::Wait(Gate(Box::pin(async move {
                    let _ = tokio::time::timeout(wait, done.changed()).await;
                    Admitted::CacheFill
                })))
            }
        }
    }

    /// A request waited for another session's identical query until its budget passed: the
    /// stale entry (`stale`: when its rule serves stale), otherwise its 57014.
    fn follower_out_of_time(
        &mut self,
        budget: &Budget,
        stale: Option<Arc<Entry>>,
        shape: Shape,
        handle: &FingerprintStats,
        received: Instant,
        now: Instant,
    ) {
        match stale.filter(|e| e.is_usable(now)) {
            Some(entry) => {
                let why = format!(
                    "the time budget of {} passed while the same query ran for another client",
                    replies::format_duration(budget.limit())
                );
                let rule = budget.rule().map_or("", |r| &**r);
                let notice =
                    replies::stale_served(entry.age(now), &why, rule, budget.fingerprint());
                handle.bump(Counter::StaleServed);
                self.shared.cache.count_stale_hit();
                self.answer_from_cache(entry, notice, shape, handle, received, now);
            }
            None => {
                let error = budget.exceeded().into_bytes();
                self.answer_error(error, shape, handle, received, now);
            }
        }
    }

    /// Queues a cached result (after `head`, e.g. a notice) as the statement's answer.
    pub(super) fn answer_from_cache(
        &mut self,
        entry: Arc<Entry>,
        head: Vec<u8>,
        shape: Shape,
        handle: &FingerprintStats,
        received: Instant,
        now: Instant,
    ) {
        let body_len = entry.answer(shape).len();
        entry.count_hit();
        handle.bump(Counter::CacheHit);
        handle.add(Counter::CacheBytesServed, body_len as u64);
        handle.record(&Execution {
            elapsed: now.saturating_duration_since(received),
            rows: entry.rows,
            bytes_sent: (head.len() + body_len) as u64,
            error_sqlstate: None,
        });
        self.count_queries(1);
        // A slot taken for this statement is not needed.
        self.held = Held::Nothing;
        let simple = shape == Shape::WithRowDescription;
        self.expected.push_cached(head, entry, shape, simple);
    }

    /// Queues an error pgward raises as the statement's answer.
    fn answer_error(
        &mut self,
        error: Vec<u8>,
        shape: Shape,
        handle: &FingerprintStats,
        received: Instant,
        now: Instant,
    ) {
        handle.record(&Execution {
            elapsed: now.saturating_duration_since(received),
            rows: 0,
            bytes_sent: error.len() as u64,
            error_sqlstate: Some(crate::protocol::sqlstate::QUERY_CANCELED_BYTES),
        });
        self.count_queries(1);
        self.held = Held::Nothing;
        let simple = shape == Shape::WithRowDescription;
        if !simple {
            self.batch.fail();
        }
        self.expected.push_reply(error, simple);
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
