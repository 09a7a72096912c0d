//! How pgward conducts logins ([`Policy`]): the challenge for plaintext secrets and unknown
//! users (`password_encryption`), the delay after a failure, the per-process key that makes up
//! stable secrets for users pgward does not know, and the verifiers derived from plaintext
//! secrets (one PBKDF2 per user and password, not per login; bounded).

use std::sync::Arc;
use std::time::Duration;

use ring::{digest, hmac};

use super::AuthError;
use super::md5;
use super::scram::{self, ITERATIONS, base64_encode};
use super::secret::{KEY_LEN, Md5Hash, ScramVerifier};
use super::settings::Method;
use crate::eventlog::EventLog;

/// Bytes of the salt a made-up verifier has, as PostgreSQL's (`SCRAM_DEFAULT_SALT_LEN`).
const SALT_LEN: usize = 16;
/// Users whose plaintext secret's verifier is kept.
const DERIVED_ENTRIES: u64 = 10_000;

/// How logins are conducted: the challenge for plaintext secrets and unknown users, the delay
/// after a failure, and the key that makes up stable secrets for unknown users.
pub struct Policy {
    method: Method,
    failed_login_delay: Duration,
    /// Random per process: made-up salts are stable per user, and unpredictable.
    mock_key: hmac::Key,
    /// Failed logins are logged through it (one line, then counts) when set.
    events: Option<Arc<EventLog>>,
    /// Verifiers derived from plaintext secrets, per user.
    derived: moka::sync::Cache<String, Arc<Derived>>,
}

/// A plaintext secret's verifier, with the digest of the password it was derived from (a
/// reloaded users file may have changed the password).
pub(super) struct Derived {
    password: [u8; KEY_LEN],
    pub verifier: ScramVerifier,
}

impl Policy {
    pub fn new(
        method: Method,
        failed_login_delay: Duration,
        events: Option<Arc<EventLog>>,
    ) -> Result<Policy, AuthError> {
        let seed = random::<KEY_LEN>()?;
        Ok(Policy {
            method,
            failed_login_delay,
            mock_key: hmac::Key::new(hmac::HMAC_SHA256, &seed),
            events,
            derived: moka::sync::Cache::new(DERIVED_ENTRIES),
        })
    }

    pub fn failed_login_delay(&self) -> Duration {
        self.failed_login_delay
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// Notes a failed login; true when it is the first of a flood (log it), false when only
    /// counted (the event log's summary reports it).
    pub(super) fn first_failure(&self) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.first("client authentication", "login_failed"))
    }

    /// A keyed hash of `purpose` and `user`: stable within this process, unguessable outside.
    fn made_up(&self, purpose: &[u8], user: &str) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.mock_key);
        context.update(purpose);
        context.update(&[0]);
        context.update(user.as_bytes());
        context.sign()
    }

    pub(super) fn salt_for(&self, user: &str) -> Vec<u8> {
        let tag = self.made_up(b"salt", user);
        tag.as_ref().iter().take(SALT_LEN).copied().collect()
    }

    /// A verifier no password matches: keys from the process key, which no client knows.
    pub(super) fn mock_verifier(&self, user: &str) -> ScramVerifier {
        let key = |purpose| {
            let mut out = [0u8; KEY_LEN];
            for (o, b) in out.iter_mut().zip(self.made_up(purpose, user).as_ref()) {
                *o = *b;
            }
            out
        };
        ScramVerifier {
            iterations: ITERATIONS,
            salt: self.salt_for(user),
            stored_key: key(b"stored key"),
            server_key: key(b"server key"),
        }
    }

    /// The verifier of `user`'s plaintext `password`, derived at its first login (PBKDF2 is
    /// the costly part: 4096 HMACs) and kept while the password stays the same.
    pub(super) fn plaintext_verifier(&self, user: &str, password: &str) -> Arc<Derived> {
        let digest = digest::digest(&digest::SHA256, password.as_bytes());
        let same = |d: &Derived| crate::secret::constant_time_eq(&d.password, digest.as_ref());
        if let Some(derived) = self.derived.get(user).filter(|d| same(d)) {
            return derived;
        }
        let mut password_digest = [0u8; KEY_LEN];
        for (o, b) in password_digest.iter_mut().zip(digest.as_ref()) {
            *o = *b;
        }
        let derived = Arc::new(Derived {
            password: password_digest,
            verifier: scram::derive(password, &self.salt_for(user), ITERATIONS),
        });
        self.derived.insert(user.to_owned(), derived.clone());
        derived
    }

    pub(super) fn mock_md5(&self, user: &str) -> Md5Hash {
        let text = base64_encode(self.made_up(b"md5", user).as_ref());
        md5::hash(&text, user)
    }
}

pub(super) fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One PBKDF2 per user and password: the same verifier comes back until the password
    /// changes; the salt stays the user's.
    #[test]
    fn a_plaintext_verifier_is_derived_once_per_password() {
        let policy = Policy::new(Method::ScramSha256, Duration::ZERO, None).unwrap();
        let first = policy.plaintext_verifier("app", "one");
        assert!(Arc::ptr_eq(
            &first,
            &policy.plaintext_verifier("app", "one")
        ));
        let changed = policy.plaintext_verifier("app", "two");
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(first.verifier.stored_key != changed.verifier.stored_key);
        assert_eq!(first.verifier.salt, changed.verifier.salt);
        assert!(first.verifier == scram::derive("one", &first.verifier.salt, ITERATIONS));
    }
}
