//! `sluice-media`: DICOM media interchange, sans-I/O.
//!
//! This crate knows File-sets (PS3.10 §8), the DICOMDIR (the Basic Directory
//! IOD, PS3.3 Annex F), the general-purpose media application profiles
//! (PS3.11) and the native data-set transcoder they need, and nothing else:
//! like `sluice-net`, it takes bytes and returns bytes and decisions. The
//! caller reads and writes the files (the engine's `sluice media export` and
//! `import`; the Query/Retrieve SCP uses the transcoder).
//!
//! Architecture invariant: no I/O, no panics on file input (`unwrap`,
//! `expect` and unchecked indexing are denied below), memory bounded by the
//! directory's structure (patients, studies, series), not by the number or
//! size of instances; see `docs/design/media.md`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod transcode;
mod vr;

pub use transcode::{transcode, TranscodeError, Transcoder};
