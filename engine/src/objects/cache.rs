//! The read-through cache of records from evicted segments:
//! `<data>/cache/<segment id, 16 hex>/<record offset, 16 hex>.rec`, each
//! file one record's bytes exactly as in its segment (header, Part 10
//! bytes, padding), so a reader reads it by path and range like a segment
//! whose record starts at 0.
//!
//! A record is fetched with one ranged GET of its place, checked (a valid
//! header naming the instance the index entry names, a payload that fits
//! the place and matches the header's payload checksum), written to a temporary
//! file, flushed and renamed into place: a cache file that exists is a
//! whole, checked record. Two readers fetching the same record both write
//! and rename; the second rename replaces an identical file. The cache is
//! bounded by `objects.cache_size_mib`: past it, the oldest files (by
//! modification time: first fetched, first deleted) go. A reader that
//! already opened a file keeps reading it after it is deleted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_index::{RecordPlace, SegmentObject, Triplet};

use super::{Objects, ObjectsError};
use crate::store::layout::Layout;
use crate::store::segment;

/// Makes temporary names unique within the process.
static FETCHES: AtomicU64 = AtomicU64::new(0);

/// The cache's directory.
pub(crate) fn cache_dir(layout: &Layout) -> PathBuf {
    layout.root().join("cache")
}

/// Where the record at `place` is kept in the cache.
pub(crate) fn cache_path(layout: &Layout, place: &RecordPlace) -> PathBuf {
    cache_dir(layout)
        .join(format!("{:016x}", place.segment))
        .join(format!("{:016x}.rec", place.offset))
}

/// The local file holding the record at `place` of the evicted segment
/// `object` (the record starts at offset 0 of it), fetched into the cache
/// if it is not there.
pub(crate) fn cached_record(
    objects: &Objects,
    layout: &Layout,
    object: &SegmentObject,
    place: &RecordPlace,
    triplet: &Triplet,
) -> Result<PathBuf, ObjectsError> {
    let path = cache_path(layout, place);
    if std::fs::metadata(&path).is_ok_and(|meta| meta.len() == place.length) {
        return Ok(path);
    }
    if place.end() > object.size_bytes {
        return Err(ObjectsError::Verify {
            key: object.key.clone(),
            detail: format!(
                "the record at {} ({} bytes) ends past the object's {} bytes",
                place.offset, place.length, object.size_bytes
            ),
        });
    }
    let (bytes, _) = fetch_checked(objects, &object.key, place, triplet)?;
    let io = |operation, path: &Path| {
        let path = path.to_owned();
        move |source| ObjectsError::Io {
            operation,
            path,
            source,
        }
    };
    let directory = path.parent().unwrap_or(layout.root());
    std::fs::create_dir_all(directory).map_err(io("create", directory))?;
    let temporary = directory.join(format!(
        ".{:016x}.{}.{}.tmp",
        place.offset,
        std::process::id(),
        FETCHES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_data()?;
        std::fs::rename(&temporary, &path)
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(ObjectsError::Io {
            operation: "write the cached record",
            path,
            source,
        });
    }
    objects
        .counters
        .fetched_records
        .fetch_add(1, Ordering::Relaxed);
    objects.cache_scanned.call_once(|| {
        objects
            .cache_bytes()
            .store(directory_bytes(&cache_dir(layout)), Ordering::Relaxed);
    });
    if objects.add_cache_bytes(place.length) > objects.cache_bytes_max {
        trim(objects, layout, &path);
    }
    Ok(path)
}

/// The record at `place` of the object `key`, fetched with one ranged GET
/// and checked ([`check_record`]), with its header. Nothing is cached.
pub(super) fn fetch_checked(
    objects: &Objects,
    key: &str,
    place: &RecordPlace,
    triplet: &Triplet,
) -> Result<(Vec<u8>, segment::RecordHead), ObjectsError> {
    let bytes = objects.client.get_range(key, place.offset, place.length)?;
    let head = check_record(&bytes, triplet).map_err(|detail| ObjectsError::Verify {
        key: key.to_owned(),
        detail: format!("the record at offset {}: {detail}", place.offset),
    })?;
    Ok((bytes, head))
}

/// Checks fetched record bytes: a valid header naming `triplet`, a payload
/// inside the bytes with the header's payload checksum. The header.
pub(super) fn check_record(bytes: &[u8], triplet: &Triplet) -> Result<segment::RecordHead, String> {
    let head = segment::decode_head(bytes).map_err(|error| error.to_string())?;
    if head.uids.study != triplet.study_instance_uid
        || head.uids.series != triplet.series_instance_uid
        || head.uids.sop != triplet.sop_instance_uid
    {
        return Err("the header names another instance than the index entry".to_owned());
    }
    let payload = head
        .header_bytes
        .checked_add(head.payload_bytes)
        .and_then(|end| usize::try_from(end).ok())
        .and_then(|end| bytes.get(usize::try_from(head.header_bytes).ok()?..end))
        .ok_or_else(|| {
            format!(
                "a payload of {} bytes does not fit the record's {} bytes",
                head.payload_bytes,
                bytes.len()
            )
        })?;
    if segment::payload_checksum(payload, head.payload_split) != head.payload_checksum {
        return Err("payload checksum mismatch".to_owned());
    }
    Ok(head)
}

/// Every cached file with its size and modification time.
fn cached_files(dir: &Path) -> Vec<(std::time::SystemTime, u64, PathBuf)> {
    let mut files = Vec::new();
    let Ok(segments) = std::fs::read_dir(dir) else {
        return files;
    };
    for segment in segments.flatten() {
        let Ok(records) = std::fs::read_dir(segment.path()) else {
            continue;
        };
        for record in records.flatten() {
            if let Ok(meta) = record.metadata() {
                if meta.is_file() {
                    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    files.push((modified, meta.len(), record.path()));
                }
            }
        }
    }
    files
}

fn directory_bytes(dir: &Path) -> u64 {
    cached_files(dir).iter().map(|(_, size, _)| size).sum()
}

/// Deletes the oldest cached files until the cache is at 90% of its bound
/// (never `keep`, the record just fetched).
fn trim(objects: &Objects, layout: &Layout, keep: &Path) {
    let mut files = cached_files(&cache_dir(layout));
    files.sort();
    let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
    let target = objects.cache_bytes_max / 10 * 9;
    for (_, size, path) in files {
        if total <= target {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            total = total.saturating_sub(size);
        }
    }
    objects.cache_bytes().store(total, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::segment::{encode_record, RecordUids};

    #[test]
    fn a_fetched_record_is_checked_against_its_header_and_the_entry() {
        let triplet = Triplet::new("1.2", "1.2.3", "1.2.3.4");
        let uids = RecordUids {
            study: "1.2".into(),
            series: "1.2.3".into(),
            sop: "1.2.3.4".into(),
        };
        let part10 = vec![7u8; 3000];
        let record = encode_record(1, &uids, &part10)
            .unwrap()
            .as_slice()
            .to_vec();
        assert_eq!(
            check_record(&record, &triplet).map(|head| head.payload_bytes),
            Ok(3000)
        );
        // Another instance's record.
        let other = Triplet::new("1.2", "1.2.3", "1.2.3.5");
        assert!(check_record(&record, &other).is_err());
        // A payload byte flipped.
        let mut damaged = record.clone();
        damaged[2000] ^= 1;
        assert_eq!(
            check_record(&damaged, &triplet).err(),
            Some("payload checksum mismatch".to_owned())
        );
        // Cut short, and nothing at all.
        assert!(check_record(&record[..1000], &triplet).is_err());
        assert!(check_record(&[], &triplet).is_err());
    }
}
