//! `sluice media export` and `sluice media import`, end to end with real
//! tools: a `sluice serve` child fed by DCMTK storescu, the export read by
//! DCMTK (dcmdump, dcmmkdir +A), dicom3tools' dciodvfy and pydicom's
//! FileSet; File-sets written by dcmgpdir, dcmmkdir and pydicom imported,
//! non-ASCII names included; bad DICOMDIRs refused whole.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sluice_engine::config::Config;
use sluice_engine::store::Store;
use sluice_index::{Index, IndexOptions, StudyQuery};
use sluice_tests::{dcmtk, python, run, scripts_dir};

use crate::qrscu::sluice;
use crate::serve::Served;

const TIMEOUT: Duration = Duration::from_secs(300);
const MEDIA_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../media/tests/it/pydicom_media.py"
);

/// A configuration that accepts every storage class in every syntax (the
/// seed's selection would refuse some of pydicom's test files).
fn accept_all(dir: &Path) -> PathBuf {
    accept_all_with(dir, "")
}

/// [`accept_all`] with more `[storage]` keys.
fn accept_all_with(dir: &Path, storage: &str) -> PathBuf {
    let path = dir.join("accept-all.toml");
    std::fs::write(
        &path,
        format!(
            "[accept]\nsop_classes = \"all-storage\"\ntransfer_syntaxes = \"all\"\n\
             [storage]\nfree_space_floor = \"0\"\n{storage}"
        ),
    )
    .unwrap();
    path
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn checked(program: &Path, args: &[&str], directory: Option<&Path>) -> String {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(directory) = directory {
        command.current_dir(directory);
    }
    let output = run(&mut command, TIMEOUT);
    assert!(
        output.status.success(),
        "{program:?} {args:?}: {}",
        text(&output)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn media_script(args: &[&str]) -> String {
    let mut all = vec![MEDIA_SCRIPT];
    all.extend_from_slice(args);
    checked(&python(), &all, None)
}

/// `count` generated CT files (Explicit VR LE, Patient ID PEER1, a study each).
fn peer_files(dir: &Path, count: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    checked(
        &python(),
        &[
            scripts_dir().join("sluice_peer.py").to_str().unwrap(),
            "write",
            dir.to_str().unwrap(),
            &count.to_string(),
        ],
        None,
    );
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    paths
}

fn pydicom_test_file(name: &str) -> PathBuf {
    let root = checked(
        &python(),
        &[
            "-c",
            "import pydicom.data, os; print(os.path.dirname(pydicom.data.__file__))",
        ],
        None,
    );
    Path::new(root.trim()).join("test_files").join(name)
}

/// A value of each file's data set, by pydicom.
fn values(files: &[PathBuf], keyword: &str) -> Vec<String> {
    let mut args = vec![
        "-c".to_owned(),
        format!("import pydicom, sys\nfor p in sys.argv[1:]: print(pydicom.dcmread(p).{keyword})"),
    ];
    args.extend(files.iter().map(|path| path.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    checked(&python(), &args, None)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn storescu(port: u16, options: &[&str], files: &[PathBuf]) {
    let mut command = Command::new(dcmtk("storescu"));
    command
        .args(options)
        .args([
            "-aec",
            "SLUICE",
            "-aet",
            "MEDIATEST",
            "127.0.0.1",
            &port.to_string(),
        ])
        .args(files);
    let output = run(&mut command, TIMEOUT);
    assert!(output.status.success(), "storescu: {}", text(&output));
}

/// A fresh data directory with an empty index.
fn fresh_store(dir: &Path) -> PathBuf {
    let data = dir.join("store");
    let config = Config::from_args([
        "sluice",
        "--data-dir",
        data.to_str().unwrap(),
        "--free-space-floor",
        "0",
    ])
    .unwrap();
    drop(Store::open(config).unwrap());
    data
}

/// Every stored SOP Instance UID, with its study's Patient's Name.
fn stored(data: &Path) -> Vec<(String, String)> {
    let index = Index::open(
        data.join("index"),
        IndexOptions {
            map_size_bytes: 1 << 30,
            ..IndexOptions::default()
        },
    )
    .unwrap();
    let mut found = Vec::new();
    {
        let txn = index.read().unwrap();
        for study in txn
            .query_studies(&StudyQuery::default(), 100_000)
            .unwrap()
            .items
        {
            for instance in txn
                .instances_of_study(&study.study_instance_uid, None, 100_000)
                .unwrap()
                .items
            {
                found.push((
                    instance.triplet.sop_instance_uid,
                    study.record.attributes.patient_name.clone(),
                ));
            }
        }
    }
    index.close();
    found.sort();
    found
}

fn sops(files: &[PathBuf]) -> BTreeSet<String> {
    values(files, "SOPInstanceUID").into_iter().collect()
}

#[test]
fn export_while_serving_is_read_by_dcmtk_pydicom_and_dciodvfy_and_imports_back() {
    let work = tempfile::tempdir().unwrap();
    let config = accept_all(work.path());
    let config_arg = config.to_str().unwrap();
    let served = Served::start("auto", &["--config", config_arg]);
    let mut files = peer_files(&work.path().join("peer"), 4);
    let names = work.path().join("names");
    media_script(&["make", names.to_str().unwrap()]);
    files.extend((1..=3).map(|number| names.join(format!("IM{number}"))));
    // Implicit VR (transcoded), an SR (SR DOCUMENT record), JPEG 2000
    // (refused under STD-GEN-CD, written as stored under STD-GEN-DVD-J2K).
    for name in ["MR_small_implicit.dcm", "test-SR.dcm", "JPEG2000.dcm"] {
        files.push(pydicom_test_file(name));
    }
    let (j2k, others) = files.split_last().unwrap();
    // The generated files stored in Explicit VR, the others in Implicit VR
    // (-xi), which the export transcodes.
    storescu(served.port, &[], &others[..4]);
    storescu(served.port, &["-xi"], &others[4..]);
    // -xw: JPEG 2000 proposed, the file sent as it is.
    storescu(served.port, &["-xw"], std::slice::from_ref(j2k));
    // The generated files by their patient, the others by their study
    // (test-SR.dcm has an empty Patient ID).
    let studies: BTreeSet<String> = values(&files[4..], "StudyInstanceUID")
        .into_iter()
        .collect();
    let mut patient_args = vec!["--patient", "PEER1"];
    for study in &studies {
        patient_args.extend(["--study", study.as_str()]);
    }

    // STD-GEN-CD while the server runs: the JPEG 2000 instance is refused
    // and named; everything else is written.
    let out = work.path().join("cd");
    let mut args = vec!["media", "export", "--out", out.to_str().unwrap()];
    args.extend(&patient_args);
    let export = sluice(&args, &config, &served.data());
    assert_eq!(export.status.code(), Some(1), "{}", text(&export));
    let report = stdout(&export);
    let j2k_sop = values(&[pydicom_test_file("JPEG2000.dcm")], "SOPInstanceUID").remove(0);
    assert!(
        report.contains(&format!("refused: {j2k_sop}")) && report.contains("STD-GEN-DVD-J2K"),
        "{report}"
    );
    assert!(report.contains("5 transcoded"), "{report}");
    // One line per distinct warning, with how many instances had it.
    let missing_id: Vec<&str> = report
        .lines()
        .filter(|line| {
            line.starts_with(
                "warning: PATIENT record: (0010,0020) is missing in the instance, written as \"SLUICE000001\" (",
            )
        })
        .collect();
    assert_eq!(missing_id.len(), 1, "{report}");
    assert!(
        missing_id[0].contains("instance, the first ")
            || missing_id[0].contains("instances, the first "),
        "{report}"
    );
    let exported = files.len() - 1;
    assert!(
        report.contains(&format!("exported {exported} instances")),
        "{report}"
    );

    // Readers that are not Sluice's.
    let dicomdir = out.join("DICOMDIR");
    let dump = checked(&dcmtk("dcmdump"), &[dicomdir.to_str().unwrap()], None);
    assert!(!dump.contains("E:") && !dump.contains("W:"), "{dump}");
    for record in [
        "[PATIENT]",
        "[STUDY]",
        "[SERIES]",
        "[IMAGE]",
        "[SR DOCUMENT]",
    ] {
        assert!(dump.contains(record), "{record}: {dump}");
    }
    let vfy = run(Command::new("/usr/bin/dciodvfy").arg(&dicomdir), TIMEOUT);
    let vfy_text = text(&vfy);
    assert!(
        !vfy_text.lines().any(|line| line.starts_with("Error")),
        "{vfy_text}"
    );
    let read = media_script(&["read", out.to_str().unwrap()]);
    let read_sops: BTreeSet<String> = read
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["transfer_syntax"], "1.2.840.10008.1.2.1", "{line}");
            assert_eq!(value["sop_uid"], value["loaded_sop_uid"], "{line}");
            value["sop_uid"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut expected = sops(&files);
    expected.remove(&j2k_sop);
    assert_eq!(read_sops, expected);
    // DCMTK appends to Sluice's DICOMDIR (it parses every record first).
    let extra = peer_files(&work.path().join("extra"), 1).remove(0);
    std::fs::copy(&extra, out.join("EXTRA")).unwrap();
    let appended = work.path().join("appended");
    copy_tree(&out, &appended);
    checked(
        &dcmtk("dcmmkdir"),
        &["+A", "+I", "+id", ".", "EXTRA"],
        Some(&appended),
    );

    // Import is refused while the server holds the data directory, naming
    // it, and stores nothing.
    let refused = sluice(
        &["media", "import", out.to_str().unwrap()],
        &config,
        &served.data(),
    );
    assert!(!refused.status.success(), "{}", text(&refused));
    let message = text(&refused);
    assert!(
        message.contains(&format!("process {}", served.pid()))
            && message.contains("Nothing was imported"),
        "{message}"
    );

    // The compressed profile takes the JPEG 2000 instance as stored.
    let j2k_out = work.path().join("j2k");
    let mut args = vec![
        "media",
        "export",
        "--profile",
        "STD-GEN-USB-J2K",
        "--out",
        j2k_out.to_str().unwrap(),
    ];
    args.extend(&patient_args);
    let export = sluice(&args, &config, &served.data());
    assert!(export.status.success(), "{}", text(&export));
    let read = media_script(&["read", j2k_out.to_str().unwrap()]);
    assert!(
        read.contains("1.2.840.10008.1.2.4.90") || read.contains("1.2.840.10008.1.2.4.91"),
        "{read}"
    );
    drop(served.stop());

    // Back in: everything into a fresh store; then again: all duplicates.
    let data = fresh_store(work.path());
    let import = sluice(&["media", "import", out.to_str().unwrap()], &config, &data);
    assert!(import.status.success(), "{}", text(&import));
    assert!(
        stdout(&import).contains(&format!(
            "imported {exported} of {exported} instances; 0 duplicates"
        )),
        "{}",
        text(&import)
    );
    let back: BTreeSet<String> = stored(&data).into_iter().map(|(sop, _)| sop).collect();
    assert_eq!(back, expected);
    let again = sluice(&["media", "import", out.to_str().unwrap()], &config, &data);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        stdout(&again).contains(&format!(
            "imported 0 of {exported} instances; {exported} duplicates ({exported} quarantined"
        )),
        "{}",
        text(&again)
    );
    // A chosen patient only (from the File-set dcmmkdir appended to).
    let only = fresh_store(&work.path().join("only"));
    let import = sluice(
        &[
            "media",
            "import",
            appended.to_str().unwrap(),
            "--patient",
            "PEER1",
        ],
        &config,
        &only,
    );
    assert!(import.status.success(), "{}", text(&import));
    assert!(
        stdout(&import).contains("imported 5 of 5 instances"),
        "{}",
        text(&import)
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const NAMES: [&str; 3] = [
    "Buc^J\u{e9}r\u{f4}me",
    "Wang^XiaoDong=\u{738b}^\u{5c0f}\u{6771}",
    "Yamada^Tarou=\u{5c71}\u{7530}^\u{592a}\u{90ce}",
];

#[test]
fn file_sets_of_dcmgpdir_dcmmkdir_and_pydicom_import_with_their_names() {
    let work = tempfile::tempdir().unwrap();
    let config = accept_all(work.path());
    for writer in ["dcmgpdir", "dcmmkdir", "pydicom"] {
        let set = work.path().join(writer);
        let made = work.path().join(format!("{writer}-in"));
        media_script(&["make", made.to_str().unwrap()]);
        let inputs: Vec<PathBuf> = (1..=3)
            .map(|number| made.join(format!("IM{number}")))
            .collect();
        if writer == "pydicom" {
            let mut args = vec!["write", set.to_str().unwrap()];
            args.extend(inputs.iter().map(|path| path.to_str().unwrap()));
            media_script(&args);
        } else {
            copy_tree(&made, &set);
            checked(&dcmtk(writer), &["+r", "+id", "."], Some(&set));
        }
        let data = fresh_store(&work.path().join(format!("{writer}-store")));
        let import = sluice(&["media", "import", set.to_str().unwrap()], &config, &data);
        assert!(import.status.success(), "{writer}: {}", text(&import));
        assert!(
            stdout(&import).contains("imported 3 of 3 instances"),
            "{writer}: {}",
            text(&import)
        );
        let names: BTreeSet<String> = stored(&data).into_iter().map(|(_, name)| name).collect();
        let expected: BTreeSet<String> = NAMES.iter().map(|name| (*name).to_owned()).collect();
        assert_eq!(names, expected, "{writer}");
        assert_eq!(
            stored(&data)
                .into_iter()
                .map(|(sop, _)| sop)
                .collect::<BTreeSet<_>>(),
            sops(&inputs),
            "{writer}"
        );
    }
}

/// Replaces the first occurrence of `from` in `file` with `to` (same length).
fn patch_bytes(file: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|window| window == from)
        .unwrap_or_else(|| panic!("{from:?} not in {file:?}"));
    bytes[at..at + to.len()].copy_from_slice(to);
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn bad_file_sets_are_refused_whole_and_say_where() {
    let work = tempfile::tempdir().unwrap();
    let config = accept_all(work.path());
    let made = work.path().join("made");
    media_script(&["make", made.to_str().unwrap()]);
    let good = work.path().join("good");
    copy_tree(&made, &good);
    checked(&dcmtk("dcmmkdir"), &["+r", "+id", "."], Some(&good));
    let dicomdir_bytes = std::fs::read(good.join("DICOMDIR")).unwrap();
    // The value of (0004,1200) Offset of the First Directory Record.
    let first_at = dicomdir_bytes
        .windows(6)
        .position(|window| window == [0x04, 0x00, 0x00, 0x12, b'U', b'L'])
        .unwrap()
        + 8;

    type BreakIt<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, BreakIt<'_>, &[&str]); 3] = [
        (
            "missing",
            &|set: &Path| std::fs::remove_file(set.join("IM2")).unwrap(),
            &[
                "Referenced File ID (0004,1500) IM2 names no file",
                "record at offset",
            ],
        ),
        (
            "offset",
            &|set: &Path| {
                let path = set.join("DICOMDIR");
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[first_at..first_at + 4].copy_from_slice(&7u32.to_le_bytes());
                std::fs::write(path, bytes).unwrap();
            },
            &["is 7, which is not the start of a record"],
        ),
        (
            "unknown",
            &|set: &Path| patch_bytes(&set.join("DICOMDIR"), b"IMAGE ", b"BOGUS "),
            &["unknown record type \"BOGUS\""],
        ),
    ];
    for (name, break_it, expected) in cases {
        let set = work.path().join(name);
        copy_tree(&good, &set);
        break_it(&set);
        let data = fresh_store(&work.path().join(format!("{name}-store")));
        let import = sluice(&["media", "import", set.to_str().unwrap()], &config, &data);
        let message = text(&import);
        assert_eq!(import.status.code(), Some(1), "{name}: {message}");
        for fragment in expected {
            assert!(message.contains(fragment), "{name}: {fragment}: {message}");
        }
        assert!(
            message.contains("nothing was imported"),
            "{name}: {message}"
        );
        assert!(stored(&data).is_empty(), "{name}");
    }
}

#[test]
fn a_plain_directory_imports_its_part10_files_and_skips_the_rest() {
    let work = tempfile::tempdir().unwrap();
    let config = accept_all(work.path());
    let dir = work.path().join("plain");
    let files = peer_files(&dir.join("a"), 3);
    let nested = dir.join("b").join("c");
    std::fs::create_dir_all(&nested).unwrap();
    let implicit = pydicom_test_file("MR_small_implicit.dcm");
    std::fs::copy(&implicit, nested.join("mr.dcm")).unwrap();
    std::fs::write(dir.join("README.txt"), "not DICOM").unwrap();
    std::fs::write(nested.join("short"), [0u8; 10]).unwrap();
    let data = fresh_store(work.path());
    let import = sluice(&["media", "import", dir.to_str().unwrap()], &config, &data);
    let report = text(&import);
    assert!(import.status.success(), "{report}");
    assert!(report.contains("imported 4 of 4 instances"), "{report}");
    assert!(report.contains("2 files skipped"), "{report}");
    assert!(
        report.contains("README.txt: not a Part 10 file"),
        "{report}"
    );
    let mut all = files.clone();
    all.push(implicit);
    let back: BTreeSet<String> = stored(&data).into_iter().map(|(sop, _)| sop).collect();
    assert_eq!(back, sops(&all));
    // By Study Instance UID, read from the data sets.
    let study = values(&files[..1], "StudyInstanceUID").remove(0);
    let only = fresh_store(&work.path().join("only"));
    let import = sluice(
        &["media", "import", dir.to_str().unwrap(), "--study", &study],
        &config,
        &only,
    );
    assert!(import.status.success(), "{}", text(&import));
    assert!(
        stdout(&import).contains("imported 1 of 1 instances; 0 duplicates"),
        "{}",
        text(&import)
    );
    assert!(
        stdout(&import).contains("3 not chosen"),
        "{}",
        text(&import)
    );
}

/// `count` peer files written under `work/peer` and `sluice media import`ed
/// with `config` into a fresh store: the files, the store, the command's output.
fn import_peer_files(work: &Path, config: &Path, count: usize) -> (Vec<PathBuf>, PathBuf, Output) {
    let files = peer_files(&work.join("peer"), count);
    let data = fresh_store(work);
    let import = sluice(
        &["media", "import", work.join("peer").to_str().unwrap()],
        config,
        &data,
    );
    (files, data, import)
}

/// An export that fails part way (a stored file gone) says which file and
/// leaves no DICOMDIR, neither the final one nor its `DICOMDIR.tmp`.
#[test]
fn an_export_that_fails_part_way_leaves_no_dicomdir() {
    let work = tempfile::tempdir().unwrap();
    // Files: the failure is a stored file removed from objects/.
    let config = accept_all_with(work.path(), "layout = \"files\"\n");
    let (files, data, import) = import_peer_files(work.path(), &config, 3);
    assert!(import.status.success(), "{}", text(&import));
    assert_eq!(stored(&data).len(), files.len());
    let objects = crate::ingest::files_under(&data.join("objects"));
    let gone = objects.last().expect("stored files");
    std::fs::remove_file(gone).unwrap();

    let out = work.path().join("cd");
    let studies: BTreeSet<String> = values(&files, "StudyInstanceUID").into_iter().collect();
    let mut args = vec!["media", "export", "--out", out.to_str().unwrap()];
    for study in &studies {
        args.extend(["--study", study.as_str()]);
    }
    let export = sluice(&args, &config, &data);
    assert_eq!(export.status.code(), Some(1), "{}", text(&export));
    assert!(
        text(&export).contains(&gone.display().to_string()),
        "{}",
        text(&export)
    );
    assert!(out.exists(), "the export started");
    assert!(!out.join("DICOMDIR").exists());
    assert!(!out.join("DICOMDIR.tmp").exists(), "{}", text(&export));
}

/// The embedded engine of an import admits the import's own association
/// only, whatever the site's configuration admits: an allow list and
/// access rules naming other AEs do not refuse it, and the served
/// configuration's metrics port (taken here by another listener) is not
/// opened.
#[test]
fn an_import_under_a_site_configuration_serves_only_itself() {
    let work = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_port = taken.local_addr().unwrap().port();
    let config = work.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\ncalling_ae_allow_list = [\"CT1\"]\n\
             [accept]\nsop_classes = \"all-storage\"\ntransfer_syntaxes = \"all\"\n\
             [storage]\nfree_space_floor = \"0\"\n\
             [metrics]\nmetrics_port = {metrics_port}\n\
             [[access.rule]]\ncalling_ae = \"CT1\"\nservices = [\"store\"]\n"
        ),
    )
    .unwrap();
    let (files, data, import) = import_peer_files(work.path(), &config, 2);
    assert!(import.status.success(), "{}", text(&import));
    assert!(
        stdout(&import).contains("imported 2 of 2 instances"),
        "{}",
        text(&import)
    );
    let back: BTreeSet<String> = stored(&data).into_iter().map(|(sop, _)| sop).collect();
    assert_eq!(back, sops(&files));
}
