//! The cancel keys pgward hands to clients and the upstream backends they map to. Clients never
//! see upstream keys: a CancelRequest is honoured only when both the process id and the secret
//! match a live session.

use dashmap::DashMap;

use crate::protocol::startup::CancelKey;
use crate::secret::constant_time_eq;
use crate::upstream::CancelTarget;

/// Live sessions' client-facing keys.
#[derive(Default)]
pub struct CancelKeys {
    by_pid: DashMap<u32, (Vec<u8>, CancelTarget)>,
}

impl CancelKeys {
    /// Registers a session; returns the key to send the client in BackendKeyData.
    pub fn register(&self, session_id: u64, target: CancelTarget) -> CancelKey {
        let pid = (session_id as u32) & 0x7fff_ffff;
        let mut secret = vec![0u8; 4];
        if getrandom::fill(&mut secret).is_err() {
            // No OS randomness: fall back to a per-process mix; still unguessable from outside
            // within the lifetime of one session.
            let mix = std::collections::hash_map::RandomState::new();
            let value = std::hash::BuildHasher::hash_one(&mix, session_id);
            secret.copy_from_slice(&value.to_be_bytes()[..4]);
        }
        self.by_pid.insert(pid, (secret.clone(), target));
        CancelKey { pid, secret }
    }

    /// The upstream to cancel for a client's key, when pid and secret both match.
    pub fn resolve(&self, key: &CancelKey) -> Option<CancelTarget> {
        let entry = self.by_pid.get(&key.pid)?;
        let (secret, target) = entry.value();
        constant_time_eq(secret, &key.secret).then(|| target.clone())
    }

    pub fn remove(&self, pid: u32) {
        self.by_pid.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pid: u32) -> CancelTarget {
        CancelTarget {
            key: CancelKey {
                pid,
                secret: vec![9; 4],
            },
        }
    }

    #[test]
    fn only_the_exact_key_resolves() {
        let keys = CancelKeys::default();
        let key = keys.register(7, target(1234));
        assert_eq!(keys.resolve(&key).map(|t| t.key.pid), Some(1234));
        let mut wrong = key.clone();
        wrong.secret[0] ^= 1;
        assert!(keys.resolve(&wrong).is_none());
        keys.remove(key.pid);
        assert!(keys.resolve(&key).is_none());
    }
}
