//! The transcoder against parsers and converters that are not ours:
//! random data sets written by dicom-object in Implicit VR read back the
//! same after transcoding; real files transcoded by Sluice and by DCMTK's
//! `dcmconv +te` hold the same elements; files transcoded there and back
//! compare equal in pydicom.

use std::borrow::Cow;
use std::path::Path;

use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag as DicomTag, VR};
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries;
use proptest::prelude::*;
use sluice_media::part10::{file_header, read_file_meta, FileMeta};
use sluice_media::{transcode, Transcoder};
use sluice_net::scan::DatasetEncoding;

use crate::support::{pydicom, pydicom_test_file, run, Scratch, IMPLEMENTATION_CLASS_UID};

/// Compares two objects element by element: tags, value bytes, sequences
/// item by item; VRs of public elements (private ones may be UN on one
/// side and known to the other's dictionary). Group lengths are ignored
/// (the transcoder drops them).
fn assert_same(left: &InMemDicomObject, right: &InMemDicomObject, path: &str) {
    let keep = |element: &&InMemElement| element.header().tag.element() != 0;
    let left_elements: Vec<&InMemElement> = left.iter().filter(keep).collect();
    let right_elements: Vec<&InMemElement> = right.iter().filter(keep).collect();
    let tags = |elements: &[&InMemElement]| -> Vec<DicomTag> {
        elements
            .iter()
            .map(|element| element.header().tag)
            .collect()
    };
    assert_eq!(tags(&left_elements), tags(&right_elements), "{path}");
    for (a, b) in left_elements.iter().zip(&right_elements) {
        let tag = a.header().tag;
        let here = format!("{path}{tag}");
        let private = tag.group() % 2 == 1;
        match (a.value(), b.value()) {
            (Value::Sequence(x), Value::Sequence(y)) => {
                assert_eq!(x.items().len(), y.items().len(), "{here}");
                for (index, (i, j)) in x.items().iter().zip(y.items()).enumerate() {
                    assert_same(i, j, &format!("{here}[{index}]."));
                }
            }
            (Value::PixelSequence(x), Value::PixelSequence(y)) => {
                assert_eq!(x.fragments(), y.fragments(), "{here}");
            }
            (Value::Primitive(x), Value::Primitive(y)) => {
                if !private {
                    assert_eq!(a.vr(), b.vr(), "{here}");
                }
                assert_eq!(trim(x.to_bytes()), trim(y.to_bytes()), "{here}");
            }
            (x, y) if private => {
                // A private sequence known to one side's dictionary and UN
                // of undefined length on the other: read as a sequence by
                // both here, checked above; anything else is a mismatch.
                panic!("{here}: {x:?} != {y:?}")
            }
            (x, y) => panic!("{here}: {x:?} != {y:?}"),
        }
    }
}

fn trim(bytes: Cow<'_, [u8]>) -> Vec<u8> {
    let mut bytes = bytes.into_owned();
    while bytes.last().is_some_and(|byte| *byte == 0 || *byte == b' ') {
        bytes.pop();
    }
    bytes
}

fn read(bytes: &[u8], encoding: DatasetEncoding) -> InMemDicomObject {
    let syntax = match encoding {
        DatasetEncoding::ImplicitVrLittleEndian => entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        DatasetEncoding::ExplicitVrLittleEndian => entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        DatasetEncoding::ExplicitVrBigEndian => entries::EXPLICIT_VR_BIG_ENDIAN.erased(),
    };
    InMemDicomObject::read_dataset_with_ts(bytes, &syntax).unwrap()
}

#[derive(Debug, Clone)]
enum Spec {
    Text(u16, u16, VR, String),
    Short(u16, u16, VR, u16),
    Bytes(u16, u16, VR, Vec<u8>),
    Sequence(u16, u16, Vec<Vec<Spec>>),
}

