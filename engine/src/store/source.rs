//! The store's read API by instance: where an instance's data set lives
//! (a byte range of a file), whatever the layout. Everything that reads
//! stored instances goes through it: C-MOVE and C-GET sending (on the io
//! cores, which open the file and read the range themselves), the embedding
//! API's `read_instance` and `read_dataset`, and the file-head reads of
//! C-FIND.
//!
//! Both layouts fit one shape: the files layout keeps each instance as a
//! Part 10 file, its data set after the file meta group; the segments
//! layout keeps each instance as a record at an offset of a segment file,
//! the same Part 10 bytes inside (docs/on-disk-format.md, "Segments"). The
//! index says which (`sluice_index::Location`, by file id). Either way a
//! reader needs a path, the offset of the data set and its length, so
//! [`DatasetLocation`] has one variant per place and every reader handles
//! it by path and range ([`DatasetLocation::file_range`] for the data set,
//! [`DatasetLocation::part10_range`] for the whole Part 10 file).
//!
//! A record of a segment evicted to the object store (`[objects]`, index
//! schema 8) is read the same way from a local copy: [`readable`] fetches
//! the record with one ranged GET into the read-through cache
//! (`crate::objects`, checked against its header) and names that file,
//! whose record starts at offset 0. The C-MOVE/C-GET sender, export,
//! verify, the embedding API and C-FIND's file heads therefore read
//! evicted records unchanged; the fetch blocks the caller. A C-MOVE or
//! C-GET list is made on an io core, so it fetches nothing: its records of
//! evicted segments name their place in the cache and the record to fetch
//! ([`DatasetLocation::Record`]'s `evicted`), and the sender has the
//! fetcher threads fetch those not cached before it opens them
//! ([`Store::datasets_to_send`], `crate::objects` "fetch"). A C-FIND file
//! head of an evicted record is still fetched on the core.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use sluice_index::{InstanceEntry, InstanceRecord, Location, ReadTxn, RecordPlace, Triplet};

use super::handle::{Store, StoreError};
use super::layout::{Area, Layout};
use super::segment;

/// Where the bytes of an instance's data set are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatasetLocation {
    /// A Part 10 file of the files layout; the data set starts at `offset`
    /// (after the file meta group) and runs `length` bytes.
    File {
        /// The file.
        path: PathBuf,
        /// Where the data set starts.
        offset: u64,
        /// How long it is.
        length: u64,
    },
    /// A record in a segment file: the Part 10 bytes start at
    /// `part10_offset` of the segment (after the record's header), the data
    /// set at `offset` (after the file meta group) and runs `length` bytes.
    Record {
        /// The segment file.
        path: PathBuf,
        /// The segment's id (the index's name of it).
        segment: u64,
        /// Where the record starts in the segment.
        record_offset: u64,
        /// Where the record's Part 10 bytes start in the segment.
        part10_offset: u64,
        /// Where the data set starts in the segment.
        offset: u64,
        /// How long it is.
        length: u64,
        /// For a record of an evicted segment listed without fetching it
        /// ([`Store::datasets_to_send`]): the record to fetch into the
        /// read-through cache, where `path` names it, before it is opened.
        evicted: Option<Box<crate::objects::EvictedRecord>>,
    },
}

impl DatasetLocation {
    /// The file to open, the data set's offset in it, and its length.
    pub fn file_range(&self) -> (&Path, u64, u64) {
        match self {
            DatasetLocation::File {
                path,
                offset,
                length,
            }
            | DatasetLocation::Record {
                path,
                offset,
                length,
                ..
            } => (path, *offset, *length),
        }
    }

    /// The file to open, where the whole Part 10 file (preamble, file meta
    /// group, data set) starts in it, and its length.
    pub fn part10_range(&self) -> (&Path, u64, u64) {
        let (path, offset, length) = self.file_range();
        let start = match self {
            DatasetLocation::File { .. } => 0,
            DatasetLocation::Record { part10_offset, .. } => *part10_offset,
        };
        debug_assert!(start <= offset, "the data set is inside the Part 10 bytes");
        (path, start, offset - start + length)
    }
}

