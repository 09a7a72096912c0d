//! The cancel keys pgward hands to clients and the upstream backends they map to. A client sees
//! the real process id of its PostgreSQL backend (so `pg_backend_pid()`, notification pids,
//! `pg_stat_activity` and `pg_terminate_backend(backend_pid)` all agree with what the client
//! was told) and a secret pgward made, never the upstream's secret. A CancelRequest is honoured
//! only when both the process id and the secret match a live session. Secrets are as long as
//! the session's protocol allows: 4 bytes in protocol 3.0 (the protocol's own limit), 32 bytes
//! when the upstream speaks 3.2 and sent a longer key. In transaction mode a client is given
//! a process id of pgward's own (it has no backend of its own) and its cancel goes to whichever
//! server connection it holds when the request arrives ([`Route::Pooled`]).

use std::sync::Arc;

use dashmap::DashMap;

use super::pooled::CancelSlot;

use crate::protocol::startup::CancelKey;
use crate::secret::constant_time_eq;
use crate::upstream::CancelTarget;

/// Secret length handed out to protocol 3.2 sessions (PostgreSQL 18 uses 32 bytes too).
const LONG_SECRET: usize = 32;

struct Registered {
    session: u64,
    secret: Vec<u8>,
    route: Route,
}

/// Where a client's cancel goes.
#[derive(Clone)]
pub enum Route {
    /// Session mode: the session's own backend.
    Backend(CancelTarget),
    /// Transaction mode: the server connection the session holds at that moment, if any.
    Pooled(Arc<CancelSlot>),
}

/// Live sessions' client-facing keys, by process id. Two live sessions share a pid only when
/// the upstream address leads to two servers over time (a failover): both stay resolvable.
#[derive(Default)]
pub struct CancelKeys {
    by_pid: DashMap<u32, Vec<Registered>>,
}

impl CancelKeys {
    /// Registers a session; returns the key to send the client in BackendKeyData.
    pub fn register(&self, session: u64, target: CancelTarget) -> CancelKey {
        let pid = target.key.pid;
        let long = target.key.secret.len() > 4;
        self.register_route(session, pid, long, Route::Backend(target))
    }

    /// Registers a transaction-mode session under a process id of pgward's own.
    pub fn register_pooled(&self, session: u64, slot: Arc<CancelSlot>) -> CancelKey {
        self.register_route(session, pooled_pid(session), false, Route::Pooled(slot))
    }

    fn register_route(&self, session: u64, pid: u32, long: bool, route: Route) -> CancelKey {
        let len = if long { LONG_SECRET } else { 4 };
        let secret = fresh_secret(session, len);
        let mut entry = self.by_pid.entry(pid).or_default();
        entry.retain(|r| r.session != session);
        entry.push(Registered {
            session,
            secret: secret.clone(),
            route,
        });
        CancelKey { pid, secret }
    }

    /// Where to send a client's cancel, when pid and secret both match.
    pub fn resolve(&self, key: &CancelKey) -> Option<Route> {
        let entry = self.by_pid.get(&key.pid)?;
        let mut found = None;
        // Every candidate is compared, so timing tells nothing about which one matched.
        for registered in entry.value() {
            if constant_time_eq(&registered.secret, &key.secret) {
                found = Some(registered.route.clone());
            }
        }
        found
    }

    /// Forgets a session's key when the session ends.
    pub fn remove(&self, pid: u32, session: u64) {
        self.by_pid.remove_if_mut(&pid, |_, registered| {
            registered.retain(|r| r.session != session);
            registered.is_empty()
        });
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

/// A transaction-mode session's process id: positive as PostgreSQL's are, never 0, and the
/// same for the session's life (31 bits of its id; ids wrap only after 2^31 sessions).
pub fn pooled_pid(session: u64) -> u32 {
    let low = u32::try_from(session & 0x7fff_ffff).unwrap_or(1);
    low.max(1)
}

fn fresh_secret(session: u64, len: usize) -> Vec<u8> {
    let mut secret = vec![0u8; len];
    if getrandom::fill(&mut secret).is_err() {
        // No OS randomness: fall back to a per-process keyed hash; still unguessable from
        // outside within the lifetime of one session.
        let mix = std::collections::hash_map::RandomState::new();
        for (i, chunk) in secret.chunks_mut(8).enumerate() {
            let value = std::hash::BuildHasher::hash_one(&mix, (session, i));
            let bytes = value.to_be_bytes();
            chunk.copy_from_slice(bytes.get(..chunk.len()).unwrap_or(&bytes));
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pid: u32, secret_len: usize) -> CancelTarget {
        CancelTarget {
            key: CancelKey {
                pid,
                secret: vec![9; secret_len],
            },
        }
    }

    #[test]
    fn only_the_exact_key_resolves() {
        let keys = CancelKeys::default();
        let key = keys.register(7, target(1234, 4));
        assert_eq!(key.pid, 1234, "the client sees the backend's real pid");
        assert_ne!(key.secret, vec![9; 4], "but never the backend's secret");
        let secret = |route: Route| match route {
            Route::Backend(t) => Some(t.key.secret),
            Route::Pooled(_) => None,
        };
        assert_eq!(keys.resolve(&key).and_then(secret), Some(vec![9; 4]));
        let mut wrong = key.clone();
        wrong.secret[0] ^= 1;
        assert!(keys.resolve(&wrong).is_none());
        keys.remove(key.pid, 7);
        assert!(keys.resolve(&key).is_none());
        assert!(keys.is_empty());
    }

    #[test]
    fn protocol_3_2_sessions_get_long_secrets() {
        let keys = CancelKeys::default();
        let key = keys.register(1, target(55, 32));
        assert_eq!(key.secret.len(), LONG_SECRET);
        assert!(keys.resolve(&key).is_some());
    }

    #[test]
    fn two_sessions_on_one_pid_stay_apart() {
        let keys = CancelKeys::default();
        let a = keys.register(1, target(77, 4));
        let b = keys.register(2, target(77, 4));
        assert!(keys.resolve(&a).is_some() && keys.resolve(&b).is_some());
        keys.remove(77, 1);
        assert!(keys.resolve(&a).is_none());
        assert!(keys.resolve(&b).is_some());
    }
}
