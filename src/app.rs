//! [`App`]: the shared handles every session and the admin endpoint use (config, upstream,
//! TLS, stats, cancel keys, result cache), built from a [`Config`] with no globals, so tests can run many
//! proxies in one process. [`start`] binds the listeners and returns a [`Running`] handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::cache::ResultCache;
use crate::config::Config;
use crate::error::{Error, listen_addr};
use crate::pipeline::{self, FingerprintCache};
use crate::reload::Rules;
use crate::server::{CancelKeys, HANDSHAKE_RESERVE, client_tls_acceptor};
use crate::stats::Stats;
use crate::upstream::Upstream;

/// How many distinct statement texts keep their fingerprints cached.
const FINGERPRINT_CACHE_TEXTS: usize = 20_000;

/// Shared state of one pgward instance.
pub struct App {
    pub config: Config,
    pub upstream: Upstream,
    pub client_tls: Option<TlsAcceptor>,
    pub stats: Arc<Stats>,
    pub cancel_keys: CancelKeys,
    pub rules: Arc<Rules>,
    pub cache: Arc<ResultCache>,
    pub pipeline: Arc<pipeline::Shared>,
    clients: AtomicUsize,
    /// Accepted sockets, sessions or not (bounded at accept).
    connections: AtomicUsize,
}

impl App {
    /// Validates `config` and builds every shared handle.
    pub fn new(config: Config) -> Result<App, Error> {
        config.validate()?;
        let upstream = Upstream::new(config.upstream.clone())?;
        let client_tls = client_tls_acceptor(&config.server.tls).map_err(Error::ClientTls)?;
        let stats = Arc::new(Stats::new(&config.stats));
        let rules = Arc::new(Rules::load(config.rules.as_deref())?);
        let cache = ResultCache::new(&config.cache, stats.on_cache_removed());
        let pipeline = Arc::new(pipeline::Shared {
            stats: stats.clone(),
            fingerprints: FingerprintCache::new(FINGERPRINT_CACHE_TEXTS),
            rules: rules.clone(),
            cache: cache.clone(),
            slow_statement: config.log.slow_statement.0,
        });
        Ok(App {
            config,
            upstream,
            client_tls,
            stats,
            cancel_keys: CancelKeys::default(),
            rules,
            cache,
            pipeline,
            clients: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        })
    }

    /// Takes a client slot; false when max_client_connections are already in use.
    pub fn admit_client(&self) -> bool {
        let max = self.config.server.max_client_connections;
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
            .config
            .server
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
pub struct ConnectionSlot(Arc<App>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A started pgward: its bound addresses and the handle to stop it.
pub struct Running {
    pub app: Arc<App>,
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts a graceful shutdown: no new clients; sessions close when idle.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the proxy and admin tasks have stopped.
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Connections the kernel queues for the accept loop (the kernel caps it at
/// `net.core.somaxconn`). tokio's default of 1,024 overflows when a few thousand clients
/// reconnect at once (a pool restart): the overflow is dropped by the kernel and retried by the
/// client a second or more later. PostgreSQL asks for twice `max_connections`, up to 10,000.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket as `TcpListener::bind` makes one (SO_REUSEADDR on Unix), with a deeper
/// backlog.
fn listen_with_backlog(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds the proxy (and admin, when configured) listeners and starts serving.
pub async fn start(config: Config) -> Result<Running, Error> {
    let app = Arc::new(App::new(config)?);
    let listen = &app.config.server.listen;
    let listener = listen_with_backlog(listen_addr(listen)?).map_err(|e| Error::bind(listen, e))?;
    let proxy_addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(crate::server::serve(
            app.clone(),
            listener,
            shutdown_rx.clone(),
        )),
        tokio::spawn(app.rules.clone().watch(shutdown_rx.clone())),
    ];
    let admin_addr = match crate::admin::bind(&app.config.admin).await? {
        Some(admin) => {
            let addr = admin.local_addr()?;
            tasks.push(tokio::spawn(crate::admin::serve(
                app.clone(),
                admin,
                shutdown_rx,
            )));
            Some(addr)
        }
        None => None,
    };
    tracing::info!(%proxy_addr, ?admin_addr, upstream = app.upstream.address(), "pgward listening");
    Ok(Running {
        app,
        proxy_addr,
        admin_addr,
        shutdown,
        tasks,
    })
}
