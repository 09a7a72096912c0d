//! Phase 2 and 3 of a statement: the rules decision. One rules snapshot per statement; the first
//! matching rule decides. Query and Parse may be rejected or rewritten; Query and Execute wait
//! for a concurrency slot (or are shed) and get their deadline. Observe-mode rules only count
//! what they would have done.

use std::sync::Arc;
use std::time::Instant;

use super::budget::{self, Budget};
use super::cached::{CachePhase, Request};
use super::expect::{Fill, Running};
use super::{Admitted, ClientAction, Fingerprinted, Gate, Matched, Pipeline, Statement, replies};
use crate::cache::{MissReason, Shape};
use crate::fingerprint;
use crate::protocol::{MAX_PARAMETERS, build, frontend};
use crate::reload::ActiveRules;
use crate::rules::Fallback;
use crate::rules::{Action, Mode, SessionInfo};
use crate::stats::{Counter, FingerprintStats};

impl Pipeline {
    fn matched(&self, rules: &Arc<ActiveRules>, statement: &Fingerprinted) -> Option<Matched> {
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

    pub(super) fn on_query(&mut self, sql: &[u8], now: Instant) -> super::ClientAction {
        if !self.recording() {
            self.count_queries(1);
            self.expected.push_running(Running::untracked(now));
            self.expected.push_ready();
            return ClientAction::Forward;
        }
        let statements = self.shared.fingerprints.query(sql, self.strings);
        let rules = self.shared.rules.snapshot();
        let matches: Vec<Option<Matched>> =
            statements.iter().map(|s| self.matched(&rules, s)).collect();
        let handles: Vec<Arc<FingerprintStats>> = statements
            .iter()
            .map(|s| self.shared.stats.fingerprint(s.id, &s.text))
            .collect();
        for (handle, matched) in handles.iter().zip(&matches) {
            if let Some(rule) = matched.as_ref().and_then(Matched::rule) {
                handle.set_rule(&rule.name);
            }
        }

        // Reject: the whole Query is answered by pgward.
        for ((statement, handle), matched) in statements.iter().zip(&handles).zip(&matches) {
            let Some(rule) = matched.as_ref().and_then(Matched::rule) else {
                continue;
            };
            if let Action::Reject { message, sqlstate } = &rule.action {
                if rule.mode == Mode::Observe {
                    handle.bump(Counter::WouldReject);
                    continue;
                }
                handle.bump(Counter::Rejected);
                self.count_queries(statements.len());
                self.expected.push_reply(
                    replies::rejected(&rule.name, sqlstate, message, statement.id),
                    true,
                );
                return ClientAction::Drop;
            }
        }

        // Result cache: a single read statement whose rule caches. A fill this frame led before
        // waiting for a slot, and the start of a wait for another session's fill, belong to
        // this frame only.
        let pending = self.held.take_fill();
        let mut fill = None;
        if self.cache.is_some() {
            if let ([statement], [handle], [Some(matched)]) =
                (&statements[..], &handles[..], &matches[..])
            {
                let request = Request {
                    sql,
                    types: &[],
                    bind: &[],
                    shape: Shape::WithRowDescription,
                };
                match self.cache_phase(pending, request, statement, handle, matched, now) {
                    CachePhase::Pass => {}
                    CachePhase::Answered => return ClientAction::Drop,
                    CachePhase::Wait(gate) => return ClientAction::Wait(gate),
                    CachePhase::Fill(f) => fill = Some(f),
                    CachePhase::Refresh(f) => {
                        return self.refresh_detached(f, handle, matched, statement, now);
                    }
                }
            } else if statements.len() > 1 && !self.held.readmitted() {
                for (handle, matched) in handles.iter().zip(&matches) {
                    if matched
                        .as_ref()
                        .and_then(Matched::rule)
                        .is_some_and(|r| r.cache.is_some())
                    {
                        handle.record_miss(MissReason::MultiStatement);
                    }
                }
            }
        }

        self.held.end_fill_wait();

        // Concurrency cap: one slot, of the first capped rule among the statements.
        let capped = statements
            .iter()
            .zip(&handles)
            .zip(&matches)
            .find_map(|((s, h), m)| {
                let m = m.as_ref()?;
                m.rules.limiters.get(m.index)?.as_ref()?;
                Some((s.clone(), h.clone(), m.clone()))
            });
        let (permit, received) = match capped {
            Some((statement, handle, matched)) => {
                match self.take_slot(&statement, &handle, &matched, now) {
                    Slot::Granted(permit, received) => (permit, received),
                    Slot::Wait(gate) => {
                        self.held.wait_for_slot(now, fill);
                        return ClientAction::Wait(gate);
                    }
                    Slot::Shed(bytes) => {
                        return self.answer_shed(
                            bytes,
                            fill,
                            &handle,
                            (statements.len(), true),
                            now,
                        );
                    }
                }
            }
            None => (None, now),
        };

        // Rewrite, then one expected completion per statement.
        let replaced = self.rewrite_query(sql, &statements, &handles, &matches);
        self.follow_statements(sql, &statements);
        self.count_queries(statements.len());
        let last = statements.len().saturating_sub(1);
        let mut permit = permit;
        for (i, ((statement, handle), matched)) in
            statements.iter().zip(handles).zip(&matches).enumerate()
        {
            let rule = matched.as_ref().and_then(Matched::rule);
            let budget = Budget::for_statement(&rules, rule, statement.id, received);
            let permit = if i == last { permit.take() } else { None };
            let mut running = Running::new(handle, received, budget, permit);
            running.fill = fill.take();
            self.expected.push_running(running);
        }
        self.expected.push_ready();
        match replaced {
            Some(frame) => ClientAction::Replace(frame),
            None => ClientAction::Forward,
        }
    }

    /// Rewrites the statements whose (enforcing) rule has a rewrite; None when none does.
    fn rewrite_query(
        &self,
        sql: &[u8],
        statements: &[Fingerprinted],
        handles: &[Arc<FingerprintStats>],
        matches: &[Option<Matched>],
    ) -> Option<Vec<u8>> {
        let any = matches.iter().any(|m| {
            m.as_ref()
                .and_then(Matched::rule)
                .is_some_and(|r| r.rewrite.is_some())
        });
        if !any {
            return None;
        }
        let text = String::from_utf8_lossy(sql);
        let ranges = fingerprint::split_statements_with(&text, self.strings);
        if ranges.len() != statements.len() {
            return None;
        }
        let mut out = String::with_capacity(text.len() + 64);
        let mut copied = 0;
        let mut changed = false;
        for ((range, handle), matched) in ranges.into_iter().zip(handles).zip(matches) {
            let Some(rule) = matched.as_ref().and_then(Matched::rule) else {
                continue;
            };
            let Some(rewrite) = &rule.rewrite else {
                continue;
            };
            if rule.mode == Mode::Observe {
                handle.bump(Counter::WouldRewrite);
                continue;
            }
            let Some(original) = text.get(range.clone()) else {
                continue;
            };
            let normalized = fingerprint::normalize_with(original, self.strings);
            out.push_str(text.get(copied..range.start)?);
            out.push_str(&rewrite.apply_to_text(original, &normalized));
            copied = range.end;
            changed = true;
            handle.record_rewrite(rewrite.target);
        }
        if !changed {
            return None;
        }
        out.push_str(text.get(copied..)?);
        let mut frame = Vec::new();
        build::query(&mut frame, &out)?;
        Some(frame)
    }

    pub(super) fn on_parse(&mut self, body: &[u8]) -> ClientAction {
        let Some(parse) = frontend::parse(body) else {
            return ClientAction::Forward;
        };
        if !self.recording() {
            return ClientAction::Forward;
        }
        let Some(statement) = self.shared.fingerprints.statement(parse.sql, self.strings) else {
            return ClientAction::Forward;
        };
        let rules = self.shared.rules.snapshot();
        let matched = self.matched(&rules, &statement);
        let keeps = self.keeps_text(&statement, rules.set.caches());
        let recorded = Statement {
            sql: keeps.then(|| Arc::from(parse.sql)),
            types: keeps.then(|| Arc::from(parse.param_types)),
            tracked: self.batch.tracked(),
            fingerprint: statement.clone(),
            bind: None,
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
                handle.bump(Counter::WouldReject);
            } else {
                handle.bump(Counter::Rejected);
                self.expected.push_reply(
                    replies::rejected(&rule.name, sqlstate, message, statement.id),
                    false,
                );
                self.batch.fail();
                return ClientAction::Drop;
            }
        }
        let replaced = match &rule.rewrite {
            Some(_) if observe => {
                handle.bump(Counter::WouldRewrite);
                None
            }
            Some(rewrite) => {
                let text = String::from_utf8_lossy(parse.sql);
                let normalized = fingerprint::normalize_with(&text, self.strings);
                let declared: Vec<u32> = (0..usize::from(parse.param_type_count))
                    .map(|i| parse.param_type(i))
                    .collect();
                // `$k` beyond the protocol's limit: PostgreSQL refuses the statement itself, so
                // it goes on unchanged to get that error.
                highest_parameter(&text, &normalized).and_then(|highest| {
                    let referenced = highest.max(declared.len());
                    let (sql, oids) =
                        rewrite.apply_to_parse(&text, &normalized, &declared, referenced);
                    let mut frame = Vec::new();
                    build::parse(&mut frame, parse.statement, &sql, &oids)?;
                    handle.record_rewrite(rewrite.target);
                    Some(frame)
                })
            }
            None => None,
        };
        self.record_statement(parse.statement, recorded);
        match replaced {
            Some(frame) => ClientAction::Replace(frame),
            None => ClientAction::Forward,
        }
    }