/// Where the bytes of an indexed instance are, from its index record, the
/// index's location of its file id, and the area its entry is in (a file's
/// directory; a record is in its segment whatever the area). A record place
/// too short for the Part 10 bytes the entry records is refused (the index
/// disagrees with itself), never read past.
pub(crate) fn locate(
    layout: &Layout,
    area: Area,
    triplet: &Triplet,
    record: &InstanceRecord,
    location: Location,
) -> Result<DatasetLocation, StoreError> {
    let place = match location {
        Location::File => {
            return Ok(DatasetLocation::File {
                path: layout.area_path(area, record.file_id),
                offset: record.dataset_offset_bytes,
                length: record.dataset_size_bytes(),
            })
        }
        Location::Record(place) => place,
    };
    let header = segment::header_bytes_of(
        &triplet.study_instance_uid,
        &triplet.series_instance_uid,
        &triplet.sop_instance_uid,
    );
    let bad = |detail: String| StoreError::BadRecordPlace {
        segment: place.segment,
        offset: place.offset,
        detail,
    };
    let part10_end = header
        .checked_add(record.file_size_bytes)
        .filter(|&end| end <= place.length && record.dataset_offset_bytes <= record.file_size_bytes)
        .ok_or_else(|| {
            bad(format!(
                "a record of {} bytes cannot hold a header of {header} and a Part 10 file of {} \
                 (data set at {})",
                place.length, record.file_size_bytes, record.dataset_offset_bytes
            ))
        })?;
    let RecordPlace {
        segment, offset, ..
    } = place;
    // Every offset below is at most the Part 10 bytes' end.
    offset
        .checked_add(part10_end)
        .ok_or_else(|| bad("the record ends past 2^64".to_owned()))?;
    Ok(DatasetLocation::Record {
        path: layout.segment_path(segment),
        segment,
        record_offset: offset,
        part10_offset: offset + header,
        offset: offset + header + record.dataset_offset_bytes,
        length: record.dataset_size_bytes(),
        evicted: None,
    })
}

/// The local file holding the record at `place`, and where the record
/// starts in it: its segment, or for an evicted segment its copy in the
/// read-through cache (fetched now if missing), which starts at 0.
pub(crate) fn record_file(
    layout: &Layout,
    objects: Option<&Arc<crate::objects::Objects>>,
    read: &ReadTxn<'_>,
    place: &RecordPlace,
    triplet: &Triplet,
) -> Result<(PathBuf, u64), StoreError> {
    match read.segment_object(place.segment)? {
        Some(object) if object.evicted => {
            let Some(objects) = objects else {
                return Err(StoreError::Evicted {
                    segment: place.segment,
                    key: object.key,
                });
            };
            let path = crate::objects::cached_record(objects, layout, &object, place, triplet)?;
            Ok((path, 0))
        }
        _ => Ok((layout.segment_path(place.segment), place.offset)),
    }
}

/// When a record of an evicted segment is fetched into the read-through
/// cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// Now, on the caller's thread.
    Now,
    /// By whoever opens it (the C-MOVE and C-GET sender, through the
    /// fetcher): the location names its cache file and the record.
    Later,
}

/// [`locate`], then for a record of an evicted segment, its copy in the
/// read-through cache (fetched now if missing): a location every reader
/// can open.
pub(crate) fn readable(
    layout: &Layout,
    objects: Option<&Arc<crate::objects::Objects>>,
    read: &ReadTxn<'_>,
    area: Area,
    entry: &InstanceEntry,
) -> Result<DatasetLocation, StoreError> {
    readable_fetched(layout, objects, read, (area, Fetch::Now), entry)
}

/// [`readable`], a record of an evicted segment fetched now or by its
/// reader (`fetch`).
fn readable_fetched(
    layout: &Layout,
    objects: Option<&Arc<crate::objects::Objects>>,
    read: &ReadTxn<'_>,
    (area, fetch): (Area, Fetch),
    entry: &InstanceEntry,
) -> Result<DatasetLocation, StoreError> {
    let location = read.location(entry.record.file_id)?;
    let located = locate(layout, area, &entry.triplet, &entry.record, location)?;
    let Location::Record(place) = location else {
        return Ok(located);
    };
    let (path, record_offset, evicted) = match fetch {
        Fetch::Now => {
            let (path, offset) = record_file(layout, objects, read, &place, &entry.triplet)?;
            (path, offset, None)
        }
        Fetch::Later => match read.segment_object(place.segment)? {
            Some(object) if object.evicted => {
                if objects.is_none() {
                    return Err(StoreError::Evicted {
                        segment: place.segment,
                        key: object.key,
                    });
                }
                let path = crate::objects::cache_path(layout, &place);
                let record = crate::objects::EvictedRecord { object, place };
                (path, 0, Some(Box::new(record)))
            }
            _ => (layout.segment_path(place.segment), place.offset, None),
        },
    };
    Ok(match located {
        DatasetLocation::Record {
            segment,
            record_offset: old,
            part10_offset,
            offset,
            length,
            ..
        } => DatasetLocation::Record {
            path,
            segment,
            record_offset,
            // `locate` made both at least the record's offset.
            part10_offset: part10_offset - old + record_offset,
            offset: offset - old + record_offset,
            length,
            evicted,
        },
        file @ DatasetLocation::File { .. } => {
            unreachable!("a record place located as a file: {file:?}")
        }
    })
}