fn leaf() -> impl Strategy<Value = Spec> {
    prop_oneof![
        "[A-Z]{0,15}".prop_map(|text| Spec::Text(0x0008, 0x0060, VR::CS, text)),
        "[A-Za-z^ ]{0,40}".prop_map(|text| Spec::Text(0x0010, 0x0010, VR::PN, text)),
        "[0-9.]{1,40}".prop_map(|text| Spec::Text(0x0008, 0x1155, VR::UI, text)),
        "[0-9]{1,8}\\.[0-9]{1,4}".prop_map(|text| Spec::Text(0x0018, 0x0050, VR::DS, text)),
        any::<u16>().prop_map(|value| Spec::Short(0x0028, 0x0010, VR::US, value)),
        (0u16..2).prop_map(|value| Spec::Short(0x0028, 0x0103, VR::US, value)),
        any::<u16>().prop_map(|value| Spec::Short(0x0028, 0x0106, VR::US, value)),
        "[A-Z ]{1,16}".prop_map(|text| Spec::Text(0x0029, 0x0010, VR::LO, text)),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|bytes| Spec::Bytes(
            0x0029,
            0x1001,
            VR::UN,
            bytes
        )),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(|mut bytes| {
            bytes.truncate(bytes.len() & !1);
            Spec::Bytes(0x7FE0, 0x0010, VR::OW, bytes)
        }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        proptest::collection::vec(proptest::collection::vec(inner, 0..4), 0..3)
            .prop_map(|items| Spec::Sequence(0x0008, 0x1140, items))
    })
}

fn build(specs: &[Spec]) -> InMemDicomObject {
    let mut object = InMemDicomObject::new_empty();
    for spec in specs {
        let element = match spec.clone() {
            Spec::Text(group, element, vr, text) => {
                DataElement::new(DicomTag(group, element), vr, PrimitiveValue::from(text))
            }
            Spec::Short(group, element, vr, value) => {
                DataElement::new(DicomTag(group, element), vr, PrimitiveValue::from(value))
            }
            Spec::Bytes(group, element, vr, bytes) => {
                DataElement::new(DicomTag(group, element), vr, PrimitiveValue::from(bytes))
            }
            Spec::Sequence(group, element, items) => DataElement::new(
                DicomTag(group, element),
                VR::SQ,
                Value::from(DataSetSequence::new(
                    items.iter().map(|item| build(item)).collect::<Vec<_>>(),
                    Length::UNDEFINED,
                )),
            ),
        };
        object.put(element);
    }
    object
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5EED_DA7A),
        ..ProptestConfig::default()
    })]
    /// dicom-object writes a random data set in Implicit VR; after
    /// transcoding to Explicit VR (and back), it reads the same elements.
    #[test]
    fn dicom_object_reads_the_same_elements_after_transcoding(
        specs in proptest::collection::vec(spec(), 0..12),
        chunk in 1usize..97,
    ) {
        let object = build(&specs);
        let mut implicit = Vec::new();
        object
            .write_dataset_with_ts(&mut implicit, &entries::IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        let mut transcoder = Transcoder::new(
            DatasetEncoding::ImplicitVrLittleEndian,
            DatasetEncoding::ExplicitVrLittleEndian,
        )
        .unwrap();
        let mut explicit = Vec::new();
        for piece in implicit.chunks(chunk) {
            transcoder.feed(piece, &mut explicit).unwrap();
        }
        transcoder.finish(&mut explicit).unwrap();
        let original = read(&implicit, DatasetEncoding::ImplicitVrLittleEndian);
        assert_same(&original, &read(&explicit, DatasetEncoding::ExplicitVrLittleEndian), "");
        let back = transcode(
            &explicit,
            DatasetEncoding::ExplicitVrLittleEndian,
            DatasetEncoding::ImplicitVrLittleEndian,
        )
        .unwrap();
        assert_same(&original, &read(&back, DatasetEncoding::ImplicitVrLittleEndian), "");
    }
}

/// Writes `dataset` (in `to`) as a Part 10 file.
fn write_part10(path: &Path, meta_of: &[u8], dataset: &[u8], to: &str) {
    let meta = read_file_meta(meta_of).unwrap();
    // nested_priv_SQ.dcm has empty UIDs in its meta group.
    let class = meta.sop_class_uid().filter(|uid| !uid.is_empty());
    let instance = meta
        .group
        .str(sluice_net::dimse::Tag(0x0002, 0x0003))
        .filter(|uid| !uid.is_empty());
    let mut bytes = file_header(&FileMeta {
        sop_class_uid: class.unwrap_or("1.2.840.10008.5.1.4.1.1.7"),
        sop_instance_uid: instance.unwrap_or("1.2.826.0.1.3680043.10.1234.99.2"),
        transfer_syntax_uid: to,
        implementation_class_uid: IMPLEMENTATION_CLASS_UID,
        implementation_version_name: "SLUICE_0_1",
    })
    .unwrap();
    bytes.extend_from_slice(dataset);
    std::fs::write(path, bytes).unwrap();
}

