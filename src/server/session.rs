//! One client connection from accept to close: startup, the upstream connection, the relay, and
//! how each kind of ending is reported to the client (08006 when Postgres goes away, 08P01 for
//! protocol violations, 57P01 on shutdown) and to the upstream (cancel when the client vanished
//! mid-query). Every session is bounded in time before it is authenticated (`auth_timeout`),
//! and a panic in its relay ends it with XX000 while every other session carries on.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use super::ClientTlsMode;
use super::cancel_keys::Route;
use super::pooled::{CancelSlot, InFlight};
use super::relay::{Activity, Ending, Phase, Relay, SessionHooks};
use super::startup::{self, Opening};
use super::{ConnectionSlot, Handles};
use crate::net::Stream;
use crate::pipeline::{Identity, Pipeline};
use crate::protocol::build;
use crate::protocol::sqlstate;
use crate::protocol::startup::{CancelKey, StartupMessage};
use crate::sessions::{self, Peer, Session};
use crate::upstream::CancelTarget;

/// How long pgward keeps writing final messages to a peer that does not read them.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one accepted connection until it closes; `_slot` holds its place under the
/// connection cap until then.
pub async fn serve_connection(
    app: Arc<Handles>,
    client: Stream,
    peer: Peer,
    id: u64,
    shutdown: watch::Receiver<bool>,
    _slot: ConnectionSlot,
) {
    if let Stream::Plain(tcp) = &client {
        let _ = tcp.set_nodelay(true);
    }
    let auth_deadline = tokio::time::Instant::now() + app.settings.auth_timeout.0;
    let opening = startup::open(client, app.client_tls.as_ref(), auth_deadline).await;
    match opening {
        Opening::Closed => {}
        Opening::Cancel { client, key } => {
            forward_cancel(&app, &key).await;
            // Closed only now, after PostgreSQL closed the upstream cancel connection.
            drop(client);
        }
        Opening::Session {
            mut client,
            startup,
        } => {
            let span = tracing::info_span!("session", id, peer = %peer, user = startup.user(), db = startup.database());
            // A local Unix-socket client is not asked for TLS (PostgreSQL's hostssl applies to
            // TCP only); everyone else under tls.mode = require is.
            if app.settings.tls.mode == ClientTlsMode::Require
                && !client.is_tls()
                && peer != Peer::Unix
            {
                let _enter = span.enter();
                tracing::info!("plaintext client refused (tls.mode = require)");
                let message = "pgward accepts only TLS connections: connect with sslmode=require";
                startup::fail(&mut client, sqlstate::INVALID_AUTHORIZATION, message).await;
                return;
            }
            if startup.database() == crate::console::DATABASE {
                run_console(app, client, startup, shutdown, auth_deadline)
                    .instrument(span)
                    .await;
                return;
            }
            run_session(app, client, startup, id, peer, shutdown, auth_deadline)
                .instrument(span)
                .await;
        }
    }
}

/// A client of the admin console: under the same cap as sessions, never sent upstream.
async fn run_console(
    app: Arc<Handles>,
    mut client: Stream,
    startup: StartupMessage,
    shutdown: watch::Receiver<bool>,
    auth_deadline: tokio::time::Instant,
) {
    if !app.admit_client() {
        let message = build::TOO_MANY_CLIENTS;
        startup::fail(&mut client, sqlstate::TOO_MANY_CONNECTIONS, message).await;
        return;
    }
    let _admitted = ClientSlot(&app);
    crate::console::serve(&app.console, client, &startup, auth_deadline, shutdown).await;
}

async fn forward_cancel(app: &Handles, key: &CancelKey) {
    let (target, _in_flight) = match app.cancel_keys.resolve(key) {
        Some(Route::Backend(target)) => (target, None),
        Some(Route::Pooled(slot)) => match slot.begin() {
            Some((target, in_flight)) => (target, Some(in_flight)),
            None => {
                tracing::debug!("cancel request between transactions: nothing runs");
                return;
            }
        },
        None => {
            tracing::debug!(pid = key.pid, "cancel request with unknown key ignored");
            return;
        }
    };
    // In transaction mode `_in_flight` keeps the server with its session until here.
    if let Err(e) = target.cancel(&app.upstream).await {
        tracing::warn!(error = %e, "could not forward cancel request");
    }
}

