//! The operator commands (`ls`, `show`, `quarantine`, `verify`, `stats`,
//! `export-instance`) on stores built directly through `sluice-index` and the
//! layout (no server), run through `cli::run` with their output captured.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use sluice_engine::cli::{run, CliError, OperatorCommand};
use sluice_engine::store::layout::{dataset_checksum, Layout};
use sluice_engine::store::part10::{file_header, FileMeta};
use sluice_index::{
    Disposition, FileId, Index, IndexOptions, InstanceRecord, NewInstance, SeriesAttributes,
    StoreOutcome, StoreRequest, StudyAttributes, Triplet, WriteOp, WriteOutcome,
};

/// CT Image Storage.
pub(crate) const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Explicit VR Little Endian.
pub(crate) const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// 2023-11-14T22:13:20.123456789Z.
pub(crate) const RECEIVED_AT_UNIX_NS: u64 = 1_700_000_000_123_456_789;

/// A data directory with an index, filled instance by instance.
pub(crate) struct StoreFixture {
    /// Keeps the directory alive.
    _dir: tempfile::TempDir,
    pub(crate) layout: Layout,
    /// Open while the fixture is being filled; `close` it before running a
    /// command (heed refuses a second open of one environment in a process).
    pub(crate) index: Option<Index>,
    next_file_id: u128,
}

/// What the fixture wrote for one instance.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub(crate) file_id: FileId,
    pub(crate) path: PathBuf,
    pub(crate) bytes: Vec<u8>,
    pub(crate) instance: NewInstance,
}

