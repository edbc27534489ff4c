//! Segment files: the on-disk unit of the `segments` storage layout
//! (docs/design/segments.md has the design and its rejected alternatives,
//! docs/on-disk-format.md the format, "Segments").
//!
//! A segment is a preallocated file that one core appends records to; a
//! record is a small header (magic, format version, lengths, the run's
//! epoch, checksums, the instance's UIDs) and the instance's complete Part 10
//! file, exactly as the files layout stores it, padded to
//! [`RECORD_ALIGN`]. A segment can be read, verified and re-indexed on its
//! own: [`scan`] walks it from an offset and stops at the first record that
//! is not whole and valid (a torn tail), which recovery cuts.
//!
//! Everything here is blocking file I/O on `std::fs::File` (start-up
//! recovery, the operator commands, and the segment writer's own calls);
//! nothing here panics on what a file contains: every length read from disk
//! is checked against the segment before it is used.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FallocateFlags, Mode, OFlags};
use sluice_index::Checksum;

use crate::store::layout::{dataset_checksum, DatasetHasher};
use crate::store::xxh3::Xxh3_64;

/// Every record starts at a multiple of this and its length is padded to
/// it. 4096 is a multiple of every logical block size in use (512 and 4096
/// bytes), which is what `O_DIRECT` requires of offsets, lengths and buffer
/// addresses; a fixed value keeps a segment readable on any device it is
/// copied to.
pub const RECORD_ALIGN: u64 = 4096;

/// The record header's first bytes.
pub const RECORD_MAGIC: [u8; 8] = *b"SLUICERC";

/// The record format's version (docs/on-disk-format.md, "Segments").
/// Version 2 gives every header the same length ([`RECORD_HEADER_BYTES`]),
/// so the ingest path receives the Part 10 bytes at their final place and
/// never moves them; version 1 (headers as long as their UIDs) was never
/// written outside this repository's tests and is not read.
pub const RECORD_FORMAT_VERSION: u16 = 2;

/// The header's fixed part; the three UIDs follow it.
const HEADER_FIXED_BYTES: usize = 64;

/// The longest UID (PS3.5 9.1).
const UID_BYTES_MAX: usize = 64;

/// Every record's header length: the fixed part, three UIDs of at most 64
/// bytes and zeros after them. One length for all, so the Part 10 bytes
/// start at the same place in every record and can be received there
/// before the UIDs are known.
pub const RECORD_HEADER_BYTES: usize = HEADER_FIXED_BYTES + 3 * UID_BYTES_MAX;

/// The longest header (every header, since format 2).
pub const HEADER_BYTES_MAX: usize = RECORD_HEADER_BYTES;

const _: () = assert!(RECORD_HEADER_BYTES as u64 <= RECORD_ALIGN);

/// The smallest segment size accepted (one record of a small instance
/// needs a few blocks; a segment of fewer would seal at once).
pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;

/// Why a record is not whole and valid. At the tail of an open segment
/// this is a torn write (recovery cuts there); anywhere else, corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes at the offset do not start with [`RECORD_MAGIC`]: the end
    /// of the records written (zeros of the preallocation, or stale bytes).
    #[error("no record header (magic absent)")]
    NoRecord,
    /// A header of a format this build does not read.
    #[error("record format version {0}, this build reads {RECORD_FORMAT_VERSION}")]
    Version(u16),
    /// The header's own checksum does not match: torn or damaged header.
    #[error("record header checksum mismatch")]
    HeaderChecksum,
    /// A length in the header is impossible (longer than the segment, a UID
    /// longer than 64 bytes, a header longer than its maximum).
    #[error("record header length out of range: {0}")]
    Length(&'static str),
    /// The record runs past the end of the segment (or of what was read).
    #[error("record of {needed} bytes at {offset} runs past the segment's {size} bytes")]
    Short {
        /// The record's offset.
        offset: u64,
        /// Its padded length.
        needed: u64,
        /// The segment's size.
        size: u64,
    },
    /// The Part 10 bytes do not match the header's checksum: a torn write.
    #[error("record payload checksum mismatch")]
    PayloadChecksum,
    /// Written by an earlier run than the record before it: stale bytes past
    /// a cut tail, never part of the segment's records.
    #[error("record of epoch {found} after one of epoch {previous}")]
    Epoch {
        /// The previous record's epoch.
        previous: u64,
        /// This one's.
        found: u64,
    },
}

