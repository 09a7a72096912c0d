//! [`Pools`]: one pool per (database, user), made on first use, at most `max_pools` of them
//! (when full, a pool with no connection and no client gives way); the upkeep task that ticks
//! every pool each [`MAINTENANCE_INTERVAL`]; closing them all at shutdown; their snapshots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::checkout::Pool;
use super::conn::PgConnector;
use super::error::PoolError;
use super::login::LoginSpec;
use super::settings::{Limits, Password, PoolMode, PoolSettings, PoolSettingsError};
use super::stats::PoolSnapshot;
use crate::upstream::Upstream;

/// How often idle connections are checked, timed out and topped up to `min_pool_size`: the
/// idle timeout and lifetime of an idle connection are enforced within this of falling due.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// (database, user).
type Key = (String, String);

/// Every pool of one pgward.
pub struct Pools {
    mode: PoolMode,
    limits: Limits,
    max_pools: usize,
    upstream: Arc<Upstream>,
    passwords: HashMap<String, Password>,
    parameters: Vec<(String, String)>,
    login_timeout: Duration,
    pools: Mutex<HashMap<Key, Pool>>,
}

impl Pools {
    /// Reads the configured passwords now (from their files or environment variables).
    pub fn new(
        settings: &PoolSettings,
        upstream: Arc<Upstream>,
    ) -> Result<Pools, PoolSettingsError> {
        settings.validate()?;
        Ok(Pools {
            mode: settings.pool_mode,
            limits: Limits::from_settings(settings),
            max_pools: settings.max_pools,
            upstream,
            passwords: settings.resolve_passwords()?,
            parameters: settings.parameters(),
            login_timeout: settings.server_login_timeout.0,
            pools: Mutex::new(HashMap::new()),
        })
    }

    pub fn mode(&self) -> PoolMode {
        self.mode
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Pool>> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pool of `database` and `user`, made now if there is none.
    pub fn get(&self, database: &str, user: &str) -> Result<Pool, PoolError> {
        let mut pools = self.lock();
        // Looked up without allocating a key: pools are few, and this runs per transaction.
        if let Some(pool) = pools
            .iter()
            .find(|((d, u), _)| d == database && u == user)
            .map(|(_, p)| p)
        {
            return Ok(pool.clone());
        }
        if pools.len() >= self.max_pools {
            let unused = pools
                .iter()
                .find(|(_, p)| p.is_unused())
                .map(|(k, _)| k.clone());
            match unused {
                Some(key) => {
                    pools.remove(&key);
                }
                None => {
                    return Err(PoolError::TooManyPools {
                        max: self.max_pools,
                    });
                }
            }
        }
        let spec = LoginSpec {
            user: user.to_owned(),
            database: database.to_owned(),
            parameters: self.parameters.clone(),
            password: self.passwords.get(user).cloned(),
        };
        let connector = PgConnector::new(self.upstream.clone(), spec, self.login_timeout);
        let pool = Pool::new(database, user, self.limits.clone(), connector);
        pools.insert((database.to_owned(), user.to_owned()), pool.clone());
        Ok(pool)
    }

    /// Every pool's snapshot, by database then user.
    pub fn snapshot(&self) -> Vec<PoolSnapshot> {
        let pools: Vec<Pool> = self.lock().values().cloned().collect();
        let mut out: Vec<PoolSnapshot> = pools.iter().map(Pool::snapshot).collect();
        out.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
        out
    }

    /// Ticks every pool each [`MAINTENANCE_INTERVAL`] until shutdown, then closes them.
    pub async fn maintain(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(MAINTENANCE_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    let pools: Vec<Pool> = self.lock().values().cloned().collect();
                    for pool in pools {
                        pool.tick();
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        self.close().await;
    }

    /// Closes every pool (idle connections get Terminate; waiting clients get an error).
    pub async fn close(&self) {
        let pools: Vec<Pool> = self.lock().values().cloned().collect();
        for pool in pools {
            pool.close().await;
        }
    }
}
