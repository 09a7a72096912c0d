//! rustls client configuration for the upstream leg: certificate checks for verify-full, and an
//! explicit "encrypt but do not authenticate" verifier for prefer/require (what libpq's
//! sslmode=require does).

use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    WebPkiSupportedAlgorithms, ring, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
};

use super::{UpstreamError, UpstreamSettings, UpstreamTlsMode};

/// Builds the TLS client config for `settings`, or `None` when TLS is disabled.
pub fn client_config(
    settings: &UpstreamSettings,
) -> Result<Option<Arc<ClientConfig>>, UpstreamError> {
    let config = match settings.tls {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(
                ring::default_provider().signature_verification_algorithms,
            )))
            .with_no_client_auth(),
        UpstreamTlsMode::VerifyFull => {
            let Some(ca_file) = &settings.ca_file else {
                return Err(UpstreamError::TlsConfig(
                    "verify-full needs upstream.ca_file".into(),
                ));
            };
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca_file)
                .map_err(|e| UpstreamError::TlsConfig(format!("{}: {e}", ca_file.display())))?;
            for cert in certs {
                let cert = cert
                    .map_err(|e| UpstreamError::TlsConfig(format!("{}: {e}", ca_file.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| UpstreamError::TlsConfig(format!("{}: {e}", ca_file.display())))?;
            }
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// Accepts any certificate but still checks the handshake signatures, so the stream is
/// encrypted against passive observers (sslmode=require semantics).
#[derive(Debug)]
struct EncryptOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
