//! One cached result and how it is captured. An [`Entry`] holds backend messages exactly as
//! Postgres sent them (RowDescription for the simple protocol, then DataRow... and
//! CommandComplete); a [`Capture`] copies them while they stream to the client that missed,
//! up to the rule's `max_entry_size`, and turns into an entry when the statement completes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::fingerprint::FingerprintId;
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::tag::backend as msg;

/// A cached result.
#[derive(Debug)]
pub struct Entry {
    pub fingerprint: FingerprintId,
    /// The messages a hit replays. For the simple protocol (and an Execute whose portal the
    /// client described) they start with RowDescription.
    pub bytes: Box<[u8]>,
    /// Length of the leading RowDescription in `bytes` (0 when there is none).
    pub row_description_len: usize,
    pub rows: u64,
    pub created: Instant,
    pub ttl: Duration,
    pub stale_for: Duration,
    /// Tables it read (invalidation keys).
    pub tables: Arc<[Box<str>]>,
    /// Whether writes to `tables` seen by pgward drop it (rule `cache.invalidate`).
    pub invalidate_on_write: bool,
    /// The invalidation epoch when its query started (see `ResultCache`).
    pub epoch: u64,
    pub hits: AtomicU64,
}

impl Entry {
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < self.ttl
    }

    /// Still allowed to be served stale.
    pub fn is_usable(&self, now: Instant) -> bool {
        self.age(now) < self.ttl + self.stale_for
    }

    /// The messages after the RowDescription (what an extended-protocol Execute gets).
    pub fn rows_and_completion(&self) -> &[u8] {
        self.bytes.get(self.row_description_len..).unwrap_or(&[])
    }

    /// What a statement answered from this entry gets: everything for a simple Query, the rows
    /// and CommandComplete for an Execute.
    pub fn answer(&self, shape: Shape) -> &[u8] {
        match shape {
            Shape::WithRowDescription => &self.bytes,
            Shape::RowsOnly | Shape::Described => self.rows_and_completion(),
        }
    }

    pub fn count_hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }
}

/// Which messages of a statement's response an entry keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Simple protocol: RowDescription, DataRow..., CommandComplete.
    WithRowDescription,
    /// Extended protocol without a Describe of the portal: DataRow..., CommandComplete.
    RowsOnly,
    /// Extended protocol after a Describe of the portal: RowDescription (the Describe's
    /// answer, which a hit then gives from the entry), DataRow..., CommandComplete.
    Described,
}

impl Shape {
    /// The entry keeps a leading RowDescription.
    pub fn described(self) -> bool {
        matches!(self, Shape::WithRowDescription | Shape::Described)
    }

    /// The row description a hit answers a Describe with: the entry's leading one.
    pub fn row_description(entry: &Entry) -> &[u8] {
        entry.bytes.get(..entry.row_description_len).unwrap_or(&[])
    }
}

/// Backend bytes copied while they stream to the client, bounded in size.
#[derive(Debug)]
pub struct Capture {
    buf: Vec<u8>,
    limit: usize,
    /// The first byte seen was a frame start (bytes of a frame that began before the
    /// statement are skipped).
    aligned: bool,
    overflowed: bool,
}

impl Capture {
    pub fn new(limit: u64) -> Capture {
        Capture {
            buf: Vec::new(),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            aligned: false,
            overflowed: false,
        }
    }

