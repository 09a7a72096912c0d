//! [`Handles`]: what client sessions use of the process, and nothing more: the server settings,
//! the upstream, client TLS, cancel keys, stats, the pipeline's shared state, the session
//! registry, the console, the pools of transaction mode, and the two
//! admission counters (sessions under `max_client_connections`, sockets under that plus
//! [`HANDSHAKE_RESERVE`]). The app builds one; sessions never see the whole app.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_rustls::TlsAcceptor;

use super::CancelKeys;
use super::{HANDSHAKE_RESERVE, ServerSettings};
use crate::auth::Authenticator;
use crate::console::Console;
use crate::pipeline;
use crate::pool::Pools;
use crate::sessions::Sessions;
use crate::stats::Stats;
use crate::upstream::Upstream;

/// The shared handles of every client session.
pub struct Handles {
    pub settings: ServerSettings,
    pub upstream: Arc<Upstream>,
    pub client_tls: Option<TlsAcceptor>,
    pub stats: Arc<Stats>,
    pub cancel_keys: CancelKeys,
    pub pipeline: Arc<pipeline::Shared>,
    /// The registry ops list sessions from.
    pub sessions: Arc<Sessions>,
    /// Answers clients that ask for the `pgward` database.
    pub console: Arc<Console>,
    /// The server connection pools of `pool_mode = "transaction"`; `None` in session mode.
    pub pools: Option<Arc<Pools>>,
    /// How transaction-mode clients are authenticated (pgward logs them in itself).
    pub authenticator: Option<Arc<Authenticator>>,
    clients: AtomicUsize,
    /// Accepted sockets, sessions or not (bounded at accept).
    connections: AtomicUsize,
}

impl Handles {
    pub fn new(
        settings: ServerSettings,
        upstream: Arc<Upstream>,
        client_tls: Option<TlsAcceptor>,
        pipeline: Arc<pipeline::Shared>,
        console: Arc<Console>,
    ) -> Self {
        Handles {
            settings,
            upstream,
            client_tls,
            stats: pipeline.stats.clone(),
            cancel_keys: CancelKeys::default(),
            pipeline,
            sessions: console.sessions.clone(),
            console,
            pools: None,
            authenticator: None,
            clients: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        }
    }

    /// The same handles with the pools of transaction mode.
    pub fn with_pools(
        mut self,
        pools: Option<Arc<Pools>>,
        authenticator: Option<Arc<Authenticator>>,
    ) -> Self {
        self.pools = pools;
        self.authenticator = authenticator;
        self
    }

    /// Takes a client slot; false when max_client_connections are already in use.
    pub fn admit_client(&self) -> bool {
        let max = self.settings.max_client_connections;
        self.clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn release_client(&self) {
        self.clients.fetch_sub(1, Ordering::AcqRel);
    }

    /// Takes a place for an accepted socket: at most `max_client_connections` plus
    /// [`HANDSHAKE_RESERVE`] at once, so idle or stalled sockets cannot pile up.
    pub fn admit_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self
            .settings
            .max_client_connections
            .saturating_add(HANDSHAKE_RESERVE);
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self.clone()))
    }
}

/// An accepted socket's place under the connection cap, given back when dropped.
pub struct ConnectionSlot(Arc<Handles>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