/// A stored instance as a sender needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDataset {
    /// The instance.
    pub triplet: Triplet,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// The transfer syntax the data set is stored in (as received).
    pub transfer_syntax_uid: String,
    /// Where its bytes are.
    pub location: DatasetLocation,
}

impl StoredDataset {
    /// The data set's length in bytes.
    pub fn length(&self) -> u64 {
        self.location.file_range().2
    }
}

impl Store {
    /// Where the data set of an indexed instance lives (its location read
    /// in a read transaction of its own).
    pub fn dataset_of(&self, entry: &InstanceEntry) -> Result<StoredDataset, StoreError> {
        self.dataset_in(&self.index().read()?, entry)
    }

    /// Where the data set of an indexed instance lives, its location read
    /// in `read` (the transaction that found the entry).
    pub fn dataset_in(
        &self,
        read: &ReadTxn<'_>,
        entry: &InstanceEntry,
    ) -> Result<StoredDataset, StoreError> {
        self.dataset_fetched(read, entry, Fetch::Now)
    }

    /// [`Store::dataset_in`], a record of an evicted segment fetched into
    /// the read-through cache now or by its reader (`fetch`).
    pub(crate) fn dataset_fetched(
        &self,
        read: &ReadTxn<'_>,
        entry: &InstanceEntry,
        fetch: Fetch,
    ) -> Result<StoredDataset, StoreError> {
        Ok(StoredDataset {
            triplet: entry.triplet.clone(),
            sop_class_uid: entry.record.sop_class_uid.clone(),
            transfer_syntax_uid: entry.record.transfer_syntax_uid.clone(),
            location: readable_fetched(
                self.layout(),
                self.shared.objects.as_ref(),
                read,
                (Area::Objects, fetch),
                entry,
            )?,
        })
    }

    /// Reads at most `length_max` bytes of a stored data set from its start
    /// (blocking: for callers off the io cores, such as the embedding API,
    /// or a bounded file head). Fewer bytes come back only when the data
    /// set is shorter. A record compaction moved since `dataset` was
    /// resolved is read from its new place ([`open_relocating`]).
    pub fn read_dataset_head(
        &self,
        dataset: &StoredDataset,
        length_max: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let (dataset, mut file) =
            open_relocating(dataset.clone(), |old| self.relocated(old, Fetch::Now))?;
        let (path, offset, length) = dataset.location.file_range();
        read_range_of(&mut file, path, offset, length.min(length_max))
    }

    /// Where the record of `old` is now, when compaction moved it since
    /// `old` was resolved: the entry's place in a fresh read transaction
    /// (the switch commits before the old segment is deleted), if the entry
    /// is still a record of the same SOP class and transfer syntax at
    /// another place; else `None` (a file, or the entry gone or changed:
    /// the caller reports its first error). A record of an evicted segment
    /// is named in the read-through cache, fetched as `fetch` says.
    pub(crate) fn relocated(
        &self,
        old: &StoredDataset,
        fetch: Fetch,
    ) -> Result<Option<StoredDataset>, StoreError> {
        if !matches!(old.location, DatasetLocation::Record { .. }) {
            return Ok(None);
        }
        let read = self.index().read()?;
        let triplet = &old.triplet;
        let Some(record) = read.instance(
            &triplet.study_instance_uid,
            &triplet.series_instance_uid,
            &triplet.sop_instance_uid,
        )?
        else {
            return Ok(None);
        };
        let entry = InstanceEntry {
            triplet: triplet.clone(),
            record,
        };
        let now = self.dataset_fetched(&read, &entry, fetch)?;
        let moved = matches!(now.location, DatasetLocation::Record { .. })
            && now.location != old.location
            && now.sop_class_uid == old.sop_class_uid
            && now.transfer_syntax_uid == old.transfer_syntax_uid;
        Ok(moved.then_some(now))
    }

