//! The two states a session's pipeline keeps between client frames: whether a frame is held
//! back, waiting before it may run ([`Held`]), and where the client's current extended-protocol
//! batch stands ([`Batch`]). Each is one enum, so a held frame cannot both wait for a slot and
//! for a fill, and a batch cannot be skipped without being open.

use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::fill::Fill;

/// The client frame the session holds back (it stops reading meanwhile), if any.
#[derive(Default)]
pub(super) enum Held {
    /// Nothing is held: the next frame is offered for the first time.
    #[default]
    Nothing,
    /// The frame waits, since `since`, for the identical query another session runs.
    ForFill { since: Instant },
    /// The frame waits, since `since`, for a concurrency slot; it leads `fill` if it missed
    /// the cache.
    ForSlot {
        since: Instant,
        fill: Option<Box<Fill>>,
    },
    /// The slot wait ended (`permit` None: queue_timeout passed); the frame is offered again.
    Admitted {
        permit: Option<OwnedSemaphorePermit>,
        since: Instant,
        fill: Option<Box<Fill>>,
    },
    /// The frame waits, since `since`, for its limit's database-time budget to refill,
    /// holding the slot it already has (`permit`, when the limit also caps concurrency).
    ForDbTime {
        since: Instant,
        permit: Option<OwnedSemaphorePermit>,
        fill: Option<Box<Fill>>,
    },
    /// That wait ended; the frame is offered again and the budget checked again.
    Refilled {
        since: Instant,
        permit: Option<OwnedSemaphorePermit>,
        fill: Option<Box<Fill>>,
    },
}

impl Held {
    /// True when the frame comes back from a slot or database-time wait: what it missed was
    /// counted already.
    pub fn readmitted(&self) -> bool {
        matches!(self, Held::Admitted { .. } | Held::Refilled { .. })
    }

    /// The cache fill the frame already leads, taken out.
    pub fn take_fill(&mut self) -> Option<Box<Fill>> {
        match self {
            Held::ForSlot { fill, .. }
            | Held::Admitted { fill, .. }
            | Held::ForDbTime { fill, .. }
            | Held::Refilled { fill, .. } => fill.take(),
            Held::Nothing | Held::ForFill { .. } => None,
        }
    }

    /// Ends a wait for another session's fill: since when it lasted.
    pub fn end_fill_wait(&mut self) -> Option<Instant> {
        match *self {
            Held::ForFill { since } => {
                *self = Held::Nothing;
                Some(since)
            }
            _ => None,
        }
    }

    /// The frame starts waiting for a slot at `now`, leading `fill`.
    pub fn wait_for_slot(&mut self, now: Instant, fill: Option<Box<Fill>>) {
        *self = Held::ForSlot { since: now, fill };
    }

    /// The slot wait ended with `permit`.
    pub fn slot_granted(&mut self, permit: Option<OwnedSemaphorePermit>, now: Instant) {
        let (since, fill) = match std::mem::take(self) {
            Held::ForSlot { since, fill } => (since, fill),
            _ => (now, None),
        };
        *self = Held::Admitted {
            permit,
            since,
            fill,
        };
    }

    /// The frame starts waiting at `now` for database time, keeping `permit` and `fill`;
    /// `since`: when its admission began.
    pub fn wait_for_db_time(
        &mut self,
        since: Instant,
        permit: Option<OwnedSemaphorePermit>,
        fill: Option<Box<Fill>>,
    ) {
        *self = Held::ForDbTime {
            since,
            permit,
            fill,
        };
    }

    /// The database-time wait ended: check again.
    pub fn db_time_refilled(&mut self) {
        if let Held::ForDbTime {
            since,
            permit,
            fill,
        } = std::mem::take(self)
        {
            *self = Held::Refilled {
                since,
                permit,
                fill,
            };
        }
    }