/// Gives the client pgward's own key, remembers the upstream's, and cancels with it.
struct SessionKeys {
    app: Arc<Handles>,
    id: u64,
    /// Where the session publishes its backend pid and activity.
    session: Arc<Session>,
    client_key: Option<CancelKey>,
    upstream_key: Option<CancelTarget>,
    /// Transaction mode: the server held at the moment.
    pooled: Option<Arc<CancelSlot>>,
}

impl SessionKeys {
    /// What to cancel now: the session's backend, or the server it holds (with the guard that
    /// keeps that server with the session until the cancel is done).
    fn current(&self) -> Option<(CancelTarget, Option<InFlight>)> {
        match &self.pooled {
            None => self.upstream_key.clone().map(|target| (target, None)),
            Some(slot) => slot.begin().map(|(target, guard)| (target, Some(guard))),
        }
    }
}

impl SessionHooks for SessionKeys {
    fn backend_key(&mut self, upstream: CancelKey) -> CancelKey {
        self.session.set_backend_pid(upstream.pid);
        let target = CancelTarget { key: upstream };
        let key = self.app.cancel_keys.register(self.id, target.clone());
        self.upstream_key = Some(target);
        self.client_key = Some(key.clone());
        key
    }

    fn cancel_upstream(&mut self) -> Option<oneshot::Receiver<()>> {
        let (target, in_flight) = self.current()?;
        let app = self.app.clone();
        let (done, handled) = oneshot::channel();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            if let Err(e) = target.cancel(&app.upstream).await {
                tracing::warn!(error = %e, "could not send budget cancel upstream");
            }
            // Sent or not, the relay may go on (a failed cancel dropped it within the
            // upstream's connect_timeout).
            let _ = done.send(());
        });
        Some(handled)
    }

    fn activity(&mut self, activity: Activity) {
        self.session.publish(activity.state, activity.running);
    }
}

async fn run_session(
    app: Arc<Handles>,
    mut client: Stream,
    startup: StartupMessage,
    id: u64,
    peer: Peer,
    shutdown: watch::Receiver<bool>,
    auth_deadline: tokio::time::Instant,
) {
    let proxy = app.stats.proxy();
    if !app.admit_client() {
        proxy.client_connections_rejected.fetch_add(1, Relaxed);
        tracing::warn!("max_client_connections reached; connection refused");
        startup::fail(
            &mut client,
            sqlstate::TOO_MANY_CONNECTIONS,
            build::TOO_MANY_CLIENTS,
        )
        .await;
        return;
    }
    let _admitted = ClientSlot(&app);
    // Admission bounds sessions to the registry's capacity: this fails only on a bug.
    let Some(registration) = register(&app, id, peer, &startup) else {
        let message = build::TOO_MANY_CLIENTS;
        startup::fail(&mut client, sqlstate::TOO_MANY_CONNECTIONS, message).await;
        return;
    };
    proxy.client_connections_total.fetch_add(1, Relaxed);
    let _client_gauge = proxy.client_connections.track();
    let session = registration.session.clone();
    let opened = tokio::time::Instant::now();
    let identity = Identity {
        user: startup.user().to_owned(),
        database: startup.database().to_owned(),
        application_name: startup.param("application_name").unwrap_or("").to_owned(),
        params: startup.params.clone(),
        pooled: app.pools.is_some(),
    };
    let pipeline = Pipeline::new(app.pipeline.clone(), identity);
    let mut keys = SessionKeys {
        app: app.clone(),
        id,
        session: session.clone(),
        client_key: None,
        upstream_key: None,
        pooled: None,
    };
    let relay = match &app.pools {
        Some(pools) => {
            let login = super::pooled_login::login(&app, pools, client, &startup, auth_deadline);
            let Some((pooling, client)) = login.await else {
                return;
            };
            let slot = pooling.cancel_slot().clone();
            let reported = pooling.reported().to_vec();
            let key = app.cancel_keys.register_pooled(id, slot.clone());
            keys.pooled = Some(slot);
            keys.client_key = Some(key.clone());
            let max_message = app.settings.max_message_size.0 as usize;
            let mut relay = Relay::pooled(client, pooling, pipeline, max_message);
            super::pooled_login::greet(&mut relay, &key, &reported);
            tracing::info!(
                application_name = startup.param("application_name").unwrap_or(""),
                pool_mode = "transaction",
                "session opened"
            );
            relay
        }
        None => match open_upstream(&app, client, &startup, pipeline).await {
            Some(relay) => relay,
            None => return,
        },
    };
    let (why, duration_ms) =
        relay_until_end(&app, relay, keys, session, shutdown, auth_deadline, opened).await;
    tracing::info!(
        application_name = startup.param("application_name").unwrap_or(""),
        duration_ms,
        ending = why,
        "session closed"
    );
}

