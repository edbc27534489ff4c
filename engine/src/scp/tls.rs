//! DICOM TLS (PS3.15 B.9, the BCP 195 non-downgrading profile) between
//! the io layer and the association endpoint: one rustls connection per
//! association that arrived on the TLS listener (`network.tls_port`).
//! Received ciphertext is decrypted into plaintext before the endpoint
//! reads it; what the endpoint transmits is encrypted before it is sent.
//! The plaintext is a copy (the plain path lends receive buffers to the
//! file writes without one; this path lends the copy).
//!
//! Profile: TLS 1.2 and 1.3 only (rustls implements nothing older, so no
//! downgrade is possible), rustls's cipher suites (all AEAD with ECDHE,
//! which BCP 195 recommends), the server's certificate and key from
//! `network.tls_certificate` and `network.tls_private_key`, and with
//! `network.tls_client_ca` a client certificate required and verified
//! against that CA (mutual TLS; expiry, chain, and usage checked by
//! webpki). A handshake or record that fails closes the connection after
//! rustls's alert, with one log line naming the peer and the cause; peer
//! input never panics (rustls's errors are values). The configurations are
//! built from the PEM files by `crate::tls`.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use super::shared::ServerShared;

/// The most plaintext one receive may produce before the connection is
/// failed: a receive buffer of ciphertext never decrypts to more than it
/// holds, so this is a guard against a state that cannot happen.
const PLAINTEXT_PER_RECEIVE_MAX: usize = 16 << 20;

/// One association's TLS connection.
#[derive(Debug)]
pub(crate) struct TlsSession {
    connection: Connection,
    /// A record or handshake failed: nothing more is read.
    failed: bool,
}

/// A TLS failure on a connection, for its log line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSessionError {
    /// rustls refused what the peer sent (a bad handshake, a certificate
    /// not trusted or expired, a plain DICOM client on the TLS port).
    #[error("{0}")]
    Refused(#[from] rustls::Error),
    /// Reading rustls's buffers failed (cannot happen with in-memory ones).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// More plaintext than a receive can hold (cannot happen).
    #[error("more than {PLAINTEXT_PER_RECEIVE_MAX} bytes of plaintext from one receive")]
    TooMuchPlaintext,
}

impl TlsSession {
    /// A new server-side session.
    pub(crate) fn server(config: &Arc<ServerConfig>) -> Result<TlsSession, TlsSessionError> {
        Ok(Self::new(Connection::Server(ServerConnection::new(
            Arc::clone(config),
        )?)))
    }

    /// A new client-side session to `host` (a name or an IP address, which
    /// the remote's certificate must hold).
    pub(crate) fn client(config: &Arc<ClientConfig>, host: &str) -> Result<TlsSession, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|error| format!("{host:?} cannot be a TLS server name: {error}"))?;
        let connection =
            ClientConnection::new(Arc::clone(config), name).map_err(|error| error.to_string())?;
        Ok(Self::new(Connection::Client(connection)))
    }

    fn new(mut connection: Connection) -> TlsSession {
        // What the endpoint transmits is encrypted and taken at once
        // (`send`), so rustls's own send buffer never holds more than one
        // transmit (before the handshake completes, the A-ASSOCIATE-RQ of
        // an association Sluice opens): its limit would only turn a large
        // one into an error.
        connection.set_buffer_limit(None);
        TlsSession {
            connection,
            failed: false,
        }
    }

    /// Whether a failure ended it.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed
    }

    /// Feeds received ciphertext; appends the plaintext it yields to
    /// `plaintext` and what rustls has to send (handshake records,
    /// alerts) to `to_send`. On `Err` the session is failed and `to_send`
    /// holds the alert to send before closing.
    pub(crate) fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
        to_send: &mut Vec<u8>,
    ) -> Result<(), TlsSessionError> {
        if self.failed {
            return Ok(());
        }
        let result = self.receive_inner(&mut ciphertext, plaintext);
        if result.is_err() {
            self.failed = true;
        }
        // The alert of a failure, or the handshake's next flight.
        self.take_output(to_send)?;
        result
    }

    fn receive_inner(
        &mut self,
        ciphertext: &mut &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<(), TlsSessionError> {
        while !ciphertext.is_empty() {
            // Reads at most what rustls's deframer has room for; processing
            // the records makes room again.
            self.connection.read_tls(ciphertext)?;
            let state = self.connection.process_new_packets()?;
            let available = state.plaintext_bytes_to_read();
            if plaintext.len().saturating_add(available) > PLAINTEXT_PER_RECEIVE_MAX {
                return Err(TlsSessionError::TooMuchPlaintext);
            }
            if available > 0 {
                let start = plaintext.len();
                plaintext.resize(start + available, 0);
                self.connection
                    .reader()
                    .read_exact(&mut plaintext[start..])?;
            }
        }
        Ok(())
    }

    /// Encrypts `bytes` the endpoint transmits; appends the records to
    /// `to_send`.
    pub(crate) fn send(
        &mut self,
        bytes: &[u8],
        to_send: &mut Vec<u8>,
    ) -> Result<(), TlsSessionError> {
        self.connection.writer().write_all(bytes)?;
        self.take_output(to_send)
    }

    /// Queues a close_notify alert; appends it to `to_send`.
    pub(crate) fn close(&mut self, to_send: &mut Vec<u8>) {
        self.connection.send_close_notify();
        if let Err(error) = self.take_output(to_send) {
            tracing::debug!(%error, "close_notify not written");
        }
    }

    fn take_output(&mut self, to_send: &mut Vec<u8>) -> Result<(), TlsSessionError> {
        while self.connection.wants_write() {
            self.connection.write_tls(to_send)?;
        }
        Ok(())
    }
}

/// The TLS session of an association Sluice opens to `called_ae_title`,
/// when its entry of `network.remote_aes` is written `tls://` (`Ok(None)`:
/// plain). Its ClientHello goes out with the association's first send.
pub(crate) fn outbound_session(
    shared: &ServerShared,
    called_ae_title: &str,
) -> Result<Option<Box<TlsSession>>, String> {
    let remote = shared
        .store
        .config()
        .network
        .remote_aes
        .iter()
        .find(|(title, _)| title.as_str() == called_ae_title)
        .map(|(_, address)| address);
    let Some(remote) = remote.filter(|remote| remote.tls()) else {
        return Ok(None);
    };
    let Some(config) = shared.tls_client.as_ref() else {
        // `check_tls` requires the CA whenever a remote uses TLS, and the
        // server builds the client configuration from it at start.
        debug_assert!(false, "a TLS remote AE without a client configuration");
        return Err("no TLS client configuration (network.tls_remote_ca)".to_owned());
    };
    TlsSession::client(config, remote.host()).map(|session| Some(Box::new(session)))
}
