//! The registry of client sessions that ops list (`GET /sessions`, `SHOW SESSIONS`) and end
//! (`POST /sessions/{id}/terminate`, `KILL`). A session registers once it is admitted and is
//! removed when its [`Registration`] drops; the map is locked only then and when listed. While
//! it runs, a session publishes its state through atomics at statement start and end, never per
//! message, so the registry costs the relay nothing it would notice.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Notify;

use crate::fingerprint::FingerprintId;

/// What a session is doing, named as `pg_stat_activity.state` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Connecting upstream and authenticating.
    Starting = 0,
    Idle = 1,
    Active = 2,
    IdleInTransaction = 3,
    IdleInFailedTransaction = 4,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Idle => "idle",
            State::Active => "active",
            State::IdleInTransaction => "idle in transaction",
            State::IdleInFailedTransaction => "idle in transaction (aborted)",
        }
    }

    fn from_u8(value: u8) -> State {
        match value {
            1 => State::Idle,
            2 => State::Active,
            3 => State::IdleInTransaction,
            4 => State::IdleInFailedTransaction,
            _ => State::Starting,
        }
    }
}

/// Where a client connected from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// pgward's Unix-domain socket (`server.unix_socket_dir`): a process on this host.
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            Peer::Unix => f.write_str("unix socket"),
        }
    }
}

/// Who a session is; fixed at its start.
#[derive(Debug, Clone)]
pub struct Identity {
    pub peer: Peer,
    pub user: String,
    pub database: String,
    pub application_name: String,
}

/// One registered session: its identity and what it publishes while it runs.
pub struct Session {
    pub id: u64,
    pub identity: Identity,
    connected_at: SystemTime,
    state: AtomicU8,
    backend_pid: AtomicU32,
    /// The statement running now (0: none) and since when, in µs after the registry's epoch.
    fingerprint: AtomicU64,
    since_micros: AtomicU64,
    epoch: Instant,
    terminate: Notify,
}

impl Session {
    pub fn set_backend_pid(&self, pid: u32) {
        self.backend_pid.store(pid, Relaxed);
    }

    /// Publishes the session's state; `running` is the statement in progress, if any.
    pub fn publish(&self, state: State, running: Option<(FingerprintId, Instant)>) {
        let (id, since) = running.map_or((0, 0), |(id, since)| {
            let micros = since.saturating_duration_since(self.epoch).as_micros();
            (id.0, u64::try_from(micros).unwrap_or(u64::MAX))
        });
        self.fingerprint.store(id, Relaxed);
        self.since_micros.store(since, Relaxed);
        self.state.store(state as u8, Relaxed);
    }

    /// Resolves once ops asked to end this session.
    pub async fn terminated(&self) {
        self.terminate.notified().await;
    }

    fn row(&self, now: Instant) -> SessionRow {
        let fingerprint = self.fingerprint.load(Relaxed);
        let since = self.since_micros.load(Relaxed);
        let running = (fingerprint != 0).then(|| {
            let started = self.epoch + std::time::Duration::from_micros(since);
            // Whole microseconds, so the JSON shows 1002.51, not 1002.5097089999999.
            let micros = now.saturating_duration_since(started).as_micros();
            u32::try_from(micros).map_or(f64::MAX, f64::from) / 1000.0
        });
        let connected = self
            .connected_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        SessionRow {
            id: self.id,
            peer: self.identity.peer.to_string(),
            user: self.identity.user.clone(),
            database: self.identity.database.clone(),
            application_name: self.identity.application_name.clone(),
            state: State::from_u8(self.state.load(Relaxed)).as_str(),
            fingerprint: (fingerprint != 0).then(|| FingerprintId(fingerprint).to_string()),
            running_ms: running,
            backend_pid: Some(self.backend_pid.load(Relaxed)).filter(|&p| p != 0),
            connected_at_unix: connected.as_secs(),
        }
    }
}