/// The instance a record holds, as its header names it (enough to index it
/// again and to find its index entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordUids {
    /// Study Instance UID.
    pub study: String,
    /// Series Instance UID.
    pub series: String,
    /// SOP Instance UID.
    pub sop: String,
}

/// A record's header, decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHead {
    /// The header's length: the Part 10 bytes start here in the record.
    pub header_bytes: u64,
    /// The Part 10 file's length.
    pub payload_bytes: u64,
    /// Where the payload's checksum splits it (at most `payload_bytes`):
    /// see [`PayloadHasher`].
    pub payload_split: u64,
    /// The payload's checksum ([`PayloadHasher`]).
    pub payload_checksum: u64,
    /// The writing run's epoch (its start, ns since the Unix epoch).
    pub epoch: u64,
    /// Whose record it is.
    pub uids: RecordUids,
}

impl RecordHead {
    /// The record's whole length on disk, padding included.
    pub fn record_bytes(&self) -> u64 {
        padded(self.header_bytes.saturating_add(self.payload_bytes))
    }
}

/// `bytes` rounded up to [`RECORD_ALIGN`] (saturating: a length that large
/// never fits a segment, and the caller's bound check refuses it).
pub fn padded(bytes: u64) -> u64 {
    bytes
        .checked_next_multiple_of(RECORD_ALIGN)
        .unwrap_or(u64::MAX)
}

/// The buffers records are encoded into (aligned for `O_DIRECT`, written
/// through the io core as `IoBuf::Aligned`).
pub use sluice_io::AlignedBuf;

const _: () = assert!(sluice_io::DIRECT_IO_ALIGN as u64 == RECORD_ALIGN);

/// Encodes a record (header, `payload`, zero padding) into an aligned
/// buffer ready for an `O_DIRECT` write, its checksum split at 0 (the
/// XXH3-128 of the whole payload: one pass). Fails only for UIDs over 64
/// bytes (the ingest path refuses those with A900 before a record is made).
pub fn encode_record(
    epoch: u64,
    uids: &RecordUids,
    payload: &[u8],
) -> Result<AlignedBuf, RecordError> {
    let header_bytes = checked_header_bytes(uids)?;
    let mut buf = AlignedBuf::zeroed(header_bytes + payload.len());
    let out = buf.as_mut_slice();
    out[header_bytes..header_bytes + payload.len()].copy_from_slice(payload);
    let checksum = payload_checksum_of(&[], dataset_checksum(payload));
    write_header(out, epoch, uids, payload.len(), 0, checksum);
    Ok(buf)
}

/// The payload checksum of format 2, kept by [`PayloadHasher`]: XXH3-64 of
/// the payload's first `split` bytes followed by the XXH3-128 of the rest
/// (the 16 bytes of [`Checksum`], as the index stores a data set's). Every
/// payload byte is covered; the ingest path splits a Part 10 file where
/// its data set starts, whose XXH3-128 it has already computed for the
/// seal while the bytes arrived, so the record costs no second pass over
/// the data set.
#[derive(Clone, Default)]
pub struct PayloadHasher {
    split: u64,
    fed: u64,
    head: Xxh3_64,
    body: DatasetHasher,
}

impl std::fmt::Debug for PayloadHasher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PayloadHasher")
            .field("split", &self.split)
            .field("fed", &self.fed)
            .finish_non_exhaustive()
    }
}

impl PayloadHasher {
    /// A hasher for a payload split at `split` ([`RecordHead::payload_split`]).
    pub fn new(split: u64) -> PayloadHasher {
        PayloadHasher {
            split,
            ..PayloadHasher::default()
        }
    }

    /// Feeds the payload's next bytes, in order.
    pub fn update(&mut self, bytes: &[u8]) {
        let in_head = usize::try_from(self.split.saturating_sub(self.fed))
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let (head, body) = bytes.split_at(in_head);
        self.head.update(head);
        self.body.update(body);
        self.fed += bytes.len() as u64;
    }

    /// The checksum of everything fed.
    pub fn digest(&self) -> u64 {
        let mut head = self.head.clone();
        head.update(&self.body.finish().0);
        head.digest()
    }
}

/// The payload checksum of a payload whose bytes before the split are
/// `head` and whose bytes after it have the XXH3-128 `body`.
fn payload_checksum_of(head: &[u8], body: Checksum) -> u64 {
    let mut hasher = Xxh3_64::new();
    hasher.update(head);
    hasher.update(&body.0);
    hasher.digest()
}

