//! The on-disk layout of a data directory: which directory holds what, how a
//! file id becomes a path and back, how file ids are generated, and the
//! checksum recorded in the index.
//!
//! ```text
//! <data>/objects/ab/cd/<id>.dcm     stored Part 10 files (indexed)
//! <data>/quarantine/ab/cd/<id>.dcm  duplicates held for review (indexed as quarantine)
//! <data>/tmp/<core>/<id>.dcm        files being received; removed at start
//! <data>/orphans/<id>.dcm           files found at start without an index entry
//! <data>/segments/<id>.seg           segment files (layout `segments`, docs/design/segments.md)
//! <data>/index/                     the LMDB environment (sluice-index)
//! ```
//!
//! Paths never come from UIDs or AE titles (path traversal, odd characters,
//! length limits): every name is derived from a generated [`FileId`]. The id is
//! written as 32 lowercase hex digits; `ab/cd` is a 16-bit mix of the id
//! *without* its low [`FANOUT_RUN_BITS`] counter bits, so a run of 1024
//! consecutive ids of one core shares a directory (one directory fsync
//! covers a whole group-commit batch) while runs spread evenly over 65536
//! directories whatever the start time and core. The format is specified in
//! docs/on-disk-format.md.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_index::{Checksum, FileId};

use crate::store::xxh3::Xxh3_128;

/// Directory name of stored instances, under the data directory.
pub const OBJECTS_DIR: &str = "objects";
/// Directory name of quarantined duplicates.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Directory name of files being received (one sub-directory per core).
pub const TMP_DIR: &str = "tmp";
/// Directory name of files found without an index entry at start.
pub const ORPHANS_DIR: &str = "orphans";
/// Directory name of the LMDB index environment.
pub const INDEX_DIR: &str = "index";
/// The directory of the segment files (layout `segments`).
pub const SEGMENTS_DIR: &str = "segments";
/// The extension of every Part 10 file Sluice writes.
pub const FILE_EXTENSION: &str = "dcm";

/// Number of hex digits of a file id in a file name.
pub const FILE_ID_HEX_DIGITS: usize = 32;

/// Where each part of a data directory lives. Cheap to clone; holds only the
/// root path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

/// Which area of the data directory a Part 10 file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// `objects/`: stored, indexed instances.
    Objects,
    /// `quarantine/`: duplicates held for review.
    Quarantine,
}

impl Area {
    /// The directory name of the area under the data directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            Area::Objects => OBJECTS_DIR,
            Area::Quarantine => QUARANTINE_DIR,
        }
    }
}

