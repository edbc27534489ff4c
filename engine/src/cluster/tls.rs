//! TLS to the catalogue (docs/design/scale-out.md, "TLS to PostgreSQL"):
//! the connection string's libpq `sslmode`, `sslrootcert`, `sslcert` and
//! `sslkey` decide it.
//!
//! The `postgres` client parses `sslmode` `disable`, `prefer` and `require`
//! only, and no `sslrootcert`; Sluice takes both out of the string first
//! ([`parse`]) and gives the client a rustls connector
//! (`tokio-postgres-rustls`) that does what libpq does:
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | no | - |
//! | `prefer` (the default) | if the server offers it | as `require` when TLS is used |
//! | `require` | required | checked against `sslrootcert` when given (chain and host name), else not checked (libpq's `require`: encrypted, not authenticated) |
//! | `verify-full` | required | chain to `sslrootcert` (required) and host name |
//!
//! `verify-ca` (chain without the host name) is refused with a message
//! naming `verify-full`: rustls's verifier checks both, and a catalogue
//! reached by a name its certificate does not carry is a configuration to
//! fix, not to accept.
//!
//! A client certificate (libpq's `sslcert` and `sslkey`, both or neither:
//! PEM files) is presented when the server asks for one (PostgreSQL's
//! `clientcert=verify-ca`/`verify-full`, or `cert` authentication), in
//! every mode but `disable`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::config::SslMode;
use postgres::Client;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::catalogue::CatalogueError;

/// Why the connection string's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The string is not one the client parses (after the TLS keys).
    #[error("not a PostgreSQL connection string: {0}")]
    Syntax(String),
    /// `sslmode` names a mode Sluice does not support.
    #[error("sslmode={0} is not supported (disable, prefer, require, verify-full)")]
    Mode(String),
    /// `sslcert` without `sslkey`, or the other way round.
    #[error("sslcert and sslkey go together (the client certificate and its private key)")]
    HalfIdentity,
    /// `verify-full` without `sslrootcert`.
    #[error(
        "sslmode=verify-full needs sslrootcert (the CA file the server's certificate chains to)"
    )]
    NoRootCertificate,
    /// The CA file, or rustls's configuration from it.
    #[error("sslrootcert: {0}")]
    Config(#[from] crate::tls::TlsConfigError),
}

/// What the connection string asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// A catalogue address: the client's configuration and its TLS.
#[derive(Debug, Clone)]
pub(crate) struct Address {
    pub(crate) config: postgres::Config,
    mode: Mode,
    root_certificate: Option<PathBuf>,
    /// The client certificate and its key (`sslcert`, `sslkey`).
    identity: Option<(PathBuf, PathBuf)>,
}

/// The TLS keys of a connection string, taken out of it.
#[derive(Debug, Default)]
struct TlsKeys {
    mode: Option<String>,
    root: Option<String>,
    certificate: Option<String>,
    key: Option<String>,
}

impl TlsKeys {
    /// Takes `key`'s `value` when it is one of the TLS keys.
    fn take(&mut self, key: &str, value: String) -> Option<String> {
        let slot = match key {
            "sslmode" => &mut self.mode,
            "sslrootcert" => &mut self.root,
            "sslcert" => &mut self.certificate,
            "sslkey" => &mut self.key,
            _ => return Some(value),
        };
        *slot = Some(value);
        None
    }
}

/// Splits `text` (key/value or URL form) into the pairs the client parses
/// and the TLS keys' values.
fn split(text: &str) -> Result<(String, TlsKeys), TlsError> {
    let mut keys = TlsKeys::default();
    let trimmed = text.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        let (base, query) = match trimmed.split_once('?') {
            Some((base, query)) => (base, query),
            None => (trimmed, ""),
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some((key, value)) if keys.take(key, percent_decoded(value)).is_none() => {}
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rebuilt, keys));
    }
    let mut kept = Vec::new();
    for (key, value) in pairs(text)? {
        if let Some(value) = keys.take(&key, value) {
            kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), keys))
}