/// The checksum of a whole payload split at `split` (at most its length).
pub fn payload_checksum(payload: &[u8], split: u64) -> u64 {
    let mut hasher = PayloadHasher::new(split);
    hasher.update(payload);
    hasher.digest()
}

/// Where the ingest path puts an instance's Part 10 bytes in its buffer
/// while they arrive: their place in the record, after the header.
pub const PAYLOAD_ROOM: usize = RECORD_HEADER_BYTES;

/// Encodes a record in the buffer that holds its `payload_bytes` Part 10
/// bytes at [`PAYLOAD_ROOM`], their place in the record: the header is
/// written before them, the padding zeroed, and the buffer shortened to the
/// record's padded length. Nothing moves, and the payload is not read
/// again past `split`: `body` is the XXH3-128 of its bytes from `split` on
/// (the data set's checksum, computed as they arrived; checked against the
/// bytes in debug builds). Fails only for UIDs over 64 bytes.
pub fn encode_in_place(
    buf: &mut AlignedBuf,
    payload_bytes: usize,
    epoch: u64,
    uids: &RecordUids,
    split: usize,
    body: Checksum,
) -> Result<u64, RecordError> {
    let header_bytes = checked_header_bytes(uids)?;
    let record_bytes = padded((header_bytes + payload_bytes) as u64);
    assert!(
        PAYLOAD_ROOM + payload_bytes <= buf.len(),
        "the payload lies within the buffer"
    );
    debug_assert_eq!(header_bytes, PAYLOAD_ROOM, "one header length");
    assert!(split <= payload_bytes, "the split lies within the payload");
    let split_field =
        u32::try_from(split).map_err(|_| RecordError::Length("checksum split past 4 GiB"))?;
    let out = buf.as_mut_slice();
    let end = (record_bytes as usize).min(out.len());
    out[header_bytes + payload_bytes..end].fill(0);
    let payload = &out[header_bytes..header_bytes + payload_bytes];
    debug_assert_eq!(
        dataset_checksum(&payload[split..]),
        body,
        "the given checksum is the payload's past the split"
    );
    let checksum = payload_checksum_of(&payload[..split], body);
    write_header(out, epoch, uids, payload_bytes, split_field, checksum);
    buf.truncate(record_bytes as usize);
    Ok(record_bytes)
}

/// The header length of a record of these UIDs, refused over 64 bytes.
fn checked_header_bytes(uids: &RecordUids) -> Result<usize, RecordError> {
    if [&uids.study, &uids.series, &uids.sop]
        .iter()
        .any(|uid| uid.len() > UID_BYTES_MAX)
    {
        return Err(RecordError::Length("UID over 64 bytes"));
    }
    Ok(RECORD_HEADER_BYTES)
}

/// Writes the header of the record whose `payload_bytes` Part 10 bytes
/// follow it in `out`, with their checksum split at `split` (UIDs checked
/// by [`checked_header_bytes`]).
fn write_header(
    out: &mut [u8],
    epoch: u64,
    uids: &RecordUids,
    payload_bytes: usize,
    split: u32,
    payload_checksum: u64,
) {
    let header_bytes = RECORD_HEADER_BYTES;
    out[..header_bytes].fill(0);
    out[0..8].copy_from_slice(&RECORD_MAGIC);
    out[8..10].copy_from_slice(&RECORD_FORMAT_VERSION.to_le_bytes());
    // 256.
    out[10..12].copy_from_slice(&(header_bytes as u16).to_le_bytes());
    out[12..16].copy_from_slice(&split.to_le_bytes());
    out[16..24].copy_from_slice(&epoch.to_le_bytes());
    out[24..32].copy_from_slice(&(payload_bytes as u64).to_le_bytes());
    out[32..40].copy_from_slice(&payload_checksum.to_le_bytes());
    let uid_fields = [&uids.study, &uids.series, &uids.sop];
    for (at, uid) in uid_fields.iter().enumerate() {
        // Bounded by UID_BYTES_MAX.
        out[40 + at] = uid.len() as u8;
    }
    let mut at = HEADER_FIXED_BYTES;
    for uid in uid_fields {
        out[at..at + uid.len()].copy_from_slice(uid.as_bytes());
        at += uid.len();
    }
    let checksum = header_checksum(&out[..header_bytes]);
    out[56..64].copy_from_slice(&checksum.to_le_bytes());
}

