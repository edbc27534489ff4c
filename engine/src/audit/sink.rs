//! Where audit messages go: a JSON-lines file and an RFC 5424 syslog
//! collector over UDP (RFC 5426), TCP (RFC 6587 octet counting) or TLS
//! (RFC 5425, rustls's blocking stream). Only
//! the audit thread calls these, so a slow disk or collector blocks it,
//! never a core.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{SyslogAddress, SyslogTransport};

/// How long a TCP collector may take to accept a connection or a write.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after a failed TCP connection the next attempt waits (messages
/// meanwhile are dropped and counted).
const TCP_RECONNECT_AFTER: Duration = Duration::from_secs(5);
/// RFC 5424's facility 10 (security/authorization, "authpriv"), as IHE ATNA
/// (ITI-20) asks; severity 5 (notice) for a success, 4 (warning) for a
/// failure.
const FACILITY_AUTHPRIV: u8 = 10;
/// RFC 5424 limits the HOSTNAME field to 255 printable ASCII characters.
const HOSTNAME_LENGTH_MAX: usize = 255;

/// The JSON-lines file.
#[derive(Debug)]
pub(crate) struct JsonLines {
    path: PathBuf,
    file: BufWriter<File>,
}

impl JsonLines {
    pub(crate) fn open(path: &Path) -> io::Result<JsonLines> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLines {
            path: path.to_owned(),
            file: BufWriter::new(file),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (buffered: [`JsonLines::flush`] when the queue is
    /// empty).
    pub(crate) fn write(
        &mut self,
        time: SystemTime,
        event: &str,
        outcome: &str,
        xml: &str,
    ) -> io::Result<()> {
        let line = serde_json::json!({
            "time": humantime::format_rfc3339_micros(time).to_string(),
            "event": event,
            "outcome": outcome,
            "message": xml,
        });
        serde_json::to_writer(&mut self.file, &line)?;
        self.file.write_all(b"\n")
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The syslog collector.
#[derive(Debug)]
pub(crate) struct Syslog {
    address: SyslogAddress,
    hostname: String,
    process_id: u32,
    link: Link,
}

#[derive(Debug)]
enum Link {
    Udp(UdpSocket, SocketAddr),
    /// TCP, or TLS over it with `tls`.
    Tcp {
        tls: Option<Arc<ClientConfig>>,
        stream: Option<Stream>,
        /// No connection attempt before this time.
        retry_at: Option<Instant>,
    },
}

/// A connection to the collector.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.write_all(bytes),
            Stream::Tls(stream) => {
                stream.write_all(bytes)?;
                stream.flush()
            }
        }
    }
}

impl Syslog {
    /// Resolves the collector now (a name that does not resolve stops the
    /// start); TCP connects on the first message.
    pub(crate) fn open(
        address: &SyslogAddress,
        hostname: &str,
        tls: Option<Arc<ClientConfig>>,
    ) -> io::Result<Syslog> {
        debug_assert_eq!(
            tls.is_some(),
            address.transport() == SyslogTransport::Tls,
            "the configuration check pairs tls:// with its CA"
        );
        let link = match address.transport() {
            SyslogTransport::Udp => {
                let target = resolve(address)?;
                let local: SocketAddr = if target.is_ipv4() {
                    SocketAddr::from(([0, 0, 0, 0], 0))
                } else {
                    SocketAddr::from(([0u16; 8], 0))
                };
                Link::Udp(UdpSocket::bind(local)?, target)
            }
            SyslogTransport::Tcp | SyslogTransport::Tls => {
                resolve(address)?;
                Link::Tcp {
                    tls,
                    stream: None,
                    retry_at: None,
                }
            }
        };
        Ok(Syslog {
            address: address.clone(),
            hostname: syslog_hostname(hostname),
            process_id: std::process::id(),
            link,
        })
    }

    pub(crate) fn address(&self) -> &SyslogAddress {
        &self.address
    }

