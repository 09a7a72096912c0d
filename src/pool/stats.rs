//! What a pool counts (atomics, bumped where the event happens, never under a lock held for
//! it) and the snapshot `/pools`, `SHOW POOLS` and `/metrics` read: clients holding and
//! waiting for a server connection, server connections by state, waits (count, sum, max and
//! a histogram), checkout timeouts, and server connections opened and closed by reason.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds (seconds) of the wait-time histogram; `+Inf` is implied.
pub const WAIT_BUCKETS_SECONDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Buckets including the implied `+Inf`.
const BUCKETS: usize = WAIT_BUCKETS_SECONDS.len() + 1;

/// Why a server connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Idle longer than `server_idle_timeout` (above `min_pool_size`).
    IdleTimeout,
    /// Older than `server_lifetime`, at release or while idle.
    Lifetime,
    /// Released as broken, or dropped without a release.
    Broken,
    /// Found closed (or talking) while idle.
    DiedIdle,
    /// The reset query failed or timed out.
    ResetFailed,
    /// Released dirty while `server_reset_query` is "".
    DirtyWithoutReset,
    /// The pool was closed (shutdown, or evicted from the registry).
    PoolClosed,
}

impl CloseReason {
    pub const ALL: [CloseReason; 7] = [
        CloseReason::IdleTimeout,
        CloseReason::Lifetime,
        CloseReason::Broken,
        CloseReason::DiedIdle,
        CloseReason::ResetFailed,
        CloseReason::DirtyWithoutReset,
        CloseReason::PoolClosed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Lifetime => "lifetime",
            CloseReason::Broken => "broken",
            CloseReason::DiedIdle => "died_idle",
            CloseReason::ResetFailed => "reset_failed",
            CloseReason::DirtyWithoutReset => "dirty_without_reset",
            CloseReason::PoolClosed => "pool_closed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The counters of one pool.
#[derive(Default)]
pub(super) struct Counters {
    checkouts: AtomicU64,
    waits: AtomicU64,
    wait_us_sum: AtomicU64,
    wait_us_max: AtomicU64,
    wait_buckets: [AtomicU64; BUCKETS],
    checkout_timeouts: AtomicU64,
    queue_full: AtomicU64,
    opened: AtomicU64,
    login_failures: AtomicU64,
    resets: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
}

impl Counters {
    /// A checkout that found an idle server connection at once.
    pub(super) fn checkout(&self) {
        self.checkouts.fetch_add(1, Relaxed);
    }

    /// A checkout that had to wait (queued, or for a new connection to open) this long.
    pub(super) fn waited(&self, waited: Duration) {
        self.checkouts.fetch_add(1, Relaxed);
        self.waits.fetch_add(1, Relaxed);
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.wait_us_sum.fetch_add(us, Relaxed);
        self.wait_us_max.fetch_max(us, Relaxed);
        let seconds = waited.as_secs_f64();
        let bucket = WAIT_BUCKETS_SECONDS
            .iter()
            .position(|upper| seconds <= *upper)
            .unwrap_or(WAIT_BUCKETS_SECONDS.len());
        if let Some(b) = self.wait_buckets.get(bucket) {
            b.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn timeout(&self) {
        self.checkout_timeouts.fetch_add(1, Relaxed);
    }

    pub(super) fn queue_full(&self) {
        self.queue_full.fetch_add(1, Relaxed);
    }

    pub(super) fn opened(&self) {
        self.opened.fetch_add(1, Relaxed);
    }

    pub(super) fn login_failed(&self) {
        self.login_failures.fetch_add(1, Relaxed);
    }

    pub(super) fn reset(&self) {
        self.resets.fetch_add(1, Relaxed);
    }

    pub(super) fn closed(&self, reason: CloseReason) {
        if let Some(c) = self.closed.get(reason.index()) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn closed_count(&self, reason: CloseReason) -> u64 {
        self.closed
            .get(reason.index())
            .map_or(0, |c| c.load(Relaxed))
    }
}

/// What the pool's state says at one moment (taken under its lock).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Gauges {
    pub active: usize,
    pub idle: usize,
    pub opening: usize,
    pub resetting: usize,
    pub waiting: usize,
    pub oldest_wait: Duration,
}

/// Server connections closed, by reason.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ClosedCounts {
    pub idle_timeout: u64,
    pub lifetime: u64,
    pub broken: u64,
    pub died_idle: u64,
    pub reset_failed: u64,
    pub dirty_without_reset: u64,
    pub pool_closed: u64,
}

impl ClosedCounts {
    /// (reason, count) for every reason, in [`CloseReason::ALL`] order.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        CloseReason::ALL.map(|r| {
            let n = match r {
                CloseReason::IdleTimeout => self.idle_timeout,
                CloseReason::Lifetime => self.lifetime,
                CloseReason::Broken => self.broken,
                CloseReason::DiedIdle => self.died_idle,
                CloseReason::ResetFailed => self.reset_failed,
                CloseReason::DirtyWithoutReset => self.dirty_without_reset,
                CloseReason::PoolClosed => self.pool_closed,
            };
            (r.name(), n)
        })
    }
}