/// A session as `GET /sessions` and `SHOW SESSIONS` list it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    /// pgward's session id (what `KILL` and `/sessions/{id}/terminate` take).
    pub id: u64,
    pub peer: String,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub state: &'static str,
    /// The fingerprint of the statement running now.
    pub fingerprint: Option<String>,
    /// How long that statement has run, in milliseconds.
    pub running_ms: Option<f64>,
    /// The PostgreSQL backend's pid (from its BackendKeyData).
    pub backend_pid: Option<u32>,
    pub connected_at_unix: u64,
}

/// Every registered session, at most `capacity` (max_client_connections: admission already
/// bounds them; the registry refuses more all the same).
pub struct Sessions {
    entries: Mutex<HashMap<u64, Arc<Session>>>,
    capacity: usize,
    epoch: Instant,
}

impl Sessions {
    pub fn new(capacity: usize) -> Self {
        Sessions {
            entries: Mutex::new(HashMap::new()),
            capacity,
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes).
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers session `id`; `None` when the registry is full.
    pub fn register(self: &Arc<Self>, id: u64, identity: Identity) -> Option<Registration> {
        let session = Arc::new(Session {
            id,
            identity,
            connected_at: SystemTime::now(),
            state: AtomicU8::new(State::Starting as u8),
            backend_pid: AtomicU32::new(0),
            fingerprint: AtomicU64::new(0),
            since_micros: AtomicU64::new(0),
            epoch: self.epoch,
            terminate: Notify::new(),
        });
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            return None;
        }
        entries.insert(id, session.clone());
        Some(Registration {
            sessions: self.clone(),
            session,
        })
    }

    /// Every session, by id.
    pub fn list(&self) -> Vec<SessionRow> {
        self.list_at(Instant::now())
    }

    /// Every session, with running times as of `now`.
    fn list_at(&self, now: Instant) -> Vec<SessionRow> {
        let mut rows: Vec<SessionRow> = self.lock().values().map(|s| s.row(now)).collect();
        rows.sort_by_key(|row| row.id);
        rows
    }

    /// Asks session `id` to end; false when there is none.
    pub fn terminate(&self, id: u64) -> bool {
        let Some(session) = self.lock().get(&id).cloned() else {
            return false;
        };
        // notify_one keeps the wake-up even if the session is not waiting at this instant.
        session.terminate.notify_one();
        true
    }
}

/// A session's place in the registry, removed when dropped.
pub struct Registration {
    sessions: Arc<Sessions>,
    pub session: Arc<Session>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.session.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            peer: Peer::Tcp("127.0.0.1:5000".parse().unwrap()),
            user: "app".into(),
            database: "shop".into(),
            application_name: "web".into(),
        }
    }

    #[test]
    fn sessions_are_listed_until_dropped_and_bounded() {
        let sessions = Arc::new(Sessions::new(2));
        let one = sessions.register(1, identity()).unwrap();
        let two = sessions.register(2, identity()).unwrap();
        assert!(sessions.register(3, identity()).is_none());
        one.session.set_backend_pid(77);
        let started = Instant::now();
        one.session
            .publish(State::Active, Some((FingerprintId(0xab), started)));
        let rows = sessions.list_at(started + std::time::Duration::from_millis(50));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].state, "active");
        assert_eq!(rows[0].backend_pid, Some(77));
        assert_eq!(rows[0].fingerprint.as_deref(), Some("00000000000000ab"));
        assert_eq!(rows[0].running_ms, Some(50.0));
        assert_eq!(
            (rows[1].state, rows[1].fingerprint.clone()),
            ("starting", None)
        );
        drop(two);
        assert_eq!(sessions.list().len(), 1);
        assert!(!sessions.terminate(2));
    }

    #[tokio::test]
    async fn terminate_wakes_the_session_even_if_it_was_not_waiting_yet() {
        let sessions = Arc::new(Sessions::new(1));
        let one = sessions.register(1, identity()).unwrap();
        assert!(sessions.terminate(1));
        // The permit was stored: this resolves at once.
        one.session.terminated().await;
    }
}
