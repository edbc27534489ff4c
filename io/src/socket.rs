//! TCP sockets as the runtime creates them, written once for listeners and
//! outbound connections: close-on-exec always, non-blocking exactly when the
//! portable backend drives them (its epoll loop calls `send`/`recv` itself;
//! io_uring wants blocking sockets and does the waiting in the kernel), and
//! Nagle off on every connection (a DIMSE response must not wait for an ACK).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use crate::config::BackendKind;
use crate::sys;

/// A new TCP socket for `address`'s family, set up for `backend`.
fn tcp_socket(address: SocketAddr, backend: BackendKind) -> std::io::Result<socket2::Socket> {
    let kind = socket2::Type::STREAM.cloexec();
    let kind = match backend {
        BackendKind::Portable => kind.nonblocking(),
        BackendKind::Uring => kind,
    };
    socket2::Socket::new(
        socket2::Domain::for_address(address),
        kind,
        Some(socket2::Protocol::TCP),
    )
}

/// A listening socket on `address` that other cores' listeners on the same
/// address can join (`SO_REUSEPORT`).
pub(crate) fn listener(
    address: SocketAddr,
    backlog: i32,
    backend: BackendKind,
) -> std::io::Result<socket2::Socket> {
    let socket = tcp_socket(address, backend)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

/// A socket to connect to `address` with, Nagle off.
pub(crate) fn outbound(
    address: SocketAddr,
    backend: BackendKind,
) -> std::io::Result<socket2::Socket> {
    let socket = tcp_socket(address, backend)?;
    set_nodelay(&socket).map_err(std::io::Error::from_raw_os_error)?;
    Ok(socket)
}

/// Turns Nagle off on a connection (accepted or outbound).
pub(crate) fn set_nodelay(socket: &impl AsRawFd) -> sys::SysResult<()> {
    sys::set_socket_option(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Asks for immediate ACKs on a connection (the kernel clears it again after
/// a while).
pub(crate) fn set_quickack(socket: &impl AsRawFd) -> sys::SysResult<()> {
    sys::set_socket_option(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1)
}
