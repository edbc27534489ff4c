//! `sluice-media`: DICOM media interchange, sans-I/O.
//!
//! This crate knows File-sets (PS3.10 §8), the DICOMDIR (the Basic Directory
//! IOD, PS3.3 Annex F), the general-purpose media application profiles
//! (PS3.11) and the native data-set transcoder they need, and nothing else:
//! like `sluice-net`, it takes bytes and returns bytes and decisions. The
//! caller reads and writes the files (the engine's `sluice media export` and
//! `import`; the Query/Retrieve SCP uses the transcoder).
//!
//! | module | owns |
//! | --- | --- |
//! | [`transcode`] | the streaming native data-set transcoder |
//! | [`keys`] | an instance's directory keys, read from its data set's head |
//! | [`record`] | record types, SOP class to record type, the keys of each |
//! | [`file_id`] | File IDs: generated, parsed, checked |
//! | [`profile`] | STD-GEN-* profiles: as stored, transcode, or refuse |
//! | [`part10`] | the Part 10 header of media files |
//! | [`dicomdir`] | the DICOMDIR writer and the reader/validator |
//!
//! Architecture invariant: no I/O, no panics on file input (`unwrap`,
//! `expect` and unchecked indexing are denied below), memory bounded by the
//! directory's structure (patients, studies, series) and a UID per instance,
//! never by the size of instances; see `docs/design/media.md`.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod dicomdir;
pub mod file_id;
pub mod keys;
pub mod part10;
pub mod profile;
pub mod record;
pub mod transcode;
mod vr;

pub use dicomdir::reader::{read_dicomdir, Directory, DirectoryError, Issue, IssueKind};
pub use dicomdir::writer::{
    FileSetEnd, FileSetError, FileSetOptions, FileSetWriter, KeyWarning, Patch, Placement, Refusal,
};
pub use file_id::{FileId, FileIdError};
pub use keys::{read_keys, InstanceKeys, KeyError, KeyReader};
pub use profile::{Action, Profile, ProfileRefusal};
pub use record::RecordType;
pub use transcode::{transcode, TranscodeError, Transcoder};
