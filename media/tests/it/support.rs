//! Test support: scratch directories, the external tools (pydicom, DCMTK,
//! dicom3tools) run as child processes (a missing tool fails the test), and
//! `export`, the loop the engine's `sluice media export` runs over stored
//! files: read the head, add to the writer, copy or transcode the file,
//! write the DICOMDIR and apply its patches.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_media::part10::{file_header, read_file_meta, FileMeta};
use sluice_media::{
    read_keys, Action, FileSetEnd, FileSetOptions, FileSetWriter, InstanceKeys, Placement, Profile,
    Refusal, Transcoder,
};
use sluice_net::scan::DatasetEncoding;

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/pydicom_media.py");
pub const IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.1234.1";

/// pydicom's test files.
pub fn pydicom_test_file(name: &str) -> PathBuf {
    let output = Command::new("python3")
        .args([
            "-c",
            "import pydicom.data, os; print(os.path.dirname(pydicom.data.__file__))",
        ])
        .output()
        .expect("python3 with pydicom must be installed");
    assert!(output.status.success(), "pydicom must be installed");
    let root = String::from_utf8(output.stdout).unwrap();
    Path::new(root.trim()).join("test_files").join(name)
}

/// A fresh directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "sluice-media-{name}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("SLUICE_MEDIA_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs a program; returns (success, stdout, stderr).
pub fn run(program: &str, args: &[&str], directory: Option<&Path>) -> (bool, String, String) {
    let mut command = Command::new(program);
    command.args(args);
    if let Some(directory) = directory {
        command.current_dir(directory);
    }
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{program} must be installed: {error}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn pydicom(args: &[&str]) -> String {
    let mut all = vec![SCRIPT];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = run("python3", &all, None);
    assert!(ok, "pydicom script {args:?} failed: {stderr}");
    stdout
}

/// What an export did.
#[derive(Debug)]
pub struct Exported {
    pub placed: Vec<(PathBuf, Placement)>,
    pub refused: Vec<(PathBuf, Refusal)>,
    pub end: FileSetEnd,
}

pub fn options(profile: Profile) -> FileSetOptions {
    FileSetOptions {
        profile,
        file_set_id: "SLUICE_TEST".into(),
        file_set_uid: "1.2.826.0.1.3680043.10.1234.99.1".into(),
        implementation_class_uid: IMPLEMENTATION_CLASS_UID.into(),
        implementation_version_name: "SLUICE_0_1".into(),
    }
}

/// Exports Part 10 files into a File-set under `out`; the DICOMDIR is
/// written in chunks of at most `chunk` bytes as the writer hands them out,
/// so links into written bytes come back as patches.
pub fn export(files: &[PathBuf], out: &Path, profile: Profile, chunk: usize) -> Exported {
    let mut writer = FileSetWriter::new(&options(profile)).unwrap();
    let mut dicomdir = fs::File::create(out.join("DICOMDIR")).unwrap();
    let mut placed = Vec::new();
    let mut refused = Vec::new();
    for path in files {
        let file = fs::read(path).unwrap();
        let meta = read_file_meta(&file).unwrap();
        let syntax = meta.transfer_syntax_uid().unwrap().to_owned();
        let dataset = &file[meta.dataset_offset..];
        // Decide first: a refused instance's keys need not be read.
        let class = meta.sop_class_uid().unwrap().to_owned();
        if let Err(refusal) = profile.decide(&class, &syntax) {
            eprintln!("refused {path:?}: {refusal}");
            refused.push((path.clone(), Refusal::Profile(refusal)));
            continue;
        }
        let encoding = DatasetEncoding::from_transfer_syntax(&syntax).unwrap();
        let keys = read_keys(dataset, encoding).unwrap();
        match writer.add(&keys, &syntax) {
            Ok(placement) => {
                let mut target = out.to_path_buf();
                for component in placement.file_id.components() {
                    target.push(component);
                }
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                match placement.action {
                    Action::AsStored => {
                        fs::write(&target, &file).unwrap();
                    }
                    Action::Transcode { from } => {
                        let mut bytes = file_header(&FileMeta {
                            sop_class_uid: keys.sop_class_uid(),
                            sop_instance_uid: keys.sop_instance_uid(),
                            transfer_syntax_uid: &placement.transfer_syntax_uid,
                            implementation_class_uid: IMPLEMENTATION_CLASS_UID,
                            implementation_version_name: "SLUICE_0_1",
                        })
                        .unwrap();
                        let mut transcoder = Transcoder::to_explicit_little_endian(from);
                        // In pieces, as a file is read.
                        for piece in dataset.chunks(4096) {
                            transcoder.feed(piece, &mut bytes).unwrap();
                        }
                        transcoder.finish(&mut bytes).unwrap();
                        fs::write(&target, &bytes).unwrap();
                    }
                }
                placed.push((path.clone(), placement));
            }
            Err(refusal) => {
                eprintln!("refused {path:?}: {refusal}");
                refused.push((path.clone(), refusal))
            }
        }
        if writer.pending_bytes() >= chunk {
            dicomdir.write_all(&writer.take_bytes()).unwrap();
        }
    }
    let end = writer.finish();
    dicomdir.write_all(&end.tail).unwrap();
    for patch in &end.patches {
        dicomdir.seek(SeekFrom::Start(patch.offset)).unwrap();
        dicomdir.write_all(&patch.bytes).unwrap();
    }
    dicomdir.sync_all().unwrap();
    assert_eq!(
        fs::metadata(out.join("DICOMDIR")).unwrap().len(),
        end.length
    );
    Exported {
        placed,
        refused,
        end,
    }
}

/// The directory keys of a synthetic CT instance (no file behind it).
pub fn synthetic_keys(patient: u32, study: u32, series: u32, instance: u32) -> InstanceKeys {
    use sluice_net::dimse::dataset::{SmallDataset, Vr};
    use sluice_net::dimse::Tag;
    let root = "1.2.826.0.1.3680043.10.1234.77";
    let mut dataset = SmallDataset::new();
    dataset.put_str(
        Tag(0x0008, 0x0016),
        Some(Vr::UI),
        "1.2.840.10008.5.1.4.1.1.2",
    );
    dataset.put_str(
        Tag(0x0008, 0x0018),
        Some(Vr::UI),
        &format!("{root}.3.{patient}.{study}.{series}.{instance}"),
    );
    dataset.put_str(Tag(0x0008, 0x0020), Some(Vr::DA), "20240102");
    dataset.put_str(Tag(0x0008, 0x0030), Some(Vr::TM), "101010");
    dataset.put_str(Tag(0x0008, 0x0050), Some(Vr::SH), &format!("ACC{study}"));
    dataset.put_str(Tag(0x0008, 0x0060), Some(Vr::CS), "CT");
    dataset.put_str(Tag(0x0008, 0x1030), Some(Vr::LO), "Chest");
    dataset.put_str(
        Tag(0x0010, 0x0010),
        Some(Vr::PN),
        &format!("Doe^Patient{patient}"),
    );
    dataset.put_str(Tag(0x0010, 0x0020), Some(Vr::LO), &format!("PID{patient}"));
    dataset.put_str(
        Tag(0x0020, 0x000D),
        Some(Vr::UI),
        &format!("{root}.1.{patient}.{study}"),
    );
    dataset.put_str(
        Tag(0x0020, 0x000E),
        Some(Vr::UI),
        &format!("{root}.2.{patient}.{study}.{series}"),
    );
    dataset.put_str(Tag(0x0020, 0x0010), Some(Vr::SH), &format!("{study}"));
    dataset.put_str(Tag(0x0020, 0x0011), Some(Vr::IS), &format!("{series}"));
    dataset.put_str(Tag(0x0020, 0x0013), Some(Vr::IS), &format!("{instance}"));
    InstanceKeys::from_dataset(dataset).unwrap()
}

/// Synthetic instances, grouped by patient, study and series in that order.
pub fn synthetic_instances(
    patients: u32,
    studies: u32,
    series: u32,
    instances: u32,
) -> impl Iterator<Item = InstanceKeys> {
    (1..=patients).flat_map(move |patient| {
        (1..=studies).flat_map(move |study| {
            (1..=series).flat_map(move |one| {
                (1..=instances).map(move |instance| synthetic_keys(patient, study, one, instance))
            })
        })
    })
}

/// A DICOMDIR of synthetic instances, written whole in memory.
pub fn synthetic_dicomdir(patients: u32, studies: u32, series: u32, instances: u32) -> Vec<u8> {
    let mut writer = FileSetWriter::new(&options(Profile::GeneralCd)).unwrap();
    for keys in synthetic_instances(patients, studies, series, instances) {
        writer.add(&keys, "1.2.840.10008.1.2.1").unwrap();
    }
    let end = writer.finish();
    assert!(end.patches.is_empty());
    end.tail
}
