//! A pool's upkeep and its end: [`Pool::tick`] (run every second by
//! [`super::Pools::maintain`]) closes idle connections that died, outlived `server_lifetime`
//! or idled past `server_idle_timeout`, and opens connections up to `min_pool_size`;
//! [`Pool::close`] ends the pool at shutdown.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::checkout::Pool;
use super::connector::{Connection, Connector};
use super::shared::{CLOSE_TIMEOUT, Lifecycle, spawn_close};
use super::stats::CloseReason;

impl<C: Connector> Pool<C> {
    /// One round of upkeep: closes idle connections that died, outlived `server_lifetime`
    /// or idled past `server_idle_timeout` (down to `min_pool_size`), and opens connections
    /// up to `min_pool_size`. [`super::Pools::maintain`] calls it every second.
    pub fn tick(&self) {
        let shared = &self.shared;
        let limits = &shared.limits;
        let now = Instant::now();
        let mut closing = Vec::new();
        let to_open = {
            let mut st = shared.lock();
            if st.lifecycle == Lifecycle::Closed {
                return;
            }
            let mut total = st.total();
            let mut kept = VecDeque::with_capacity(st.idle.len());
            // Oldest first, so the idle timeout closes the longest unused.
            while let Some(idle) = st.idle.pop_front() {
                let age = now.saturating_duration_since(idle.pooled.created);
                let unused = now.saturating_duration_since(idle.since);
                let reason = if !idle.pooled.conn.alive() {
                    Some(CloseReason::DiedIdle)
                } else if limits.lifetime.is_some_and(|l| age >= l) {
                    Some(CloseReason::Lifetime)
                } else if limits.idle_timeout.is_some_and(|t| unused >= t)
                    && total > limits.min_size
                {
                    Some(CloseReason::IdleTimeout)
                } else {
                    None
                };
                match reason {
                    Some(reason) => {
                        total = total.saturating_sub(1);
                        shared.counters.closed(reason);
                        closing.push(idle.pooled.conn);
                    }
                    None => kept.push_back(idle),
                }
            }
            st.idle = kept;
            for _ in 0..closing.len() {
                st.slot_freed();
            }
            let to_open = limits.min_size.saturating_sub(st.total());
            st.opening += to_open;
            to_open
        };
        for conn in closing {
            spawn_close(conn);
        }
        for _ in 0..to_open {
            tokio::spawn(shared.clone().open_one(None));
        }
    }

    /// Refuses new checkouts, fails the waiting ones, and closes the idle connections
    /// (Terminate sent). Connections still checked out are closed when released.
    pub async fn close(&self) {
        let (idle, waiters) = {
            let mut st = self.shared.lock();
            st.lifecycle = Lifecycle::Closed;
            (
                std::mem::take(&mut st.idle),
                std::mem::take(&mut st.waiters),
            )
        };
        // Dropped senders: each waiter's checkout returns PoolError::Closed.
        drop(waiters);
        let mut closing = tokio::task::JoinSet::new();
        for idle in idle {
            self.shared.counters.closed(CloseReason::PoolClosed);
            closing.spawn(async move {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, idle.pooled.conn.close()).await;
            });
        }
        while closing.join_next().await.is_some() {}
    }
}
