//! `sluice media export`: a File-set with a DICOMDIR from stored studies.
//!
//! Read-only on the store (it works while `sluice serve` runs): the index
//! is walked study by study, series by series, a page of instances at a
//! time, each page in a read transaction of its own (a long export does not
//! pin the index's old pages). Each instance's keys come from its stored
//! file's head; `sluice-media` decides (profile, record, File ID) and the
//! file is written as stored or transcoded, streamed. The DICOMDIR goes to
//! `DICOMDIR.tmp` as the writer hands it out and is renamed last, after
//! every file and the DICOMDIR itself are synced: an interrupted export
//! leaves no DICOMDIR (and one that fails removes its `DICOMDIR.tmp`). Memory: the writer's state (about 72 bytes per
//! instance, docs/design/media.md), a page of index entries, and one
//! chunk of file.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice_index::{InstanceEntry, StudyQuery};
use sluice_media::part10::{file_header, FileMeta};
use sluice_media::{Action, FileSetOptions, FileSetWriter, KeyWarning, Profile, Transcoder};
use sluice_net::scan::DatasetEncoding;

use super::super::{CliError, OpenStore};
use crate::escape::Escaped;
use crate::store::layout::Area;
use crate::store::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// Instances read from the index per read transaction.
const PAGE: usize = 1024;
/// Bytes read from a stored file at a time.
const CHUNK: usize = 256 * 1024;
/// DICOMDIR bytes held before they are written out.
const DICOMDIR_CHUNK: usize = 64 * 1024;
/// Most studies one `--patient` may name.
const STUDIES_PER_PATIENT_MAX: usize = 100_000;

/// What to export.
#[derive(Debug, Clone)]
pub(crate) struct ExportRequest {
    pub(crate) out: PathBuf,
    pub(crate) studies: Vec<String>,
    pub(crate) patients: Vec<String>,
    pub(crate) profile: Profile,
    pub(crate) file_set_id: String,
}

/// Why one stored instance is not in the File-set.
#[derive(Debug)]
struct Refused {
    sop_instance_uid: String,
    reason: String,
}

/// The export's warnings, one line per distinct warning however many
/// instances share it (a key missing from a patient's every instance is
/// one line, not one per instance), in the order first seen.
#[derive(Default)]
struct Warned {
    /// Each warning, how many instances had it, and the first of them.
    distinct: Vec<(String, u64, String)>,
    /// Where each warning is in `distinct`.
    seen: std::collections::HashMap<String, usize>,
}

impl Warned {
    fn add(&mut self, warning: String, sop_instance_uid: &str) {
        match self.seen.get(&warning) {
            Some(&at) => {
                if let Some((_, count, _)) = self.distinct.get_mut(at) {
                    *count += 1;
                }
            }
            None => {
                self.seen.insert(warning.clone(), self.distinct.len());
                self.distinct
                    .push((warning, 1, sop_instance_uid.to_owned()));
            }
        }
    }
}

/// Removes the partial `DICOMDIR.tmp` of an export that ends in an error
/// before its rename (forgotten once renamed), so a failed export leaves
/// the files it copied and no DICOMDIR of either name.
struct Unfinished<'a>(&'a Path);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(self.0) {
            tracing::warn!(path = %self.0.display(), %error, "could not remove the unfinished DICOMDIR");
        }
    }
}

