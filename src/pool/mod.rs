//! Server connection pools for transaction mode: pgward logs in to PostgreSQL itself with
//! configured credentials ([`login`]), keeps the connections of each (database, user) in a
//! [`Pool`] bounded by `pool_size`, and hands one to a client for a transaction
//! ([`Pool::checkout`], back with [`Server::release`]). [`Pools`] makes pools on demand and
//! keeps them up (idle timeout, lifetime, `min_pool_size`, dead idle connections replaced).
//! In `pool_mode = "session"` (the default) none of this runs. See docs/pooling.md.

mod checkout;
mod conn;
mod connector;
mod error;
mod login;
mod maintain;
mod prepared;
mod registry;
mod settings;
mod shared;
mod stats;

#[cfg(test)]
mod tests;

pub use checkout::{Pool, Release, Server};
pub use conn::{PgConnection, PgConnector, ResetError};
pub use connector::{Connection, Connector};
pub use error::PoolError;
pub use login::{LOGIN_MAX_MESSAGE, LoginError, LoginSpec, Side, login};
pub use prepared::{MAX_PER_SERVER, PreparedSet};
pub use registry::{MAINTENANCE_INTERVAL, Pools};
pub use settings::{Credential, Limits, Password, PoolMode, PoolSettings, PoolSettingsError};
pub use shared::RESET_TIMEOUT;
pub use stats::{CloseReason, ClosedCounts, PoolSnapshot, WAIT_BUCKETS_SECONDS};