/// One pool at one moment. The first columns follow PgBouncer's `SHOW POOLS`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolSnapshot {
    pub database: String,
    pub user: String,
    /// Clients holding a server connection (one each, so equal to `sv_active`).
    pub cl_active: usize,
    /// Clients waiting for a server connection.
    pub cl_waiting: usize,
    /// Server connections checked out by a client.
    pub sv_active: usize,
    /// Server connections idle in the pool.
    pub sv_idle: usize,
    /// Server connections being opened (connect and login).
    pub sv_login: usize,
    /// Server connections running the reset query.
    pub sv_tested: usize,
    /// How long the oldest waiting client has waited, whole seconds ...
    pub maxwait: u64,
    /// ... and the microseconds past them.
    pub maxwait_us: u64,
    pub pool_size: usize,
    pub min_pool_size: usize,
    /// Checkouts that returned a server connection.
    pub checkouts: u64,
    /// Of those, the ones that waited (queued, or for a new connection).
    pub waits: u64,
    pub wait_time_us: u64,
    pub wait_max_us: u64,
    /// Checkouts that failed after `query_wait_timeout`.
    pub checkout_timeouts: u64,
    /// Checkouts refused at once because `max_waiting_clients` were already waiting.
    pub queue_full: u64,
    pub servers_opened: u64,
    pub server_login_failures: u64,
    /// Reset queries that succeeded.
    pub resets: u64,
    pub servers_closed: ClosedCounts,
    /// Per-bucket (not cumulative) wait counts, for `/metrics`; bounds [`WAIT_BUCKETS_SECONDS`].
    #[serde(skip)]
    pub wait_buckets: [u64; BUCKETS],
}

impl Counters {
    pub(super) fn snapshot(
        &self,
        key: (&str, &str),
        sizes: (usize, usize),
        g: Gauges,
    ) -> PoolSnapshot {
        let closed = |r| self.closed_count(r);
        PoolSnapshot {
            database: key.0.to_owned(),
            user: key.1.to_owned(),
            cl_active: g.active,
            cl_waiting: g.waiting,
            sv_active: g.active,
            sv_idle: g.idle,
            sv_login: g.opening,
            sv_tested: g.resetting,
            maxwait: g.oldest_wait.as_secs(),
            maxwait_us: u64::from(g.oldest_wait.subsec_micros()),
            pool_size: sizes.0,
            min_pool_size: sizes.1,
            checkouts: self.checkouts.load(Relaxed),
            waits: self.waits.load(Relaxed),
            wait_time_us: self.wait_us_sum.load(Relaxed),
            wait_max_us: self.wait_us_max.load(Relaxed),
            checkout_timeouts: self.checkout_timeouts.load(Relaxed),
            queue_full: self.queue_full.load(Relaxed),
            servers_opened: self.opened.load(Relaxed),
            server_login_failures: self.login_failures.load(Relaxed),
            resets: self.resets.load(Relaxed),
            servers_closed: ClosedCounts {
                idle_timeout: closed(CloseReason::IdleTimeout),
                lifetime: closed(CloseReason::Lifetime),
                broken: closed(CloseReason::Broken),
                died_idle: closed(CloseReason::DiedIdle),
                reset_failed: closed(CloseReason::ResetFailed),
                dirty_without_reset: closed(CloseReason::DirtyWithoutReset),
                pool_closed: closed(CloseReason::PoolClosed),
            },
            wait_buckets: std::array::from_fn(|i| {
                self.wait_buckets.get(i).map_or(0, |b| b.load(Relaxed))
            }),
        }
    }
}
