//! Export round trips: pydicom's test files (Implicit VR, Explicit VR LE and
//! BE, compressed, deflated; images, RT objects, SR, waveform) exported into
//! File-sets; the DICOMDIR read back by Sluice, pydicom's FileSet, DCMTK's
//! dcmdump and dicom3tools' dciodvfy; transcoded files compared element by
//! element with their originals by pydicom.

use std::collections::BTreeSet;
use std::path::PathBuf;

use sluice_media::{read_dicomdir, Action, Profile, ProfileRefusal, Refusal};

use crate::support::{export, pydicom, pydicom_test_file, run, Scratch};

const FILES: &[&str] = &[
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "waveform_ecg.dcm",
    "examples_overlay.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "MR_small_RLE.dcm",
    "image_dfl.dcm",
];

fn files() -> Vec<PathBuf> {
    FILES.iter().map(|name| pydicom_test_file(name)).collect()
}

fn names(paths: &[(PathBuf, impl Sized)]) -> BTreeSet<String> {
    paths
        .iter()
        .map(|(path, _)| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn std_gen_cd_export_is_read_by_sluice_pydicom_dcmtk_and_dciodvfy() {
    let scratch = Scratch::new("export-cd");
    let out = scratch.path();
    // Chunks of 256 bytes: most links land in bytes already written.
    let exported = export(&files(), out, Profile::GeneralCd, 256);
    assert!(!exported.end.patches.is_empty());
    // Compressed and deflated files are refused, with the reason.
    let refused = names(&exported.refused);
    assert_eq!(
        refused,
        [
            "JPEG2000.dcm",
            "MR_small_RLE.dcm",
            "SC_rgb_jpeg_dcmtk.dcm",
            "image_dfl.dcm"
        ]
        .map(String::from)
        .into_iter()
        .collect()
    );
    for (path, refusal) in &exported.refused {
        assert!(
            matches!(
                refusal,
                Refusal::Profile(ProfileRefusal::TransferSyntaxNotAllowed { .. })
            ),
            "{path:?}: {refusal}"
        );
    }
    assert_eq!(exported.placed.len(), FILES.len() - 4);
    let transcoded = exported
        .placed
        .iter()
        .filter(|(_, placement)| matches!(placement.action, Action::Transcode { .. }))
        .count();
    assert!(
        transcoded >= 3,
        "implicit and big endian files are transcoded: {transcoded}"
    );

    // Sluice reads it back: the same instances, File IDs and no issue.
    let directory = read_dicomdir(&std::fs::read(out.join("DICOMDIR")).unwrap()).unwrap();
    assert!(directory.issues.is_empty(), "{:#?}", directory.issues);
    assert_eq!(directory.file_set_id, "SLUICE_TEST");
    assert_eq!(directory.instances.len(), exported.placed.len());
    for (instance, (_, placement)) in directory.instances.iter().zip(&exported.placed) {
        assert_eq!(instance.file_id, placement.file_id);
        assert_eq!(instance.transfer_syntax_uid, placement.transfer_syntax_uid);
        assert_eq!(instance.record_type, placement.record_type.name());
    }
    let record_types: BTreeSet<&str> = directory
        .instances
        .iter()
        .map(|instance| instance.record_type.as_str())
        .collect();
    for expected in ["IMAGE", "RT PLAN", "RT DOSE", "SR DOCUMENT", "WAVEFORM"] {
        assert!(
            record_types.contains(expected),
            "{expected}: {record_types:?}"
        );
    }

    // pydicom's FileSet: every instance, at the same path, loads; every
    // file is Explicit VR Little Endian.
    let lines = pydicom(&["read", out.to_str().unwrap()]);
    let mut seen = BTreeSet::new();
    for line in lines.lines() {
        let path = json_field(line, "path");
        let transfer_syntax = json_field(line, "transfer_syntax");
        assert_eq!(transfer_syntax, "1.2.840.10008.1.2.1", "{line}");
        assert_eq!(
            json_field(line, "sop_uid"),
            json_field(line, "loaded_sop_uid")
        );
        seen.insert(path);
    }
    let expected: BTreeSet<String> = exported
        .placed
        .iter()
        .map(|(_, placement)| placement.file_id.components().join("/"))
        .collect();
    assert_eq!(seen, expected);

    // DCMTK reads the DICOMDIR without an error or warning.
    let dicomdir = out.join("DICOMDIR");
    let (ok, stdout, stderr) = run("/usr/bin/dcmdump", &[dicomdir.to_str().unwrap()], None);
    assert!(
        ok && !stderr.contains("E:") && !stderr.contains("W:"),
        "{stderr}"
    );
    assert!(stdout.contains("DirectoryRecordType"), "{stdout}");

    // dciodvfy finds no error in the Basic Directory IOD.
    let (_, stdout, stderr) = run("/usr/bin/dciodvfy", &[dicomdir.to_str().unwrap()], None);
    let errors: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|line| line.starts_with("Error"))
        .collect();
    assert!(errors.is_empty(), "{}\n{}", stdout, stderr);

    // Transcoded files hold the same elements as their originals.
    for (original, placement) in &exported.placed {
        let mut copy = out.to_path_buf();
        for component in placement.file_id.components() {
            copy.push(component);
        }
        let report = pydicom(&[
            "compare",
            original.to_str().unwrap(),
            copy.to_str().unwrap(),
        ]);
        assert!(
            report.trim_end().ends_with(" 0 differences"),
            "{original:?}:\n{report}"
        );
    }
}

#[test]
fn compressed_profiles_take_their_syntaxes_as_stored() {
    let scratch = Scratch::new("export-jpeg");
    let out = scratch.path();
    let exported = export(&files(), out, Profile::GeneralDvdJpeg, 1 << 20);
    let placed = names(&exported.placed);
    assert!(placed.contains("SC_rgb_jpeg_dcmtk.dcm"));
    assert!(!placed.contains("JPEG2000.dcm"));
    let jpeg = exported
        .placed
        .iter()
        .find(|(path, _)| path.ends_with("SC_rgb_jpeg_dcmtk.dcm"))
        .unwrap();
    assert_eq!(jpeg.1.action, Action::AsStored);
    let scratch = Scratch::new("export-j2k");
    let exported = export(
        &files(),
        scratch.path(),
        Profile::GeneralUsbJpeg2000,
        1 << 20,
    );
    assert!(names(&exported.placed).contains("JPEG2000.dcm"));
    let directory =
        read_dicomdir(&std::fs::read(scratch.path().join("DICOMDIR")).unwrap()).unwrap();
    assert!(directory.issues.is_empty(), "{:#?}", directory.issues);
    let lines = pydicom(&["read", scratch.path().to_str().unwrap()]);
    assert_eq!(lines.lines().count(), exported.placed.len());
}

/// A string field of a one-line JSON object (the script's output).
pub fn json_field(line: &str, field: &str) -> String {
    let key = format!("\"{field}\": \"");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("{field} in {line}"))
        + key.len();
    let end = line[start..].find('"').unwrap() + start;
    line[start..end].to_owned()
}