    pub(super) fn on_execute(&mut self, body: &[u8], now: Instant) -> ClientAction {
        let execute = frontend::execute(body);
        let max_rows = execute.as_ref().map_or(0, |e| e.max_rows);
        let portal = execute.and_then(|e| self.portals.get(e.portal)).cloned();
        let Some(portal) = portal else {
            self.count_queries(1);
            self.expected.push_running(Running::untracked(now));
            return ClientAction::Forward;
        };
        let statement = &portal.fingerprint;
        let rules = self.shared.rules.snapshot();
        let matched = self.matched(&rules, statement);
        let handle = self.shared.stats.fingerprint(statement.id, &statement.text);

        let pending = self.held.take_fill();
        let mut fill = None;
        if let Some(m) = &matched
            && m.rule().is_some_and(|r| r.cache.is_some())
            && self.cache.is_some()
        {
            match (&portal.sql, &portal.bind) {
                _ if !portal.tracked => {}
                _ if max_rows != 0 && !self.held.readmitted() => {
                    handle.record_miss(MissReason::Partial);
                }
                _ if max_rows != 0 => {}
                (Some(sql), Some(bind)) if self.batch.tracked() => {
                    let request = Request {
                        sql,
                        types: portal.types.as_deref().unwrap_or_default(),
                        bind,
                        shape: Shape::RowsOnly,
                    };
                    match self.cache_phase(pending, request, statement, &handle, m, now) {
                        CachePhase::Pass => {}
                        CachePhase::Answered => return ClientAction::Drop,
                        CachePhase::Wait(gate) => return ClientAction::Wait(gate),
                        CachePhase::Fill(f) => fill = Some(f),
                        // Only the simple protocol refreshes in the background.
                        CachePhase::Refresh(_) => return ClientAction::Drop,
                    }
                }
                // Prepared before a caching rule existed, or mid-batch when rules changed.
                _ => {}
            }
        }
        self.held.end_fill_wait();

        let (permit, received) = match &matched {
            Some(m) if m.rules.limiters.get(m.index).is_some_and(Option::is_some) => {
                match self.take_slot(statement, &handle, m, now) {
                    Slot::Granted(permit, received) => (permit, received),
                    Slot::Wait(gate) => {
                        self.held.wait_for_slot(now, fill);
                        return ClientAction::Wait(gate);
                    }
                    Slot::Shed(bytes) => {
                        return self.answer_shed(bytes, fill, &handle, (1, false), now);
                    }
                }
            }
            _ => (None, now),
        };
        self.follow_prepared(statement, portal.sql.as_deref());
        self.count_queries(1);
        let rule = matched.as_ref().and_then(Matched::rule);
        let budget = Budget::for_statement(&rules, rule, statement.id, received);
        let mut running = Running::new(handle, received, budget, permit);
        running.fill = fill;
        self.expected.push_running(running);
        ClientAction::Forward
    }

