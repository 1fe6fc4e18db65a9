//! TLS on the client leg (rustls with the ring provider).

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::error::ProxyError;

/// Builds the acceptor from PEM files; any problem is a configuration error naming the file.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ProxyError> {
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        ProxyError::Config(format!("TLS {what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad("certificate", &files.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("certificate", &files.cert, &e))?;
    if certs.is_empty() {
        return Err(bad("certificate", &files.cert, &"no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad("key", &files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ProxyError::Config(format!("TLS certificate/key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// TLS on the upstream leg (libpq `sslmode` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamTlsMode {
    /// Plain TCP (default).
    #[default]
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not verified.
    Prefer,
    /// TLS or fail; the certificate is not verified (encryption only, like libpq's `require`).
    Require,
    /// TLS or fail; the chain must verify against `upstream_ca` and match the host name or IP.
    VerifyFull,
}

impl std::str::FromStr for UpstreamTlsMode {
    type Err = ProxyError;
    fn from_str(s: &str) -> Result<Self, ProxyError> {
        match s {
            "disable" => Ok(UpstreamTlsMode::Disable),
            "prefer" => Ok(UpstreamTlsMode::Prefer),
            "require" => Ok(UpstreamTlsMode::Require),
            "verify-full" => Ok(UpstreamTlsMode::VerifyFull),
            other => Err(ProxyError::Config(format!(
                "unknown upstream_tls {other:?} (expected disable, prefer, require or verify-full)"
            ))),
        }
    }
}

/// Accepts any server certificate but still checks the handshake signatures (for `prefer`/`require`).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What the proxy needs to open TLS to the upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The mode.
    pub mode: UpstreamTlsMode,
    /// The connector.
    pub connector: tokio_rustls::TlsConnector,
    /// The name the certificate must match (verify-full).
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// Builds the upstream TLS client for `mode` (`None` for `disable`).
pub fn upstream(
    mode: UpstreamTlsMode,
    ca: Option<&std::path::Path>,
    host: &str,
) -> Result<Option<UpstreamTls>, ProxyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Config(format!("TLS: {e}")))?;
    let config = match mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(EncryptOnly(provider))).with_no_client_auth()
        }
        UpstreamTlsMode::VerifyFull => {
            let ca = ca.ok_or_else(|| ProxyError::Config("upstream_tls verify-full needs upstream_ca".into()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(ca).map_err(|e| ProxyError::Config(format!("{}: {e}", ca.display())))?
            {
                let cert = cert.map_err(|e| ProxyError::Config(format!("{}: {e}", ca.display())))?;
                roots.add(cert).map_err(|e| ProxyError::Config(format!("{}: {e}", ca.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    let server_name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| ProxyError::Config(format!("upstream host {host:?} is not a valid TLS server name")))?;
    Ok(Some(UpstreamTls { mode, connector: tokio_rustls::TlsConnector::from(Arc::new(config)), server_name }))
}
