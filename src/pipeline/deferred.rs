//! Cache hits with zero upstream messages in the extended protocol. A cacheable statement's
//! Parse, Bind and Describe of its portal are held back (the held [`Chain`]) until its Execute
//! shows whether the cache answers it:
//!
//! - a hit: pgward answers the whole chain itself — ParseComplete, BindComplete, the entry's
//!   RowDescription for the Describe, then the rows — and the statement and portal are marked
//!   answered (`statements.rs`: sent upstream later only if a message needs them there);
//! - anything else (a miss, a partial Execute, any other message): the chain is released
//!   upstream, in order, before whatever comes next, exactly as it arrived.
//!
//! A chain is one statement's messages only, in protocol order: a re-sent Parse of a statement
//! pgward had answered or the client's Parse, then the Bind of one portal of it, then a
//! Describe of that portal. Anything else releases it first, so the answers pgward gives for a
//! hit are always the ones PostgreSQL would have given for that statement, and only for a
//! statement whose identical execution the cache holds.

use std::ops::Range;

use super::Pipeline;
use super::queue::Owed;
use super::statements::{Undo, Upstream};
use crate::cache::{Entry, Shape};
use crate::protocol::build;
use crate::protocol::frame;
use crate::protocol::frontend::Bind;
use crate::protocol::tag::frontend as tag;

/// The held messages of one statement, as they arrived, and what each one is.
#[derive(Default)]
pub(super) struct Chain {
    bytes: Vec<u8>,
    /// The statement the chain is about (the client's name).
    statement: Box<[u8]>,
    head: Head,
    /// The portal bound, and where its Bind is in `bytes`.
    bind: Option<(Box<[u8]>, Range<usize>)>,
    /// The client described the portal (answered from the entry on a hit).
    describe: bool,
}

/// What starts a chain.
#[derive(Default)]
enum Head {
    /// Nothing held.
    #[default]
    Empty,
    /// The client's Parse (`bytes[..end]`), with what its name meant before.
    Parse { end: usize, undo: Option<Box<Undo>> },
    /// A Bind of a statement PostgreSQL does not have (pgward answered its Parse): that
    /// Parse is held first, for pgward's own account.
    Reparse,
}

impl Chain {
    pub fn is_empty(&self) -> bool {
        matches!(self.head, Head::Empty) && self.bind.is_none()
    }

    /// The portal whose Execute may answer the chain, if one is bound.
    fn portal(&self) -> Option<&[u8]> {
        self.bind.as_ref().map(|(portal, _)| &**portal)
    }

    pub fn describes(&self) -> bool {
        self.describe
    }
}

impl Pipeline {
    /// Holds the client's Parse of a statement that may be answered from the cache; false
    /// when it must go upstream now. What is held is what would have been sent: the
    /// rewritten frame, or the original (`body`).
    pub(super) fn hold_parse(
        &mut self,
        name: &[u8],
        rewritten: Option<&[u8]>,
        body: &[u8],
    ) -> bool {
        let holdable = self.chain.is_empty()
            && self.cache.is_some()
            && self.batch.tracked()
            && self.prepared.get(name).is_some_and(|s| s.caches && s.sql.is_some())
            // A named statement that exists already is PostgreSQL's error to give (42P05);
            // one SQL PREPAREd may exist without pgward knowing it.
            && (name.is_empty() || (self.undo_previous_is_none() && !self.sql_prepare));
        if !holdable {
            return false;
        }
        match rewritten {
            Some(frame) => self.chain.bytes.extend_from_slice(frame),
            None => frame::write(&mut self.chain.bytes, tag::PARSE, body),
        }
        self.chain.statement = name.into();
        self.chain.head = Head::Parse {
            end: self.chain.bytes.len(),
            undo: self.undo.take(),
        };
        true
    }

    /// The name a Parse just recorded meant nothing before (from its undo).
    fn undo_previous_is_none(&self) -> bool {
        self.undo.as_ref().is_none_or(|u| u.previous.is_none())
    }

