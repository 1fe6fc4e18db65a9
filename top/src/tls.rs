//! TLS to the server with libpq's `sslmode` semantics, on rustls (ring) through tokio-postgres-rustls:
//!
//! - `disable`: plain TCP; `allow` / `prefer` (the default): TLS when the server offers it;
//!   `require`: TLS or nothing. These three verify the server's chain only when a root certificate file
//!   exists (`sslrootcert`, or `~/.postgresql/root.crt`), as libpq does.
//! - `verify-ca`: TLS, chain verified against the root certificates (host name not checked).
//! - `verify-full`: TLS, chain and host name verified.
//!
//! Client certificates and CRLs are not supported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::TopError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS when offered (`allow` is read as `prefer`).
    Prefer,
    /// TLS required; the chain is verified only when a root certificate file exists.
    Require,
    /// TLS required, chain verified.
    VerifyCa,
    /// TLS required, chain and host name verified.
    VerifyFull,
}

impl TlsMode {
    /// Reads an `sslmode` value.
    ///
    /// # Errors
    /// [`TopError::Conninfo`] for an unknown value.
    pub fn parse(s: &str) -> Result<TlsMode, TopError> {
        Ok(match s {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(TopError::Conninfo(format!(
                    "sslmode={other:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }

    /// What tokio-postgres negotiates.
    pub fn ssl_mode(self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS settings of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: TlsMode,
    /// The root certificate file in use (explicit, or `~/.postgresql/root.crt` when it exists).
    pub root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// Settings from `sslmode` / `sslrootcert` (already merged with `PGSSLMODE` / `PGSSLROOTCERT`) and the
    /// home directory (for the default root certificate file).
    ///
    /// # Errors
    /// [`TopError::Conninfo`] for a bad mode, or verification asked for without a root certificate file.
    pub fn new(mode: Option<&str>, root_cert: Option<&str>, home: Option<&Path>) -> Result<TlsSettings, TopError> {
        let mode = mode.map_or(Ok(TlsMode::Prefer), TlsMode::parse)?;
        let root_cert = match root_cert {
            Some(p) => Some(PathBuf::from(p)),
            None => home.map(|h| h.join(".postgresql/root.crt")).filter(|p| p.is_file()),
        };
        if matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull) && root_cert.is_none() {
            return Err(TopError::Conninfo(
                "sslmode=verify-ca/verify-full needs root certificates: set sslrootcert (or PGSSLROOTCERT), or \
                 put them in ~/.postgresql/root.crt"
                    .into(),
            ));
        }
        Ok(TlsSettings { mode, root_cert })
    }

    /// The connector tokio-postgres uses (it is only called when the server accepts TLS).
    ///
    /// # Errors
    /// [`TopError::Conninfo`] when the root certificate file cannot be read or holds no certificate.
    pub fn connector(&self) -> Result<MakeRustlsConnect, TopError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TopError::Conninfo(format!("TLS: {e}")))?;
        let roots = match &self.root_cert {
            Some(path) => Some(Arc::new(load_roots(path)?)),
            None => None,
        };
        let config = match (self.mode, roots) {
            (TlsMode::VerifyFull, Some(roots)) => builder.with_root_certificates(roots),
            (TlsMode::Disable | TlsMode::Prefer | TlsMode::Require | TlsMode::VerifyCa, Some(roots)) => {
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TopError::Conninfo(format!("TLS: {e}")))?;
                builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
            }
            (_, None) => builder.dangerous().with_custom_certificate_verifier(Arc::new(Unverified(provider))),
        }
        .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

fn load_roots(path: &Path) -> Result<RootCertStore, TopError> {
    let bad = |why: String| TopError::Conninfo(format!("root certificate file {}: {why}", path.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("no usable certificate".into()));
    }
    Ok(store)
}

/// Verifies the chain but not the host name (`verify-ca`, and `prefer`/`require` with a root file).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Encrypts without verifying who answers (`prefer`/`require` without a root file, as libpq).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