/// Native files of pydicom's test set, in the three native encodings,
/// with private sequences, UN sequences, overlays and RT and SR trees.
const NATIVE_FILES: &[&str] = &[
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "CT_small.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "reportsi.dcm",
    "waveform_ecg.dcm",
    "priv_SQ.dcm",
    "nested_priv_SQ.dcm",
    "UN_sequence.dcm",
    "examples_overlay.dcm",
    "examples_palette.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "liver_1frame.dcm",
];

fn encoding_of(file: &[u8]) -> (DatasetEncoding, usize) {
    let meta = read_file_meta(file).unwrap();
    let syntax = meta.transfer_syntax_uid().unwrap().to_owned();
    (
        DatasetEncoding::from_transfer_syntax(&syntax).unwrap(),
        meta.dataset_offset,
    )
}

#[test]
fn pydicom_reads_files_transcoded_there_and_back_as_the_originals() {
    let scratch = Scratch::new("transcode-pydicom");
    for name in NATIVE_FILES {
        let original = pydicom_test_file(name);
        let file = std::fs::read(&original).unwrap();
        let (encoding, start) = encoding_of(&file);
        let explicit = transcode(
            &file[start..],
            encoding,
            DatasetEncoding::ExplicitVrLittleEndian,
        )
        .unwrap();
        let implicit = transcode(
            &explicit,
            DatasetEncoding::ExplicitVrLittleEndian,
            DatasetEncoding::ImplicitVrLittleEndian,
        )
        .unwrap();
        for (suffix, bytes, syntax) in [
            ("ele", &explicit, "1.2.840.10008.1.2.1"),
            ("ile", &implicit, "1.2.840.10008.1.2"),
        ] {
            let path = scratch.path().join(format!("{name}.{suffix}"));
            write_part10(&path, &file, bytes, syntax);
            let report = pydicom(&[
                "compare",
                original.to_str().unwrap(),
                path.to_str().unwrap(),
            ]);
            assert!(
                report.trim_end().ends_with(" 0 differences"),
                "{name} -> {suffix}:\n{report}"
            );
        }
    }
}

#[test]
fn dcmconv_and_sluice_write_the_same_elements() {
    let scratch = Scratch::new("transcode-dcmconv");
    // nested_priv_SQ.dcm uses the illegal group 0001: DCMTK writes its
    // private sequences as SQ, which dicom-object cannot read back;
    // UN_sequence.dcm holds a UN of undefined length, whose Implicit VR items
    // (PS3.5 §6.2.2) dicom-object 0.10 reads as Explicit VR. pydicom reads
    // both (the test above).
    let skipped = ["nested_priv_SQ.dcm", "UN_sequence.dcm"];
    for name in NATIVE_FILES.iter().filter(|name| !skipped.contains(*name)) {
        let original = pydicom_test_file(name);
        let file = std::fs::read(&original).unwrap();
        let (encoding, start) = encoding_of(&file);
        let ours = transcode(
            &file[start..],
            encoding,
            DatasetEncoding::ExplicitVrLittleEndian,
        )
        .unwrap();
        let theirs_path = scratch.path().join(format!("{name}.dcmtk"));
        let (ok, stdout, stderr) = run(
            "/usr/bin/dcmconv",
            &[
                "+te",
                original.to_str().unwrap(),
                theirs_path.to_str().unwrap(),
            ],
            None,
        );
        assert!(ok, "dcmconv {name}: {stdout}{stderr}");
        let theirs_file = std::fs::read(&theirs_path).unwrap();
        let (theirs_encoding, theirs_start) = encoding_of(&theirs_file);
        assert_eq!(theirs_encoding, DatasetEncoding::ExplicitVrLittleEndian);
        let theirs = read(&theirs_file[theirs_start..], theirs_encoding);
        assert_same(
            &theirs,
            &read(&ours, DatasetEncoding::ExplicitVrLittleEndian),
            &format!("{name}: "),
        );
    }
}
