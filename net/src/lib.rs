//! `sluice-net`: DICOM bytes, sans-I/O.
//!
//! This crate knows the DICOM upper layer (PS3.8) and the DIMSE command sets
//! (PS3.7) and nothing else: it takes bytes and returns events and bytes. It
//! never touches a socket, a file, a clock or a thread; timers are inputs.
//!
//! Architecture invariant: no I/O, no panics on peer input (`unwrap`,
//! `expect` and unchecked indexing are denied below), every allocation
//! bounded by a negotiated or configured maximum. The one exception is
//! opt-in: the `client` feature adds [`client`], a blocking requestor on a
//! `std` socket over [`endpoint`], for the one-off SCU work of the engine's
//! Q/R SCU and the load generator's key discovery; the sans-I/O core never
//! uses it.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod assoc;
pub mod charset;
#[cfg(feature = "client")]
pub mod client;
pub mod dimse;
pub mod endpoint;
pub mod pdata;
pub mod pdu;
pub mod query;
pub mod scan;
pub mod uid;
