//! TLS to the source with libpq's `sslmode` meanings, on rustls:
//! `disable` never; `allow` only if the server insists; `prefer` if the
//! server offers it, without verification; `require` always, without
//! verification unless a root certificate is given (then as `verify-ca`, as
//! libpq does); `verify-ca` checks the chain against `sslrootcert`;
//! `verify-full` also checks that the certificate names the host.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::conninfo::{ConnParams, Host, SslMode};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslmode={mode} needs the server's CA certificate: set sslrootcert in the connection string (or PGSSLROOTCERT), or put it in {default}")]
    MissingRootCert { mode: &'static str, default: String },
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} holds no usable PEM {what}: {reason}")]
    BadPem { what: &'static str, path: PathBuf, reason: String },
    #[error("{host} is not a valid TLS server name")]
    BadServerName { host: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is acceptable.
    pub fn allows_plain(self) -> bool {
        matches!(self, SslMode::Disable | SslMode::Allow | SslMode::Prefer)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for these parameters; `None` when TLS is never
/// used (`sslmode=disable`, or a Unix socket).
pub fn client_config(params: &ConnParams) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    if params.sslmode == SslMode::Disable || matches!(params.host, Host::Unix(_)) {
        return Ok(None);
    }
    let pg_dir = params.home.as_ref().map(|h| h.join(".postgresql"));
    let default_root = pg_dir.as_ref().map(|d| d.join("root.crt"));
    let root = params.sslrootcert.clone().or_else(|| default_root.clone().filter(|p| p.is_file()));
    let verify = match (params.sslmode, &root) {
        (SslMode::VerifyFull, Some(_)) => Verify::Full,
        (SslMode::VerifyCa, Some(_)) | (SslMode::Require, Some(_)) => Verify::Ca,
        (SslMode::VerifyFull | SslMode::VerifyCa, None) => {
            return Err(TlsError::MissingRootCert {
                mode: params.sslmode.as_str(),
                default: default_root
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.postgresql/root.crt".into()),
            })
        }
        _ => Verify::None,
    };
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match (verify, &root) {
        (Verify::None, _) | (_, None) => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        }
        (Verify::Ca | Verify::Full, Some(root)) => {
            let mut store = RootCertStore::empty();
            for cert in read_certs(root, "root certificate")? {
                store.add(cert)?;
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider).build().map_err(|e| {
                    TlsError::BadPem { what: "root certificate", path: root.clone(), reason: e.to_string() }
                })?;
            if verify == Verify::Full {
                builder.with_webpki_verifier(webpki)
            } else {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
            }
        }
    };
    let cert =
        params.sslcert.clone().or_else(|| pg_dir.as_ref().map(|d| d.join("postgresql.crt")).filter(|p| p.is_file()));
    let key =
        params.sslkey.clone().or_else(|| pg_dir.as_ref().map(|d| d.join("postgresql.key")).filter(|p| p.is_file()));
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(&cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| TlsError::BadPem {
                what: "client key",
                path: key.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })?;
    let certs = CertificateDer::pem_slice_iter(&text).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::BadPem {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::BadPem { what, path: path.to_path_buf(), reason: "no CERTIFICATE block".into() });
    }
    Ok(certs)
}

/// The name the certificate is checked against (and sent as SNI).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::BadServerName { host: host.to_owned() })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    None,
    Ca,
    Full,
}

/// `prefer` and `require` without a root certificate: encryption without
/// authentication of the server, as libpq does. Handshake signatures are
/// still checked.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the root certificate; the host name
/// is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
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
