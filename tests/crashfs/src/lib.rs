//! A crash file system for tests, and Sluice's power-loss test built on it.
//!
//! Every crash test that kills a process with SIGKILL keeps the page cache:
//! whatever was written reaches the disk later, so the order of `fdatasync`,
//! directory `fsync` and rename that a program relies on is never tested.
//! This crate's file system (FUSE, in the test process) holds file data,
//! sizes and directory entries in a volatile state until they are made
//! durable, and on a power cut keeps only what was durable (optionally
//! tearing what was not, page by page, from a seed). The rules it implements
//! are in [`model`] and argued in `docs/design/power-loss-testing.md`.
//!
//! - [`model`]: the state and the durability rules, without FUSE;
//! - `fuse` (private): kernel requests to model calls, replies to errnos;
//! - [`mount`]: mount, arm or make a power cut, unmount, mount what survived;
//! - [`power_loss`]: one seeded power-loss round of `sluice serve` under load.

mod fuse;
pub mod model;
pub mod mount;
pub mod power_loss;

pub use model::{CutSummary, Image, PowerLoss, Stats};
pub use mount::{MountError, Mounted};