/// Session mode: connects the session's own upstream and sends it the client's startup.
async fn open_upstream(
    app: &Arc<Handles>,
    mut client: Stream,
    startup: &StartupMessage,
    pipeline: Pipeline,
) -> Option<Relay> {
    let proxy = app.stats.proxy();
    let upstream = match app.upstream.connect().await {
        Ok(upstream) => upstream,
        Err(e) => {
            proxy.upstream_connections_failed.fetch_add(1, Relaxed);
            tracing::warn!(error = %e, "upstream unreachable");
            startup::fail(
                &mut client,
                sqlstate::CONNECTION_FAILURE,
                &format!("pgward: {e}"),
            )
            .await;
            return None;
        }
    };
    proxy.upstream_connections_total.fetch_add(1, Relaxed);
    // With the span's id, peer, user and db: who connected, for the incident timeline.
    tracing::info!(
        application_name = startup.param("application_name").unwrap_or(""),
        tls = client.is_tls(),
        upstream_tls = upstream.is_tls(),
        "session opened"
    );
    let mut relay = Relay::new(
        client,
        upstream,
        pipeline,
        app.settings.max_message_size.0 as usize,
    );
    relay.send_upstream(&startup.encode());
    Some(relay)
}

/// Relays until the session ends, then reports the ending; returns its name and the
/// session's duration in milliseconds.
async fn relay_until_end(
    app: &Arc<Handles>,
    mut relay: Relay,
    mut keys: SessionKeys,
    session: Arc<Session>,
    mut shutdown: watch::Receiver<bool>,
    auth_deadline: tokio::time::Instant,
    opened: tokio::time::Instant,
) -> (&'static str, u64) {
    // Session mode: the upstream connection's gauge lasts as long as the relay.
    let proxy = app.stats.proxy();
    let _upstream_gauge = keys
        .pooled
        .is_none()
        .then(|| proxy.upstream_connections.track());
    let ending = loop {
        if *shutdown.borrow()
            && let Some(ending) = relay.drain()
        {
            break ending;
        }
        let authenticating = relay.phase() == Phase::Authenticating;
        tokio::select! {
            ending = relay.run(&mut keys) => break ending,
            () = session.terminated() => break Ending::Killed,
            changed = shutdown.changed() => if changed.is_err() && let Some(ending) = relay.drain() {
                break ending;
            },
            // The phase may have moved on while this select ran: looked at again above.
            _ = tokio::time::sleep_until(auth_deadline), if authenticating => {
                if relay.phase() == Phase::Authenticating {
                    break Ending::AuthTimeout;
                }
            }
        }
    };
    if let Some(key) = &keys.client_key {
        app.cancel_keys.remove(key.pid, keys.id);
    }
    let why = ending_name(&ending);
    finish(app, relay, ending, &keys).await;
    let duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
    (why, duration_ms)
}

/// A stable name for how a session ended, for its closing log line.
fn ending_name(ending: &Ending) -> &'static str {
    match ending {
        Ending::ClientTerminated => "client_terminated",
        Ending::ClientClosed => "client_closed",
        Ending::ClientGone => "client_gone",
        Ending::ClientProtocol(_) => "client_protocol_violation",
        Ending::UpstreamGone(_) => "upstream_gone",
        Ending::UpstreamProtocol(_) => "upstream_protocol_violation",
        Ending::CancelIgnored => "cancel_ignored",
        Ending::Panicked => "internal_error",
        Ending::AuthTimeout => "auth_timeout",
        Ending::Shutdown => "shutdown",
        Ending::Killed => "killed_by_admin",
        Ending::NoServer(_) => "no_server_connection",
    }
}