impl StoreFixture {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("data"));
        layout.create_dirs().unwrap();
        let index = Index::open(
            layout.index_dir(),
            IndexOptions {
                map_size_bytes: 64 << 20,
                ..IndexOptions::default()
            },
        )
        .unwrap();
        StoreFixture {
            _dir: dir,
            layout,
            index: Some(index),
            next_file_id: 0x0123_4567_89ab_cdef_0000_0000_0000_0100,
        }
    }

    pub(crate) fn data_dir(&self) -> &Path {
        self.layout.root()
    }

    pub(crate) fn index(&self) -> &Index {
        self.index.as_ref().expect("the fixture's index is open")
    }

    pub(crate) fn close(&mut self) {
        if let Some(index) = self.index.take() {
            index.close();
        }
    }

    pub(crate) fn next_file_id(&mut self) -> FileId {
        self.next_file_id += 1;
        FileId(self.next_file_id)
    }

    /// A Part 10 file for `triplet` with a data set made of `content`.
    pub(crate) fn part10(
        &mut self,
        triplet: &Triplet,
        content: &str,
    ) -> (FileId, Vec<u8>, InstanceRecord) {
        let file_id = self.next_file_id();
        let mut bytes = file_header(&FileMeta {
            sop_class_uid: CT,
            sop_instance_uid: &triplet.sop_instance_uid,
            transfer_syntax_uid: EXPLICIT_LE,
            source_ae_title: "MODALITY",
        })
        .unwrap();
        let dataset_offset_bytes = bytes.len() as u64;
        let dataset = content.repeat(50).into_bytes();
        bytes.extend_from_slice(&dataset);
        let record = InstanceRecord {
            file_id,
            file_size_bytes: bytes.len() as u64,
            dataset_offset_bytes,
            transfer_syntax_uid: EXPLICIT_LE.into(),
            sop_class_uid: CT.into(),
            checksum: dataset_checksum(&dataset),
            received_at_unix_ns: RECEIVED_AT_UNIX_NS,
            calling_ae_title: "MODALITY".into(),
            instance_number: Some(7),
        };
        (file_id, bytes, record)
    }

    pub(crate) fn new_instance(
        triplet: Triplet,
        record: InstanceRecord,
        patient: &str,
    ) -> NewInstance {
        NewInstance {
            triplet,
            record,
            study: StudyAttributes {
                patient_name: format!("{patient}^Jane"),
                patient_id: format!("PID-{patient}"),
                study_date: "20240115".into(),
                accession_number: format!("ACC-{patient}"),
                study_description: "CT Chest".into(),
                ..Default::default()
            },
            series: SeriesAttributes {
                modality: "CT".into(),
                series_number: Some(3),
                series_description: "Axial".into(),
            },
        }
    }

    /// Like [`StoreFixture::add`], but the entry is committed in doubt, as
    /// the ingest path does while the file's syncs run.
    pub(crate) fn add_in_doubt(&mut self, study: &str, series: &str, sop: &str) -> Written {
        let triplet = Triplet::new(study, series, sop);
        let (file_id, bytes, record) = self.part10(&triplet, &format!("data set of {sop};"));
        let path = self.layout.object_path(file_id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let instance = Self::new_instance(triplet, record, "Doe");
        let mut request = StoreRequest::new(instance.clone());
        request.in_doubt = true;
        assert_eq!(self.store_request(request), StoreOutcome::Stored);
        Written {
            file_id,
            path,
            bytes,
            instance,
        }
    }

    fn store(&self, instance: NewInstance) -> StoreOutcome {
        self.store_request(StoreRequest::new(instance))
    }

    pub(crate) fn store_request(&self, request: StoreRequest) -> StoreOutcome {
        let results = self
            .index()
            .writer()
            .execute(vec![WriteOp::Store(request)])
            .unwrap();
        match results.into_iter().next().unwrap().unwrap() {
            WriteOutcome::Store(outcome) => outcome,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    /// Stores an instance: its file in `objects/`, then its index entry.
    pub(crate) fn add(&mut self, study: &str, series: &str, sop: &str, patient: &str) -> Written {
        let triplet = Triplet::new(study, series, sop);
        let (file_id, bytes, record) = self.part10(&triplet, &format!("data set of {sop};"));
        let path = self.layout.object_path(file_id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let instance = Self::new_instance(triplet, record, patient);
        assert_eq!(self.store(instance.clone()), StoreOutcome::Stored);
        Written {
            file_id,
            path,
            bytes,
            instance,
        }
    }

    /// Sends the triplet again with another data set: quarantined.
    /// Returns the quarantine id and what was written.
    pub(crate) fn add_duplicate(&mut self, stored: &Written, sender: &str) -> (u64, Written) {
        let triplet = stored.instance.triplet.clone();
        let (file_id, bytes, mut record) = self.part10(&triplet, "another data set;");
        record.calling_ae_title = sender.into();
        let path = self.layout.quarantine_path(file_id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let instance = Self::new_instance(triplet, record, "X");
        let id = match self.store(instance.clone()) {
            StoreOutcome::Duplicate(Disposition::Quarantined { quarantine_id }) => quarantine_id,
            other => panic!("expected a quarantined duplicate, got {other:?}"),
        };
        (
            id,
            Written {
                file_id,
                path,
                bytes,
                instance,
            },
        )
    }
}

/// The `sluice` operator subcommands, as the binary parses them.
#[derive(Debug, Parser)]
#[command(name = "sluice")]
struct Cli {
    #[command(subcommand)]
    command: OperatorCommand,
}

/// Parses `args` (without the program name) and runs the command.
pub(crate) fn sluice(args: &[&str]) -> (Result<ExitCode, CliError>, String) {
    let cli = Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
        .unwrap_or_else(|error| panic!("{args:?}: {error}"));
    let mut output = Vec::new();
    let result = run(cli.command, &mut output);
    (result, String::from_utf8(output).unwrap())
}

/// Runs a command that must succeed; returns its output.
pub(crate) fn sluice_ok(args: &[&str]) -> String {
    let (result, output) = sluice(args);
    match result {
        Ok(code) => assert_eq!(code, ExitCode::SUCCESS, "{args:?}:\n{output}"),
        Err(error) => panic!("{args:?}: {error}\n{output}"),
    }
    output
}

/// The row of a table whose first cell is `first`, split into cells.
pub(crate) fn row<'a>(output: &'a str, first: &str) -> Vec<&'a str> {
    output
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first} in\n{output}"))
}

/// Two studies: 1.1 (two instances in series 1.1.1, one in 1.1.2) and 2.2.
fn two_studies() -> (StoreFixture, Vec<Written>) {
    let mut fixture = StoreFixture::new();
    let written = vec![
        fixture.add("1.1", "1.1.1", "1.1.1.1", "Doe"),
        fixture.add("1.1", "1.1.1", "1.1.1.2", "Doe"),
        fixture.add("1.1", "1.1.2", "1.1.2.1", "Doe"),
        fixture.add("2.2", "2.2.1", "2.2.1.1", "Roe"),
    ];
    fixture.close();
    (fixture, written)
}

#[test]
fn ls_lists_studies_then_series_then_instances() {
    let (fixture, _) = two_studies();
    let dir = fixture.data_dir().to_str().unwrap();

    let studies = sluice_ok(&["ls", "--data-dir", dir]);
    assert!(
        studies.starts_with("STUDY INSTANCE UID  PATIENT ID  PATIENT NAME"),
        "{studies}"
    );
    assert_eq!(
        row(&studies, "1.1"),
        ["1.1", "PID-Doe", "Doe^Jane", "20240115", "CT", "2", "3", "ACC-Doe", "CT", "Chest"]
    );
    assert_eq!(row(&studies, "2.2")[6], "1");

    let series = sluice_ok(&["ls", "1.1", "--data-dir", dir]);
    assert_eq!(row(&series, "1.1.1"), ["1.1.1", "3", "CT", "2", "Axial"]);
    assert_eq!(row(&series, "1.1.2")[3], "1");
    assert!(!series.contains("2.2.1"), "{series}");

    let instances = sluice_ok(&["ls", "1.1", "1.1.1", "--data-dir", dir]);
    let first = row(&instances, "1.1.1.1");
    assert_eq!(first[1], "7");
    assert_eq!(first[2], CT);
    assert_eq!(first[3], EXPLICIT_LE);
    assert_eq!(first[5], "2023-11-14T22:13:20.123456Z");
    assert_eq!(first[6], "MODALITY");
    assert_eq!(row(&instances, "1.1.1.2")[0], "1.1.1.2");
    assert!(!instances.contains("1.1.2.1"), "{instances}");

    let limited = sluice_ok(&["ls", "--limit", "1", "--data-dir", dir]);
    assert!(
        limited.contains("(first 1 studies shown; pass --limit to see more)"),
        "{limited}"
    );
}

#[test]
fn ls_on_an_empty_store_says_so() {
    let mut fixture = StoreFixture::new();
    fixture.close();
    let dir = fixture.data_dir().to_str().unwrap();
    let output = sluice_ok(&["ls", "--data-dir", dir]);
    assert_eq!(output, format!("no studies in {dir}\n"));
}

#[test]
fn show_prints_the_whole_record() {
    let (fixture, written) = two_studies();
    let dir = fixture.data_dir().to_str().unwrap();
    let output = sluice_ok(&["show", "1.1.1.2", "--data-dir", dir]);
    let instance = &written[1];
    let checksum: String = instance
        .instance
        .record
        .checksum
        .0
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    for expected in [
        "SOP Instance UID:    1.1.1.2".to_owned(),
        "Study Instance UID:  1.1".to_owned(),
        "Series Instance UID: 1.1.1".to_owned(),
        format!("SOP Class UID:       {CT}"),
        format!("Transfer Syntax UID: {EXPLICIT_LE}"),
        format!("File:                {}", instance.path.display()),
        format!("File size:           {} bytes", instance.bytes.len()),
        format!("Checksum (XXH3-128): {checksum}"),
        "Received at:         2023-11-14T22:13:20.123456Z".to_owned(),
        "Calling AE:          MODALITY".to_owned(),
    ] {
        assert!(
            output.lines().any(|line| line == expected),
            "missing line {expected:?} in\n{output}"
        );
    }
}

#[test]
fn unknown_uids_and_missing_stores_have_clear_messages() {
    let (fixture, _) = two_studies();
    let dir = fixture.data_dir().to_str().unwrap();
    let message = |args: &[&str]| match sluice(args).0 {
        Err(error) => error.to_string(),
        Ok(code) => panic!("{args:?} succeeded with {code:?}"),
    };
    assert_eq!(
        message(&["show", "1.2.3", "--data-dir", dir]),
        format!("no instance with SOP Instance UID 1.2.3 in {dir}")
    );
    assert_eq!(
        message(&[
            "export-instance",
            "1.2.3",
            "/nonexistent/x.dcm",
            "--data-dir",
            dir
        ]),
        format!("no instance with SOP Instance UID 1.2.3 in {dir}")
    );
    assert_eq!(
        message(&["ls", "9.9", "--data-dir", dir]),
        format!("no study with Study Instance UID 9.9 in {dir}")
    );
    assert_eq!(
        message(&["ls", "1.1", "9.9", "--data-dir", dir]),
        format!("no series with Series Instance UID 9.9 in study 1.1 in {dir}")
    );
    assert_eq!(
        message(&["quarantine", "show", "42", "--data-dir", dir]),
        format!("no quarantine entry with id 42 in {dir}")
    );

    let empty = tempfile::tempdir().unwrap();
    let missing = empty.path().join("nothing-here");
    let missing_text = missing.to_str().unwrap();
    let error = sluice(&["stats", "--data-dir", missing_text])
        .0
        .unwrap_err();
    assert!(
        matches!(error, CliError::NoDataDirectory { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with(&format!("data directory {missing_text} does not exist")),
        "{error}"
    );
    assert!(
        !missing.exists(),
        "a read command must not create the data directory"
    );
    assert_eq!(error.exit_code(), ExitCode::from(2));

    let not_a_store = empty.path().to_str().unwrap();
    let error = sluice(&["verify", "--data-dir", not_a_store])
        .0
        .unwrap_err();
    assert!(matches!(error, CliError::NoIndex { .. }), "{error:?}");
    assert!(!empty.path().join("index").exists());

    // A bad --config is the configuration's own error, naming the file.
    let config = empty.path().join("sluice.toml");
    std::fs::write(&config, "[server]\nno_such_option = 1\n").unwrap();
    let error = sluice(&["ls", "--config", config.to_str().unwrap()])
        .0
        .unwrap_err();
    assert!(matches!(error, CliError::Config(_)), "{error:?}");
    assert!(error.to_string().contains("sluice.toml"), "{error}");

    // Bad arguments are clap's errors, before anything runs.
    assert!(Cli::try_parse_from(["sluice", "quarantine", "release", "not-a-number"]).is_err());
    assert!(Cli::try_parse_from(["sluice", "show"]).is_err());
    assert!(Cli::try_parse_from(["sluice", "ls", "--limit", "0"]).is_err());
    assert!(Cli::try_parse_from(["sluice", "quarantine", "list", "--limit", "0"]).is_err());
}

#[test]
fn the_data_directory_comes_from_the_config_file() {
    let (fixture, _) = two_studies();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_directory = {:?}\n",
            fixture.data_dir().to_str().unwrap()
        ),
    )
    .unwrap();
    let output = sluice_ok(&["ls", "--config", config.to_str().unwrap()]);
    assert_eq!(row(&output, "2.2")[1], "PID-Roe");
}

#[test]
fn stats_counts_tables_and_files() {
    let mut fixture = StoreFixture::new();
    let stored = fixture.add("1.1", "1.1.1", "1.1.1.1", "Doe");
    fixture.add("1.1", "1.1.1", "1.1.1.2", "Doe");
    fixture.add_duplicate(&stored, "OTHER");
    fixture.close();
    let dir = fixture.data_dir().to_str().unwrap();
    let output = sluice_ok(&["stats", "--data-dir", dir]);
    assert_eq!(row(&output, "instances")[1], "2", "{output}");
    assert_eq!(row(&output, "quarantine")[1], "1", "{output}");
    assert_eq!(row(&output, "studies")[1], "1", "{output}");
    assert_eq!(row(&output, "objects")[1], "2", "{output}");
    assert_eq!(row(&output, "orphans")[1], "0", "{output}");
    assert!(output.contains("map size:"), "{output}");
    // The quarantine area row: the second "quarantine" row is the disk one.
    let disk = output.split("disk ").nth(1).unwrap();
    let quarantine_row = row(disk, "quarantine");
    assert_eq!(quarantine_row[1], "1");
    let objects_row = row(disk, "objects");
    assert_eq!(
        objects_row[2].parse::<u64>().unwrap(),
        2 * stored.bytes.len() as u64
    );
}

#[test]
fn quarantine_list_show_release_and_purge() {
    let mut fixture = StoreFixture::new();
    let first = fixture.add("1.1", "1.1.1", "1.1.1.1", "Doe");
    let second = fixture.add("1.1", "1.1.1", "1.1.1.2", "Doe");
    let (first_id, first_duplicate) = fixture.add_duplicate(&first, "LATE_AE");
    let (second_id, second_duplicate) = fixture.add_duplicate(&second, "OTHER_AE");
    fixture.close();
    let dir = fixture.data_dir().to_str().unwrap();
    let layout = fixture.layout.clone();

    let list = sluice_ok(&["quarantine", "list", "--data-dir", dir]);
    assert!(list.starts_with("ID  REASON"), "{list}");
    let first_row = row(&list, &first_id.to_string());
    assert_eq!(first_row[1], "duplicate");
    assert_eq!(first_row[2], "1.1.1.1");
    assert_eq!(first_row[4], "LATE_AE");
    assert_eq!(row(&list, &second_id.to_string())[2], "1.1.1.2");

    let show = sluice_ok(&[
        "quarantine",
        "show",
        &first_id.to_string(),
        "--data-dir",
        dir,
    ]);
    assert!(
        show.contains(&format!("Quarantine id:       {first_id}")),
        "{show}"
    );
    assert!(show.contains("Reason:              duplicate:"), "{show}");
    assert!(
        show.contains(&format!(
            "File:                {}",
            first_duplicate.path.display()
        )),
        "{show}"
    );
    assert!(show.contains("Calling AE:          LATE_AE"), "{show}");
    assert!(show.contains("data set differs"), "{show}");

    // Release: the duplicate becomes the stored instance; the replaced file
    // is kept in orphans/, not deleted.
    let release = sluice_ok(&[
        "quarantine",
        "release",
        &first_id.to_string(),
        "--data-dir",
        dir,
    ]);
    assert!(release.contains("released quarantine entry"), "{release}");
    let orphan = layout.orphan_path(first.file_id);
    assert!(release.contains(&orphan.display().to_string()), "{release}");
    assert_eq!(std::fs::read(&orphan).unwrap(), first.bytes);
    assert!(!first.path.exists());
    assert!(!first_duplicate.path.exists());
    let new_object = layout.object_path(first_duplicate.file_id);
    assert_eq!(std::fs::read(&new_object).unwrap(), first_duplicate.bytes);

    // Purge: the entry and its file go; the stored instance stays.
    let purge = sluice_ok(&[
        "quarantine",
        "purge",
        &second_id.to_string(),
        "--data-dir",
        dir,
    ]);
    assert!(
        purge.contains(&format!("deleted {}", second_duplicate.path.display())),
        "{purge}"
    );
    assert!(!second_duplicate.path.exists());
    assert_eq!(std::fs::read(&second.path).unwrap(), second.bytes);

    {
        let index = Index::open(layout.index_dir(), IndexOptions::default()).unwrap();
        let txn = index.read().unwrap();
        let stored = txn.instance_by_sop("1.1.1.1").unwrap().unwrap();
        assert_eq!(stored.record.file_id, first_duplicate.file_id);
        assert_eq!(stored.record.calling_ae_title, "LATE_AE");
        let still = txn.instance_by_sop("1.1.1.2").unwrap().unwrap();
        assert_eq!(still.record.file_id, second.file_id);
        assert!(txn.quarantine_entries(None, 10).unwrap().items.is_empty());
        assert!(txn.check_consistency(10).unwrap().is_consistent());
    }

    let list = sluice_ok(&["quarantine", "list", "--data-dir", dir]);
    assert_eq!(list, format!("no quarantine entries in {dir}\n"));
    let error = sluice(&[
        "quarantine",
        "purge",
        &second_id.to_string(),
        "--data-dir",
        dir,
    ])
    .0
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("no quarantine entry with id {second_id} in {dir}")
    );
    // The store is whole after all that.
    assert!(sluice_ok(&["verify", "--data-dir", dir]).ends_with("OK\n"));
}