impl Layout {
    /// The layout of the data directory `root` (nothing is touched on disk).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<data>/objects`.
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join(OBJECTS_DIR)
    }

    /// `<data>/quarantine`.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join(QUARANTINE_DIR)
    }

    /// `<data>/tmp`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    /// `<data>/tmp/<core>`: the files core `core` is receiving.
    pub fn tmp_dir_of_core(&self, core: usize) -> PathBuf {
        self.tmp_dir().join(core.to_string())
    }

    /// `<data>/orphans`.
    pub fn orphans_dir(&self) -> PathBuf {
        self.root.join(ORPHANS_DIR)
    }

    /// `<data>/segments`: the segment files of the `segments` layout.
    pub fn segments_dir(&self) -> PathBuf {
        self.root.join(SEGMENTS_DIR)
    }

    /// `<data>/segments/<id>.seg`: the file of the segment the index names
    /// `segment` (16 lowercase hex digits; never from peer data).
    pub fn segment_path(&self, segment: u64) -> PathBuf {
        self.segments_dir().join(format!("{segment:016x}.seg"))
    }

    /// `<data>/index`.
    pub fn index_dir(&self) -> PathBuf {
        self.root.join(INDEX_DIR)
    }

    /// The directory of `area`: `<data>/objects` or `<data>/quarantine`.
    pub fn area_dir(&self, area: Area) -> PathBuf {
        self.root.join(area.dir_name())
    }

    /// The two-level fan-out directory of a file id inside `area`:
    /// `<data>/<area>/ab/cd`.
    pub fn fanout_dir(&self, area: Area, file_id: FileId) -> PathBuf {
        let (first, second) = fanout_components(file_id);
        self.area_dir(area).join(first).join(second)
    }

    /// `<data>/objects/ab/cd/<id>.dcm`.
    pub fn object_path(&self, file_id: FileId) -> PathBuf {
        self.area_path(Area::Objects, file_id)
    }

    /// `<data>/quarantine/ab/cd/<id>.dcm`.
    pub fn quarantine_path(&self, file_id: FileId) -> PathBuf {
        self.area_path(Area::Quarantine, file_id)
    }

    /// The path of a file id in `area`.
    pub fn area_path(&self, area: Area, file_id: FileId) -> PathBuf {
        self.fanout_dir(area, file_id).join(file_name(file_id))
    }

    /// `<data>/tmp/<core>/<id>.dcm`.
    pub fn tmp_path(&self, core: usize, file_id: FileId) -> PathBuf {
        self.tmp_dir_of_core(core).join(file_name(file_id))
    }

    /// `<data>/orphans/<id>.dcm`.
    pub fn orphan_path(&self, file_id: FileId) -> PathBuf {
        self.orphans_dir().join(file_name(file_id))
    }

    /// Creates the data directory and its top-level directories (objects,
    /// quarantine, tmp, orphans, index) if missing, durably: the parent of
    /// each directory created is fsynced, so a power cut during the first
    /// run cannot take the data directory or its index with what was
    /// acknowledged there. The fan-out directories are created on demand.
    pub fn create_dirs(&self) -> std::io::Result<()> {
        sluice_io::durable::create_dir_all(&self.root)?;
        for dir in [
            self.objects_dir(),
            self.quarantine_dir(),
            self.tmp_dir(),
            self.orphans_dir(),
            self.index_dir(),
        ] {
            sluice_io::durable::create_dir_all(&dir)?;
        }
        Ok(())
    }

    /// The file id and area of a path inside `objects/` or `quarantine/`, if
    /// the path has exactly the shape this layout produces (fan-out
    /// directories matching the id). Anything else is `None`: recovery treats
    /// it as a stranger, never guesses.
    pub fn parse_area_path(&self, path: &Path) -> Option<(Area, FileId)> {
        let relative = path.strip_prefix(&self.root).ok()?;
        let mut components = relative.components();
        let area_name = components.next()?.as_os_str().to_str()?;
        let area = match area_name {
            OBJECTS_DIR => Area::Objects,
            QUARANTINE_DIR => Area::Quarantine,
            _ => return None,
        };
        let first = components.next()?.as_os_str().to_str()?;
        let second = components.next()?.as_os_str().to_str()?;
        let name = components.next()?.as_os_str().to_str()?;
        if components.next().is_some() {
            return None;
        }
        let file_id = parse_file_name(name)?;
        let (want_first, want_second) = fanout_components(file_id);
        (first == want_first && second == want_second).then_some((area, file_id))
    }
}

/// `<32 hex digits>.dcm`.
pub fn file_name(file_id: FileId) -> String {
    format!("{:032x}.{FILE_EXTENSION}", file_id.0)
}

/// The file id of a file name `<32 lowercase hex digits>.dcm`; `None` for any
/// other name.
pub fn parse_file_name(name: &str) -> Option<FileId> {
    let hex = name.strip_suffix(FILE_EXTENSION)?.strip_suffix('.')?;
    if hex.len() != FILE_ID_HEX_DIGITS
        || !hex
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    {
        return None;
    }
    u128::from_str_radix(hex, 16).ok().map(FileId)
}

/// How many low counter bits a fan-out directory's run of consecutive ids
/// spans: 2^10 = 1024 files of one core in a row share a directory.
///
/// Why runs and not the fastest-varying bits: the durability contract needs
/// the directory entry of every renamed file durable before the answer, and
/// one directory fsync covers every rename into that directory done before
/// it. Consecutive instances of a core in one directory make that fsync
/// shared by a whole batch; spreading each file to its own directory would
/// cost one directory fsync per instance.
pub const FANOUT_RUN_BITS: u32 = 10;

/// The fan-out directory names `ab`, `cd` of a file id: 16 bits of a
/// SplitMix64 finaliser over the id without its low [`FANOUT_RUN_BITS`]
/// bits (start time, core and the counter's run number), so every run lands
/// in a pseudo-random one of 65536 directories, evenly, for any start time.
fn fanout_components(file_id: FileId) -> (String, String) {
    let run = file_id.0 >> FANOUT_RUN_BITS;
    let mut mixed = (run as u64) ^ ((run >> 64) as u64).rotate_left(29);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^= mixed >> 31;
    let bits = (mixed & 0xffff) as u16;
    (format!("{:02x}", bits >> 8), format!("{:02x}", bits & 0xff))
}

