//! One pool: the server connections of one (database, user), at most `pool_size` of them
//! (checked out, idle, opening or being reset). [`Pool::checkout`] takes an idle one (the most
//! recently used, so the extra ones age out), opens a new one while under `pool_size`, or
//! waits in a FIFO queue of at most `max_waiting_clients` for at most `query_wait_timeout`.
//! A [`Server`] goes back with [`Server::release`]: `Clean` to the next client (the oldest
//! waiter first), `Dirty` through `server_reset_query` first, `Broken` closed; dropping it
//! counts as broken. Lifetime is enforced at release and while idle, never while a client
//! holds the connection. Waits and opens are cancellation-safe: a client that goes away while
//! waiting or while its connection opens leaves the count right and the connection to the
//! next client. Time is tokio's, so tests run the timeouts in paused time.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::conn::PgConnector;
use super::connector::{Connection, Connector};
use super::error::PoolError;
use super::settings::Limits;
use super::shared::{Grant, Lifecycle, Pooled, Shared, State, Waiter, Waiting};
use super::stats::{CloseReason, Counters, Gauges, PoolSnapshot};

/// How a client gives its server connection back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// At ReadyForQuery 'I' and no session state was touched: the next client gets it as is.
    Clean,
    /// At ReadyForQuery 'I', but the session may have left state behind (SET, PREPARE,
    /// LISTEN, temp tables...): `server_reset_query` runs first; without one it is closed.
    Dirty,
    /// Anything else (mid-transaction, mid-query, an I/O error): closed.
    Broken,
}

/// The pool of one (database, user); cheap to clone.
pub struct Pool<C: Connector = PgConnector> {
    pub(super) shared: Arc<Shared<C>>,
}

impl<C: Connector> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Pool {
            shared: self.shared.clone(),
        }
    }
}

/// A checked-out server connection: deref to the connection (`stream_mut()`,
/// `backend_key()`, `parameters()` for PostgreSQL). Give it back with [`Server::release`];
/// dropped, it is closed as [`Release::Broken`].
pub struct Server<C: Connector = PgConnector> {
    // Dropped first: without a release the connection closes before the lease is settled.
    pooled: Pooled<C::Conn>,
    lease: Lease<C>,
}

/// Settles the pool's count when a [`Server`] is dropped without a release.
struct Lease<C: Connector> {
    shared: Arc<Shared<C>>,
    returned: bool,
}

impl<C: Connector> Drop for Lease<C> {
    fn drop(&mut self) {
        if self.returned {
            return;
        }
        let mut st = self.shared.lock();
        st.active = st.active.saturating_sub(1);
        self.shared.counters.closed(CloseReason::Broken);
        st.slot_freed();
    }
}

impl<C: Connector> Server<C> {
    /// Stable for the connection's life and unique in the process.
    pub fn id(&self) -> u64 {
        self.pooled.id
    }

    /// How long ago the connection was opened.
    pub fn age(&self) -> Duration {
        self.pooled.created.elapsed()
    }

    /// Gives the connection back to its pool.
    pub fn release(self, how: Release) {
        let Server { pooled, mut lease } = self;
        lease.returned = true;
        lease.shared.release(pooled, how);
    }
}

impl<C: Connector> Deref for Server<C> {
    type Target = C::Conn;
    fn deref(&self) -> &C::Conn {
        &self.pooled.conn
    }
}

impl<C: Connector> DerefMut for Server<C> {
    fn deref_mut(&mut self) -> &mut C::Conn {
        &mut self.pooled.conn
    }
}

impl<C: Connector> std::fmt::Debug for Server<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.pooled.id)
            .finish()
    }
}

/// What a checkout does after looking at the state.
enum Step<C: Connector> {
    Idle(Pooled<C::Conn>),
    Open,
    Wait(Waiting<C>),
}