/// The length of the header of a record holding these UIDs: where the
/// Part 10 bytes start in the record (readers that know the instance's
/// triplet and the record's place find its data set without reading the
/// header). The same for every record since format 2
/// ([`RECORD_HEADER_BYTES`]); the UIDs are taken so that callers need not
/// know it.
pub fn header_bytes_of(_study: &str, _series: &str, _sop: &str) -> u64 {
    RECORD_HEADER_BYTES as u64
}

/// XXH3-64 of a header with its checksum field (bytes 56..64) taken as
/// zero.
fn header_checksum(header: &[u8]) -> u64 {
    let mut hasher = Xxh3_64::new();
    hasher.update(header.get(..56).unwrap_or(header));
    hasher.update(&[0u8; 8]);
    hasher.update(header.get(HEADER_FIXED_BYTES..).unwrap_or(&[]));
    hasher.digest()
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(slice) = bytes.get(at..at + 8) {
        word.copy_from_slice(slice);
    }
    u64::from_le_bytes(word)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(at..at + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_le_bytes(word)
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    let mut word = [0u8; 2];
    if let Some(slice) = bytes.get(at..at + 2) {
        word.copy_from_slice(slice);
    }
    u16::from_le_bytes(word)
}

/// Decodes and checks the header at the start of `bytes` (at least the
/// header's bytes; more is ignored). Checks the header, not the payload.
pub fn decode_head(bytes: &[u8]) -> Result<RecordHead, RecordError> {
    if bytes.get(0..8) != Some(&RECORD_MAGIC[..]) {
        return Err(RecordError::NoRecord);
    }
    if bytes.len() < HEADER_FIXED_BYTES {
        return Err(RecordError::Length("header cut short"));
    }
    let version = le_u16(bytes, 8);
    if version != RECORD_FORMAT_VERSION {
        return Err(RecordError::Version(version));
    }
    let header_bytes = usize::from(le_u16(bytes, 10));
    let uid_lengths = [bytes[40], bytes[41], bytes[42]].map(usize::from);
    if header_bytes != RECORD_HEADER_BYTES {
        return Err(RecordError::Length("header length is not the format's"));
    }
    if uid_lengths.iter().any(|&len| len > UID_BYTES_MAX) {
        return Err(RecordError::Length("UID over 64 bytes"));
    }
    let header = bytes
        .get(..header_bytes)
        .ok_or(RecordError::Length("header cut short"))?;
    if header_checksum(header) != le_u64(header, 56) {
        return Err(RecordError::HeaderChecksum);
    }
    let payload_bytes = le_u64(header, 24);
    let payload_split = u64::from(le_u32(header, 12));
    if payload_split > payload_bytes {
        return Err(RecordError::Length("checksum split past the payload"));
    }
    let mut at = HEADER_FIXED_BYTES;
    let mut uid = |len: usize| {
        let text = String::from_utf8_lossy(&header[at..at + len]).into_owned();
        at += len;
        text
    };
    let uids = RecordUids {
        study: uid(uid_lengths[0]),
        series: uid(uid_lengths[1]),
        sop: uid(uid_lengths[2]),
    };
    Ok(RecordHead {
        header_bytes: header_bytes as u64,
        payload_bytes,
        payload_split,
        payload_checksum: le_u64(header, 32),
        epoch: le_u64(header, 16),
        uids,
    })
}

/// Reads and checks the record at `offset` of a segment of `size` bytes:
/// its header and its Part 10 bytes (returned).
pub fn read_record(file: &File, offset: u64, size: u64) -> io::Result<(RecordHead, Vec<u8>)> {
    let head = read_head(file, offset, size)?.map_err(invalid)?;
    let payload = read_payload(file, offset, &head)?;
    if payload_checksum(&payload, head.payload_split) != head.payload_checksum {
        return Err(invalid(RecordError::PayloadChecksum));
    }
    Ok((head, payload))
}

fn invalid(error: RecordError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The header at `offset`, checked against the segment's `size`: `Ok(Err)`
/// when the bytes there are not a valid record's header.
pub fn read_head(
    file: &File,
    offset: u64,
    size: u64,
) -> io::Result<Result<RecordHead, RecordError>> {
    let available = size.saturating_sub(offset).min(HEADER_BYTES_MAX as u64) as usize;
    let mut bytes = vec![0u8; available];
    let read = read_full(file, &mut bytes, offset)?;
    bytes.truncate(read);
    let head = match decode_head(&bytes) {
        Ok(head) => head,
        Err(error) => return Ok(Err(error)),
    };
    let needed = head.record_bytes();
    if offset.checked_add(needed).is_none_or(|end| end > size) {
        return Ok(Err(RecordError::Short {
            offset,
            needed,
            size,
        }));
    }
    Ok(Ok(head))
}

/// The Part 10 bytes of a record whose header was checked against the
/// segment's size by [`read_head`] (so its length fits the segment).
fn read_payload(file: &File, offset: u64, head: &RecordHead) -> io::Result<Vec<u8>> {
    let length = usize::try_from(head.payload_bytes)
        .map_err(|_| invalid(RecordError::Length("payload larger than memory")))?;
    let mut payload = vec![0u8; length];
    let read = read_full(file, &mut payload, offset + head.header_bytes)?;
    if read != length {
        return Err(invalid(RecordError::Short {
            offset,
            needed: head.record_bytes(),
            size: offset + head.header_bytes + read as u64,
        }));
    }
    Ok(payload)
}

/// `pread` until `buf` is full or the file ends; the bytes read.
pub(crate) fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(read) => done += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(done)
}

/// One valid record found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedRecord {
    /// Where it starts in the segment.
    pub offset: u64,
    /// Its header.
    pub head: RecordHead,
}

