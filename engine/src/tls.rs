//! TLS configurations built from PEM files, at start: the DICOM TLS
//! listener's (`network.tls_certificate`, `tls_private_key`,
//! `tls_client_ca`), outbound associations' to `tls://` remote AEs, and the
//! audit trail's syslog client. The profile (TLS 1.2 and 1.3 only, rustls's
//! AEAD suites, BCP 195) is described in `scp::tls`, which runs the
//! sessions; this module only reads files and builds rustls's configs, so
//! the services above it share one way to do that.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why the TLS configuration cannot be built (at start).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("{0}")]
    Rustls(String),
}

fn file_error(path: &Path, message: impl ToString) -> TlsConfigError {
    TlsConfigError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Every certificate of a PEM file, in order.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no PEM certificate in it"));
    }
    Ok(certificates)
}

/// The provider: ring, with rustls's default (BCP 195) suites. rustls
/// 0.23.48 deprecates ring's provider for its lack of post-quantum key
/// exchange, which neither BCP 195 nor DICOM's profiles ask for; the
/// provider that has it (aws-lc-rs) needs cmake to build.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side's configuration, built at start from the PEM files.
pub(crate) fn server_config(
    certificate: &Path,
    private_key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let chain = certificates(certificate)?;
    let key = PrivateKeyDer::from_pem_file(private_key)
        .map_err(|error| file_error(private_key, error))?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsConfigError::Rustls(error.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                    .build()
                    .map_err(|error| file_error(ca, error))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|error| TlsConfigError::Rustls(format!("certificate and key: {error}")))?;
    Ok(Arc::new(config))
}

/// The CA certificates of a PEM file as a root store.
fn roots(path: &Path) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path)? {
        roots
            .add(certificate)
            .map_err(|error| file_error(path, error))?;
    }
    Ok(roots)
}

/// A certificate chain and its private key, from PEM files.
pub(crate) fn identity(
    certificate: &Path,
    private_key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsConfigError> {
    let key = PrivateKeyDer::from_pem_file(private_key)
        .map_err(|error| file_error(private_key, error))?;
    Ok((certificates(certificate)?, key))
}

/// The client side's configuration (associations Sluice opens to remote
/// AEs of `network.remote_aes` written `tls://`), built at start: the
/// remote's certificate verified against `remote_ca` and its host name,
/// Sluice's own certificate presented when configured.
pub(crate) fn client_config(
    remote_ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsConfigError::Rustls(error.to_string()))?
        .with_root_certificates(roots(remote_ca)?);
    let config = match identity {
        Some((certificate, private_key)) => {
            let (chain, key) = self::identity(certificate, private_key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| TlsConfigError::Rustls(format!("certificate and key: {error}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