    /// Sends one message; `Err` when it was not sent (the caller counts
    /// it). A TCP connection that failed is dropped and made again, at most
    /// every [`TCP_RECONNECT_AFTER`].
    pub(crate) fn send(&mut self, time: SystemTime, failure: bool, xml: &str) -> io::Result<()> {
        let message = rfc5424(&self.hostname, self.process_id, time, failure, xml);
        match &mut self.link {
            Link::Udp(socket, target) => {
                socket.send_to(&message, *target)?;
                Ok(())
            }
            Link::Tcp {
                tls,
                stream,
                retry_at,
            } => {
                if stream.is_none() {
                    if retry_at.is_some_and(|at| Instant::now() < at) {
                        return Err(io::Error::new(
                            io::ErrorKind::NotConnected,
                            "the collector is unreachable; retrying later",
                        ));
                    }
                    match connect(&self.address, tls.as_ref()) {
                        Ok(connected) => *stream = Some(connected),
                        Err(error) => {
                            *retry_at = Some(Instant::now() + TCP_RECONNECT_AFTER);
                            return Err(error);
                        }
                    }
                }
                let Some(connected) = stream.as_mut() else {
                    unreachable!("connected just above");
                };
                // RFC 6587 3.4.1 octet counting: MSG-LEN SP SYSLOG-MSG.
                let mut framed = format!("{} ", message.len()).into_bytes();
                framed.extend_from_slice(&message);
                if let Err(error) = connected.write_all(&framed) {
                    *stream = None;
                    *retry_at = Some(Instant::now() + TCP_RECONNECT_AFTER);
                    return Err(error);
                }
                Ok(())
            }
        }
    }
}

fn resolve(address: &SyslogAddress) -> io::Result<SocketAddr> {
    (address.host(), address.port())
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not resolve", address.host()),
            )
        })
}

fn connect(address: &SyslogAddress, tls: Option<&Arc<ClientConfig>>) -> io::Result<Stream> {
    let target = resolve(address)?;
    let stream = TcpStream::connect_timeout(&target, TCP_TIMEOUT)?;
    stream.set_write_timeout(Some(TCP_TIMEOUT))?;
    stream.set_read_timeout(Some(TCP_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(Stream::Plain(stream));
    };
    let name = ServerName::try_from(address.host().to_owned())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let connection = ClientConnection::new(tls.clone(), name).map_err(io::Error::other)?;
    let mut stream = StreamOwned::new(connection, stream);
    // The handshake now, so a refused certificate is this connection's
    // error, not the first write's.
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(Stream::Tls(Box::new(stream)))
}

/// The host name as RFC 5424's HOSTNAME field takes it: printable ASCII,
/// at most 255 characters, `-` when there is none.
fn syslog_hostname(hostname: &str) -> String {
    let cleaned: String = hostname
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(HOSTNAME_LENGTH_MAX)
        .collect();
    if cleaned.is_empty() {
        "-".to_owned()
    } else {
        cleaned
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME sluice PROCID
/// IHE+RFC-3881 - BOM XML` (the MSGID IHE ATNA gives audit messages; no
/// structured data; the message UTF-8, marked by its BOM as 6.4 asks).
pub(crate) fn rfc5424(
    hostname: &str,
    process_id: u32,
    time: SystemTime,
    failure: bool,
    xml: &str,
) -> Vec<u8> {
    let severity = if failure { 4 } else { 5 };
    let priority = u16::from(FACILITY_AUTHPRIV) * 8 + severity;
    let mut message = format!(
        "<{priority}>1 {} {hostname} sluice {process_id} IHE+RFC-3881 - \u{feff}",
        humantime::format_rfc3339_micros(time)
    )
    .into_bytes();
    message.extend_from_slice(xml.as_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_the_rfc5424_header() {
        let message = rfc5424(
            &syslog_hostname("archive 1\u{e9}"),
            42,
            SystemTime::UNIX_EPOCH,
            true,
            "<AuditMessage/>",
        );
        let expected = "<84>1 1970-01-01T00:00:00.000000Z archive1 sluice 42 IHE+RFC-3881 - \u{feff}<AuditMessage/>";
        assert_eq!(String::from_utf8(message).unwrap(), expected);
        assert_eq!(syslog_hostname(""), "-");
    }
}
