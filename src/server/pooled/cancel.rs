//! Where a transaction-mode client's CancelRequest goes: to the server connection the session
//! holds at that moment, and to none other. The session publishes the server's key when it
//! attaches one and withdraws it before giving the connection back; a cancel being forwarded
//! holds the connection with the session until PostgreSQL has acted on it, so a cancel can
//! never land on the next client's statement. A cancel that arrives while the session holds
//! no server cancels nothing, as one between statements does on PostgreSQL itself.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::protocol::startup::CancelKey;
use crate::upstream::CancelTarget;

#[derive(Default)]
struct State {
    /// The held server's key; `None` while detached.
    key: Option<CancelKey>,
    /// Cancels forwarded with `key` that PostgreSQL has not acted on yet.
    in_flight: u32,
    /// The session waiting to give its server back.
    waiter: Option<Waker>,
}

/// One session's cancel route in transaction mode.
#[derive(Default)]
pub struct CancelSlot {
    state: Mutex<State>,
}

impl CancelSlot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing here can panic while the lock is held; a poisoned lock still has sane data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session now holds the server with this key.
    pub fn attach(&self, key: CancelKey) {
        self.lock().key = Some(key);
    }

    /// Withdraws the key so the server can be given back: Ready once no cancel is in flight
    /// (the session is woken when the last one is done).
    pub fn poll_detach(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.in_flight > 0 {
            state.waiter = Some(cx.waker().clone());
            return Poll::Pending;
        }
        state.key = None;
        Poll::Ready(())
    }

    /// Forgets the key at once (the server is closed, not given back).
    pub fn clear(&self) {
        self.lock().key = None;
    }

    /// The target to cancel now, if the session holds a server; the guard keeps the server
    /// with the session until it is dropped (after PostgreSQL closed the cancel connection).
    pub fn begin(self: &Arc<Self>) -> Option<(CancelTarget, InFlight)> {
        let mut state = self.lock();
        let key = state.key.clone()?;
        state.in_flight = state.in_flight.saturating_add(1);
        Some((CancelTarget { key }, InFlight(self.clone())))
    }
}

/// A cancel being forwarded (see [`CancelSlot::begin`]).
pub struct InFlight(Arc<CancelSlot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0
            && let Some(waker) = state.waiter.take()
        {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn key(pid: u32) -> CancelKey {
        CancelKey {
            pid,
            secret: vec![1, 2, 3, 4],
        }
    }

    #[test]
    fn a_cancel_in_flight_keeps_the_server_until_it_is_done() {
        let slot = Arc::new(CancelSlot::default());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(slot.begin().is_none(), "detached: nothing to cancel");
        slot.attach(key(42));
        let (target, guard) = slot.begin().expect("attached");
        assert_eq!(target.key.pid, 42);
        assert!(slot.poll_detach(&mut cx).is_pending());
        drop(guard);
        assert!(slot.poll_detach(&mut cx).is_ready());
        assert!(
            slot.begin().is_none(),
            "a cancel after the release cancels nothing"
        );
    }
}
