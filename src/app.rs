//! [`App`]: every shared handle of one pgward instance (config, stats, rules, result cache, the
//! server connection pools of transaction mode, and
//! the narrower handle sets of the sessions and the admin endpoint), built from a [`Config`] with
//! no globals, so tests can run many proxies in one process. [`start`] binds the listeners and
//! returns a [`Running`] handle. The app is the top layer: nothing below imports it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cache::ResultCache;
use crate::config::Config;
use crate::error::{Error, listen_addr};
use crate::eventlog::EventLog;
use crate::pipeline::{self, FingerprintCache};
use crate::pool::{PoolMode, Pools};
use crate::reload::Rules;
use crate::server::client_tls_acceptor;
use crate::sessions::Sessions;
use crate::stats::Stats;
use crate::upstream::Upstream;
use crate::{admin, auth, console, server};

/// How many distinct statement texts keep their fingerprints cached.
const FINGERPRINT_CACHE_TEXTS: usize = 20_000;

/// Shared state of one pgward instance. Sessions get only [`server::Handles`] and the admin
/// endpoint only [`admin::Handles`]: neither sees the whole app.
pub struct App {
    pub config: Config,
    pub stats: Arc<Stats>,
    pub rules: Arc<Rules>,
    pub cache: Arc<ResultCache>,
    /// Repeated shed/budget/stale events, summarized every interval.
    pub events: Arc<EventLog>,
    pub server: Arc<server::Handles>,
    pub admin: Arc<admin::Handles>,
    /// The server connection pools, made in `pool_mode = "transaction"` only.
    pub pools: Option<Arc<Pools>>,
}

impl App {
    /// Validates `config` and builds every shared handle.
    pub fn new(config: Config) -> Result<App, Error> {
        config.validate()?;
        let upstream = Arc::new(Upstream::new(config.upstream.clone())?);
        let client_tls = client_tls_acceptor(&config.server.tls).map_err(Error::ClientTls)?;
        let stats = Arc::new(Stats::new(&config.stats));
        let rules = Arc::new(Rules::load(config.rules.as_deref())?);
        let cache = ResultCache::new(&config.cache, stats.on_cache_removed());
        let events = Arc::new(EventLog::new(std::time::Instant::now()));
        let pipeline = Arc::new(pipeline::Shared {
            stats: stats.clone(),
            fingerprints: FingerprintCache::new(FINGERPRINT_CACHE_TEXTS),
            rules: rules.clone(),
            cache: cache.clone(),
            slow_statement: config.log.slow_statement.0,
            events: events.clone(),
        });
        let sessions = Arc::new(Sessions::new(config.server.max_client_connections));
        let pools = match config.pool.pool_mode {
            PoolMode::Session => None,
            PoolMode::Transaction => Some(Arc::new(
                Pools::new(&config.pool, upstream.clone()).map_err(|e| {
                    Error::Config(crate::config::ConfigError::Invalid {
                        key: e.key,
                        message: e.message,
                    })
                })?,
            )),
        };
        // Transaction mode logs clients in itself; session mode relays their login.
        let authenticator = match config.pool.pool_mode {
            PoolMode::Session => None,
            PoolMode::Transaction => auth::Authenticator::from_settings(
                &config.auth,
                upstream.clone(),
                Some(events.clone()),
            )?
            .map(Arc::new),
        };
        let parts = console::Parts {
            pools: pools.clone(),
            stats: stats.clone(),
            rules: rules.clone(),
            cache: cache.clone(),
            sessions: sessions.clone(),
            config: console::settings(&serde_json::to_value(&config).unwrap_or_default()),
            // The console's one password is plaintext: always SCRAM, so it never crosses the
            // wire; the failed-login delay is [auth]'s, as for every client pgward logs in.
            login: auth::Policy::new(
                auth::Method::ScramSha256,
                config.auth.failed_login_delay.0,
                Some(events.clone()),
            )
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?,
        };
        let console = console::Console::new(&config.console, parts).map_err(|e| {
            Error::Config(crate::config::ConfigError::Invalid {
                key: e.key,
                message: e.message,
            })
        })?;
        let server = Arc::new(
            server::Handles::new(
                config.server.clone(),
                upstream.clone(),
                client_tls,
                pipeline,
                Arc::new(console),
            )
            .with_pools(pools.clone(), authenticator),
        );
        let admin = Arc::new(admin::Handles {
            settings: config.admin.clone(),
            metrics_top: config.stats.metrics_top,
            stats: stats.clone(),
            rules: rules.clone(),
            cache: cache.clone(),
            upstream,
            sessions,
            pools: pools.clone(),
        });
        Ok(App {
            config,
            stats,
            rules,
            cache,
            events,
            server,
            admin,
            pools,
        })
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

/// The Unix-domain socket `<dir>/.s.PGSQL.<port>` (PostgreSQL's name, so `psql -h <dir> -p
/// <port>` finds it). A socket file left by an earlier pgward that nobody listens on any more is
/// replaced; one something still answers on, or any other file, is an error.
#[cfg(unix)]
fn bind_unix(dir: &std::path::Path, port: u16) -> Result<tokio::net::UnixListener, Error> {
    use std::os::unix::fs::FileTypeExt;
    let path = dir.join(format!(".s.PGSQL.{port}"));
    let shown = path.display().to_string();
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        let stale =
            meta.file_type().is_socket() && std::os::unix::net::UnixStream::connect(&path).is_err();
        if !stale {
            let busy = std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "exists and is not a stale socket",
            );
            return Err(Error::bind(&shown, busy));
        }
        std::fs::remove_file(&path).map_err(|e| Error::bind(&shown, e))?;
    }
    tokio::net::UnixListener::bind(&path).map_err(|e| Error::bind(&shown, e))
}

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
    let listeners = crate::server::Listeners {
        tcp: listener,
        #[cfg(unix)]
        unix: match &app.config.server.unix_socket_dir {
            Some(dir) => Some(bind_unix(dir, proxy_addr.port())?),
            None => None,
        },
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(crate::server::serve(
            app.server.clone(),
            listeners,
            shutdown_rx.clone(),
        )),
        tokio::spawn(app.rules.clone().watch(shutdown_rx.clone())),
        tokio::spawn(app.rules.clone().protect(shutdown_rx.clone())),
        tokio::spawn(crate::eventlog::summarize(
            app.events.clone(),
            shutdown_rx.clone(),
        )),
    ];
    if let Some(pools) = &app.pools {
        tasks.push(tokio::spawn(pools.clone().maintain(shutdown_rx.clone())));
    }
    let admin_addr = match crate::admin::bind(&app.config.admin).await? {
        Some(admin) => {
            let addr = admin.local_addr()?;
            tasks.push(tokio::spawn(crate::admin::serve(
                app.admin.clone(),
                admin,
                shutdown_rx,
            )));
            Some(addr)
        }
        None => None,
    };
    tracing::info!(%proxy_addr, ?admin_addr, upstream = app.server.upstream.address(), pool_mode = ?app.config.pool.pool_mode, "pgward listening");
    Ok(Running {
        app,
        proxy_addr,
        admin_addr,
        shutdown,
        tasks,
    })
}
