//! [`PoolError`]: why a checkout returned no server connection, and the SQLSTATE a client
//! should be told.

use std::time::Duration;

use thiserror::Error;

use super::login::LoginError;
use crate::protocol::sqlstate;

/// Why a checkout returned no server connection.
#[derive(Debug, Error)]
pub enum PoolError {
    #[error(
        "pgward: no server connection to database {database:?} as user {user:?} became free within query_wait_timeout ({timeout:?})"
    )]
    WaitTimeout {
        database: String,
        user: String,
        timeout: Duration,
    },
    #[error(
        "pgward: {max} clients are already waiting for a server connection to database {database:?} as user {user:?} (max_waiting_clients)"
    )]
    QueueFull {
        database: String,
        user: String,
        max: usize,
    },
    #[error("pgward: could not open a server connection: {0}")]
    Login(#[from] LoginError),
    #[error("pgward: the pool of database {database:?}, user {user:?} is closed")]
    Closed { database: String, user: String },
    #[error("pgward: {max} pools exist, each with clients or server connections (pool.max_pools)")]
    TooManyPools { max: usize },
}

impl PoolError {
    /// The SQLSTATE a client should get: 53300 (too_many_connections, as PostgreSQL says when
    /// it has no connection for you) for a wait that timed out, a full queue or too many
    /// pools; the login's own code for a failed open; 57P01 for a closed pool.
    pub fn sqlstate(&self) -> &str {
        match self {
            PoolError::WaitTimeout { .. }
            | PoolError::QueueFull { .. }
            | PoolError::TooManyPools { .. } => sqlstate::TOO_MANY_CONNECTIONS,
            PoolError::Login(e) => e.sqlstate(),
            PoolError::Closed { .. } => sqlstate::ADMIN_SHUTDOWN,
        }
    }
}
