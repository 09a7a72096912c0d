//! The start of a transaction-mode session: pgward authenticates the client itself (users file
//! or auth_query, [`crate::auth`]), finds the pool of its (database, user), borrows one server
//! connection to learn the parameters PostgreSQL reports, and greets the client with them,
//! with a cancel key of pgward's own and ReadyForQuery. No server connection is held after
//! that until the client's first statement.

use std::sync::Arc;

use tokio::time::Instant;

use super::Handles;
use super::pooled::{CancelSlot, Params, Pooling};
use super::relay::Relay;
use super::startup;
use crate::net::Stream;
use crate::pool::{PoolError, Pools, Release};
use crate::protocol::backend::TransactionStatus;
use crate::protocol::build;
use crate::protocol::sqlstate;
use crate::protocol::startup::{CancelKey, StartupMessage};

/// Logs the client in; `None` when it was refused (and already told why) or left.
pub async fn login(
    app: &Handles,
    pools: &Pools,
    mut client: Stream,
    startup: &StartupMessage,
    deadline: Instant,
) -> Option<(Pooling, Stream)> {
    let Some(authenticator) = &app.authenticator else {
        // Config::validate refuses transaction mode without [auth]; kept safe regardless.
        let message = "pgward: transaction mode needs [auth] to log clients in";
        startup::fail(&mut client, sqlstate::INVALID_AUTHORIZATION, message).await;
        return None;
    };
    if let Err(e) =
        crate::auth::authenticate(&mut client, startup.user(), authenticator, deadline).await
    {
        tracing::info!(error = %e, "client login refused");
        return None;
    }
    let pool = match pools.get(startup.database(), startup.user()) {
        Ok(pool) => pool,
        Err(e) => {
            refuse(&mut client, &e).await;
            return None;
        }
    };
    let parameters = match tokio::time::timeout_at(deadline, pool.checkout()).await {
        Ok(Ok(server)) => {
            let parameters = server.parameters().to_vec();
            server.release(Release::Clean);
            parameters
        }
        Ok(Err(e)) => {
            refuse(&mut client, &e).await;
            return None;
        }
        Err(_) => {
            let message = "canceling authentication due to timeout (pgward auth_timeout: no server connection)";
            startup::fail(&mut client, sqlstate::QUERY_CANCELED, message).await;
            return None;
        }
    };
    let params = Params::at_login(&parameters, &startup.params);
    let pooling = Pooling::new(pool, params, Arc::new(CancelSlot::default()));
    Some((pooling, client))
}

async fn refuse(client: &mut Stream, error: &PoolError) {
    tracing::warn!(%error, "no server connection for a client login");
    startup::fail(client, error.sqlstate(), &error.to_string()).await;
}

/// What PostgreSQL would send after AuthenticationOk: the parameters, the cancel key,
/// ReadyForQuery.
pub fn greet(relay: &mut Relay, key: &CancelKey, params: &[(String, String)]) {
    let out = relay.client_writer();
    for (name, value) in params {
        build::parameter_status(out, name, value);
    }
    build::backend_key_data(out, key.pid, &key.secret);
    build::ready_for_query(out, TransactionStatus::Idle);
}
