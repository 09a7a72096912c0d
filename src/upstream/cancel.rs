//! Cancelling a query on Postgres: the upstream backend's key, and the one-shot CancelRequest
//! connection that carries it (plaintext, as Postgres accepts cancels before any TLS or auth).

use tokio::io::AsyncWriteExt;

use super::{Upstream, UpstreamError};
use crate::protocol::startup::{CancelKey, encode_cancel};

/// The upstream backend a client-facing cancel key maps to.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub key: CancelKey,
}

impl CancelTarget {
    /// Sends a CancelRequest for this backend. Postgres answers nothing; success means only that
    /// the request was delivered.
    pub async fn cancel(&self, upstream: &Upstream) -> Result<(), UpstreamError> {
        let mut tcp = upstream.connect_tcp().await?;
        let io_err = |source| UpstreamError::Connect {
            address: upstream.address().to_owned(),
            source,
        };
        tcp.write_all(&encode_cancel(&self.key))
            .await
            .map_err(io_err)?;
        tcp.shutdown().await.map_err(io_err)?;
        Ok(())
    }
}
