//! Real files from outside (issue #19, item 10): pydicom's own test files
//! (the package ships them; 78 files, real-world quirks included), each
//! sent unchanged on an association of its own by
//! `tests/fixtures/raw_scu.py` to a server accepting every storage SOP
//! class and transfer syntax, with the outcome Sluice decided for each:
//! stored byte-exact, stored with a warning and flagged (`sluice flagged`),
//! refused with a status and why, or not sendable as a C-STORE at all. The
//! table is the validation policy's worked example (docs/design/ingest.md,
//! "Validation"): change a default there and a row here says so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sluice_tests::{part10_meta_value, python, run};

use crate::answers::raw_scu;
use crate::serve::Served;

/// What becomes of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// Stored (exported, or in quarantine/ when an earlier file had the
    /// same UIDs), its data set byte for byte as sent.
    Stored,
    /// Stored byte for byte, and flagged with this finding.
    Flagged(&'static str),
    /// Refused with this status; the Error Comment contains the text.
    Refused(&'static str, &'static str),
    /// No SOP Class UID or SOP Instance UID anywhere in the file: a C-STORE
    /// cannot be formed (the sender's problem, not the archive's).
    Unsendable,
}

use Expected::{Flagged, Refused, Stored, Unsendable};

/// Missing Study Instance UID: these are fragments (pydicom builds them to
/// test one codec or one parser path), with no place in a patient/study/
/// series hierarchy; Sluice keys every instance by its Study and Series
/// Instance UIDs and invents none (no coercion), so it refuses them, always.
const NO_STUDY: Expected = Refused("A900", "(0020,000D) is missing");

const EXPECTED: &[(&str, Expected)] = &[
    ("693_J2KI.dcm", Stored),
    ("CT_small.dcm", Stored),
    ("ExplVR_BigEnd.dcm", Stored),
    // No file meta group: the data set is the whole file.
    ("ExplVR_BigEndNoMeta.dcm", Stored),
    ("ExplVR_LitEndNoMeta.dcm", Stored),
    ("GDCMJ2K_TextGBR.dcm", Stored),
    ("J2K_pixelrep_mismatch.dcm", Stored),
    ("JPEG-lossy.dcm", Stored),
    ("JPEG2000-embedded-sequence-delimiter.dcm", Stored),
    ("JPEG2000.dcm", Stored),
    ("JPEGLSNearLossless_08.dcm", NO_STUDY),
    ("JPEGLSNearLossless_16.dcm", NO_STUDY),
    ("JPGExtended.dcm", Stored),
    ("MR_small.dcm", Stored),
    ("MR_small_RLE.dcm", Stored),
    ("MR_small_bigendian.dcm", Stored),
    ("MR_small_expb.dcm", Stored),
    ("MR_small_implicit.dcm", Stored),
    ("MR_small_jp2klossless.dcm", Stored),
    ("MR_small_jpeg_ls_lossless.dcm", Stored),
    // 128 bytes of padding after the image (validation.pixel_data_trailing_bytes,
    // lenient): the image is whole.
    (
        "MR_small_padded.dcm",
        Flagged("pixel data is 8320 bytes, the image attributes imply 8192"),
    ),
    // Cut inside Pixel Data: the image is not all there.
    ("MR_truncated.dcm", Refused("C010", "truncated")),
    ("SC_jpeg_no_color_transform.dcm", Stored),
    ("SC_jpeg_no_color_transform_2.dcm", Stored),
    ("SC_rgb_dcmtk_+eb+cr.dcm", Stored),
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", Stored),
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", Stored),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", Stored),
    ("SC_rgb_dcmtk_+eb+cy+s2.dcm", Stored),
    ("SC_rgb_dcmtk_+eb+cy+s4.dcm", Stored),
    ("SC_rgb_gdcm_KY.dcm", Stored),
    ("SC_rgb_jls_lossy_line.dcm", NO_STUDY),
    ("SC_rgb_jls_lossy_sample.dcm", NO_STUDY),
    // Labelled JPEG Baseline (explicit VR) but encoded Implicit VR: the
    // data set does not parse in its transfer syntax (DCMTK's dcmdump
    // fails on it too).
    (
        "SC_rgb_jpeg.dcm",
        Refused("C010", "element (0008,0008) at offset 0"),
    ),
    ("SC_rgb_jpeg_app14_dcmd.dcm", Stored),
    ("SC_rgb_jpeg_dcmd.dcm", Stored),
    ("SC_rgb_jpeg_dcmtk.dcm", Stored),
    ("SC_rgb_jpeg_gdcm.dcm", Stored),
    ("SC_rgb_jpeg_lossy_gdcm.dcm", Stored),
    ("SC_rgb_rle.dcm", Stored),
    ("SC_rgb_rle_16bit.dcm", Stored),
    ("SC_rgb_rle_16bit_2frame.dcm", Stored),
    ("SC_rgb_rle_2frame.dcm", Stored),
    ("SC_rgb_rle_32bit.dcm", Stored),
    ("SC_rgb_rle_32bit_2frame.dcm", Stored),
    ("SC_rgb_small_odd.dcm", Stored),
    ("SC_rgb_small_odd_big_endian.dcm", Stored),
    ("SC_rgb_small_odd_jpeg.dcm", Stored),
    ("SC_ybr_full_422_uncompressed.dcm", Stored),
    // No SOP Class or SOP Instance UID in the data set (the command's
    // stand, validation.sop_uids_missing), but no Study either.
    ("UN_sequence.dcm", NO_STUDY),
    ("badVR.dcm", Stored),
    ("empty_charset_LEI.dcm", Unsendable),
    ("examples_jpeg2k.dcm", Stored),
    ("examples_overlay.dcm", Stored),
    ("examples_palette.dcm", Stored),
    ("examples_rgb_color.dcm", Stored),
    ("examples_ybr_color.dcm", Stored),
    // Deflated, followed by a gzip trailer (CRC-32, size): C010 "cannot be
    // inflated" before; the trailer is recognised and ignored.
    ("image_dfl.dcm", Stored),
    ("liver_1frame.dcm", Stored),
    ("liver_expb_1frame.dcm", Stored),
    ("meta_missing_tsyntax.dcm", Unsendable),
    ("nested_priv_SQ.dcm", Unsendable),
    ("no_meta.dcm", Unsendable),
    ("no_meta_group_length.dcm", NO_STUDY),
    ("priv_SQ.dcm", NO_STUDY),
    ("reportsi.dcm", Stored),
    ("reportsi_with_empty_number_tags.dcm", Stored),
    ("rtdose.dcm", Stored),
    ("rtdose_1frame.dcm", Stored),
    ("rtdose_expb.dcm", Stored),
    ("rtdose_expb_1frame.dcm", Stored),
    ("rtdose_rle.dcm", Stored),
    ("rtdose_rle_1frame.dcm", Stored),
    ("rtplan.dcm", Stored),
    // Cut in the middle of an element.
    ("rtplan_truncated.dcm", Refused("C010", "truncated")),
    ("rtstruct.dcm", Stored),
    ("test-SR.dcm", Stored),
    ("waveform_ecg.dcm", Stored),
];

