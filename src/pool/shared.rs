//! The inside of a pool: the state under its lock (idle connections, counts, the FIFO wait
//! queue), what is handed to a waiting client ([`Grant`]), the wait itself ([`Waiting`], which
//! leaves the queue cleanly when its client goes away), and the moves a connection makes —
//! handed on or idle ([`Shared::free_server`]), closed ([`Shared::discard`]), reset, opened in
//! its own task ([`Shared::open_one`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::checkout::Release;
use super::connector::{Connection, Connector};
use super::error::PoolError;
use super::login::LoginError;
use super::settings::Limits;
use super::stats::{CloseReason, Counters};

/// Longest the reset query may run before its connection is closed instead.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pgward waits for a closing connection's Terminate to be written.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Server connection ids, unique in the process.
pub(super) static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

/// A server connection and what the pool knows of it.
pub(super) struct Pooled<K> {
    pub(super) conn: K,
    pub(super) id: u64,
    pub(super) created: Instant,
}

pub(super) struct Idle<K> {
    pub(super) pooled: Pooled<K>,
    pub(super) since: Instant,
}

/// What a waiting client is given.
pub(super) enum Grant<K> {
    /// A released server connection (counted active already).
    Server(Pooled<K>),
    /// Room to open a new one (counted opening already).
    Open,
}

pub(super) struct Waiter<K> {
    pub(super) id: u64,
    pub(super) since: Instant,
    pub(super) tx: oneshot::Sender<Grant<K>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lifecycle {
    Open,
    Closed,
}

/// Everything under the pool's lock. Every server connection is in exactly one of: a
/// client's hands (`active`), `idle`, being opened (`opening`), being reset (`resetting`).
pub(super) struct State<K> {
    pub(super) idle: VecDeque<Idle<K>>,
    pub(super) active: usize,
    pub(super) opening: usize,
    pub(super) resetting: usize,
    pub(super) waiters: VecDeque<Waiter<K>>,
    pub(super) next_waiter: u64,
    pub(super) lifecycle: Lifecycle,
}

impl<K> State<K> {
    pub(super) fn total(&self) -> usize {
        self.active + self.idle.len() + self.opening + self.resetting
    }

    /// Gives `grant` to the oldest client still waiting; returns it when there is none.
    pub(super) fn grant(&mut self, mut grant: Grant<K>) -> Option<Grant<K>> {
        while let Some(waiter) = self.waiters.pop_front() {
            match waiter.tx.send(grant) {
                Ok(()) => return None,
                Err(back) => grant = back,
            }
        }
        Some(grant)
    }

    /// Room for one more connection: the oldest waiter may open it.
    pub(super) fn slot_freed(&mut self) {
        if self.lifecycle == Lifecycle::Closed || self.waiters.is_empty() {
            return;
        }
        self.opening += 1;
        if self.grant(Grant::Open).is_some() {
            self.opening -= 1;
        }
    }
}

pub(super) struct Shared<C: Connector> {
    pub(super) database: String,
    pub(super) user: String,
    pub(super) limits: Limits,
    pub(super) connector: C,
    pub(super) state: Mutex<State<C::Conn>>,
    pub(super) counters: Counters,
    /// The last login failed: later failures are logged at debug until one succeeds.
    pub(super) login_failing: AtomicBool,
}

/// The caller's end of an open. A caller that goes away before taking its connection leaves
/// it to the pool: the channel is closed first, so a connection is either refused by it (and
/// handed on by `open_one`) or taken out of it here, never dropped uncounted inside it.
struct Opened<C: Connector> {
    shared: Arc<Shared<C>>,
    rx: oneshot::Receiver<Result<Pooled<C::Conn>, LoginError>>,
    done: bool,
}

impl<C: Connector> Drop for Opened<C> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.rx.close();
        if let Ok(Ok(pooled)) = self.rx.try_recv() {
            self.shared.free_server(&mut self.shared.lock(), pooled);
        }
    }
}

/// A place in the wait queue; leaving it (a timeout, a dropped checkout) takes the entry
/// out, and hands on whatever was granted meanwhile.
pub(super) struct Waiting<C: Connector> {
    pub(super) shared: Arc<Shared<C>>,
    pub(super) id: u64,
    pub(super) rx: oneshot::Receiver<Grant<C::Conn>>,
    pub(super) done: bool,
}

impl<C: Connector> Waiting<C> {
    pub(super) async fn wait(&mut self, deadline: Instant) -> Result<Grant<C::Conn>, PoolError> {
        let outcome = tokio::time::timeout_at(deadline, &mut self.rx).await;
        self.done = true;
        match outcome {
            Ok(Ok(grant)) => Ok(grant),
            // The pool closed and dropped its waiters.
            Ok(Err(_)) => Err(self.shared.closed_error()),
            Err(_) => {
                let mut st = self.shared.lock();
                if let Some(at) = st.waiters.iter().position(|w| w.id == self.id) {
                    st.waiters.remove(at);
                    drop(st);
                    self.shared.counters.timeout();
                    return Err(PoolError::WaitTimeout {
                        database: self.shared.database.clone(),
                        user: self.shared.user.clone(),
                        timeout: self.shared.limits.wait_timeout,
                    });
                }
                drop(st);
                // Granted as the time ran out: the grant is in the channel already.
                self.rx.try_recv().map_err(|_| self.shared.closed_error())
            }
        }
    }
}

impl<C: Connector> Drop for Waiting<C> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.shared.lock();
        if let Some(at) = st.waiters.iter().position(|w| w.id == self.id) {
            st.waiters.remove(at);
            return;
        }
        match self.rx.try_recv() {
            Ok(Grant::Server(pooled)) => self.shared.free_server(&mut st, pooled),
            Ok(Grant::Open) => {
                st.opening = st.opening.saturating_sub(1);
                st.slot_freed();
            }
            Err(_) => {}
        }
    }
}