    /// The whole data set of the instance with this SOP Instance UID (the
    /// bytes as received, without the Part 10 header), or `None` when no
    /// such instance is stored. Holds the data set in memory.
    pub fn read_dataset(&self, sop_instance_uid: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(entry) = self.instance_by_sop(sop_instance_uid)? else {
            return Ok(None);
        };
        let dataset = self.dataset_of(&entry)?;
        self.read_dataset_head(&dataset, u64::MAX).map(Some)
    }
}

/// What [`open_relocating`] opens: a place, or a data set with its place.
pub(crate) trait Placed {
    /// Where the bytes are.
    fn location(&self) -> &DatasetLocation;
}

impl Placed for DatasetLocation {
    fn location(&self) -> &DatasetLocation {
        self
    }
}

impl Placed for StoredDataset {
    fn location(&self) -> &DatasetLocation {
        &self.location
    }
}

/// Times a reader re-resolves a record whose segment is gone before it
/// reports the open's error. Each retry needs a compaction to have moved
/// the record again between the re-resolution and the open, so more than
/// one is already rare; the bound keeps a reader from chasing a record
/// forever, never from reading one that stays put.
pub(crate) const RELOCATIONS_MAX: u32 = 3;

/// Whether an open's error says the file is gone (its segment deleted by
/// compaction after the place was resolved).
pub(crate) fn is_gone(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::NotFound
}

/// Opens the file of `placed`; when it is a record whose segment is gone,
/// asks `relocate` where the record is now and opens that, at most
/// [`RELOCATIONS_MAX`] times (docs/design/segments.md, "Compaction":
/// compaction switches the entry in the index **before** it deletes the
/// old segment, so a fresh read transaction names a place that exists, or
/// a newer one). The open's first error comes back when `relocate` finds
/// no other place (a file, an entry gone or changed) or fails. Once open,
/// the descriptor keeps the bytes whatever compaction does next.
pub(crate) fn open_relocating<T: Placed>(
    placed: T,
    mut relocate: impl FnMut(&T) -> Result<Option<T>, StoreError>,
) -> Result<(T, std::fs::File), StoreError> {
    let mut placed = placed;
    let mut first: Option<StoreError> = None;
    for relocations in 0..=RELOCATIONS_MAX {
        let path = placed.location().file_range().0;
        let source = match std::fs::File::open(path) {
            Ok(file) => return Ok((placed, file)),
            Err(source) => source,
        };
        let gone = is_gone(&source) && matches!(placed.location(), DatasetLocation::Record { .. });
        let error = StoreError::ReadFile {
            path: path.to_owned(),
            source,
        };
        first.get_or_insert(error);
        if !gone || relocations == RELOCATIONS_MAX {
            break;
        }
        match relocate(&placed) {
            Ok(Some(now)) => placed = now,
            Ok(None) | Err(_) => break,
        }
    }
    Err(first.unwrap_or_else(|| unreachable!("the loop runs at least once")))
}