/// libpq's key/value form: `key = value` pairs separated by white space, a
/// value single-quoted (with `\'` and `\\`) or a run of non-space
/// characters (with backslash escapes).
fn pairs(text: &str) -> Result<Vec<(String, String)>, TlsError> {
    let mut found = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(found);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(TlsError::Syntax(format!("{key:?} has no value")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(TlsError::Syntax(format!("{key}: unterminated quote"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        found.push((key, value));
    }
}

/// `%XX` escapes of a URL's query value decoded (others kept as written).
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                at += 3;
            }
            None => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a catalogue connection string (see the module documentation).
pub(crate) fn parse(text: &str) -> Result<Address, TlsError> {
    let (rest, keys) = split(text)?;
    let root = keys.root;
    let identity = match (keys.certificate, keys.key) {
        (Some(certificate), Some(key)) => Some((PathBuf::from(certificate), PathBuf::from(key))),
        (None, None) => None,
        _ => return Err(TlsError::HalfIdentity),
    };
    let mode = match keys.mode.as_deref() {
        None | Some("prefer") => Mode::Prefer,
        Some("disable") => Mode::Disable,
        Some("require") => Mode::Require,
        Some("verify-full") => Mode::VerifyFull,
        Some(other) => return Err(TlsError::Mode(other.to_owned())),
    };
    if mode == Mode::VerifyFull && root.is_none() {
        return Err(TlsError::NoRootCertificate);
    }
    let mut config: postgres::Config = rest
        .parse()
        .map_err(|error: postgres::Error| TlsError::Syntax(error.to_string()))?;
    config.ssl_mode(match mode {
        Mode::Disable => SslMode::Disable,
        Mode::Prefer => SslMode::Prefer,
        Mode::Require | Mode::VerifyFull => SslMode::Require,
    });
    Ok(Address {
        config,
        mode,
        root_certificate: root.map(PathBuf::from),
        identity,
    })
}

impl Address {
    /// Connects, with the TLS the string asks for.
    pub(crate) fn connect(&self) -> Result<Client, CatalogueError> {
        if self.mode == Mode::Disable {
            return Ok(self.config.connect(postgres::NoTls)?);
        }
        let identity = self
            .identity
            .as_ref()
            .map(|(certificate, key)| (certificate.as_path(), key.as_path()));
        let config = client_config(self.root_certificate.as_deref(), identity)?;
        Ok(self
            .config
            .connect(MakeRustlsConnect::new(Arc::unwrap_or_clone(config)))?)
    }
}

/// Parses `address` and connects after `adjust` set its options (timeouts,
/// application name).
pub(crate) fn connect(
    address: &str,
    adjust: impl FnOnce(&mut postgres::Config),
) -> Result<Client, CatalogueError> {
    let mut address = parse(address)?;
    adjust(&mut address.config);
    address.connect()
}

/// rustls's configuration: verified against `root` when given, else not
/// verified (see the module documentation); `identity` (certificate and
/// key files) presented when the server asks.
fn client_config(
    root: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    if let Some(root) = root {
        return Ok(crate::tls::client_config(root, identity)?);
    }
    let provider = crate::tls::provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| crate::tls::TlsConfigError::Rustls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unauthenticated(provider)));
    let config = match identity {
        Some((certificate, key)) => {
            let (chain, key) = crate::tls::identity(certificate, key)?;
            builder.with_client_auth_cert(chain, key).map_err(|error| {
                crate::tls::TlsConfigError::Rustls(format!("certificate and key: {error}"))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// libpq's `require` without a root certificate: the session is encrypted
/// and its handshake signatures checked, but the certificate is not
/// checked against any CA (who the server is stays unproven; the
/// connection string asked for no more).
#[derive(Debug)]
struct Unauthenticated(Arc<CryptoProvider>);

impl ServerCertVerifier for Unauthenticated {
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
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_keys_are_taken_out_of_either_form() {
        let address = parse(
            "host=db.example port=5433 user=sluice password='it''s' sslmode=verify-full sslrootcert='/etc/ssl/my ca.pem'",
        );
        // '' is not an escape in libpq's syntax: a quote ends the value.
        assert!(address.is_err());
        let address = parse(
            "host=db.example port = 5433 user=sluice password='it\\'s' sslmode=verify-full sslrootcert='/etc/ssl/my ca.pem'",
        )
        .unwrap();
        assert_eq!(address.mode, Mode::VerifyFull);
        assert_eq!(
            address.root_certificate.as_deref(),
            Some(Path::new("/etc/ssl/my ca.pem"))
        );
        assert_eq!(address.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(address.config.get_ports(), [5433]);
        assert_eq!(address.config.get_password(), Some(&b"it's"[..]));

        let address =
            parse("postgresql://sluice@db.example/sluice?sslmode=require&sslrootcert=%2Fca.pem&connect_timeout=3")
                .unwrap();
        assert_eq!(address.mode, Mode::Require);
        assert_eq!(
            address.root_certificate.as_deref(),
            Some(Path::new("/ca.pem"))
        );
        assert_eq!(address.config.get_dbname(), Some("sluice"));

        let address = parse("host=db.example user=sluice").unwrap();
        assert_eq!(
            (address.mode, address.root_certificate, address.identity),
            (Mode::Prefer, None, None)
        );

        let address = parse(
            "host=db sslmode=verify-full sslrootcert=/ca.pem sslcert='/etc/my client.pem' sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(
            address.identity,
            Some((PathBuf::from("/etc/my client.pem"), PathBuf::from("/k.pem")))
        );
        let address =
            parse("postgresql://db/sluice?sslcert=%2Fc.pem&sslkey=%2Fk.pem&sslmode=require")
                .unwrap();
        assert_eq!(
            address.identity,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
    }

    #[test]
    fn unsupported_modes_and_verify_full_without_a_ca_are_refused() {
        assert!(matches!(
            parse("host=db sslmode=verify-ca sslrootcert=/ca.pem"),
            Err(TlsError::Mode(mode)) if mode == "verify-ca"
        ));
        assert!(matches!(
            parse("host=db sslmode=verify-full"),
            Err(TlsError::NoRootCertificate)
        ));
        assert!(matches!(parse("host=db user"), Err(TlsError::Syntax(_))));
        assert!(matches!(
            parse("host=db sslcert=/c.pem"),
            Err(TlsError::HalfIdentity)
        ));
        assert!(matches!(parse("host='db"), Err(TlsError::Syntax(_))));
    }
}
