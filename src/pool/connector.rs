//! What a pool needs of the connections it holds, as two traits: a [`Connector`] opens one
//! (in pgward a PostgreSQL login, [`super::PgConnector`]), and a [`Connection`] can be checked,
//! reset and closed. The pool's queue, limits and timers are written against these alone, so
//! unit tests drive them with fakes in paused time.

use std::future::Future;

use super::conn::ResetError;
use super::login::LoginError;

/// One server connection held by a pool.
pub trait Connection: Send + Sync + 'static {
    /// Whether an idle connection still looks usable: its peer has not closed it or sent
    /// anything. Called without waiting (a syscall at most).
    fn alive(&self) -> bool;
    /// Runs `sql` and reads up to its ReadyForQuery, which must say idle.
    fn reset(&mut self, sql: &str) -> impl Future<Output = Result<(), ResetError>> + Send;
    /// Ends the connection politely (Terminate); the caller bounds it in time.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Opens the connections of one pool.
pub trait Connector: Send + Sync + 'static {
    type Conn: Connection;
    /// Opens and logs in one connection, bounded in time by the connector.
    fn open(&self) -> impl Future<Output = Result<Self::Conn, LoginError>> + Send;
}
