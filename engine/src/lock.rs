//! Who may write a data directory, and who serves a port: one process each
//! (issue #19: a second `sluice serve` on the same data directory ran
//! start-up recovery under the first and deleted its in-flight temporary
//! file; a second one on the same port joined the first's SO_REUSEPORT
//! group and silently took half its associations into another archive).
//!
//! - [`DataDirectoryLock`]: an exclusive `flock` on `<data>/sluice.lock`,
//!   taken by `sluice serve` (before recovery, held for the process's life)
//!   and by the operator commands that write (`quarantine release`,
//!   `quarantine purge`), never by the reading ones, which LMDB lets run
//!   beside the server. The file holds the holder's process id and what it
//!   is, so a refused process can name it. Taking it consumes the
//!   clean-stop record (`recovery::clean_stop`), durably, before the holder
//!   can write anything. The kernel drops the lock when
//!   the holder exits, however it exits (`kill -9` included): a stale file
//!   never blocks anyone.
//! - [`PortLock`]: an abstract Unix socket named after the TCP port
//!   (`@sluice/port/<port>`), bound and listening for the server's life.
//!   Binding is exclusive and the kernel frees the name when the process
//!   exits; a refused process connects to it and reads the holder's
//!   process id from `SO_PEERCRED`. It closes the race that a probe alone
//!   leaves between two servers starting at once (both probe, then both
//!   join the SO_REUSEPORT group). [`probe_port`] catches every other kind
//!   of holder: a plain bind without SO_REUSEPORT fails while anyone
//!   listens there, SO_REUSEPORT or not. A refused probe is tried again
//!   for up to [`PORT_RELEASE_WAIT`]: the listeners of a server that has
//!   just died (`kill -9`, a crash restarted at once by systemd) leave
//!   their port bound for a moment after the process is gone, because
//!   the kernel tears an io_uring down after its process exits (measured
//!   here: 3 to 10 ms after `waitpid` returned on an idle machine, longer
//!   under load), and the port lock, taken first, has already shown that
//!   no live Sluice serves the port.
//!
//! The port lock is keyed by the port alone, not the address: listeners on
//! `0.0.0.0:P` and `127.0.0.1:P` that both set SO_REUSEPORT share
//! connections too. One Sluice per port per host (network namespace).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};
use thiserror::Error;

use crate::recovery::clean_stop::{self, LastStop};

/// The lock file's name in the data directory.
pub const LOCK_FILE_NAME: &str = "sluice.lock";

/// Why a lock could not be taken.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the data directory.
    #[error(
        "data directory {} is in use by {holder}; stop it first (only one `sluice serve` or writing command at a time)",
        path.display()
    )]
    DataDirectoryInUse {
        /// The data directory.
        path: PathBuf,
        /// Who holds it, as its lock file says.
        holder: Holder,
    },
    /// Another Sluice serves the port.
    #[error("cannot listen on {address}: port {} is served by {holder}; stop it or choose another port", address.port())]
    PortLocked {
        /// The address asked for.
        address: SocketAddr,
        /// Who serves its port.
        holder: Holder,
    },
    /// Another process listens on the address.
    #[error("cannot listen on {address}: another process listens there (see `ss -ltnp 'sport = :{}'`); stop it or choose another port", address.port())]
    AddressInUse {
        /// The address.
        address: SocketAddr,
    },
    /// The lock could not be taken for another reason.
    #[error("cannot lock {what}: {source}")]
    Io {
        /// What was being locked.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The holder of a lock, as far as it can be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id, when known.
    pub pid: Option<u32>,
    /// What it is (`sluice serve`, `sluice quarantine purge`), when known.
    pub what: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.what, self.pid) {
            (Some(what), Some(pid)) => write!(formatter, "process {pid} ({what})"),
            (None, Some(pid)) => write!(formatter, "process {pid}"),
            (Some(what), None) => write!(formatter, "another process ({what})"),
            (None, None) => formatter.write_str("another process"),
        }
    }
}

/// An exclusive lock on a data directory, held until dropped (or the
/// process exits).
#[derive(Debug)]
pub struct DataDirectoryLock {
    /// The open lock file: the `flock` lives as long as it is open.
    _file: File,
    /// What the last holder's stop left (`recovery::clean_stop`), taken
    /// (and durably removed) as the lock was.
    last_stop: LastStop,
}

