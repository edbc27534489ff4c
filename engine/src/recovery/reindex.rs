//! Reading a sealed file back into an index entry, for start-up recovery:
//! the C-STORE path answers once the file is sealed and durable and its
//! entry committed, but the index's last commit becomes durable only with
//! its next flush, so a crash can take entries of answered instances. Their
//! files say what the entry said: the seal (length and checksum) proves the
//! file complete, and the same head scan and checks as at ingest give the
//! entry (`crate::store::instance_from_head`). A segment record's Part 10
//! bytes are read back the same way (`recovery/segments.rs`).

use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

use sluice_index::{FileId, InstanceRecord, NewInstance};
use sluice_net::scan::{check_store, DatasetScanner, Leniency, StoreCheck};
use sluice_net::uid;

use crate::store::check::READ_CHUNK_BYTES;
use crate::store::instance_from_head;
use crate::store::layout::DatasetHasher;
use crate::store::part10::read_header;

/// Most bytes read for the Part 10 header (Sluice's is a few hundred).
const HEADER_READ_BYTES_MAX: u64 = 64 * 1024;

/// The entry the ingest path made for the sealed file at `path` (named
/// `file_id`); `Err` with the reason when the file is not sealed, not
/// complete (its data set does not match its seal), or holds a data set the
/// ingest path would have refused.
pub(crate) fn instance_of_file(path: &Path, file_id: FileId) -> Result<NewInstance, String> {
    let io = |what: &'static str| move |error: std::io::Error| format!("cannot {what}: {error}");
    let file = std::fs::File::open(path).map_err(io("open it"))?;
    let metadata = file.metadata().map_err(io("read its metadata"))?;
    let received_at_unix_ns = metadata
        .modified()
        .ok()
        .and_then(|modified| modified.duration_since(UNIX_EPOCH).ok())
        .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    instance_of_part10(file, metadata.len(), file_id, received_at_unix_ns)
}

/// The entry the ingest path made for the sealed Part 10 file of
/// `file_bytes` bytes that `source` reads from its start (a file, or a
/// segment record's payload), named `file_id` and received at
/// `received_at_unix_ns`; `Err` with the reason as for
/// [`instance_of_file`].
pub(crate) fn instance_of_part10(
    mut source: impl Read,
    file_bytes: u64,
    file_id: FileId,
    received_at_unix_ns: u64,
) -> Result<NewInstance, String> {
    let mut head = Vec::new();
    (&mut source)
        .take(HEADER_READ_BYTES_MAX.min(file_bytes))
        .read_to_end(&mut head)
        .map_err(|error| format!("cannot read its header: {error}"))?;
    let header = read_header(&head)?;
    let seal = header
        .seal
        .ok_or("not sealed: written before its last byte arrived, or not by this Sluice")?;
    if header.header_bytes + seal.dataset_bytes != file_bytes {
        return Err(format!(
            "incomplete: {file_bytes} bytes, its seal says {}",
            header.header_bytes + seal.dataset_bytes
        ));
    }
    let facts = uid::transfer_syntax(&header.transfer_syntax_uid)
        .map(|syntax| syntax.facts)
        .ok_or_else(|| format!("unknown transfer syntax {}", header.transfer_syntax_uid))?;
    let mut scanner = DatasetScanner::for_transfer_syntax(&header.transfer_syntax_uid)
        .map_err(|error| format!("transfer syntax {}: {error}", header.transfer_syntax_uid))?;
    let mut hasher = DatasetHasher::new();
    // The data set's first bytes came with the header's read.
    let mut feed = |chunk: &[u8]| {
        hasher.update(chunk);
        // A structure error is kept by the scanner; `check_store` reports it.
        let _ = scanner.feed(chunk);
    };
    let first = usize::try_from(header.header_bytes)
        .ok()
        .and_then(|start| head.get(start..))
        .ok_or("the header runs past the bytes read")?;
    feed(first);
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(format!("cannot read its data set: {error}")),
        };
        feed(buffer.get(..read).unwrap_or_default());
    }
    if hasher.finish() != seal.checksum {
        return Err("incomplete: its data set does not match its seal".into());
    }
    let head = scanner.finish();
    check_store(
        &head,
        &StoreCheck {
            affected_sop_class_uid: &header.sop_class_uid,
            affected_sop_instance_uid: &header.sop_instance_uid,
            transfer_syntax: facts,
            image_class: uid::is_image_sop_class(&header.sop_class_uid),
            // Accepted at ingest under the setting of the day: only what
            // always refuses refuses here.
            lenient: Leniency::ALL,
        },
    )
    .map_err(|rejection| format!("refused as at ingest: {rejection}"))?;
    Ok(instance_from_head(
        &head,
        &header.sop_instance_uid,
        InstanceRecord {
            file_id,
            file_size_bytes: file_bytes,
            dataset_offset_bytes: header.header_bytes,
            transfer_syntax_uid: header.transfer_syntax_uid,
            sop_class_uid: header.sop_class_uid,
            checksum: seal.checksum,
            received_at_unix_ns,
            calling_ae_title: header.source_ae_title,
            instance_number: None,
        },
    ))
}