/// `sluice media export`.
pub(crate) fn export(
    store: &OpenStore,
    request: &ExportRequest,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let studies = chosen_studies(store, request)?;
    prepare_out(&request.out)?;
    let file_set_uid = fresh_uid();
    let mut writer = FileSetWriter::new(&FileSetOptions {
        profile: request.profile,
        file_set_id: request.file_set_id.clone(),
        file_set_uid,
        implementation_class_uid: IMPLEMENTATION_CLASS_UID.to_owned(),
        implementation_version_name: IMPLEMENTATION_VERSION_NAME.to_owned(),
    })
    .map_err(|error| CliError::BadArgument(error.to_string()))?;
    let tmp_path = request.out.join("DICOMDIR.tmp");
    let mut dicomdir = File::create(&tmp_path).map_err(CliError::io("create", &tmp_path))?;
    let unfinished = Unfinished(&tmp_path);
    let mut refused = Vec::new();
    let mut written = 0u64;
    let mut written_bytes = 0u64;
    let mut transcoded = 0u64;
    let mut warnings = 0u64;
    let mut warned = Warned::default();
    for study in &studies {
        let series = {
            let txn = store.index.read().map_err(store.index_error())?;
            txn.series_of_study(study, usize::MAX)
                .map_err(store.index_error())?
                .items
        };
        for series in &series {
            let mut after: Option<String> = None;
            loop {
                let page = {
                    let txn = store.index.read().map_err(store.index_error())?;
                    txn.instances_of_series_after(
                        study,
                        &series.series_instance_uid,
                        after.as_deref(),
                        PAGE,
                    )
                    .map_err(store.index_error())?
                };
                let Some(last) = page.last() else { break };
                after = Some(last.triplet.sop_instance_uid.clone());
                for entry in &page {
                    match export_one(store, request, &mut writer, entry)? {
                        Outcome::Written {
                            bytes,
                            was_transcoded,
                            warnings: instance_warnings,
                        } => {
                            written += 1;
                            written_bytes += bytes;
                            transcoded += u64::from(was_transcoded);
                            for warning in instance_warnings {
                                warnings += 1;
                                warned.add(
                                    describe_warning(&warning),
                                    &entry.triplet.sop_instance_uid,
                                );
                            }
                        }
                        Outcome::Refused(reason) => refused.push(Refused {
                            sop_instance_uid: entry.triplet.sop_instance_uid.clone(),
                            reason,
                        }),
                    }
                    if writer.pending_bytes() >= DICOMDIR_CHUNK {
                        dicomdir
                            .write_all(&writer.take_bytes())
                            .map_err(CliError::io("write", &tmp_path))?;
                    }
                }
                if page.len() < PAGE {
                    break;
                }
            }
        }
    }
    dicomdir
        .write_all(&writer.take_bytes())
        .map_err(CliError::io("write", &tmp_path))?;
    let end = writer.finish();
    dicomdir
        .write_all(&end.tail)
        .map_err(CliError::io("write", &tmp_path))?;
    for patch in &end.patches {
        dicomdir
            .write_all_at(&patch.bytes, patch.offset)
            .map_err(CliError::io("write", &tmp_path))?;
    }
    dicomdir
        .sync_all()
        .map_err(CliError::io("sync", &tmp_path))?;
    drop(dicomdir);
    sync_tree(&request.out)?;
    let final_path = request.out.join("DICOMDIR");
    std::fs::rename(&tmp_path, &final_path).map_err(CliError::io("rename", &tmp_path))?;
    std::mem::forget(unfinished);
    File::open(&request.out)
        .and_then(|dir| dir.sync_all())
        .map_err(CliError::io("sync", &request.out))?;

    for refusal in &refused {
        writeln!(
            output,
            "refused: {}: {}",
            Escaped(&refusal.sop_instance_uid),
            refusal.reason
        )?;
    }
    for (warning, count, first) in &warned.distinct {
        let instances = if *count == 1 { "instance" } else { "instances" };
        writeln!(
            output,
            "warning: {warning} ({count} {instances}, the first {})",
            Escaped(first)
        )?;
    }
    let [patients, studies_written, series_written, _] = end.records;
    writeln!(
        output,
        "exported {written} instances ({} MB, {transcoded} transcoded to Explicit VR Little Endian) \
         of {patients} patients, {studies_written} studies, {series_written} series under {} to {}; \
         DICOMDIR {} bytes; {} refused; {warnings} warnings",
        written_bytes / 1_000_000,
        request.profile.identifier(),
        request.out.display(),
        end.length,
        refused.len(),
    )?;
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The studies asked for, each once, in the order given; an unknown study
/// or a patient with no study is an error before anything is written.
fn chosen_studies(store: &OpenStore, request: &ExportRequest) -> Result<Vec<String>, CliError> {
    let txn = store.index.read().map_err(store.index_error())?;
    let mut seen = BTreeSet::new();
    let mut studies = Vec::new();
    for study in &request.studies {
        if txn.study(study).map_err(store.index_error())?.is_none() {
            return Err(store.not_found(format!(
                "no study with Study Instance UID {}",
                Escaped(study)
            )));
        }
        if seen.insert(study.clone()) {
            studies.push(study.clone());
        }
    }
    for patient in &request.patients {
        // A Patient ID holding `*` or `?` would match as a wildcard; the
        // exact comparison below keeps only the patient named.
        let listing = txn
            .query_studies(
                &StudyQuery {
                    patient_id: Some(patient.clone()),
                    ..StudyQuery::default()
                },
                STUDIES_PER_PATIENT_MAX,
            )
            .map_err(store.index_error())?;
        if listing.truncated {
            return Err(CliError::BadArgument(format!(
                "patient {} has more than {STUDIES_PER_PATIENT_MAX} studies; export them by --study",
                Escaped(patient)
            )));
        }
        let mut found = false;
        for study in listing.items {
            if study.record.attributes.patient_id != *patient {
                continue;
            }
            found = true;
            if seen.insert(study.study_instance_uid.clone()) {
                studies.push(study.study_instance_uid);
            }
        }
        if !found {
            return Err(store.not_found(format!(
                "no study of a patient with Patient ID {}",
                Escaped(patient)
            )));
        }
    }
    Ok(studies)
}

/// The output directory: created if missing, refused unless empty (a
/// File-set is not merged into another's files).
fn prepare_out(out: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(out).map_err(CliError::io("create", out))?;
    let mut entries = std::fs::read_dir(out).map_err(CliError::io("read", out))?;
    if entries.next().is_some() {
        return Err(CliError::BadArgument(format!(
            "{} is not empty; a File-set is written into an empty directory",
            out.display()
        )));
    }
    Ok(())
}

/// A UID for the DICOMDIR's Media Storage SOP Instance UID: a `2.25.`
/// UID (PS3.5 B.2) from the time in nanoseconds and the process id (the
/// implementation root plus both would pass 64 characters).
fn fresh_uid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |duration| duration.as_nanos());
    let value = (nanos << 32) | u128::from(std::process::id());
    format!("2.25.{value}")
}