/// The directory of pydicom's test files.
fn pydicom_test_files() -> PathBuf {
    let output = run(
        Command::new(python()).args([
            "-c",
            "import pydicom.data, os; print(os.path.join(os.path.dirname(pydicom.data.__file__), 'test_files'))",
        ]),
        Duration::from_secs(60),
    );
    assert!(output.status.success());
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

#[test]
fn pydicom_test_files_are_stored_flagged_or_refused_as_decided() {
    let dir = pydicom_test_files();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "dcm"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected_names: Vec<&str> = EXPECTED.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, expected_names, "pydicom's test files changed");

    let served = Served::start(
        "auto",
        &["--sop-classes", "all-storage", "--transfer-syntaxes", "all"],
    );
    let out = raw_scu(served.port, &json!({"calling": "PYDICOM", "files": files}));
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), EXPECTED.len());
    // What is stored, by SOP Instance UID: every data set kept under it.
    let mut stored: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let quarantined = served
        .all_files("quarantine")
        .into_iter()
        .map(|path| std::fs::read(path).unwrap());
    for bytes in served.stored().into_values().chain(quarantined) {
        let sop = part10_meta_value(&bytes, 0x0002, 0x0003);
        stored
            .entry(sop)
            .or_default()
            .push(sluice_tests::part10_dataset(&bytes).to_vec());
    }
    let flagged = served.flagged();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for ((name, expected), result) in EXPECTED.iter().zip(results) {
        assert_eq!(result["name"].as_str(), Some(*name));
        let status = result["status"].as_str();
        let comment = result["error_comment"].as_str().unwrap_or_default();
        let kind = match expected {
            Stored | Flagged(_) => {
                assert_eq!(status, Some("0000"), "{name}: {result}");
                let instance = result["instance"].as_str().unwrap();
                let offset = result["offset"].as_u64().unwrap() as usize;
                let sent = &std::fs::read(dir.join(name)).unwrap()[offset..];
                assert!(
                    stored
                        .get(instance)
                        .is_some_and(|kept| kept.iter().any(|data_set| data_set == sent)),
                    "{name}: its data set is not stored byte for byte"
                );
                let listed = flagged
                    .lines()
                    .any(|line| line.starts_with(instance) && line.contains("PYDICOM"));
                if let Flagged(finding) = expected {
                    assert!(
                        listed && flagged.contains(finding),
                        "{name}: not flagged with {finding:?}:\n{flagged}"
                    );
                    "stored with a warning, flagged"
                } else {
                    "stored byte-exact"
                }
            }
            Refused(want_status, reason) => {
                assert_eq!(status, Some(*want_status), "{name}: {result}");
                assert!(comment.contains(reason), "{name}: {comment:?}");
                "refused"
            }
            Unsendable => {
                assert!(result["unsendable"].is_string(), "{name}: {result}");
                "not sendable as a C-STORE"
            }
        };
        *tally.entry(kind).or_default() += 1;
    }
    eprintln!("pydicom's {} test files: {tally:?}", EXPECTED.len());
}