/// Enters the session in the registry ops list sessions from.
fn register(
    app: &Handles,
    id: u64,
    peer: Peer,
    startup: &StartupMessage,
) -> Option<sessions::Registration> {
    let identity = sessions::Identity {
        peer,
        user: startup.user().to_owned(),
        database: startup.database().to_owned(),
        application_name: startup.param("application_name").unwrap_or("").to_owned(),
    };
    app.sessions.register(id, identity)
}

/// Reports how the session ended to whichever side is still there, then closes both.
async fn finish(app: &Handles, mut relay: Relay, ending: Ending, keys: &SessionKeys) {
    let busy = relay.pipeline.busy();
    // After the client's own Terminate went upstream, the upstream has already closed; a
    // pooled server is given back instead.
    let pooled = keys.pooled.is_some();
    let terminate_upstream = !matches!(ending, Ending::ClientTerminated) && !pooled;
    let cancel_upstream = |why: &'static str| async move {
        if busy && let Some((target, _in_flight)) = keys.current() {
            tracing::info!(why, "cancelling the running upstream query");
            if let Err(e) = target.cancel(&app.upstream).await {
                tracing::warn!(error = %e, "could not cancel upstream query");
            }
        }
    };
    match ending {
        Ending::ClientTerminated => tracing::debug!("client terminated"),
        Ending::ClientClosed => tracing::debug!("client closed after its last answers"),
        Ending::ClientGone => {
            tracing::debug!("client connection closed");
            cancel_upstream("client vanished mid-query").await;
        }
        Ending::ClientProtocol(message) => {
            tracing::warn!(%message, "protocol violation by client");
            relay.send_fatal(sqlstate::PROTOCOL_VIOLATION, &message);
            cancel_upstream("client protocol violation").await;
        }
        Ending::UpstreamGone(error) => {
            tracing::warn!(error = ?error, "upstream connection lost");
            if !relay.sent_fatal {
                let message = format!(
                    "pgward: connection to upstream {} lost",
                    app.upstream.address()
                );
                relay.send_fatal(sqlstate::CONNECTION_FAILURE, &message);
            }
        }
        Ending::UpstreamProtocol(message) => {
            tracing::error!(%message, "protocol violation by upstream");
            let message = format!("pgward: invalid message from upstream: {message}");
            relay.send_fatal(sqlstate::CONNECTION_FAILURE, &message);
        }
        Ending::CancelIgnored => {
            tracing::warn!("budget cancel had no effect within cancel_grace; closing the session");
            let mut fatal = Vec::new();
            relay.pipeline.cancel_ignored_error(&mut fatal);
            relay.client_writer().extend_from_slice(&fatal);
            relay.sent_fatal = true;
        }
        Ending::Panicked => {
            tracing::error!("pgward internal error while relaying; session closed");
            relay.send_fatal(
                sqlstate::INTERNAL_ERROR,
                "pgward internal error: this session was closed (other sessions are unaffected)",
            );
            cancel_upstream("pgward internal error").await;
        }
        Ending::AuthTimeout => {
            tracing::info!("login did not finish within auth_timeout");
            relay.send_fatal(
                sqlstate::QUERY_CANCELED,
                "canceling authentication due to timeout (pgward auth_timeout)",
            );
        }
        Ending::Killed => {
            tracing::info!("session terminated by an admin");
            cancel_upstream("session terminated by an admin").await;
            relay.send_fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command (pgward)",
            );
        }
        Ending::NoServer(error) => {
            tracing::warn!(%error, "no server connection for the client");
            relay.send_fatal(error.sqlstate(), &error.to_string());
        }
        Ending::Shutdown => {
            tracing::debug!("closing idle session for shutdown");
            relay.send_fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because pgward is shutting down",
            );
        }
    }
    if terminate_upstream {
        build::terminate(relay.upstream_writer());
    }
    relay.give_back_server();
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, relay.flush()).await;
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, relay.shutdown()).await;
}

/// Releases the admission slot when the session ends.
struct ClientSlot<'a>(&'a Handles);

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.release_client();
    }
}