    /// Sends a statement already answered from a stale entry upstream, detached, to refresh
    /// the entry: only when its rule's concurrency slot is free now (otherwise a later request
    /// refreshes). Its result is captured and swallowed.
    fn refresh_detached(
        &mut self,
        fill: Box<Fill>,
        handle: &Arc<FingerprintStats>,
        matched: &Matched,
        statement: &Fingerprinted,
        now: Instant,
    ) -> ClientAction {
        let permit = match matched.rules.limiters.get(matched.index) {
            Some(Some(limiter)) => match limiter.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return ClientAction::Drop,
            },
            _ => None,
        };
        handle.bump(Counter::CacheRefresh);
        let budget = matched.rule().map(|rule| {
            Budget::for_refresh(&matched.rules, rule, statement.id, fill.policy.ttl, now)
        });
        let mut running = Running::new(handle.clone(), now, budget, permit);
        running.fill = Some(fill);
        running.detached = true;
        running.counts_call = false;
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
        handle.bump(Counter::StaleServed);
        self.shared.cache.count_stale_hit();
        self.answer_from_cache(entry, notice, fill.shape, handle, now, now);
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
            handle.record_queued(now.saturating_duration_since(since));
            return match permit {
                Some(permit) => Slot::Granted(Some(permit), since),
                None => {
                    handle.bump(Counter::Shed);
                    tracing::info!(fingerprint = %statement.id, rule = &*rule.name, "statement shed: no concurrency slot");
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
                handle.bump(Counter::WouldShed);
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

/// The highest `$k` parameter the original statement uses.
/// The highest `$k` among the statement's slots (0 for none); `None` when one is beyond
/// [`MAX_PARAMETERS`] (or too long to be a number at all).
fn highest_parameter(sql: &str, normalized: &fingerprint::Normalized) -> Option<usize> {
    let mut highest = 0;
    for range in &normalized.slots {
        let Some(digits) = sql
            .get(range.clone())
            .and_then(|s| s.strip_prefix('$'))
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue; // a literal, such as a dollar-quoted string
        };
        let k = digits
            .parse::<usize>()
            .ok()
            .filter(|&k| k <= MAX_PARAMETERS)?;
        highest = highest.max(k);
    }
    Some(highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn highest(sql: &str) -> Option<usize> {
        highest_parameter(sql, &fingerprint::normalize(sql))
    }

    #[test]
    fn parameter_numbers_past_the_protocol_limit_are_refused() {
        assert_eq!(highest("select $1, $3, 'x'"), Some(3));
        assert_eq!(highest("select $$dollar$$, 5"), Some(0));
        assert_eq!(highest("select $65535"), Some(MAX_PARAMETERS));
        assert_eq!(highest("select $65536"), None);
        assert_eq!(highest("select $99999999999999"), None);
        assert_eq!(highest("select $999999999999999999999999999999"), None);
    }

    #[test]
    fn parse_frames_carry_at_most_the_protocol_limit_of_types() {
        let mut out = Vec::new();
        assert!(build::parse(&mut out, b"s", "select 1", &vec![0; MAX_PARAMETERS + 1]).is_none());
        assert!(out.is_empty());
        build::parse(&mut out, b"s", "select $1", &[23]).unwrap();
        assert_eq!(out, b"P\0\0\0\x16s\0select $1\0\0\x01\0\0\0\x17");
    }
}
