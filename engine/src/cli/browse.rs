//! The read-only commands: `ls`, `show`, `stats`, `export-instance`.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;

use sluice_index::{FileId, InstanceRecord, Location, StudyQuery, Triplet};

use super::format::{bytes, hex, number_or_dash, or_dash, rfc3339_utc, Table};
use super::{CliError, OpenStore};
use crate::escape::Escaped;
use crate::store::layout::{Area, Layout};
use crate::store::segment::{self, RecordError, RecordHead};
use crate::store::walk::disk_usage;
use crate::store::DatasetLocation;

/// Writes the "more rows" note of a truncated listing.
fn truncated_note(output: &mut dyn Write, shown: usize, noun: &str) -> std::io::Result<()> {
    writeln!(
        output,
        "(first {shown} {noun} shown; pass --limit to see more)"
    )
}

/// `sluice ls [STUDY [SERIES]]`.
pub(crate) fn ls(
    store: &OpenStore,
    study: Option<&str>,
    series: Option<&str>,
    limit: usize,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let txn = store.index.read().map_err(store.index_error())?;
    match (study, series) {
        (None, _) => {
            let listing = txn
                .query_studies(&StudyQuery::default(), limit)
                .map_err(store.index_error())?;
            let mut table = Table::new(&[
                "STUDY INSTANCE UID",
                "PATIENT ID",
                "PATIENT NAME",
                "DATE",
                "MODALITIES",
                "SERIES",
                "INSTANCES",
                "ACCESSION",
                "DESCRIPTION",
            ]);
            for study in &listing.items {
                let attributes = &study.record.attributes;
                table.push(vec![
                    study.study_instance_uid.clone(),
                    or_dash(&attributes.patient_id),
                    or_dash(&attributes.patient_name),
                    or_dash(&attributes.study_date),
                    or_dash(&study.record.modalities_in_study.join("\\")),
                    study.record.number_of_series.to_string(),
                    study.record.number_of_instances.to_string(),
                    or_dash(&attributes.accession_number),
                    or_dash(&attributes.study_description),
                ]);
            }
            if table.len() == 0 {
                writeln!(output, "no studies in {}", store.data_dir().display())?;
                return Ok(ExitCode::SUCCESS);
            }
            table.write(output)?;
            if listing.truncated {
                truncated_note(output, table.len(), "studies")?;
            }
        }
        (Some(study), None) => {
            if txn.study(study).map_err(store.index_error())?.is_none() {
                return Err(store.not_found(format!("no study with Study Instance UID {study}")));
            }
            let listing = txn
                .series_of_study(study, limit)
                .map_err(store.index_error())?;
            let mut table = Table::new(&[
                "SERIES INSTANCE UID",
                "NUMBER",
                "MODALITY",
                "INSTANCES",
                "DESCRIPTION",
            ]);
            for series in &listing.items {
                let attributes = &series.record.attributes;
                table.push(vec![
                    series.series_instance_uid.clone(),
                    number_or_dash(attributes.series_number),
                    or_dash(&attributes.modality),
                    series.record.number_of_instances.to_string(),
                    or_dash(&attributes.series_description),
                ]);
            }
            table.write(output)?;
            if listing.truncated {
                truncated_note(output, table.len(), "series")?;
            }
        }
        (Some(study), Some(series)) => {
            if txn
                .series(study, series)
                .map_err(store.index_error())?
                .is_none()
            {
                return Err(store.not_found(format!(
                    "no series with Series Instance UID {series} in study {study}"
                )));
            }
            let listing = txn
                .instances_of_study(study, Some(series), limit)
                .map_err(store.index_error())?;
            let mut table = Table::new(&[
                "SOP INSTANCE UID",
                "NUMBER",
                "SOP CLASS UID",
                "TRANSFER SYNTAX UID",
                "SIZE",
                "RECEIVED",
                "CALLING AE",
            ]);
            for instance in &listing.items {
                let record = &instance.record;
                table.push(vec![
                    instance.triplet.sop_instance_uid.clone(),
                    number_or_dash(record.instance_number),
                    record.sop_class_uid.clone(),
                    record.transfer_syntax_uid.clone(),
                    record.file_size_bytes.to_string(),
                    rfc3339_utc(record.received_at_unix_ns),
                    or_dash(&record.calling_ae_title),
                ]);
            }
            table.write(output)?;
            if listing.truncated {
                truncated_note(output, table.len(), "instances")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the bytes of `file_id` are, as the commands print it: its file's
/// path, or for a segment record the segment's path, the segment's id, the
/// record's offset and length.
pub(crate) fn place_of(layout: &Layout, area: Area, file_id: FileId, location: Location) -> String {
    match location {
        Location::File => layout.area_path(area, file_id).display().to_string(),
        Location::Record(place) => format!(
            "{} (segment {:016x}, record at offset {}, {} bytes)",
            layout.segment_path(place.segment).display(),
            place.segment,
            place.offset,
            place.length
        ),
    }
}

/// Writes the `Key: value` lines of one instance record (shared by `show`
/// and `quarantine show`); `location` is where its bytes are (a file of
/// `area`, or a segment record).
pub(crate) fn write_record(
    output: &mut dyn Write,
    layout: &Layout,
    area: Area,
    triplet: &Triplet,
    record: &InstanceRecord,
    location: Location,
) -> std::io::Result<()> {
    let lines: [(&str, String); 13] = [
        ("SOP Instance UID", triplet.sop_instance_uid.clone()),
        ("Study Instance UID", triplet.study_instance_uid.clone()),
        ("Series Instance UID", triplet.series_instance_uid.clone()),
        ("SOP Class UID", record.sop_class_uid.clone()),
        ("Transfer Syntax UID", record.transfer_syntax_uid.clone()),
        ("Instance Number", number_or_dash(record.instance_number)),
        (
            match location {
                Location::File => "File",
                Location::Record(_) => "Record",
            },
            place_of(layout, area, record.file_id, location),
        ),
        ("File id", format!("{:032x}", record.file_id.0)),
        ("File size", format!("{} bytes", record.file_size_bytes)),
        (
            "Data set",
            format!(
                "{} bytes at offset {}",
                record.dataset_size_bytes(),
                record.dataset_offset_bytes
            ),
        ),
        ("Checksum (XXH3-128)", hex(&record.checksum.0)),
        ("Received at", rfc3339_utc(record.received_at_unix_ns)),
        ("Calling AE", or_dash(&record.calling_ae_title)),
    ];
    for (key, value) in lines {
        writeln!(output, "{:<20} {}", format!("{key}:"), Escaped(value))?;
    }
    Ok(())
}

/// `sluice show SOP_INSTANCE_UID`.
pub(crate) fn show(
    store: &OpenStore,
    sop: &str,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let (entry, location) = {
        let txn = store.index.read().map_err(store.index_error())?;
        let Some(entry) = txn.instance_by_sop(sop).map_err(store.index_error())? else {
            return Err(store.not_found(format!("no instance with SOP Instance UID {sop}")));
        };
        let location = txn
            .location(entry.record.file_id)
            .map_err(store.index_error())?;
        (entry, location)
    };
    write_record(
        output,
        &store.layout,
        Area::Objects,
        &entry.triplet,
        &entry.record,
        location,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `sluice stats`.
pub(crate) fn stats(store: &OpenStore, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    let stats = store.index.stats().map_err(store.index_error())?;
    writeln!(output, "index {}", store.layout.index_dir().display())?;
    let mut table = Table::new(&["TABLE", "ENTRIES", "BYTES", "DEPTH"]);
    for entry in &stats.tables {
        table.push(vec![
            entry.name.to_owned(),
            entry.entries.to_string(),
            entry.bytes.to_string(),
            entry.depth.to_string(),
        ]);
    }
    table.write(output)?;
    writeln!(output, "map size:  {}", bytes(stats.map_size_bytes))?;
    writeln!(output, "used:      {}", bytes(stats.used_bytes))?;
    writeln!(output, "file size: {}", bytes(stats.file_size_bytes))?;
    writeln!(
        output,
        "readers:   {} of {}",
        stats.readers_in_use, stats.readers_max
    )?;
    writeln!(output)?;
    writeln!(output, "disk {}", store.data_dir().display())?;
    let layout = &store.layout;
    let mut table = Table::new(&["AREA", "FILES", "BYTES"]);
    for (name, dir) in [
        ("objects", layout.objects_dir()),
        ("quarantine", layout.quarantine_dir()),
        ("tmp", layout.tmp_dir()),
        ("orphans", layout.orphans_dir()),
        ("segments", layout.segments_dir()),
        ("index", layout.index_dir()),
    ] {
        let usage = disk_usage(&dir).map_err(CliError::io("read", &dir))?;
        table.push(vec![
            name.to_owned(),
            usage.files.to_string(),
            bytes(usage.bytes),
        ]);
    }
    table.write(output)?;
    segment_stats(store, output)?;
    Ok(ExitCode::SUCCESS)
}

/// `sluice stats`' segment table (the segments layout): every segment the
/// index knows, from its `SegmentState`, with its file's size. Dead bytes
/// are what no entry names: below the indexed end of an open segment (its
/// tail is still being appended to), anywhere in a sealed one (replaced,
/// purged or never-indexed records, a failed write's place, the unused
/// end), which compaction (`sluice compact`) reclaims; a sealed segment
/// with nothing live and no file is `deleted` (its row stays). A sealed segment in
/// the object store (`[objects]`) is `uploaded` (its file still here) or
/// `evicted` (its size the object's); `sealed` is one still to upload.
fn segment_stats(store: &OpenStore, output: &mut dyn Write) -> Result<(), CliError> {
    let (segments, objects) = {
        let txn = store.index.read().map_err(store.index_error())?;
        let objects: std::collections::HashMap<u64, sluice_index::SegmentObject> = txn
            .segment_objects()
            .map_err(store.index_error())?
            .into_iter()
            .collect();
        (txn.segments().map_err(store.index_error())?, objects)
    };
    if segments.is_empty() {
        return Ok(());
    }
    writeln!(output)?;
    writeln!(output, "segments {}", store.layout.segments_dir().display())?;
    let mut table = Table::new(&[
        "SEGMENT",
        "STATE",
        "SIZE",
        "LIVE BYTES",
        "LIVE RECORDS",
        "DEAD BYTES",
    ]);
    for (segment, state) in segments {
        let path = store.layout.segment_path(segment);
        let object = objects.get(&segment);
        let size = match std::fs::metadata(&path) {
            Ok(metadata) => Some(metadata.len()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => object
                .filter(|object| object.evicted)
                .map(|object| object.size_bytes),
            Err(error) => return Err(CliError::io("read", &path)(error)),
        };
        let deleted = state.sealed && size.is_none() && state.live_records == 0;
        let state_name = match (state.sealed, object) {
            _ if deleted => "deleted",
            (false, _) => "open",
            (true, None) => "sealed",
            (true, Some(object)) if object.evicted => "evicted",
            (true, Some(_)) => "uploaded",
        };
        let used = if deleted {
            // Compacted or migrated away: its row stays so ids are never
            // reused; nothing of it is on disk.
            0
        } else if state.sealed {
            size.unwrap_or(state.indexed_end)
        } else {
            state.indexed_end
        };
        table.push(vec![
            format!("{segment:016x}"),
            state_name.to_owned(),
            match size {
                Some(size) => size.to_string(),
                None if deleted => "-".to_owned(),
                None => "missing".to_owned(),
            },
            state.live_bytes.to_string(),
            state.live_records.to_string(),
            used.saturating_sub(state.live_bytes).to_string(),
        ]);
    }
    table.write(output)?;
    Ok(())
}

/// A writer that hashes what goes through it (the record payload's
/// checksum, `segment::PayloadHasher`).
struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hasher: segment::PayloadHasher,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(bytes.get(..written).unwrap_or_default());
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The error of a record that is not whole and valid.
fn damaged_record(path: &Path, segment: u64, offset: u64, error: RecordError) -> CliError {
    CliError::Io {
        operation: "export from",
        path: path.to_owned(),
        source: std::io::Error::other(format!(
            "the record of segment {segment:016x} at offset {offset} is damaged: {error} \
             (run `sluice verify`); nothing exported"
        )),
    }
}

/// The checked header of the record at `offset` of a segment, whose Part 10
/// bytes the index says are `part10_bytes` long.
fn record_head(
    file: &std::fs::File,
    path: &Path,
    (segment, offset): (u64, u64),
    part10_bytes: u64,
) -> Result<RecordHead, CliError> {
    let size = file.metadata().map_err(CliError::io("read", path))?.len();
    let head = crate::store::segment::read_head(file, offset, size)
        .map_err(CliError::io("read", path))?
        .map_err(|error| damaged_record(path, segment, offset, error))?;
    if head.payload_bytes != part10_bytes {
        return Err(damaged_record(
            path,
            segment,
            offset,
            RecordError::Length("the payload length differs from the index's file size"),
        ));
    }
    Ok(head)
}

/// `sluice export-instance SOP_INSTANCE_UID PATH [--force]`.
pub(crate) fn export_instance(
    store: &OpenStore,
    sop: &str,
    destination: &Path,
    force: bool,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let found = {
        let txn = store.index.read().map_err(store.index_error())?;
        txn.instance_by_sop(sop).map_err(store.index_error())?
    };
    let Some(entry) = found else {
        return Err(store.not_found(format!("no instance with SOP Instance UID {sop}")));
    };
    let (dataset, mut source) = store.open_located(Area::Objects, &entry)?;
    let (source_path, start, length) = dataset.part10_range();
    // A record's header says how long its Part 10 bytes are and what they
    // hash to: checked against the index and against the bytes copied, so a
    // damaged record is refused, not exported (a file has only the index's
    // checksum of its data set, which `sluice verify` checks).
    let record_check = match &dataset {
        DatasetLocation::File { .. } => None,
        DatasetLocation::Record {
            segment,
            record_offset,
            ..
        } => Some((
            *segment,
            *record_offset,
            record_head(&source, source_path, (*segment, *record_offset), length)?,
        )),
    };
    source
        .seek(SeekFrom::Start(start))
        .map_err(CliError::io("read", source_path))?;
    let source_path = source_path.to_owned();
    // `create_new` makes the refusal atomic: no window in which another
    // process's file could be truncated between a check and the open.
    let mut options = OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut destination_file = match options.open(destination) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::WouldOverwrite {
                path: destination.to_owned(),
            })
        }
        Err(error) => return Err(CliError::io("create", destination)(error)),
    };
    let mut hashing = HashingWriter {
        inner: &mut destination_file,
        hasher: segment::PayloadHasher::new(
            record_check
                .as_ref()
                .map_or(0, |(_, _, head)| head.payload_split),
        ),
    };
    // A file is copied to its end (a size other than the index's is refused
    // below); a record's bytes end at its payload's length.
    let limit = if record_check.is_some() {
        length
    } else {
        u64::MAX
    };
    let copied = std::io::copy(&mut source.take(limit), &mut hashing)
        .map_err(CliError::io("copy to", destination))?;
    let payload_checksum = hashing.hasher.digest();
    if let Some((segment, offset, head)) = record_check {
        if payload_checksum != head.payload_checksum {
            drop(destination_file);
            // Ours: created (or truncated) above, and holding bad bytes.
            let _ = std::fs::remove_file(destination);
            return Err(damaged_record(
                &source_path,
                segment,
                offset,
                RecordError::PayloadChecksum,
            ));
        }
    }
    destination_file
        .sync_all()
        .map_err(CliError::io("sync", destination))?;
    if copied != entry.record.file_size_bytes {
        return Err(CliError::Io {
            operation: "export",
            path: source_path,
            source: std::io::Error::other(format!(
                "the stored file has {copied} bytes, the index records {} (run `sluice verify`)",
                entry.record.file_size_bytes
            )),
        });
    }
    writeln!(
        output,
        "exported {} ({copied} bytes) to {}",
        Escaped(sop),
        destination.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