impl DataDirectoryLock {
    /// Takes the lock of the data directory `root` (which must exist) for
    /// `what` (`sluice serve`...), without waiting: another holder is an
    /// error naming it.
    pub fn acquire(root: &Path, what: &str) -> Result<DataDirectoryLock, LockError> {
        let path = root.join(LOCK_FILE_NAME);
        let io = |source| LockError::Io {
            what: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(LockError::DataDirectoryInUse {
                    path: root.to_owned(),
                    holder: read_holder(&mut file),
                })
            }
            Err(error) => return Err(io(error.into())),
        }
        // Ours: say who holds it, for the next one to be refused.
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{} {what}", std::process::id()));
        if let Err(error) = written {
            // The lock holds all the same; only the name is missing.
            tracing::warn!(path = %path.display(), %error, "cannot write the lock holder's name");
        }
        // Before anyone holding the lock can write: the clean-stop record
        // is consumed, its removal durable, so that a crash of this holder
        // leaves none behind.
        let last_stop = clean_stop::take(root).map_err(|source| LockError::Io {
            what: root
                .join(clean_stop::CLEAN_STOP_FILE_NAME)
                .display()
                .to_string(),
            source,
        })?;
        Ok(DataDirectoryLock {
            _file: file,
            last_stop,
        })
    }

    /// What the previous holder's stop left: a clean-stop record or not.
    pub fn last_stop(&self) -> LastStop {
        self.last_stop.clone()
    }
}

/// What a lock file says of its holder: `<pid> <what>`.
fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    // Bounded: a few dozen bytes are expected.
    let _ = file.take(256).read_to_string(&mut text);
    let text = text.trim();
    let (pid, what) = text.split_once(' ').unwrap_or((text, ""));
    Holder {
        pid: pid.parse().ok(),
        what: (!what.is_empty()).then(|| what.to_owned()),
    }
}

/// The lock of a TCP port: an abstract Unix socket, held until dropped (or
/// the process exits).
#[derive(Debug)]
pub struct PortLock {
    _listener: UnixListener,
}

impl PortLock {
    /// Takes the lock of `address`'s port, without waiting.
    pub fn acquire(address: SocketAddr) -> Result<PortLock, LockError> {
        let port = address.port();
        let name = format!("sluice/port/{port}");
        let io = |source| LockError::Io {
            what: format!("port {port} (abstract socket @{name})"),
            source,
        };
        let unix_address = UnixSocketAddr::from_abstract_name(name.as_bytes()).map_err(io)?;
        match UnixListener::bind_addr(&unix_address) {
            Ok(listener) => Ok(PortLock {
                _listener: listener,
            }),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                // The holder's process id, from the credentials the kernel
                // recorded when it listened.
                let pid = UnixStream::connect_addr(&unix_address)
                    .ok()
                    .and_then(|stream| rustix::net::sockopt::socket_peercred(&stream).ok())
                    .and_then(|credentials| {
                        u32::try_from(credentials.pid.as_raw_nonzero().get()).ok()
                    });
                Err(LockError::PortLocked {
                    address,
                    holder: Holder {
                        pid,
                        what: Some("sluice serve".to_owned()),
                    },
                })
            }
            Err(error) => Err(io(error)),
        }
    }
}

/// How long [`probe_port`] waits for a bound port to be released before it
/// gives up: long enough for a dead server's io_uring teardown on a loaded
/// machine, short enough that a port another program really holds is
/// reported within seconds.
pub const PORT_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// How often a refused probe is tried again within [`PORT_RELEASE_WAIT`].
const PORT_PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Fails when anyone listens on `address`: a bind without SO_REUSEPORT
/// (std sets SO_REUSEADDR, so connections in TIME_WAIT do not count) is
/// refused while any socket, SO_REUSEPORT or not, is bound there. The probe
/// is closed at once. A refused probe is tried again until
/// [`PORT_RELEASE_WAIT`] has passed (logged once, at the first refusal),
/// so a server started right after another died on the port comes up.
pub fn probe_port(address: SocketAddr) -> Result<(), LockError> {
    probe_port_within(address, PORT_RELEASE_WAIT)
}