#[test]
fn verify_passes_a_clean_store_and_finds_damage() {
    let mut fixture = StoreFixture::new();
    let first = fixture.add("1.1", "1.1.1", "1.1.1.1", "Doe");
    let second = fixture.add("1.1", "1.1.1", "1.1.1.2", "Doe");
    let third = fixture.add("1.1", "1.1.1", "1.1.1.3", "Doe");
    let (_, duplicate) = fixture.add_duplicate(&first, "OTHER");
    fixture.close();
    let dir = fixture.data_dir().to_str().unwrap();

    let clean = sluice_ok(&["verify", "--data-dir", dir]);
    assert!(
        clean.starts_with(
            "verified 4 files (3 stored, 1 quarantined): 0 missing, 0 wrong size, \
             0 checksum mismatch, 0 unreadable"
        ),
        "{clean}"
    );
    assert!(clean.ends_with("OK\n"), "{clean}");

    // One flipped byte in a data set, one file gone, one truncated.
    let mut flipped = second.bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    std::fs::write(&second.path, &flipped).unwrap();
    std::fs::remove_file(&third.path).unwrap();
    std::fs::write(&duplicate.path, &duplicate.bytes[..100]).unwrap();

    let (result, output) = sluice(&["verify", "--data-dir", dir]);
    assert_eq!(result.unwrap(), ExitCode::from(1), "{output}");
    assert!(
        output.contains(&format!(
            "CHECKSUM    {} (SOP Instance UID 1.1.1.2): data set XXH3-128",
            second.path.display()
        )),
        "{output}"
    );
    assert!(
        output.contains(&format!(
            "MISSING     {} (SOP Instance UID 1.1.1.3)",
            third.path.display()
        )),
        "{output}"
    );
    assert!(
        output.contains(&format!(
            "WRONG SIZE  {} (quarantine entry",
            duplicate.path.display()
        )),
        "{output}"
    );
    assert!(
        output.contains("1 missing, 1 wrong size, 1 checksum mismatch, 0 unreadable"),
        "{output}"
    );
    assert!(output.ends_with("FAILED: 3 problem(s)\n"), "{output}");
    assert!(
        !output.contains(&first.path.display().to_string()),
        "{output}"
    );
}

