//! Cancelling a query on Postgres: the upstream backend's key, and the one-shot CancelRequest
//! connection that carries it (plaintext, as Postgres accepts cancels before any TLS or auth).
//! PostgreSQL closes that connection only once it has signalled the backend, so
//! [`CancelTarget::cancel`] returns only then: a client whose own cancel connection pgward
//! closes afterwards can rely, as it can with PostgreSQL, on the cancel having been delivered
//! before it sends its next statement.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Upstream, UpstreamError};
use crate::protocol::startup::{CancelKey, encode_cancel};

/// The upstream backend a client-facing cancel key maps to.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub key: CancelKey,
}

impl CancelTarget {
    /// Sends a CancelRequest for this backend and waits until Postgres closes the connection
    /// (it answers nothing; closing means it has acted), within the connect timeout.
    pub async fn cancel(&self, upstream: &Upstream) -> Result<(), UpstreamError> {
        let mut tcp = upstream.connect_plain().await?;
        let io_err = |source| UpstreamError::Connect {
            address: upstream.address().to_owned(),
            source,
        };
        tcp.write_all(&encode_cancel(&self.key))
            .await
            .map_err(io_err)?;
        let mut sink = [0u8; 64];
        let closed = async {
            // Anything Postgres sends is ignored; a reset counts as closed.
            while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let timeout = upstream.connect_timeout();
        tokio::time::timeout(timeout, closed)
            .await
            .map_err(|_| UpstreamError::Timeout {
                address: upstream.address().to_owned(),
                timeout,
            })?;
        Ok(())
    }
}
