//! `sluice media export` and `sluice media import`: the File-set Creator
//! and Reader roles (seed sections 3 and 6, requirements §5). The DICOM
//! part (DICOMDIR writer and reader, File IDs, profiles, transcoding) is
//! `sluice-media`; this module walks the store, reads and writes the files,
//! and runs the import through the embedded Storage SCP.
//! docs/design/media.md says why each choice.

mod export;
mod import;
pub(crate) mod send;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use sluice_media::{InstanceKeys, KeyReader, Profile};
use sluice_net::scan::DatasetEncoding;

use super::{CliError, StoreArgs};

/// `sluice media ...`.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum MediaCommand {
    /// Write stored studies as a File-set with a DICOMDIR (read-only on the
    /// store: works while `sluice serve` runs).
    ///
    /// Instances the profile cannot take (a compressed syntax it does not
    /// allow, a private SOP class) are listed as refused and left out, never
    /// decompressed or changed; Implicit VR and Big Endian data sets are
    /// transcoded to Explicit VR Little Endian. Exit status 1 when any
    /// instance was refused.
    Export {
        /// The File-set's root directory (created; must be empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Export this study (repeatable).
        #[arg(
            long = "study",
            value_name = "UID",
            required_unless_present = "patients"
        )]
        studies: Vec<String>,
        /// Export every study of this Patient ID (repeatable).
        #[arg(long = "patient", value_name = "ID")]
        patients: Vec<String>,
        /// The general-purpose application profile (PS3.11): STD-GEN-CD,
        /// STD-GEN-DVD-RAM, STD-GEN-DVD-JPEG, STD-GEN-USB-JPEG,
        /// STD-GEN-DVD-J2K, STD-GEN-USB-J2K.
        #[arg(long, default_value = "STD-GEN-CD", value_parser = parse_profile)]
        profile: Profile,
        /// File-set ID (0004,1130): up to 16 of A-Z, 0-9, _ and space.
        #[arg(long = "file-set-id", default_value = "SLUICE")]
        file_set_id: String,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Import a File-set (DIR/DICOMDIR) or a directory of Part 10 files.
    ///
    /// Validates first (the DICOMDIR's offsets and records, every chosen
    /// file against its record) and imports nothing when anything is wrong;
    /// then stores each instance through the durable ingest path of an
    /// embedded Storage SCP, duplicates decided by storage.duplicate_policy.
    /// Refused while `sluice serve` runs on the data directory. Exit status
    /// 1 when an instance was refused.
    Import {
        /// The File-set's root (holding DICOMDIR), or any directory.
        dir: PathBuf,
        /// Import only records (or files) of this Patient ID (repeatable).
        #[arg(long = "patient", value_name = "ID")]
        patients: Vec<String>,
        /// Import only records (or files) of this study (repeatable).
        #[arg(long = "study", value_name = "UID")]
        studies: Vec<String>,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_profile(value: &str) -> Result<Profile, String> {
    Profile::from_identifier(value).ok_or_else(|| {
        let known: Vec<&str> = Profile::ALL
            .iter()
            .map(|profile| profile.identifier())
            .collect();
        format!("unknown profile {value:?}; one of {}", known.join(", "))
    })
}

/// Runs a media command.
pub(crate) fn run(command: MediaCommand, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    match command {
        MediaCommand::Export {
            out,
            studies,
            patients,
            profile,
            file_set_id,
            store,
        } => export::export(
            &store.open()?,
            &export::ExportRequest {
                out,
                studies,
                patients,
                profile,
                file_set_id,
            },
            output,
        ),
        MediaCommand::Import {
            dir,
            patients,
            studies,
            store,
        } => import::import(
            &store,
            &import::ImportRequest {
                dir,
                patients,
                studies,
            },
            output,
        ),
    }
}

/// An instance's directory keys, read from its data set (`length` bytes at
/// `offset` of `file`) a chunk at a time until the reader has them (the
/// data set's head, whatever its length). The outer error is the file's; the inner one says
/// why the data set does not give its keys.
fn read_keys_at(
    file: &mut File,
    offset: u64,
    length: u64,
    encoding: DatasetEncoding,
) -> std::io::Result<Result<InstanceKeys, String>> {
    file.seek(SeekFrom::Start(offset))?;
    // Never past the data set (a segment record's padding and the next
    // record follow it).
    let mut dataset = file.take(length);
    let mut reader = KeyReader::new(encoding);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = dataset.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        if let Err(error) = reader.feed(chunk.get(..read).unwrap_or_default()) {
            return Ok(Err(format!("its keys cannot be read: {error}")));
        }
        if reader.is_complete() {
            break;
        }
    }
    Ok(reader
        .finish()
        .map_err(|error| format!("its keys cannot be read: {error}")))
}