enum Outcome {
    Written {
        bytes: u64,
        was_transcoded: bool,
        warnings: Vec<KeyWarning>,
    },
    Refused(String),
}

/// One instance: decide, read its keys, add its records, write its file.
fn export_one(
    store: &OpenStore,
    request: &ExportRequest,
    writer: &mut FileSetWriter,
    entry: &InstanceEntry,
) -> Result<Outcome, CliError> {
    let record = &entry.record;
    let syntax = record.transfer_syntax_uid.as_str();
    // Decide first: a refused instance's file is never read.
    if let Err(refusal) = request.profile.decide(&record.sop_class_uid, syntax) {
        return Ok(Outcome::Refused(refusal.to_string()));
    }
    let encoding = match DatasetEncoding::from_transfer_syntax(syntax) {
        Ok(encoding) => encoding,
        Err(error) => {
            return Ok(Outcome::Refused(format!(
                "stored transfer syntax {syntax}: {error}"
            )))
        }
    };
    // Its file, or its segment record: the data set is a range either way.
    let (dataset, mut file) = store.open_located(Area::Objects, entry)?;
    let (path, dataset_offset, dataset_length) = dataset.file_range();
    let path = path.to_owned();
    let keys = match super::read_keys_at(&mut file, dataset_offset, dataset_length, encoding)
        .map_err(CliError::io("read", &path))?
    {
        Ok(keys) => keys,
        Err(reason) => return Ok(Outcome::Refused(reason)),
    };
    if keys.sop_instance_uid() != entry.triplet.sop_instance_uid {
        return Ok(Outcome::Refused(format!(
            "the stored file {} holds SOP Instance UID {}, the index says otherwise (run `sluice verify`)",
            path.display(),
            Escaped(keys.sop_instance_uid())
        )));
    }
    let placement = match writer.add(&keys, syntax) {
        Ok(placement) => placement,
        Err(refusal) => return Ok(Outcome::Refused(refusal.to_string())),
    };
    let mut target = request.out.clone();
    for component in placement.file_id.components() {
        target.push(component);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(CliError::io("create", parent))?;
    }
    let header = file_header(&FileMeta {
        sop_class_uid: keys.sop_class_uid(),
        sop_instance_uid: keys.sop_instance_uid(),
        transfer_syntax_uid: &placement.transfer_syntax_uid,
        implementation_class_uid: IMPLEMENTATION_CLASS_UID,
        implementation_version_name: IMPLEMENTATION_VERSION_NAME,
    })
    .map_err(|error| CliError::Io {
        operation: "write the file meta of",
        path: target.clone(),
        source: std::io::Error::other(error.to_string()),
    })?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(CliError::io("create", &target))?;
    out.write_all(&header)
        .map_err(CliError::io("write", &target))?;
    file.seek(SeekFrom::Start(dataset_offset))
        .map_err(CliError::io("read", &path))?;
    let mut remaining = dataset_length;
    let mut transcoder = match placement.action {
        Action::AsStored => None,
        Action::Transcode { from } => Some(Transcoder::to_explicit_little_endian(from)),
    };
    let mut chunk = vec![0u8; CHUNK];
    let mut transcoded = Vec::with_capacity(CHUNK + CHUNK / 4);
    let mut bytes = header.len() as u64;
    while remaining > 0 {
        let want = usize::try_from(remaining.min(CHUNK as u64)).unwrap_or(CHUNK);
        let slice = chunk.get_mut(..want).unwrap_or_default();
        file.read_exact(slice)
            .map_err(CliError::io("read", &path))?;
        remaining -= want as u64;
        let written = match &mut transcoder {
            None => &*slice,
            Some(transcoder) => {
                transcoded.clear();
                if let Err(error) = transcoder.feed(slice, &mut transcoded) {
                    return transcode_failed(&target, &error);
                }
                &transcoded
            }
        };
        out.write_all(written)
            .map_err(CliError::io("write", &target))?;
        bytes += written.len() as u64;
    }
    if let Some(transcoder) = &mut transcoder {
        transcoded.clear();
        if let Err(error) = transcoder.finish(&mut transcoded) {
            return transcode_failed(&target, &error);
        }
        out.write_all(&transcoded)
            .map_err(CliError::io("write", &target))?;
        bytes += transcoded.len() as u64;
    }
    out.sync_data().map_err(CliError::io("sync", &target))?;
    Ok(Outcome::Written {
        bytes,
        was_transcoded: transcoder.is_some(),
        warnings: placement.warnings,
    })
}