/// What [`scan`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The valid records, in order.
    pub records: Vec<ScannedRecord>,
    /// Where the valid records end: the append position.
    pub end: u64,
    /// Why the scan stopped at `end` (`None`: at the segment's end).
    /// [`RecordError::NoRecord`] is the normal end of an open segment;
    /// anything else is a torn (or damaged) record, cut by recovery.
    pub stopped: Option<RecordError>,
}

/// Walks the records of a segment of `size` bytes from `from` (a record
/// boundary), checking each one's header and payload checksum, until the
/// first that is not valid. `epoch_before` is the epoch of the record
/// before `from` (0 at the start): a record of an earlier epoch than the
/// one before it is stale (written before a cut) and ends the scan.
pub fn scan(file: &File, from: u64, size: u64, epoch_before: u64) -> io::Result<Scan> {
    debug_assert_eq!(from % RECORD_ALIGN, 0, "scan from a record boundary");
    let mut records = Vec::new();
    let mut offset = from;
    let mut previous = epoch_before;
    let stopped = loop {
        if offset >= size {
            break None;
        }
        let head = match read_head(file, offset, size)? {
            Ok(head) => head,
            Err(error) => break Some(error),
        };
        if head.epoch < previous {
            break Some(RecordError::Epoch {
                previous,
                found: head.epoch,
            });
        }
        let payload = read_payload(file, offset, &head)?;
        if payload_checksum(&payload, head.payload_split) != head.payload_checksum {
            break Some(RecordError::PayloadChecksum);
        }
        previous = head.epoch;
        let next = offset + head.record_bytes();
        records.push(ScannedRecord { offset, head });
        offset = next;
    };
    Ok(Scan {
        records,
        end: offset,
        stopped,
    })
}

/// An open segment a core appends to.
#[derive(Debug)]
pub struct SegmentWriter {
    path: PathBuf,
    file: File,
    size: u64,
    append: u64,
    direct: bool,
    /// Set by [`Self::seal`] and by a failed write: nothing is reserved in
    /// the segment again (a failed write may leave a hole at its reserved
    /// place, and a hole is only ever the last thing in a sealed segment).
    sealed: bool,
}

impl SegmentWriter {
    /// Creates a segment of `size` bytes (a multiple of [`RECORD_ALIGN`],
    /// at least [`SEGMENT_BYTES_MIN`]), its blocks allocated (`fallocate`),
    /// opened for `O_DIRECT` writes where the file system takes them. The
    /// caller makes its name durable (fsyncs the directory) before the
    /// first record in it is promised. When the allocation (or its sync)
    /// fails the file is removed again: a failed `fallocate` may keep the
    /// blocks it did get (ext4 keeps them all: a disk that was nearly full
    /// is then full, and stays full after space is freed, each new attempt
    /// taking what was freed).
    pub fn create(path: &Path, size: u64) -> io::Result<SegmentWriter> {
        assert!(
            size >= SEGMENT_BYTES_MIN && size % RECORD_ALIGN == 0,
            "segment size {size} checked by the configuration"
        );
        let (fd, direct) = open_direct(path, OFlags::CREATE | OFlags::EXCL)?;
        let file = File::from(fd);
        let allocated = rustix::fs::fallocate(&file, FallocateFlags::empty(), 0, size)
            .map_err(io::Error::from)
            .and_then(|()| file.sync_all());
        if let Err(error) = allocated {
            drop(file);
            // Created above (O_EXCL): nothing else names it. The error
            // returned is the allocation's; a failed removal leaves an
            // unindexed segment that start-up recovery scans and seals.
            let _ = std::fs::remove_file(path);
            return Err(error);
        }
        Ok(SegmentWriter {
            path: path.to_owned(),
            file,
            size,
            append: 0,
            direct,
            sealed: false,
        })
    }

