//! Helpers shared by the integration tests.

use sluice_index::{
    Checksum, FileId, Index, IndexOptions, InstanceRecord, NewInstance, SeriesAttributes,
    StoreRequest, StudyAttributes, Triplet, WriteOp,
};

/// Options for tests: a modest map so many environments fit in address space.
pub fn options() -> IndexOptions {
    IndexOptions {
        map_size_bytes: 256 << 20,
        ..IndexOptions::default()
    }
}

pub fn open(dir: &std::path::Path) -> Index {
    Index::open(dir, options()).expect("open index")
}

/// Study attributes derived from the study UID, so every instance of a study agrees.
pub fn study_attributes(study: &str) -> StudyAttributes {
    let n: u32 = study.bytes().map(u32::from).sum::<u32>() % 9;
    StudyAttributes {
        patient_name: format!("Name{n}^Given"),
        patient_id: format!("PID{n}"),
        patient_birth_date: format!("1970010{}", n % 9 + 1),
        patient_sex: if n % 2 == 0 { "F".into() } else { "M".into() },
        study_date: format!("2024010{}", n % 9 + 1),
        study_time: format!("1{n}0000"),
        accession_number: format!("ACC{n}"),
        study_id: format!("S{n}"),
        study_description: format!("Study {n}"),
        referring_physician_name: "House^Gregory".into(),
    }
}

/// Series attributes derived from the series UID.
pub fn series_attributes(series: &str) -> SeriesAttributes {
    let n: u32 = series.bytes().map(u32::from).sum::<u32>() % 3;
    SeriesAttributes {
        modality: ["CT", "MR", "SR"][n as usize].into(),
        series_number: Some(n as i32 + 1),
        series_description: format!("Series {n}"),
    }
}

pub fn record(file_id: u128, checksum_seed: u8) -> InstanceRecord {
    InstanceRecord {
        file_id: FileId(file_id),
        file_size_bytes: 2_000,
        dataset_offset_bytes: 332,
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        checksum: Checksum([checksum_seed; 16]),
        received_at_unix_ns: 1_700_000_000_000_000_000 + file_id as u64,
        calling_ae_title: "MODALITY1".into(),
        instance_number: Some((file_id % 1000) as i32),
    }
}

pub fn instance(
    study: &str,
    series: &str,
    sop: &str,
    file_id: u128,
    checksum_seed: u8,
) -> NewInstance {
    NewInstance {
        triplet: Triplet::new(study, series, sop),
        record: record(file_id, checksum_seed),
        study: study_attributes(study),
        series: series_attributes(series),
    }
}

pub fn store(study: &str, series: &str, sop: &str, file_id: u128, checksum_seed: u8) -> WriteOp {
    WriteOp::Store(StoreRequest::new(instance(
        study,
        series,
        sop,
        file_id,
        checksum_seed,
    )))
}

/// A deterministic pseudo-random generator (xorshift64*), for seeded tests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// The raw LMDB opens of the tests are of a test's own temporary directory.
pub const TEST_DIRECTORY: sluice_io::lmdb::FilesOnlyWrittenByLmdb =
    sluice_io::lmdb::FilesOnlyWrittenByLmdb::caller_guarantees("a test's own temporary directory");

/// Opens one named table of the (closed) index in `dir` without `Index`,
/// for tests that edit what a version of Sluice left on disk.
fn raw_table(
    dir: &std::path::Path,
    name: &str,
) -> (
    heed::Env<heed::WithoutTls>,
    heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
) {
    let env =
        sluice_io::lmdb::open_lmdb_env(dir, 256 << 20, 16, 32, TEST_DIRECTORY).expect("raw open");
    let wtxn = env.write_txn().expect("txn");
    let table = env
        .create_databases_and_commit(wtxn, |opener, wtxn| {
            opener
                .create_database(wtxn, Some(name))
                .map(heed::CommitOrAbort::<_, ()>::Commit)
        })
        .expect("table")
        .unwrap_commit();
    (env, table)
}

/// Writes `version` as the schema version of the (closed) index in `dir`.
pub fn set_schema_version(dir: &std::path::Path, version: u32) {
    let (env, meta) = raw_table(dir, "meta");
    let mut wtxn = env.write_txn().expect("txn");
    meta.put(&mut wtxn, b"schema_version", &version.to_be_bytes())
        .expect("put");
    wtxn.commit().expect("commit");
}

/// The schema version recorded in the (closed) index in `dir`.
pub fn schema_version(dir: &std::path::Path) -> u32 {
    let (env, meta) = raw_table(dir, "meta");
    let rtxn = env.read_txn().expect("txn");
    let bytes = meta
        .get(&rtxn, b"schema_version")
        .expect("get")
        .expect("version");
    u32::from_be_bytes(bytes.try_into().expect("4 bytes"))
}

/// Every key of the table `name` of the (closed) index in `dir`, in order.
pub fn table_keys(dir: &std::path::Path, name: &str) -> Vec<Vec<u8>> {
    let (env, table) = raw_table(dir, name);
    let rtxn = env.read_txn().expect("txn");
    table
        .iter(&rtxn)
        .expect("iter")
        .map(|entry| entry.expect("entry").0.to_vec())
        .collect()
}

/// Empties the table `name` of the (closed) index in `dir`.
pub fn clear_table(dir: &std::path::Path, name: &str) {
    let (env, table) = raw_table(dir, name);
    let mut wtxn = env.write_txn().expect("txn");
    table.clear(&mut wtxn).expect("clear");
    wtxn.commit().expect("commit");
}

/// A copy of the index fixture `name` (under `tests/fixtures/`) in a new
/// temporary directory: an index another version of Sluice wrote.
pub fn fixture_copy(name: &str) -> tempfile::TempDir {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(&source).expect("fixture") {
        let entry = entry.expect("entry");
        if entry.file_name() == "README.md" {
            continue;
        }
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    dir
}

/// Checks the index's consistency (the SOP index's property included) and
/// returns the report.
pub fn assert_consistent(index: &sluice_index::Index) -> sluice_index::ConsistencyReport {
    let report = index
        .read()
        .expect("read")
        .check_consistency(20)
        .expect("check");
    assert!(report.is_consistent(), "{:?}", report.problems);
    report
}

/// Puts `key` -> `value` into the table `name` of the (closed) index in
/// `dir`, as an older version of Sluice would have written it.
pub fn put_raw(dir: &std::path::Path, name: &str, key: &[u8], value: &[u8]) {
    let (env, table) = raw_table(dir, name);
    let mut wtxn = env.write_txn().expect("txn");
    table.put(&mut wtxn, key, value).expect("put");
    wtxn.commit().expect("commit");
}