/// Generates file ids unique across cores and restarts.
///
/// Layout of the 128 bits: `start time (64 bits, ns since the Unix epoch) |
/// core (16 bits) | counter (48 bits)`. The start time is read once when the
/// generator is made (one per core per process run); two runs of the server
/// never start within the same nanosecond on one machine, and the counter
/// (2^48 ids per core per run) never wraps in practice — if it would, the
/// generator refuses ([`FileIdGenerator::next_id`] returns `None`) rather
/// than reuse an id. Uniqueness within a data directory is what matters; the
/// index's `file_ids` table and `O_EXCL` creation catch a collision anyway.
#[derive(Debug)]
pub struct FileIdGenerator {
    high_bits: u128,
    counter: AtomicU64,
}

/// Largest counter value of a [`FileIdGenerator`] (48 bits).
pub const FILE_ID_COUNTER_MAX: u64 = (1 << 48) - 1;

impl FileIdGenerator {
    /// A generator for core `core`, stamped with the current time.
    pub fn new(core: u16) -> Self {
        Self::with_start(crate::clock::unix_now_ns(), core)
    }

    /// A generator with an explicit start stamp (tests, tools).
    pub fn with_start(start_unix_ns: u64, core: u16) -> Self {
        FileIdGenerator {
            high_bits: (u128::from(start_unix_ns) << 64) | (u128::from(core) << 48),
            counter: AtomicU64::new(0),
        }
    }

    /// The next id, or `None` once the 48-bit counter is exhausted.
    pub fn next_id(&self) -> Option<FileId> {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        (counter <= FILE_ID_COUNTER_MAX).then(|| FileId(self.high_bits | u128::from(counter)))
    }
}

/// The checksum the index records for a data set: XXH3-128 of the data set
/// bytes as received (not the file meta group), stored as the digest's `u128`
/// in big-endian byte order (so the hex `sluice show` prints is the digest as
/// xxHash tools print it).
///
/// Why XXH3-128 and not a cryptographic hash: the checksum has two jobs.
/// `verify` detects corruption, which any good 128-bit hash does. The
/// drop-if-identical duplicate policy decides "byte-identical": an accidental
/// 128-bit collision is negligible, and a crafted one can only make the archive
/// drop the attacker's own newcomer as a duplicate; the stored instance is
/// never touched, so no stored image is lost through it. XXH3 runs at well
/// over 10 GB/s per core with SSE2/AVX2 (picked at run time, `store::xxh3`),
/// so the checksum stays out of the ingest CPU budget (BLAKE3 cost about
/// 1.2 s of CPU per GB received). It hashes incrementally, so the engine
/// feeds it the receive-buffer slices as they arrive with no copy and no
/// second read of the file.
#[derive(Clone, Default)]
pub struct DatasetHasher {
    hasher: Xxh3_128,
}

impl fmt::Debug for DatasetHasher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hasher state is buffered input and accumulators, nothing a
        // reader of a debug print can use.
        formatter
            .debug_struct("DatasetHasher")
            .finish_non_exhaustive()
    }
}

impl DatasetHasher {
    /// A hasher with nothing fed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the data set, in order.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// The checksum of everything fed.
    pub fn finish(&self) -> Checksum {
        Checksum(self.hasher.digest().to_be_bytes())
    }
}