    /// [`Self::create`], then every block written with zeros (large
    /// `O_DIRECT` writes of [`ZERO_FILL_CHUNK`]) and flushed, before any
    /// record goes in: `fallocate` leaves ext4 *unwritten* extents, whose
    /// first write must convert them, so each group `fdatasync` after
    /// writes into fresh blocks commits the file system's journal on top
    /// of the device flush; over blocks already written and synced the
    /// flush has no metadata to write (docs/design/segments.md, "Written
    /// blocks"). A segment reads the same either way (zeros past the last
    /// record). Takes as long as writing the segment once: callers run it
    /// off the cores' threads (`scp::ingest::prepare`). Removed again when
    /// a write or the flush fails (as a failed allocation is), and when
    /// `abandon` says so between two writes (`Interrupted`: a server
    /// stopping).
    pub fn create_zeroed(
        path: &Path,
        size: u64,
        abandon: &dyn Fn() -> bool,
    ) -> io::Result<SegmentWriter> {
        let writer = SegmentWriter::create(path, size)?;
        if let Err(error) = zero_fill(&writer.file, size, abandon) {
            drop(writer);
            let _ = std::fs::remove_file(path);
            return Err(error);
        }
        Ok(writer)
    }

    /// Opens an existing segment to append at `append` (what recovery's
    /// [`scan`] found).
    pub fn open(path: &Path, append: u64) -> io::Result<SegmentWriter> {
        let (fd, direct) = open_direct(path, OFlags::empty())?;
        let file = File::from(fd);
        let size = file.metadata()?.len();
        if append % RECORD_ALIGN != 0 || append > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("append position {append} in a segment of {size} bytes"),
            ));
        }
        Ok(SegmentWriter {
            path: path.to_owned(),
            file,
            size,
            append,
            direct,
            sealed: false,
        })
    }

    /// Where the next record goes.
    pub fn append_position(&self) -> u64 {
        self.append
    }

    /// The segment's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether writes bypass the page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a record of `record_bytes` (padded) still fits (never, once
    /// sealed).
    pub fn fits(&self, record_bytes: u64) -> bool {
        !self.sealed
            && self
                .append
                .checked_add(record_bytes)
                .is_some_and(|end| end <= self.size)
    }

    /// Whether the segment is sealed: nothing more is reserved in it.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Seals the segment: no record is reserved in it again. The owner
    /// seals a full segment, and one where a write at a reserved place
    /// failed (that place may be a hole, which may only end a segment);
    /// [`Self::write_at`] and [`Self::append`] seal on their own failures.
    pub fn seal(&mut self) {
        self.sealed = true;
    }

    /// Reserves `record_bytes` (padded) at the append position and moves it
    /// on; returns the record's offset, or `None` when the record does not
    /// fit or the segment is sealed (a new one is then created). Writers
    /// that write records concurrently reserve one by one and write at their
    /// offsets; the owner seals the segment when any such write fails.
    pub fn reserve(&mut self, record_bytes: u64) -> Option<u64> {
        debug_assert_eq!(record_bytes % RECORD_ALIGN, 0, "records are padded");
        if !self.fits(record_bytes) {
            return None;
        }
        let offset = self.append;
        self.append += record_bytes;
        Some(offset)
    }

    /// Writes an encoded record at a reserved offset. Not durable until
    /// [`Self::sync`]. A failed write seals the segment: its place may hold
    /// part of the record, and no record may follow a hole.
    pub fn write_at(&mut self, record: &AlignedBuf, offset: u64) -> io::Result<()> {
        assert!(
            offset + record.as_slice().len() as u64 <= self.append,
            "a write within what was reserved"
        );
        let written = self.file.write_all_at(record.as_slice(), offset);
        if written.is_err() {
            self.sealed = true;
        }
        written
    }

    /// Writes an encoded record at the append position and moves it on;
    /// returns the record's offset. Not durable until [`Self::sync`]. The
    /// position moves on before the write (the place is reserved); a failed
    /// write seals the segment, so the writer is never used again past a
    /// place that may be a hole.
    pub fn append(&mut self, record: &AlignedBuf) -> io::Result<u64> {
        let offset = self
            .reserve(record.as_slice().len() as u64)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::StorageFull,
                    "record does not fit the segment (full or sealed)",
                )
            })?;
        self.write_at(record, offset)?;
        Ok(offset)
    }

    /// The segment's file (another handle on it: writes at reserved
    /// offsets from other threads, with the same `O_DIRECT` flag).
    pub fn try_clone_file(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Makes every record appended so far durable (`fdatasync`: the blocks
    /// were allocated at creation, so no new extent needs a journal commit;
    /// on a segment made by [`Self::create`] the first write into each
    /// unwritten extent still converts it, which one does:
    /// [`Self::create_zeroed`]).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The length of each zero write of [`SegmentWriter::create_zeroed`]: large
/// enough that the device sees long sequential writes, small enough that
/// the buffer (written again and again) stays cheap.
pub const ZERO_FILL_CHUNK: usize = 8 << 20;

/// Writes zeros over the first `size` bytes of `file` (a multiple of
/// [`RECORD_ALIGN`]), then `fdatasync`s it: the writes convert the
/// allocation's unwritten extents, and the flush makes the conversion
/// durable, so no later flush of the file has metadata to commit.
fn zero_fill(file: &File, size: u64, abandon: &dyn Fn() -> bool) -> io::Result<()> {
    let chunk = AlignedBuf::zeroed(ZERO_FILL_CHUNK);
    let mut offset = 0;
    while offset < size {
        if abandon() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "segment preparation abandoned",
            ));
        }
        let len = (size - offset).min(ZERO_FILL_CHUNK as u64);
        write_zeros(file, offset, len, &chunk)?;
        offset += len;
    }
    file.sync_data()
}