impl<C: Connector> Pool<C> {
    pub fn new(database: &str, user: &str, limits: Limits, connector: C) -> Pool<C> {
        Pool {
            shared: Arc::new(Shared {
                database: database.to_owned(),
                user: user.to_owned(),
                limits,
                connector,
                state: Mutex::new(State {
                    idle: VecDeque::new(),
                    active: 0,
                    opening: 0,
                    resetting: 0,
                    waiters: VecDeque::new(),
                    next_waiter: 0,
                    lifecycle: Lifecycle::Open,
                }),
                counters: Counters::default(),
                login_failing: AtomicBool::new(false),
            }),
        }
    }

    pub fn database(&self) -> &str {
        &self.shared.database
    }

    pub fn user(&self) -> &str {
        &self.shared.user
    }

    /// A server connection for one client: an idle one, a new one while under `pool_size`,
    /// or the next one released, in the order clients asked, within `query_wait_timeout`.
    pub async fn checkout(&self) -> Result<Server<C>, PoolError> {
        let started = Instant::now();
        let deadline = started + self.shared.limits.wait_timeout;
        let mut waited = false;
        let pooled = loop {
            let pooled = match self.step()? {
                Step::Idle(pooled) if pooled.conn.alive() => pooled,
                Step::Idle(dead) => {
                    self.shared.discard(dead, CloseReason::DiedIdle);
                    continue;
                }
                Step::Open => {
                    waited = true;
                    self.shared.open_for_caller().await?
                }
                Step::Wait(mut waiting) => {
                    waited = true;
                    match waiting.wait(deadline).await? {
                        Grant::Server(pooled) => pooled,
                        Grant::Open => self.shared.open_for_caller().await?,
                    }
                }
            };
            break pooled;
        };
        if waited {
            self.shared.counters.waited(started.elapsed());
        } else {
            self.shared.counters.checkout();
        }
        Ok(Server {
            pooled,
            lease: Lease {
                shared: self.shared.clone(),
                returned: false,
            },
        })
    }

    /// What a checkout does now, decided under the lock.
    fn step(&self) -> Result<Step<C>, PoolError> {
        let shared = &self.shared;
        let mut st = shared.lock();
        if st.lifecycle == Lifecycle::Closed {
            return Err(shared.closed_error());
        }
        if let Some(idle) = st.idle.pop_back() {
            st.active += 1;
            return Ok(Step::Idle(idle.pooled));
        }
        if st.total() < shared.limits.size {
            st.opening += 1;
            return Ok(Step::Open);
        }
        if st.waiters.len() >= shared.limits.max_waiting {
            drop(st);
            shared.counters.queue_full();
            return Err(PoolError::QueueFull {
                database: shared.database.clone(),
                user: shared.user.clone(),
                max: shared.limits.max_waiting,
            });
        }
        let (tx, rx) = oneshot::channel();
        let id = st.next_waiter;
        st.next_waiter = st.next_waiter.wrapping_add(1);
        st.waiters.push_back(Waiter {
            id,
            since: Instant::now(),
            tx,
        });
        Ok(Step::Wait(Waiting {
            shared: shared.clone(),
            id,
            rx,
            done: false,
        }))
    }

    /// Gives `server` back (the same as [`Server::release`]).
    pub fn release(&self, server: Server<C>, how: Release) {
        server.release(how);
    }

    /// Nobody but this handle holds the pool (no other handle, no checked-out server, no
    /// waiting client) and it has no connection: the registry may drop it for another.
    pub fn is_unused(&self) -> bool {
        Arc::strong_count(&self.shared) == 1 && self.shared.lock().total() == 0
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let shared = &self.shared;
        let gauges = {
            let st = shared.lock();
            Gauges {
                active: st.active,
                idle: st.idle.len(),
                opening: st.opening,
                resetting: st.resetting,
                waiting: st.waiters.len(),
                oldest_wait: st
                    .waiters
                    .front()
                    .map_or(Duration::ZERO, |w| w.since.elapsed()),
            }
        };
        let sizes = (shared.limits.size, shared.limits.min_size);
        shared
            .counters
            .snapshot((&shared.database, &shared.user), sizes, gauges)
    }
}