/// The checksum of a whole data set held in memory (tools, `verify`, tests).
pub fn dataset_checksum(dataset: &[u8]) -> Checksum {
    let mut hasher = DatasetHasher::new();
    hasher.update(dataset);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn paths_round_trip() {
        let layout = Layout::new("/data");
        let file_id = FileId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let object = layout.object_path(file_id);
        let (first, second) = fanout_components(file_id);
        assert_eq!(
            object,
            Path::new("/data/objects")
                .join(first)
                .join(second)
                .join("0123456789abcdef0011223344556677.dcm")
        );
        assert_eq!(
            layout.parse_area_path(&object),
            Some((Area::Objects, file_id))
        );
        let quarantine = layout.quarantine_path(file_id);
        assert_eq!(
            layout.parse_area_path(&quarantine),
            Some((Area::Quarantine, file_id))
        );
        assert_eq!(
            layout.tmp_path(3, file_id),
            Path::new("/data/tmp/3/0123456789abcdef0011223344556677.dcm")
        );
    }

    #[test]
    fn foreign_paths_are_not_parsed() {
        let layout = Layout::new("/data");
        let file_id = FileId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let (first, second) = fanout_components(file_id);
        let wrong_first = if first == "00" { "01" } else { "00" };
        let name = "0123456789abcdef0011223344556677.dcm";
        for path in [
            format!("/data/objects/{wrong_first}/{second}/{name}"),
            format!("/data/objects/{first}/{second}/0123456789ABCDEF0011223344556677.dcm"),
            format!("/data/objects/{first}/{second}/x.dcm"),
            format!("/data/tmp/{first}/{second}/{name}"),
            format!("/other/objects/{first}/{second}/{name}"),
            format!("/data/objects/{first}/{second}/{name}/x"),
        ] {
            assert_eq!(layout.parse_area_path(Path::new(&path)), None, "{path}");
        }
        assert_eq!(parse_file_name("0123.dcm"), None);
    }

    #[test]
    fn ids_are_unique_per_core_and_ordered() {
        let core0 = FileIdGenerator::with_start(1_000, 0);
        let core1 = FileIdGenerator::with_start(1_000, 1);
        let a = core0.next_id().unwrap();
        let b = core0.next_id().unwrap();
        let c = core1.next_id().unwrap();
        assert!(a < b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }

    #[test]
    fn runs_of_consecutive_ids_share_a_directory_and_runs_spread() {
        let layout = Layout::new("/data");
        let generator = FileIdGenerator::with_start(1_764_000_000_000_000_000, 1);
        let ids: Vec<FileId> = (0..4 * 1024)
            .map(|_| generator.next_id().unwrap())
            .collect();
        let dirs: HashSet<PathBuf> = ids
            .iter()
            .map(|id| layout.fanout_dir(Area::Objects, *id))
            .collect();
        // Four runs of 1024: four directories (a collision of two runs'
        // 16-bit mixes is possible in principle, not for this fixed input).
        assert_eq!(dirs.len(), 4);
        for run in ids.chunks(1024) {
            let first = layout.fanout_dir(Area::Objects, run[0]);
            assert!(run
                .iter()
                .all(|id| layout.fanout_dir(Area::Objects, *id) == first));
        }
        // Many runs (and cores, and start times) cover the directories evenly.
        let mut counts = vec![0u32; 65_536];
        for start in 0..16u64 {
            for core in 0..4u16 {
                for run in 0..1024u128 {
                    let id = FileId(
                        (u128::from(1_764_000_000_000_000_000 + start) << 64)
                            | (u128::from(core) << 48)
                            | (run << FANOUT_RUN_BITS),
                    );
                    let (first, second) = fanout_components(id);
                    let bits = u16::from_str_radix(&format!("{first}{second}"), 16).unwrap();
                    counts[usize::from(bits)] += 1;
                }
            }
        }
        // As for a uniform random choice: about 1/e of the directories
        // empty, and no directory with more than a dozen runs.
        let most = counts.iter().max().copied().unwrap_or(0);
        let empty = counts.iter().filter(|count| **count == 0).count();
        assert!(
            most <= 12,
            "65536 runs over 65536 directories: at most {most}"
        );
        assert!(
            (23_000..25_300).contains(&empty),
            "{empty} directories empty"
        );
    }

    #[test]
    fn exhausted_counter_refuses() {
        let generator = FileIdGenerator::with_start(1, 0);
        generator
            .counter
            .store(FILE_ID_COUNTER_MAX, Ordering::Relaxed);
        assert!(generator.next_id().is_some());
        assert!(generator.next_id().is_none());
    }

    #[test]
    fn checksum_is_incremental() {
        let mut hasher = DatasetHasher::new();
        hasher.update(b"hello ");
        hasher.update(b"world");
        assert_eq!(hasher.finish(), dataset_checksum(b"hello world"));
    }

    #[test]
    fn checksum_is_xxh3_128_big_endian() {
        // The xxHash reference value of XXH3-128 over no input (seed 0),
        // most significant byte first: the stored byte order.
        assert_eq!(
            dataset_checksum(b"").0,
            0x99aa_06d3_0147_98d8_6001_c324_468d_497f_u128.to_be_bytes()
        );
        let dataset: Vec<u8> = (0..512 * 1024_u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(
            dataset_checksum(&dataset).0,
            xxhash_rust::xxh3::xxh3_128(&dataset).to_be_bytes()
        );
    }

    #[test]
    fn checksum_does_not_depend_on_how_the_bytes_are_sliced() {
        // Receive buffers hand over slices of any size; sizes around the
        // hasher's internal buffer (256 bytes) and stripe block (1 KiB) are
        // where a streaming hash would go wrong.
        let dataset: Vec<u8> = (0..200_000_u32).map(|n| (n % 251) as u8).collect();
        let whole = dataset_checksum(&dataset);
        for slice_bytes in [1, 63, 64, 255, 256, 257, 1023, 1024, 1025, 65_536] {
            let mut hasher = DatasetHasher::new();
            for slice in dataset.chunks(slice_bytes) {
                hasher.update(slice);
            }
            assert_eq!(hasher.finish(), whole, "slices of {slice_bytes} bytes");
        }
        assert_ne!(whole, dataset_checksum(&dataset[1..]));
    }
}
