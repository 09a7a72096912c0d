//! Statements pgward answers itself instead of PostgreSQL: from a cache entry (fresh, while
//! revalidating, or a stale fallback with its NOTICE) or with an error it raises. The answer is
//! queued where PostgreSQL's would have been, and its outcome recorded at once (`complete.rs`).

use std::sync::Arc;
use std::time::Instant;

use super::Pipeline;
use super::complete::{FromCache, Outcome, Served};
use super::queue::Reply;
use super::state::Held;
use crate::cache::{Entry, Shape};
use crate::protocol::sqlstate;
use crate::stats::FingerprintStats;

/// When the statement arrived, and when pgward answered it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub received: Instant,
    pub now: Instant,
}

impl Pipeline {
    /// Queues a cached result (after `head`, e.g. a notice) as the statement's answer.
    pub(super) fn answer_from_cache(
        &mut self,
        entry: Arc<Entry>,
        head: Vec<u8>,
        served: Served,
        shape: Shape,
        handle: &Arc<FingerprintStats>,
        span: Span,
    ) {
        let body = entry.answer(shape).len();
        // The relay reads the clock once per batch of frames, so `span.now` is often when this
        // statement arrived too: read again, a hit's latency is pgward's own time to answer it
        // (from its frame's arrival to the answer queued for the client), not zero.
        let answered = span.now.max(Instant::now());
        let outcome = Outcome {
            elapsed: answered.saturating_duration_since(span.received),
            rows: entry.rows,
            bytes_sent: (head.len() + body) as u64,
            error: None,
            cache: Some(FromCache {
                entry: &entry,
                served,
                body,
            }),
        };
        self.record(handle, &outcome);
        self.count_queries(1);
        // A slot taken for this statement is not needed.
        self.held = Held::Nothing;
        let simple = shape == Shape::WithRowDescription;
        // The statement's held Parse / Bind / Describe are answered here too: nothing of it
        // reaches PostgreSQL.
        let (mut bytes, undo) = if simple || self.chain.is_empty() {
            (Vec::new(), None)
        } else {
            self.answer_chain(&entry)
        };
        bytes.extend_from_slice(&head);
        self.expected.push_cached(Reply {
            bytes,
            cached: Some((entry, shape)),
            ready: simple,
            undo,
        });
    }

    /// Queues the 57014 pgward raises (a budget that passed while the statement waited) as
    /// the statement's answer.
    pub(super) fn answer_canceled(
        &mut self,
        error: Vec<u8>,
        shape: Shape,
        handle: &Arc<FingerprintStats>,
        span: Span,
    ) {
        let outcome = Outcome {
            elapsed: span.now.saturating_duration_since(span.received),
            rows: 0,
            bytes_sent: error.len() as u64,
            error: Some(sqlstate::QUERY_CANCELED_BYTES),
            cache: None,
        };
        self.record(handle, &outcome);
        self.count_queries(1);
        self.held = Held::Nothing;
        let simple = shape == Shape::WithRowDescription;
        if !simple {
            // Its held messages go upstream for PostgreSQL to answer before the error.
            self.release_chain(false);
            self.batch.fail();
        }
        self.expected.push_reply(error, simple);
    }
}