    /// Appends a chunk of backend bytes; `frame_start` tells whether it starts a message.
    pub fn push(&mut self, chunk: &[u8], frame_start: bool) {
        if self.overflowed {
            return;
        }
        if !self.aligned {
            if !frame_start {
                return;
            }
            self.aligned = true;
        }
        // Messages pgward does not keep (ParseComplete, notices, ...) count toward the limit
        // too; they are small.
        if self.buf.len() + chunk.len() > self.limit.saturating_add(64) {
            self.overflowed = true;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(chunk);
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The kept messages: `(bytes, row_description_len, rows)`, or `None` when the capture is
    /// not a complete, well-formed, successful result of the expected shape or is too large.
    pub fn finish(self, shape: Shape) -> Option<(Box<[u8]>, usize, u64)> {
        if self.overflowed {
            return None;
        }
        let mut out = Vec::with_capacity(self.buf.len());
        let mut rest = &self.buf[..];
        let mut row_description_len = 0;
        let mut rows = 0u64;
        let mut completed = false;
        while !rest.is_empty() {
            if rest.len() < HEADER_LEN {
                return None;
            }
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let frame_len = len.checked_add(1)?;
            let frame = rest.get(..frame_len)?;
            match frame[0] {
                msg::ROW_DESCRIPTION if shape.described() && out.is_empty() => {
                    out.extend_from_slice(frame);
                    row_description_len = frame.len();
                }
                msg::DATA_ROW if !completed => {
                    out.extend_from_slice(frame);
                    rows += 1;
                }
                msg::COMMAND_COMPLETE if !completed => {
                    out.extend_from_slice(frame);
                    completed = true;
                }
                // Errors and partial results are never cached.
                msg::ERROR_RESPONSE
                | msg::PORTAL_SUSPENDED
                | msg::EMPTY_QUERY_RESPONSE
                | msg::COPY_IN_RESPONSE
                | msg::COPY_OUT_RESPONSE
                | msg::COPY_BOTH_RESPONSE => return None,
                // ParseComplete, BindComplete, Describe's answers, notices, notifications,
                // ParameterStatus: not part of the result.
                _ => {}
            }
            rest = &rest[frame_len..];
        }
        let described = !shape.described() || row_description_len > 0;
        if !completed || !described || out.len() > self.limit {
            return None;
        }
        Some((out.into_boxed_slice(), row_description_len, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn keeps_the_result_messages_in_order() {
        let (t, d1, d2, c) = (
            frame(msg::ROW_DESCRIPTION, b"desc"),
            frame(msg::DATA_ROW, b"row1"),
            frame(msg::DATA_ROW, b"row2"),
            frame(msg::COMMAND_COMPLETE, b"SELECT 2\0"),
        );
        let mut capture = Capture::new(1024);
        let mut stream = Vec::new();
        for f in [
            &frame(msg::PARSE_COMPLETE, b""),
            &frame(msg::BIND_COMPLETE, b""),
            &t,
            &d1,
            &frame(msg::NOTICE_RESPONSE, b"x"),
            &d2,
            &c,
        ] {
            stream.extend_from_slice(f);
        }
        // Arrives in odd-sized chunks.
        let (a, b) = stream.split_at(7);
        capture.push(a, true);
        capture.push(b, false);
        let (bytes, rd, rows) = capture.finish(Shape::WithRowDescription).expect("complete");
        assert_eq!(rd, t.len());
        assert_eq!(rows, 2);
        assert_eq!(&*bytes, [t, d1, d2, c].concat().as_slice());
    }

    #[test]
    fn refuses_errors_partials_overflow_and_misalignment() {
        let ok = [
            frame(msg::ROW_DESCRIPTION, b"d"),
            frame(msg::COMMAND_COMPLETE, b"SELECT 0\0"),
        ]
        .concat();
        let mut c = Capture::new(1024);
        c.push(
            &[
                frame(msg::ROW_DESCRIPTION, b"d"),
                frame(msg::ERROR_RESPONSE, b"boom"),
            ]
            .concat(),
            true,
        );
        assert!(c.finish(Shape::WithRowDescription).is_none());

        let mut c = Capture::new(1024);
        c.push(
            &[
                frame(msg::DATA_ROW, b"r"),
                frame(msg::PORTAL_SUSPENDED, b""),
            ]
            .concat(),
            true,
        );
        assert!(c.finish(Shape::RowsOnly).is_none());

        let mut c = Capture::new(8);
        c.push(
            &[
                frame(msg::ROW_DESCRIPTION, b"d"),
                frame(msg::DATA_ROW, &[0; 200]),
            ]
            .concat(),
            true,
        );
        assert!(c.overflowed());
        assert!(c.finish(Shape::WithRowDescription).is_none());

        // The tail of a message that started before the statement is skipped.
        let mut c = Capture::new(1024);
        c.push(b"tail-of-notice", false);
        c.push(&ok, true);
        assert!(c.finish(Shape::WithRowDescription).is_some());

        // No CommandComplete: incomplete.
        let mut c = Capture::new(1024);
        c.push(&frame(msg::ROW_DESCRIPTION, b"d"), true);
        assert!(c.finish(Shape::WithRowDescription).is_none());
    }
}
