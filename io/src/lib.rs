//! `sluice-io`: Sluice's thread-per-core I/O runtime.
//!
//! Each core is one pinned thread owning one io_uring (or, where io_uring is
//! unavailable, one epoll instance), its listeners, its connections, its
//! files and a pool of receive buffers. Nothing on the hot path is shared or
//! locked. The only `unsafe` code of the workspace lives in this crate; every
//! site is listed in `docs/safety.md`.
//!
//! # Model: state machines driven by completions
//!
//! A [`Handler`] per core receives [`Event`]s — a connection accepted, bytes
//! received into a pooled [`RecvBuf`], a write completed — and reacts by
//! submitting operations on the [`Core`] it is handed. There are no futures:
//! the engine's association state machine (sans-I/O, in `sluice-net`) is
//! driven directly, buffers are owned by the runtime while an operation is in
//! flight (so a cancelled operation keeps its buffer until its completion
//! arrives), and an idle connection costs a table slot and an armed multishot
//! receive, not a buffer or a task. `docs/design/io-runtime.md` argues the
//! choice.
//!
//! The ingest path this is shaped for: a receive buffer arrives, the decoder
//! borrows slices of it, and the engine writes those slices into a file
//! without copying ([`RecvBuf::slice`] into [`IoBuf::Recv`], then
//! [`Core::write_at`]); the buffer returns to the pool when the write that
//! references it completes. Durability: [`Core::write_at_and_sync`] (a linked
//! chain on io_uring) or [`Core::sync`] after `Written`, then
//! [`Core::rename`] and a [`Core::sync`] of the directory. Results from the
//! index writer thread come back through a [`CoreSender`] to
//! [`Handler::on_message`].
//!
//! # Example: an echo server
//!
//! ```no_run
//! use sluice_io::{Core, Event, Handler, Runtime, RuntimeConfig};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type Message = ();
//!
//!     fn on_event(&mut self, core: &mut Core, event: Event) {
//!         match event {
//!             // Send the received buffer itself back: no copy.
//!             Event::Received { conn, data } => {
//!                 if core.send(conn, data, 0).is_err() {
//!                     core.close_connection(conn);
//!                 }
//!             }
//!             Event::RecvEnded { conn, .. } => core.close_connection(conn),
//!             Event::Sent { conn, result: Err(_), .. } => core.close_connection(conn),
//!             _ => {}
//!         }
//!     }
//! }
//!
//! let config = RuntimeConfig {
//!     listen_addrs: vec!["127.0.0.1:0".parse().unwrap()],
//!     ..RuntimeConfig::default()
//! };
//! let runtime = Runtime::start(config, |_core_index| Echo).unwrap();
//! println!("echo on {} using {}", runtime.listen_addrs()[0], runtime.backend());
//! runtime.shutdown_and_join(std::time::Duration::from_secs(5)).unwrap();
//! ```
//!
//! # Backends
//!
//! [`BackendChoice::Auto`] probes io_uring at start and falls back to the
//! portable backend (epoll, with blocking file calls on a small bounded
//! helper pool) when it is unusable — seccomp's EPERM, ENOSYS,
//! `kernel.io_uring_disabled`, an old kernel. One `tracing::info!` line says
//! which backend runs and why. Both backends report completions in the same
//! terms, so all logic above them is shared and every test runs on both.
//!
//! # Fault seam
//!
//! With the `fault-injection` feature (test builds only),
//! `RuntimeConfig::fault_plan` takes a `FaultPlan` that makes chosen
//! operations fail with an errno or complete short, reproducibly from a
//! seed. See the `fault` module.

pub mod aligned;
mod backend;
pub mod buf;
pub mod chunk;
pub mod config;
mod core;
pub mod durable;
pub mod error;
pub mod event;
pub mod fault;
mod fixed;
#[cfg(feature = "lmdb")]
pub mod lmdb;
pub mod map;
mod runtime;
mod slab;
mod socket;
pub mod splice;
mod sys;
mod wake;

pub use crate::aligned::{AlignedBuf, AlignedPart, DIRECT_IO_ALIGN};
pub use crate::buf::{IoBuf, RecvBuf};
pub use crate::chunk::{Chunk, ChunkPool};
pub use crate::config::{
    AcceptMode, BackendChoice, BackendKind, RuntimeConfig, IOVECS_PER_WRITE_MAX,
};
pub use crate::core::handler::Handler;
pub use crate::core::{Core, CoreStats};
pub use crate::error::{IoError, JoinError, OpKind, StartError, SubmitError};
pub use crate::event::{At, ConnId, Event, FileHandle, OpenOptions, SyncKind, TimerId};
pub use crate::fault::Fault;
#[cfg(feature = "fault-injection")]
pub use crate::fault::{FaultPlan, InjectedFault};
pub use crate::runtime::{CoreSender, Runtime, RuntimeHandle};
pub use crate::splice::FileSend;
pub use crossbeam_channel::{SendTimeoutError, TrySendError};