impl<C: Connector> Shared<C> {
    pub(super) fn lock(&self) -> MutexGuard<'_, State<C::Conn>> {
        // A panic elsewhere while holding the lock leaves counts, not broken memory.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn closed_error(&self) -> PoolError {
        PoolError::Closed {
            database: self.database.clone(),
            user: self.user.clone(),
        }
    }

    /// A usable connection (counted active) for the next client, or idle.
    pub(super) fn free_server(&self, st: &mut State<C::Conn>, pooled: Pooled<C::Conn>) {
        if st.lifecycle == Lifecycle::Closed {
            st.active = st.active.saturating_sub(1);
            self.counters.closed(CloseReason::PoolClosed);
            spawn_close(pooled.conn);
            return;
        }
        if let Some(Grant::Server(pooled)) = st.grant(Grant::Server(pooled)) {
            st.active = st.active.saturating_sub(1);
            st.idle.push_back(Idle {
                pooled,
                since: Instant::now(),
            });
        }
    }

    /// Closes a connection counted active, and gives its room to a waiter.
    pub(super) fn discard(&self, pooled: Pooled<C::Conn>, reason: CloseReason) {
        {
            let mut st = self.lock();
            st.active = st.active.saturating_sub(1);
            st.slot_freed();
        }
        self.counters.closed(reason);
        spawn_close(pooled.conn);
    }

    pub(super) fn release(self: &Arc<Self>, pooled: Pooled<C::Conn>, how: Release) {
        let expired = self
            .limits
            .lifetime
            .is_some_and(|l| pooled.created.elapsed() >= l);
        match (how, &self.limits.reset_query) {
            (Release::Broken, _) => self.discard(pooled, CloseReason::Broken),
            (_, _) if expired => self.discard(pooled, CloseReason::Lifetime),
            (Release::Clean, _) => self.free_server(&mut self.lock(), pooled),
            (Release::Dirty, None) => self.discard(pooled, CloseReason::DirtyWithoutReset),
            (Release::Dirty, Some(sql)) => {
                {
                    let mut st = self.lock();
                    st.active = st.active.saturating_sub(1);
                    st.resetting += 1;
                }
                tokio::spawn(self.clone().reset(pooled, sql.clone()));
            }
        }
    }

    pub(super) async fn reset(self: Arc<Self>, mut pooled: Pooled<C::Conn>, sql: Arc<str>) {
        let outcome = tokio::time::timeout(RESET_TIMEOUT, pooled.conn.reset(&sql)).await;
        let mut st = self.lock();
        st.resetting = st.resetting.saturating_sub(1);
        match outcome {
            Ok(Ok(())) => {
                self.counters.reset();
                st.active += 1;
                self.free_server(&mut st, pooled);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, database = %self.database, user = %self.user, "server connection closed: reset failed");
                self.counters.closed(CloseReason::ResetFailed);
                st.slot_freed();
                spawn_close(pooled.conn);
            }
            Err(_) => {
                tracing::warn!(database = %self.database, user = %self.user, "server connection closed: reset query still running after {RESET_TIMEOUT:?}");
                self.counters.closed(CloseReason::ResetFailed);
                st.slot_freed();
                spawn_close(pooled.conn);
            }
        }
    }

    /// Opens a connection for the client awaiting it (`opening` counted already). The open
    /// runs in its own task, so a client that goes away meanwhile costs nothing: the new
    /// connection goes to the next client or idle.
    pub(super) async fn open_for_caller(self: &Arc<Self>) -> Result<Pooled<C::Conn>, PoolError> {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(self.clone().open_one(Some(tx)));
        let mut opened = Opened {
            shared: self.clone(),
            rx,
            done: false,
        };
        let result = (&mut opened.rx).await;
        opened.done = true;
        match result {
            Ok(Ok(pooled)) => Ok(pooled),
            Ok(Err(e)) => Err(PoolError::Login(e)),
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Opens one connection counted in `opening`; delivers it to `to` or, when nobody asked
    /// or they left, to the pool.
    pub(super) async fn open_one(
        self: Arc<Self>,
        to: Option<oneshot::Sender<Result<Pooled<C::Conn>, LoginError>>>,
    ) {
        let result = self.connector.open().await;
        let mut st = self.lock();
        st.opening = st.opening.saturating_sub(1);
        match result {
            Ok(conn) => {
                self.counters.opened();
                if self.login_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(database = %self.database, user = %self.user, "server logins succeed again");
                }
                st.active += 1;
                let pooled = Pooled {
                    conn,
                    id: NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed),
                    created: Instant::now(),
                };
                let pooled = match to {
                    Some(tx) => match tx.send(Ok(pooled)) {
                        Ok(()) => return,
                        Err(Ok(pooled)) => pooled,
                        Err(Err(_)) => return,
                    },
                    None => pooled,
                };
                self.free_server(&mut st, pooled);
            }
            Err(e) => {
                self.counters.login_failed();
                if self.login_failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(error = %e, database = %self.database, user = %self.user, "server login failed again");
                } else {
                    tracing::warn!(error = %e, database = %self.database, user = %self.user, "server login failed (repeats are logged at debug until one succeeds)");
                }
                st.slot_freed();
                drop(st);
                if let Some(tx) = to {
                    let _ = tx.send(Err(e));
                }
            }
        }
    }
}

/// Closes `conn` politely in the background when a runtime is there (a drop at exit has
/// none: the socket just closes).
pub(super) fn spawn_close<K: Connection>(conn: K) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
        });
    }
}