#[test]
fn export_instance_copies_exactly_and_refuses_to_overwrite() {
    let (fixture, written) = two_studies();
    let dir = fixture.data_dir().to_str().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let destination = out_dir.path().join("exported.dcm");
    let destination_text = destination.to_str().unwrap();

    let output = sluice_ok(&[
        "export-instance",
        "2.2.1.1",
        destination_text,
        "--data-dir",
        dir,
    ]);
    assert_eq!(std::fs::read(&destination).unwrap(), written[3].bytes);
    assert_eq!(
        output,
        format!(
            "exported 2.2.1.1 ({} bytes) to {destination_text}\n",
            written[3].bytes.len()
        )
    );

    let (result, _) = sluice(&[
        "export-instance",
        "1.1.1.1",
        destination_text,
        "--data-dir",
        dir,
    ]);
    let error = result.unwrap_err();
    assert!(
        matches!(error, CliError::WouldOverwrite { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("--force"), "{error}");
    assert_eq!(
        std::fs::read(&destination).unwrap(),
        written[3].bytes,
        "the refused export left the file alone"
    );

    sluice_ok(&[
        "export-instance",
        "1.1.1.1",
        destination_text,
        "--force",
        "--data-dir",
        dir,
    ]);
    assert_eq!(std::fs::read(&destination).unwrap(), written[0].bytes);
}

/// Runs the real `sluice` binary; returns (exit status, stdout, stderr).
pub(crate) fn sluice_binary(args: &[&str]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn the_binary_runs_operator_commands() {
    let mut fixture = StoreFixture::new();
    fixture.close();
    let dir = fixture.data_dir().to_str().unwrap();

    let (status, stdout, stderr) = sluice_binary(&["ls", "--data-dir", dir]);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(stdout, format!("no studies in {dir}\n"));

    let (status, stdout, stderr) = sluice_binary(&["show", "1.2.3", "--data-dir", dir]);
    assert_eq!(status, Some(1));
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!("error: no instance with SOP Instance UID 1.2.3 in {dir}\n")
    );

    let missing = fixture.data_dir().join("absent");
    let (status, _, stderr) = sluice_binary(&["stats", "--data-dir", missing.to_str().unwrap()]);
    assert_eq!(status, Some(2));
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn commands_work_while_another_process_holds_the_store() {
    // The test process keeps the index open, as a running server would; the
    // binary reads it and writes through LMDB's inter-process writer lock.
    let mut fixture = StoreFixture::new();
    let stored = fixture.add("1.1", "1.1.1", "1.1.1.1", "Doe");
    let (id, duplicate) = fixture.add_duplicate(&stored, "OTHER");
    let dir = fixture.data_dir().to_str().unwrap().to_owned();

    let (status, stdout, stderr) = sluice_binary(&["ls", "--data-dir", &dir]);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(row(&stdout, "1.1")[1], "PID-Doe");

    let (status, stdout, stderr) =
        sluice_binary(&["quarantine", "purge", &id.to_string(), "--data-dir", &dir]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stdout.starts_with(&format!("purged quarantine entry {id}")),
        "{stdout}"
    );
    assert!(!duplicate.path.exists());
    // The holder sees the other process's commit in its next read.
    let txn = fixture.index().read().unwrap();
    assert!(txn.quarantine_entry(id).unwrap().is_none());
    assert!(txn.instance_by_sop("1.1.1.1").unwrap().is_some());
}