/// Writes zeros over `offset..offset + len` of `file` (multiples of
/// [`RECORD_ALIGN`] for `O_DIRECT`), in writes of at most `zeros`' length
/// (an aligned buffer of zeros, written again and again). Not flushed.
/// The segment preparer's zero writes (`scp::ingest::prepare`): never
/// called on a segment a writer appends records to.
pub fn write_zeros(file: &File, offset: u64, len: u64, zeros: &AlignedBuf) -> io::Result<()> {
    let zeros = zeros.as_slice();
    assert!(!zeros.is_empty(), "a buffer of zeros");
    let mut done = 0;
    while done < len {
        let piece = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..piece], offset + done)?;
        done += piece as u64;
    }
    Ok(())
}

/// Opens `path` read-write with `O_DIRECT`, or without it (logged once per
/// file) where the file system refuses it (`EINVAL`: tmpfs before Linux 6.6,
/// some FUSE file systems).
fn open_direct(path: &Path, extra: OFlags) -> io::Result<(std::os::fd::OwnedFd, bool)> {
    let flags = OFlags::RDWR | OFlags::CLOEXEC | extra;
    let mode = Mode::from_raw_mode(0o644);
    match rustix::fs::open(path, flags | OFlags::DIRECT, mode) {
        Ok(fd) => Ok((fd, true)),
        Err(rustix::io::Errno::INVAL) => {
            tracing::warn!(
                segment = %crate::escape::Escaped(path.display()),
                "the file system refuses O_DIRECT: segment writes go through the page cache (still fdatasynced)"
            );
            let fd = rustix::fs::open(path, flags, mode)?;
            Ok((fd, false))
        }
        Err(error) => Err(error.into()),
    }
}

/// Whether `filefrag -v` (e2fsprogs) lists an unwritten extent of the file
/// at `path`: blocks allocated and never written (ext4, XFS).
#[cfg(test)]
pub(crate) fn has_unwritten_extents(path: &Path) -> io::Result<bool> {
    let output = std::process::Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "filefrag: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(
        listing.contains("ext:"),
        "filefrag lists extents: {listing}"
    );
    Ok(listing.contains("unwritten"))
}

#[cfg(test)]
mod tests;