/// A stored data set that the transcoder cannot read stops the export:
/// its record is already in the DICOMDIR, so it cannot be skipped.
fn transcode_failed(
    target: &Path,
    error: &sluice_media::TranscodeError,
) -> Result<Outcome, CliError> {
    Err(CliError::Io {
        operation: "transcode into",
        path: target.to_owned(),
        source: std::io::Error::other(format!(
            "{error} (the stored data set is not what its transfer syntax says; run `sluice verify`)"
        )),
    })
}

/// Syncs every directory under `root` (the File IDs' directories), so the
/// files synced before are reachable after a crash.
fn sync_tree(root: &Path) -> Result<(), CliError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(CliError::io("read", &dir))? {
            let entry = entry.map_err(CliError::io("read", &dir))?;
            if entry
                .file_type()
                .map_err(CliError::io("read", &dir))?
                .is_dir()
            {
                stack.push(entry.path());
            }
        }
        File::open(&dir)
            .and_then(|handle| handle.sync_all())
            .map_err(CliError::io("sync", &dir))?;
    }
    Ok(())
}

fn describe_warning(warning: &KeyWarning) -> String {
    match warning {
        KeyWarning::Invented {
            record_type,
            tag,
            value,
        } => format!(
            "{} record: {tag} is missing in the instance, written as {value:?}",
            record_type.name()
        ),
        KeyWarning::PatientNameDiffers {
            patient_id,
            written,
            instance,
        } => format!(
            "Patient ID {patient_id} is in the File-set as {written:?}, this instance says {instance:?} (the first name is kept)"
        ),
        KeyWarning::ParentMismatch { level, uid } => {
            format!("its {level} {uid} is already filed under another parent (kept there)")
        }
        other => format!("{other:?}"),
    }
}