    /// Holds a Bind of the held statement (or of a cacheable one PostgreSQL has, or pgward
    /// answered); false when it must go upstream now.
    pub(super) fn hold_bind(&mut self, bind: &Bind<'_>, body: &[u8]) -> bool {
        let Some(statement) = self.prepared.get(bind.statement) else {
            return false;
        };
        let continues = match self.chain.head {
            Head::Parse { .. } => {
                self.chain.bind.is_none() && *self.chain.statement == *bind.statement
            }
            Head::Empty | Head::Reparse => self.chain.is_empty(),
        };
        let holdable = continues
            && statement.caches
            && statement.tracked
            && statement.sql.is_some()
            && self.batch.tracked()
            && (bind.portal.is_empty() || !self.portals.contains_key(bind.portal));
        if !holdable {
            return false;
        }
        if self.chain.is_empty() {
            self.chain.statement = bind.statement.into();
            if let Upstream::Answered(parse) = &statement.upstream {
                self.chain.bytes.extend_from_slice(parse);
                self.chain.head = Head::Reparse;
            }
        }
        let start = self.chain.bytes.len();
        frame::write(&mut self.chain.bytes, tag::BIND, body);
        self.chain.bind = Some((bind.portal.into(), start..self.chain.bytes.len()));
        true
    }

    /// Holds a Describe of the held portal; false when it must go upstream now.
    pub(super) fn hold_describe(&mut self, portal: &[u8], body: &[u8]) -> bool {
        if self.chain.describe || self.chain.portal() != Some(portal) {
            return false;
        }
        frame::write(&mut self.chain.bytes, tag::DESCRIBE, body);
        self.chain.describe = true;
        true
    }

    /// Releases the held chain unless it belongs to `portal` (whose Execute may answer it).
    pub(super) fn release_unless_for(&mut self, portal: &[u8]) {
        if self.chain.portal() != Some(portal) {
            self.release_chain(false);
        }
    }

    /// Sends the held chain upstream, in order, ahead of whatever comes next; each message's
    /// answer is tracked as if it had gone at once. `fill_described`: the Execute that follows
    /// fills the cache, and the Describe's RowDescription belongs in the entry.
    pub(super) fn release_chain(&mut self, fill_described: bool) {
        if self.chain.is_empty() {
            return;
        }
        let chain = std::mem::take(&mut self.chain);
        self.outbound.extend_from_slice(&chain.bytes);
        match chain.head {
            Head::Empty => {}
            Head::Parse { undo, .. } => self.expected.push_response(Owed::Client(undo)),
            Head::Reparse => {
                if let Some(statement) = self.prepared.get_mut(&chain.statement) {
                    statement.upstream = Upstream::Sent;
                }
                self.expected.push_response(Owed::Own);
            }
        }
        if chain.bind.is_some() {
            self.expected.push_response(Owed::Client(None));
        }
        if chain.describe {
            self.expected.push_response(if fill_described {
                Owed::DescribeForFill
            } else {
                Owed::Client(None)
            });
        }
        self.batch.sent();
    }

    /// A hit answers the held chain: what PostgreSQL would have answered its messages with,
    /// from pgward, and the statement and portal it named marked as not sent. Returns the
    /// answers and the undo of the client's Parse (for when the reply is skipped after an
    /// earlier error of the batch).
    pub(super) fn answer_chain(&mut self, entry: &Entry) -> (Vec<u8>, Option<Box<Undo>>) {
        let chain = std::mem::take(&mut self.chain);
        let mut out = Vec::new();
        let mut undone = None;
        if let Head::Parse { end, undo } = chain.head {
            build::parse_complete(&mut out);
            undone = undo;
            if let (Some(statement), Some(parse)) = (
                self.prepared.get_mut(&chain.statement),
                chain.bytes.get(..end),
            ) {
                statement.upstream = Upstream::Answered(parse.into());
            }
        }
        if let Some((portal, range)) = chain.bind {
            build::bind_complete(&mut out);
            if let (Some(bound), Some(bind)) =
                (self.portals.get_mut(&portal), chain.bytes.get(range))
            {
                bound.upstream = Upstream::Answered(bind.into());
            }
        }
        if chain.describe {
            out.extend_from_slice(Shape::row_description(entry));
        }
        (out, undone)
    }

    /// Bytes to send upstream before the frame the session handles now (a released chain, a
    /// statement pgward answered and now sends): appended to `out`.
    pub fn drain_outbound(&mut self, out: &mut Vec<u8>) {
        if !self.outbound.is_empty() {
            out.append(&mut self.outbound);
        }
    }
}
