//! What the held server connection still owes for the messages pgward sent it in transaction
//! mode, in the order it will answer: one ReadyForQuery per Sync / Query / FunctionCall (a
//! *segment*), one ParseComplete per Parse and one CloseComplete per Close. pgward's own
//! messages (a statement prepared on this server before the Bind that needs it, an eviction's
//! Close, the settings query in front of a client's first message) are marked swallowed: the
//! client never sees their answers. A Parse or Close the server skipped (an error earlier in
//! its segment) or refused is undone when its segment's ReadyForQuery arrives.

use std::collections::VecDeque;

use super::params::SetCapture;

/// What a Parse or Close changes in the client's statement names, put back if it does not
/// complete.
#[derive(Debug)]
pub struct Undo {
    pub name: Box<[u8]>,
    pub previous: Option<std::sync::Arc<super::statements::Def>>,
    /// The definition the message installed (`None` for a Close).
    pub installed: Option<std::sync::Arc<super::statements::Def>>,
}

/// Which completion an [`Owe`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    ParseComplete,
    CloseComplete,
}

/// One owed ParseComplete / CloseComplete.
#[derive(Debug)]
pub struct Owe {
    segment: u64,
    answer: Answer,
    pub swallow: bool,
    /// A name pgward entered in the server's set when it sent this: gone again if it fails.
    pub inserted: Option<Box<[u8]>>,
    /// A name pgward took out of the server's set (an eviction): back if it fails.
    pub removed: Option<Box<[u8]>>,
    pub undo: Option<Undo>,
}

/// Whose ReadyForQuery a segment ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Client,
    /// pgward's settings query: everything it answers but ParameterStatus is swallowed.
    Settings,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    kind: Kind,
    failed: bool,
    captures: Vec<SetCapture>,
}

/// The owed answers of the held server.
#[derive(Debug, Default)]
pub struct Owed {
    segments: VecDeque<Segment>,
    /// Parses and Closes in the order sent (an undo must go back in that order).
    owes: VecDeque<Owe>,
    /// Id of the segment messages are being added to (closed by the next Sync / Query).
    open: u64,
    /// Settings changes of the open segment's statements.
    open_captures: Vec<SetCapture>,
}

/// What one ReadyForQuery closed.
pub struct Ended {
    /// Settings the segment's statements changed, when it did not fail.
    pub captures: Vec<SetCapture>,
    /// Parses / Closes it skipped or refused, last first (undo in this order).
    pub failed: Vec<Owe>,
}

impl Owed {
    /// Nothing owed: the server is between segments.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.owes.is_empty()
    }

    /// A Parse went to the server.
    pub fn parse(&mut self, swallow: bool, inserted: Option<Box<[u8]>>, undo: Option<Undo>) {
        self.push(Answer::ParseComplete, swallow, inserted, None, undo);
    }

    /// A Close went to the server.
    pub fn close(&mut self, swallow: bool, removed: Option<Box<[u8]>>, undo: Option<Undo>) {
        self.push(Answer::CloseComplete, swallow, None, removed, undo);
    }

    fn push(
        &mut self,
        answer: Answer,
        swallow: bool,
        inserted: Option<Box<[u8]>>,
        removed: Option<Box<[u8]>>,
        undo: Option<Undo>,
    ) {
        self.owes.push_back(Owe {
            segment: self.open,
            answer,
            swallow,
            inserted,
            removed,
            undo,
        });
    }

    /// A statement of the open segment changes settings.
    pub fn capture(&mut self, capture: SetCapture) {
        if self.open_captures.len() < super::params::MAX_CARRIED {
            self.open_captures.push(capture);
        }
    }

    /// A Sync / Query / FunctionCall (or pgward's settings query) went to the server.
    pub fn end_segment(&mut self, kind: Kind) {
        self.segments.push_back(Segment {
            id: self.open,
            kind,
            failed: false,
            captures: std::mem::take(&mut self.open_captures),
        });
        self.open = self.open.wrapping_add(1);
    }

    /// Whose segment the server is answering now.
    pub fn front(&self) -> Option<Kind> {
        self.segments.front().map(|s| s.kind)
    }

    /// ParseComplete arrived.
    pub fn parse_complete(&mut self) -> Option<Owe> {
        self.complete(Answer::ParseComplete)
    }

    /// CloseComplete arrived.
    pub fn close_complete(&mut self) -> Option<Owe> {
        self.complete(Answer::CloseComplete)
    }

    fn complete(&mut self, answer: Answer) -> Option<Owe> {
        // Almost always the front: Parses and Closes are answered in the order sent.
        let at = self.owes.iter().position(|o| o.answer == answer)?;
        self.owes.remove(at)
    }

    /// ErrorResponse arrived: the segment being answered failed.
    pub fn error(&mut self) {
        if let Some(segment) = self.segments.front_mut() {
            segment.failed = true;
        }
    }

    /// ReadyForQuery arrived: its segment is over.
    pub fn ready(&mut self) -> Option<Ended> {
        let segment = self.segments.pop_front()?;
        let mut failed = Vec::new();
        while self.owes.front().is_some_and(|o| o.segment == segment.id) {
            failed.extend(self.owes.pop_front());
        }
        failed.reverse();
        let captures = if segment.failed {
            Vec::new()
        } else {
            segment.captures
        };
        Some(Ended { captures, failed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_parses_are_undone_at_their_segments_ready_only() {
        let mut owed = Owed::default();
        let undo = |name: &[u8]| Undo {
            name: name.into(),
            previous: None,
            installed: None,
        };
        owed.parse(false, Some(b"a".to_vec().into()), Some(undo(b"s1")));
        owed.end_segment(Kind::Client);
        owed.parse(true, None, None);
        owed.parse(false, None, Some(undo(b"s2")));
        owed.end_segment(Kind::Client);
        let first = owed.parse_complete().and_then(|o| o.inserted);
        assert_eq!(first.as_deref(), Some(&b"a"[..]));
        let ended = owed.ready().map(|e| e.failed.len());
        assert_eq!(ended, Some(0), "the first segment completed its Parse");
        assert!(owed.parse_complete().is_some_and(|o| o.swallow));
        owed.error();
        let ended = owed.ready().map(|e| e.failed);
        let names: Vec<_> = ended
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| o.undo.map(|u| u.name))
            .collect();
        assert_eq!(names, vec![Box::from(&b"s2"[..])]);
        assert!(owed.is_empty());
    }
}
