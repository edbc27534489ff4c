//! A core's listening sockets (one per configured address on this core, or
//! none on the cores a single acceptor hands connections to).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::slab::Key;

/// One listening socket and its multishot accept.
pub(super) struct Listener {
    fd: OwnedFd,
    /// Index into `RuntimeConfig::listen_addrs`.
    pub address_index: usize,
    /// The armed multishot accept.
    pub accept_op: Option<Key>,
}

impl Listener {
    pub fn new(fd: OwnedFd, address_index: usize) -> Listener {
        Listener {
            fd,
            address_index,
            accept_op: None,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
