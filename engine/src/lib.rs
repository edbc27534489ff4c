//! `sluice-engine`: the store, the DICOM services and the embedding API.
//!
//! - [`config`]: the server configuration (defaults, TOML file, flags, the
//!   generated `docs/configuration.md`).
//! - [`store`]: the data directory's layout, the Part 10 header, and
//!   [`store::Store`], the embedding handle (open, subscribe to events, look
//!   instances up, read their bytes).
//! - [`scp`]: the Storage SCP on `sluice-io` cores: association handling,
//!   C-STORE streamed to disk with no copy, the durability order, duplicates
//!   ([`scp::Server`] starts and stops it). docs/design/ingest.md.
//! - [`commit`]: the Storage Commitment Push Model SCP's tracker: requests
//!   recorded in the index before they are accepted, late instances
//!   matched as they arrive, reports delivered with retries, all resumed
//!   after a restart. docs/design/commitment.md.
//! - [`cli`]: the operator commands; [`recovery`]: start-up recovery;
//!   [`lock`]: one writer per data directory, one server per port;
//!   [`escape`]: how values a sender controls are shown in logs and output;
//!   [`flags`]: what is recorded of an instance stored with warnings.
//!
//! ```no_run
//! use sluice_engine::{config::Config, scp::Server, store::{Store, StoreEvent}};
//! let store = Store::open(Config::from_args(["sluice", "--data-dir", "/tmp/sluice"])?)?;
//! let events = store.subscribe(1024)?;
//! let server = Server::start(&store)?;
//! if let Ok(StoreEvent::Stored { triplet, .. }) = events.receiver().recv() {
//!     let bytes = store.read_instance(&triplet.sop_instance_uid)?;
//!     println!("{} bytes", bytes.map_or(0, |b| b.len()));
//! }
//! server.shutdown(std::time::Duration::from_secs(10))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod audit;
pub mod cli;
mod clock;
pub mod cluster;
pub mod commit;
mod compactor;
pub mod config;
pub mod escape;
pub mod flags;
pub mod lock;
mod metrics;
pub mod objects;
pub mod qr;
pub mod recovery;
pub mod scp;
pub mod store;
mod tls;