fn probe_port_within(address: SocketAddr, wait: Duration) -> Result<(), LockError> {
    let started = Instant::now();
    let mut refused = false;
    loop {
        match std::net::TcpListener::bind(address) {
            Ok(_probe) => {
                if refused {
                    let waited_ms = started.elapsed().as_millis() as u64;
                    tracing::info!(%address, waited_ms, "the port was released");
                }
                return Ok(());
            }
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                if started.elapsed() >= wait {
                    return Err(LockError::AddressInUse { address });
                }
                if !refused {
                    refused = true;
                    tracing::warn!(%address, wait_s = wait.as_secs_f64(), "the port is still bound, though no Sluice serves it (a server that stopped a moment ago keeps its listeners until the kernel has torn down its io_uring; or another program listens there); trying again");
                }
                std::thread::sleep(PORT_PROBE_INTERVAL);
            }
            Err(source) => {
                return Err(LockError::Io {
                    what: format!("{address} (probe bind)"),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_data_directory_lock_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirectoryLock::acquire(dir.path(), "sluice serve").unwrap();
        // Another open file description: refused, as another process is.
        let error = DataDirectoryLock::acquire(dir.path(), "sluice quarantine purge").unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!("process {} (sluice serve)", std::process::id())),
            "{message}"
        );
        drop(first);
        // Released: the next one takes it.
        let _second = DataDirectoryLock::acquire(dir.path(), "sluice quarantine purge").unwrap();
    }

    #[test]
    fn whoever_takes_the_lock_consumes_the_clean_stop_record() {
        let dir = tempfile::tempdir().unwrap();
        let record = clean_stop::CleanStop {
            index_fingerprint: "instances:1".to_owned(),
            stopped_at_unix_ms: 1,
        };
        clean_stop::write(dir.path(), &record).unwrap();
        // A refused process consumes nothing.
        let holder = DataDirectoryLock::acquire(dir.path(), "sluice serve").unwrap();
        assert_eq!(holder.last_stop(), LastStop::Clean(record.clone()));
        clean_stop::write(dir.path(), &record).unwrap();
        DataDirectoryLock::acquire(dir.path(), "sluice migrate").unwrap_err();
        assert!(dir.path().join(clean_stop::CLEAN_STOP_FILE_NAME).is_file());
        drop(holder);
        // A writing command takes it: the next start gets the full check.
        let command = DataDirectoryLock::acquire(dir.path(), "sluice migrate").unwrap();
        assert_eq!(command.last_stop(), LastStop::Clean(record));
        assert!(!dir.path().join(clean_stop::CLEAN_STOP_FILE_NAME).exists());
        drop(command);
        let next = DataDirectoryLock::acquire(dir.path(), "sluice serve").unwrap();
        assert_eq!(next.last_stop(), LastStop::NotRecorded);
    }

    #[test]
    fn a_probe_waits_for_a_port_released_within_the_wait() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = holder.local_addr().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(holder);
        });
        let started = Instant::now();
        probe_port_within(address, Duration::from_secs(30)).unwrap();
        // It did wait for the release, and did not sleep out the wait.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(30), "{waited:?}");
        release.join().unwrap();
    }

    #[test]
    fn a_probe_of_a_port_held_past_the_wait_names_it() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = holder.local_addr().unwrap();
        let error = probe_port_within(address, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(error, LockError::AddressInUse { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("{address}: another process listens there")),
            "{message}"
        );
        drop(holder);
        probe_port_within(address, Duration::ZERO).unwrap();
    }

    #[test]
    fn holders_read_from_lock_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        for (text, expected) in [
            ("42 sluice serve\n", "process 42 (sluice serve)"),
            ("42\n", "process 42"),
            ("", "another process"),
            ("garbage", "another process"),
        ] {
            std::fs::write(&path, text).unwrap();
            let holder = read_holder(&mut File::open(&path).unwrap());
            assert_eq!(holder.to_string(), expected, "{text:?}");
        }
    }

    #[test]
    fn a_port_is_locked_once_and_probed_busy_while_listened_on() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        assert!(matches!(
            probe_port_within(address, PORT_PROBE_INTERVAL),
            Err(LockError::AddressInUse { .. })
        ));
        drop(listener);
        probe_port(address).unwrap();

        // A listener with SO_REUSEPORT, as Sluice's own are: a second
        // SO_REUSEPORT listener would join it; the probe does not.
        use rustix::net::{sockopt, AddressFamily, SocketType};
        let reuseport = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        sockopt::set_socket_reuseport(&reuseport, true).unwrap();
        rustix::net::bind(&reuseport, &address).unwrap();
        rustix::net::listen(&reuseport, 8).unwrap();
        let error = probe_port_within(address, PORT_PROBE_INTERVAL).unwrap_err();
        assert!(
            error.to_string().contains("another process listens there"),
            "{error}"
        );
        drop(reuseport);

        let lock = PortLock::acquire(address).unwrap();
        let error = PortLock::acquire(address).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("process {} (sluice serve)", std::process::id())),
            "{error}"
        );
        drop(lock);
        let _again = PortLock::acquire(address).unwrap();
    }
}
