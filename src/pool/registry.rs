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

/// Pools by database, then by user: looked up by `&str`, so finding a pool allocates nothing.
type Map = HashMap<String, HashMap<String, Pool>>;

/// Every pool of one pgward.
pub struct Pools {
    mode: PoolMode,
    limits: Limits,
    max_pools: usize,
    upstream: Arc<Upstream>,
    passwords: HashMap<String, Password>,
    parameters: Vec<(String, String)>,
    login_timeout: Duration,
    pools: Mutex<Map>,
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

    fn lock(&self) -> MutexGuard<'_, Map> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn all(&self) -> Vec<Pool> {
        self.lock()
            .values()
            .flat_map(|users| users.values().cloned())
            .collect()
    }

    /// The pool of `database` and `user`, made now if there is none. A session may keep the
    /// returned handle: a pool somebody holds is never dropped from the registry.
    pub fn get(&self, database: &str, user: &str) -> Result<Pool, PoolError> {
        let mut pools = self.lock();
        if let Some(pool) = pools.get(database).and_then(|users| users.get(user)) {
            return Ok(pool.clone());
        }
        if count(&pools) >= self.max_pools && !evict_one(&mut pools) {
            return Err(PoolError::TooManyPools {
                max: self.max_pools,
            });
        }
        let spec = LoginSpec {
            user: user.to_owned(),
            database: database.to_owned(),
            parameters: self.parameters.clone(),
            password: self.passwords.get(user).cloned(),
        };
        let connector = PgConnector::new(self.upstream.clone(), spec, self.login_timeout);
        let pool = Pool::new(database, user, self.limits.clone(), connector);
        pools
            .entry(database.to_owned())
            .or_default()
            .insert(user.to_owned(), pool.clone());
        Ok(pool)
    }

    /// Pools in the registry.
    pub fn len(&self) -> usize {
        count(&self.lock())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pool's snapshot, by database then user.
    pub fn snapshot(&self) -> Vec<PoolSnapshot> {
        let pools = self.all();
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
                    for pool in self.all() {
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
        for pool in self.all() {
            pool.close().await;
        }
    }
}

fn count(pools: &Map) -> usize {
    pools.values().map(HashMap::len).sum()
}

/// Drops one pool that nobody holds and that has no connection; false when there is none.
fn evict_one(pools: &mut Map) -> bool {
    let found = pools.iter().find_map(|(database, users)| {
        users
            .iter()
            .find(|(_, pool)| pool.is_unused())
            .map(|(user, _)| (database.clone(), user.clone()))
    });
    let Some((database, user)) = found else {
        return false;
    };
    if let Some(users) = pools.get_mut(&database) {
        users.remove(&user);
        if users.is_empty() {
            pools.remove(&database);
        }
    }
    true
}
