//! A statement whose result is captured for the cache ([`Fill`]): it missed, or refreshes a
//! stale entry. When it ends (CommandComplete or ErrorResponse, [`Pipeline::settle_fill`]) the
//! capture is stored — or, when the rule serves stale and PostgreSQL failed it or its budget
//! passed, the stale entry is the client's answer instead.

use std::sync::Arc;
use std::time::Instant;

use super::complete::{Event, note};
use super::{Pipeline, replies};
use crate::cache::{Capture, Entry, FillTicket, Filled, MissReason, Shape};
use crate::fingerprint::FingerprintId;
use crate::protocol::backend::{Backend, ErrorFields};
use crate::protocol::frame::{self, HEADER_LEN};
use crate::protocol::sqlstate;
use crate::rules::{CachePolicy, Fallback, Invalidate};

/// How much of PostgreSQL's result the client has been sent: a stale result can replace it
/// only before any row, and without a second RowDescription once one went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Sent {
    Nothing,
    RowDescription,
    Rows,
}

/// A statement whose result is captured for the cache (it missed, or refreshes an entry).
pub(super) struct Fill {
    pub ticket: FillTicket,
    pub capture: Capture,
    pub shape: Shape,
    pub fingerprint: FingerprintId,
    pub policy: CachePolicy,
    pub tables: Arc<[Box<str>]>,
    pub rule: Arc<str>,
    /// The last good result, for the serve_stale fallbacks.
    pub stale: Option<Arc<Entry>>,
    pub on_budget: Fallback,
    pub on_error: Fallback,
    /// Set when the client gets `stale` instead of what Postgres sends: why.
    pub serving_stale: Option<String>,
    pub sent: Sent,
}

/// The client's answer when a stale entry replaces PostgreSQL's result.
pub(super) struct StaleAnswer {
    pub bytes: Vec<u8>,
    pub rows: u64,
    /// The cached part of `bytes`, counted as served from the cache.
    pub body: usize,
}

impl Fill {
    /// The RowDescription PostgreSQL sent for the client's Describe of the portal this fill
    /// runs (`Shape::Described`): it reached the client, and it leads the entry.
    pub(super) fn capture_described(&mut self, tag: u8, body: &[u8]) {
        let mut frame = Vec::with_capacity(body.len() + HEADER_LEN);
        frame::write(&mut frame, tag, body);
        self.capture.push(&frame, true);
        self.sent(Sent::RowDescription);
    }

    /// The stale entry, if the fallback allows it and it is still usable.
    pub(super) fn usable_stale(&self, fallback: Fallback, now: Instant) -> Option<&Arc<Entry>> {
        if fallback != Fallback::ServeStale || self.sent == Sent::Rows {
            return None;
        }
        self.stale.as_ref().filter(|e| e.is_usable(now))
    }

    /// A message PostgreSQL sent for this statement reached the client.
    pub(super) fn sent(&mut self, progress: Sent) {
        if self.serving_stale.is_none() {
            self.sent = self.sent.max(progress);
        }
    }

    /// PostgreSQL failed the last statement of its batch with `error`: the stale entry
    /// answers instead when the rule says so and the failure is the server's, not the query's
    /// (connection, resources, operator intervention: SQLSTATE classes 08, 53, 57).
    fn fall_back_on_error(&mut self, error: &ErrorFields<'_>, now: Instant) {
        let Some(code) = error.code else {
            return;
        };
        if !sqlstate::is_server_failure(&code) || self.usable_stale(self.on_error, now).is_none() {
            return;
        }
        self.serving_stale = Some(format!(
            "Postgres failed the query with SQLSTATE {}",
            String::from_utf8_lossy(&code)
        ));
    }

    /// The stale entry as the client's answer, with a NOTICE saying why.
    fn stale_answer(&mut self, why: &str, now: Instant) -> Option<(Arc<Entry>, StaleAnswer)> {
        let entry = self.stale.take()?;
        let mut bytes = replies::stale_served(entry.age(now), why, &self.rule, self.fingerprint);
        // A RowDescription Postgres already sent is not sent twice.
        let body = if self.sent == Sent::RowDescription {
            entry.answer(Shape::RowsOnly)
        } else {
            entry.answer(self.shape)
        };
        bytes.extend_from_slice(body);
        let answer = StaleAnswer {
            rows: entry.rows,
            body: body.len(),
            bytes,
        };
        Some((entry, answer))
    }

    /// The result ended well: the entry to store, or why it is not stored.
    fn finish(self) -> Result<(FillTicket, Filled), Option<MissReason>> {
        let overflowed = self.capture.overflowed();
        let Some((bytes, row_description_len, rows)) = self.capture.finish(self.shape) else {
            return Err(overflowed.then_some(MissReason::TooLarge));
        };
        let filled = Filled {
            fingerprint: self.fingerprint,
            bytes,
            row_description_len,
            rows,
            ttl: self.policy.ttl,
            stale_for: self.policy.stale_for,
            tables: self.tables,
            invalidate_on_write: self.policy.invalidate == Invalidate::OnWrite,
        };
        Ok((self.ticket, filled))
    }
}

impl Pipeline {
    /// The front statement's fill ends with this CommandComplete or ErrorResponse: store the
    /// captured result, or (when the client gets a stale result instead) return that answer
    /// and the entry it came from.
    pub(super) fn settle_fill(
        &mut self,
        message: &Backend<'_>,
        now: Instant,
    ) -> Option<(Arc<Entry>, StaleAnswer)> {
        let last = self.expected.front_is_last();
        let running = self.expected.front_running()?;
        let stats = running.stats.clone();
        let mut fill = *running.fill.take()?;
        if let Backend::ErrorResponse(error) = message
            && fill.serving_stale.is_none()
            && last
        {
            fill.fall_back_on_error(error, now);
        }
        if let Some(why) = fill.serving_stale.take() {
            let stale = fill.stale_answer(&why, now)?;
            if self.shared.events.first(&fill.rule, "stale_served") {
                tracing::info!(fingerprint = %fill.fingerprint, rule = &*fill.rule, age_ms = stale.0.age(now).as_millis() as u64, "served a stale cached result");
            }
            return Some(stale);
        }
        let reason = match message {
            Backend::CommandComplete { .. } => match fill.finish() {
                Ok((ticket, filled)) => {
                    let stored = self.shared.cache.store(ticket, filled);
                    if stored && let Some(stats) = &stats {
                        note(stats, Event::Filled);
                    }
                    None
                }
                Err(reason) => reason,
            },
            _ => Some(MissReason::Error),
        };
        if let (Some(reason), Some(stats)) = (reason, &stats) {
            note(stats, Event::NotStored(reason));
        }
        None
    }
}