    /// Back from a database-time wait: the slot it holds and since when it waits.
    pub fn take_refilled(&mut self) -> Option<(Option<OwnedSemaphorePermit>, Instant)> {
        match std::mem::take(self) {
            // Its fill, if any, was taken by the cache phase already (`take_fill`).
            Held::Refilled { permit, since, .. } => Some((permit, since)),
            other => {
                *self = other;
                None
            }
        }
    }

    /// The outcome of the slot wait, taken: the permit (None: timed out) and since when.
    pub fn take_admission(&mut self) -> Option<(Option<OwnedSemaphorePermit>, Instant)> {
        match std::mem::take(self) {
            Held::Admitted { permit, since, .. } => Some((permit, since)),
            other => {
                *self = other;
                None
            }
        }
    }
}

/// Where the client's current batch (its messages up to a Sync) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) enum Batch {
    /// Between batches: the next message opens one.
    #[default]
    Idle,
    /// Open; `tracked`: the answers to its Parse / Bind / Describe / Close are followed, so a
    /// cache hit can take its place among them (decided at its first message, so that it
    /// stays the same until its Sync). `traffic`: whether any of it went upstream — a batch
    /// pgward answered whole gets its ReadyForQuery from pgward too.
    Open { tracked: bool, traffic: Traffic },
    /// pgward answered one of its messages with an error: the rest, up to the Sync, is
    /// skipped, as PostgreSQL itself does.
    Failed { tracked: bool },
}

/// Whether a batch sent PostgreSQL anything yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Traffic {
    /// Every message so far was answered (or is held) by pgward.
    Nothing,
    Sent,
}

impl Batch {
    pub fn open(tracked: bool) -> Batch {
        Batch::Open {
            tracked,
            traffic: Traffic::Nothing,
        }
    }

    pub fn tracked(self) -> bool {
        matches!(
            self,
            Batch::Open { tracked: true, .. } | Batch::Failed { tracked: true }
        )
    }

    /// Something of the open batch went upstream.
    pub fn sent(&mut self) {
        if let Batch::Open { traffic, .. } = self {
            *traffic = Traffic::Sent;
        }
    }

    /// True when the batch is open, untouched by errors, and PostgreSQL got none of it: its
    /// Sync is answered by pgward.
    pub fn answered_whole(self) -> bool {
        matches!(
            self,
            Batch::Open {
                traffic: Traffic::Nothing,
                ..
            }
        )
    }

    pub fn failed(self) -> bool {
        matches!(self, Batch::Failed { .. })
    }

    /// pgward answered a message of this batch with an error.
    pub fn fail(&mut self) {
        *self = Batch::Failed {
            tracked: self.tracked(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_frame_keeps_its_fill_and_its_start_through_the_slot_wait() {
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_millis(40);
        let mut held = Held::Nothing;
        assert!(!held.readmitted());
        held.wait_for_slot(t0, None);
        held.slot_granted(None, later);
        assert!(held.readmitted());
        let (permit, since) = held.take_admission().unwrap();
        assert!(permit.is_none());
        assert_eq!(since, t0, "the wait counts from when it began");
        assert!(matches!(held, Held::Nothing));
        assert!(held.take_admission().is_none());
    }

    #[test]
    fn a_fill_wait_ends_once() {
        let t0 = Instant::now();
        let mut held = Held::ForFill { since: t0 };
        assert!(held.take_admission().is_none());
        assert!(matches!(held, Held::ForFill { .. }), "not disturbed");
        assert_eq!(held.end_fill_wait(), Some(t0));
        assert_eq!(held.end_fill_wait(), None);
    }

    #[test]
    fn a_failed_batch_keeps_whether_it_was_tracked() {
        let mut batch = Batch::open(true);
        assert!(batch.answered_whole());
        batch.sent();
        assert!(!batch.answered_whole());
        batch.fail();
        assert_eq!(batch, Batch::Failed { tracked: true });
        assert!(batch.tracked() && batch.failed());
        let mut idle = Batch::Idle;
        idle.fail();
        assert_eq!(idle, Batch::Failed { tracked: false });
    }
}