/// Reads `length` bytes of `file` (opened from `path`, named in an error)
/// from `offset` (fewer only where the file ends first), blocking.
pub(crate) fn read_range_of(
    file: &mut std::fs::File,
    path: &Path,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, StoreError> {
    let mut read = || -> std::io::Result<Vec<u8>> {
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        file.take(length).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    read().map_err(|source| StoreError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use sluice_index::{Checksum, FileId};

    use super::*;

    fn record(file_size_bytes: u64, dataset_offset_bytes: u64) -> InstanceRecord {
        InstanceRecord {
            file_id: FileId(0xab),
            file_size_bytes,
            dataset_offset_bytes,
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            checksum: Checksum([0; 16]),
            received_at_unix_ns: 0,
            calling_ae_title: String::new(),
            instance_number: None,
        }
    }

    #[test]
    fn a_record_place_is_resolved_to_its_ranges_and_a_short_one_refused() {
        let layout = Layout::new("/data");
        let triplet = Triplet::new("1.2", "1.2.3", "1.2.3.4");
        // Every record header has one length since record format 2.
        let header = crate::store::segment::RECORD_HEADER_BYTES as u64;
        let place = |offset, length| {
            Location::Record(RecordPlace {
                segment: 9,
                offset,
                length,
            })
        };
        let located = locate(
            &layout,
            Area::Quarantine,
            &triplet,
            &record(1000, 300),
            place(8192, 4096),
        )
        .unwrap();
        assert_eq!(
            located,
            DatasetLocation::Record {
                path: layout.segment_path(9),
                segment: 9,
                record_offset: 8192,
                part10_offset: 8192 + header,
                offset: 8192 + header + 300,
                length: 700,
                evicted: None,
            }
        );
        assert_eq!(
            located.part10_range(),
            (layout.segment_path(9).as_path(), 8192 + header, 1000)
        );
        // A file is in its area's directory, read from its start.
        let file = locate(
            &layout,
            Area::Quarantine,
            &triplet,
            &record(1000, 300),
            Location::File,
        )
        .unwrap();
        let path = layout.area_path(Area::Quarantine, FileId(0xab));
        assert_eq!(file.part10_range(), (path.as_path(), 0, 1000));
        assert_eq!(file.file_range(), (path.as_path(), 300, 700));
        // The Part 10 bytes end one byte past the record: refused.
        let short = 4096 - header + 1;
        for (record, place) in [
            (record(short, 300), place(0, 4096)),
            (record(1000, 1001), place(0, 4096)),
            (record(u64::MAX, 0), place(0, 4096)),
            (record(1000, 300), place(u64::MAX - 100, 4096)),
        ] {
            assert!(matches!(
                locate(&layout, Area::Objects, &triplet, &record, place),
                Err(StoreError::BadRecordPlace { segment: 9, .. })
            ));
        }
    }

    /// A record's place in `dir`'s segment `id`, the data set at 100.
    fn record_at(dir: &Path, id: u64) -> DatasetLocation {
        DatasetLocation::Record {
            path: dir.join(format!("{id:016x}.seg")),
            segment: id,
            record_offset: 0,
            part10_offset: 10,
            offset: 100,
            length: 5,
            evicted: None,
        }
    }

    #[test]
    fn a_record_whose_segment_is_gone_is_opened_where_it_moved_a_bounded_number_of_times() {
        let dir = tempfile::tempdir().unwrap();
        let moved = record_at(dir.path(), 2);
        let mut bytes = vec![0u8; 105];
        bytes[100..].copy_from_slice(b"hello");
        std::fs::write(moved.file_range().0, &bytes).unwrap();

        // Segment 1 is gone; the record is in segment 2 now.
        let mut asked = 0;
        let (at, mut file) = open_relocating(record_at(dir.path(), 1), |old| {
            asked += 1;
            assert_eq!(*old, record_at(dir.path(), 1));
            Ok(Some(record_at(dir.path(), 2)))
        })
        .unwrap();
        assert_eq!((asked, &at), (1, &moved));
        let (path, offset, length) = at.file_range();
        assert_eq!(
            read_range_of(&mut file, path, offset, length).unwrap(),
            b"hello"
        );

        // The entry gone (no other place): the first open's error.
        let gone = open_relocating(record_at(dir.path(), 1), |_| Ok(None));
        assert!(matches!(
            gone,
            Err(StoreError::ReadFile { path, source })
                if path == dir.path().join("0000000000000001.seg") && is_gone(&source)
        ));

        // Moved again and again, never to a place that exists: given up
        // after RELOCATIONS_MAX lookups, with the first error.
        let mut asked = 0;
        let chased = open_relocating(record_at(dir.path(), 10), |old| {
            asked += 1;
            let DatasetLocation::Record { segment, .. } = old else {
                unreachable!()
            };
            Ok(Some(record_at(dir.path(), segment + 1)))
        });
        assert_eq!(asked, RELOCATIONS_MAX);
        assert!(matches!(
            chased,
            Err(StoreError::ReadFile { path, .. }) if path == dir.path().join("000000000000000a.seg")
        ));

        // A file of the files layout is never looked up again.
        let file = DatasetLocation::File {
            path: dir.path().join("missing.dcm"),
            offset: 0,
            length: 1,
        };
        let refused = open_relocating(file, |_| -> Result<Option<DatasetLocation>, StoreError> {
            unreachable!("a file is not relocated")
        });
        assert!(matches!(refused, Err(StoreError::ReadFile { .. })));
    }
}
