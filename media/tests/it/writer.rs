//! The writer's decisions, one by one: duplicates and private classes
//! refused, missing Type 1 keys invented and reported, Specific Character
//! Set carried into the records that need it, instances of one series
//! spread over the input linked under one SERIES record, the key reader
//! stopping before pixel data.

use sluice_media::keys::KeyReader;
use sluice_media::{
    read_dicomdir, FileSetWriter, InstanceKeys, KeyWarning, Profile, ProfileRefusal, RecordType,
    Refusal,
};
use sluice_net::dimse::dataset::{SmallDataset, SmallDatasetEncoding, Vr};
use sluice_net::dimse::Tag;
use sluice_net::scan::DatasetEncoding;

use crate::support::{options, synthetic_keys};

const ELE: &str = "1.2.840.10008.1.2.1";

fn whole(writer: FileSetWriter) -> Vec<u8> {
    let end = writer.finish();
    assert!(end.patches.is_empty());
    end.tail
}

#[test]
fn duplicates_and_private_classes_are_refused() {
    let mut writer = FileSetWriter::new(&options(Profile::GeneralCd)).unwrap();
    writer.add(&synthetic_keys(1, 1, 1, 1), ELE).unwrap();
    assert!(matches!(
        writer.add(&synthetic_keys(1, 1, 1, 1), ELE),
        Err(Refusal::Duplicate(_))
    ));
    let mut dataset = synthetic_keys(1, 1, 1, 2).dataset().clone();
    dataset.put_str(
        Tag(0x0008, 0x0016),
        Some(Vr::UI),
        sluice_net::uid::GE_PRIVATE_3D_MODEL_STORAGE,
    );
    let private = InstanceKeys::from_dataset(dataset).unwrap();
    assert!(matches!(
        writer.add(&private, ELE),
        Err(Refusal::Profile(ProfileRefusal::SopClassNotAllowed(..)))
    ));
    let directory = read_dicomdir(&whole(writer)).unwrap();
    assert_eq!(directory.instances.len(), 1);
    assert!(directory.issues.is_empty());
}

#[test]
fn missing_type_1_keys_are_invented_and_reported() {
    let mut dataset = synthetic_keys(1, 1, 1, 1).dataset().clone();
    for tag in [
        Tag(0x0010, 0x0020), // Patient ID
        Tag(0x0008, 0x0020), // Study Date
        Tag(0x0020, 0x0010), // Study ID
        Tag(0x0020, 0x0011), // Series Number
        Tag(0x0020, 0x0013), // Instance Number
    ] {
        dataset.remove(tag);
    }
    dataset.put_str(Tag(0x0008, 0x0060), Some(Vr::CS), "");
    let keys = InstanceKeys::from_dataset(dataset).unwrap();
    let mut writer = FileSetWriter::new(&options(Profile::GeneralCd)).unwrap();
    let placement = writer.add(&keys, ELE).unwrap();
    let invented: Vec<(RecordType, Tag, String)> = placement
        .warnings
        .iter()
        .map(|warning| match warning {
            KeyWarning::Invented {
                record_type,
                tag,
                value,
            } => (*record_type, *tag, value.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        invented,
        vec![
            (
                RecordType::Patient,
                Tag(0x0010, 0x0020),
                "SLUICE000001".into()
            ),
            (RecordType::Study, Tag(0x0008, 0x0020), "19000101".into()),
            (
                RecordType::Study,
                Tag(0x0020, 0x0010),
                "SLUICE000001".into()
            ),
            (RecordType::Series, Tag(0x0008, 0x0060), "OT".into()),
            (RecordType::Series, Tag(0x0020, 0x0011), "1".into()),
            (RecordType::Image, Tag(0x0020, 0x0013), "1".into()),
        ]
    );
    // The directory holds the invented values: no key is missing.
    let directory = read_dicomdir(&whole(writer)).unwrap();
    assert!(directory.issues.is_empty(), "{:?}", directory.issues);
    assert_eq!(directory.patients[0].patient_id, "SLUICE000001");
}

#[test]
fn records_with_non_ascii_keys_carry_the_character_set() {
    let mut dataset = synthetic_keys(1, 1, 1, 1).dataset().clone();
    dataset.put_str(Tag(0x0008, 0x0005), Some(Vr::CS), "ISO_IR 100");
    dataset.put(sluice_net::dimse::dataset::Element {
        tag: Tag(0x0010, 0x0010),
        vr: Vr::PN,
        value: sluice_net::dimse::dataset::Value::Bytes(b"Buc^J\xe9r\xf4me".to_vec()),
    });
    let keys = InstanceKeys::from_dataset(dataset).unwrap();
    let mut writer = FileSetWriter::new(&options(Profile::GeneralCd)).unwrap();
    writer.add(&keys, ELE).unwrap();
    let bytes = whole(writer);
    let directory = read_dicomdir(&bytes).unwrap();
    assert_eq!(directory.patients[0].patient_name, "Buc^J\u{e9}r\u{f4}me");
    // Only the PATIENT record needs it: one (0008,0005) in the file.
    let charset = [0x08, 0x00, 0x05, 0x00, b'C', b'S'];
    let count = bytes
        .windows(charset.len())
        .filter(|window| *window == charset)
        .count();
    assert_eq!(count, 1);
}

#[test]
fn instances_of_a_series_spread_over_the_input_share_its_record() {
    let mut writer = FileSetWriter::new(&options(Profile::GeneralCd)).unwrap();
    let mut dicomdir = Vec::new();
    // Interleaved: series 1 and 2 of two patients, round robin, bytes
    // taken after every add so every link is a patch.
    for instance in 1..=3 {
        for patient in 1..=2 {
            for series in 1..=2 {
                writer
                    .add(&synthetic_keys(patient, 1, series, instance), ELE)
                    .unwrap();
                dicomdir.extend_from_slice(&writer.take_bytes());
            }
        }
    }
    let end = writer.finish();
    dicomdir.extend_from_slice(&end.tail);
    end.apply(&mut dicomdir);
    assert_eq!(end.records, [2, 2, 4, 12]);
    let directory = read_dicomdir(&dicomdir).unwrap();
    assert!(directory.issues.is_empty(), "{:?}", directory.issues);
    assert_eq!(directory.series.len(), 4);
    for (index, _) in directory.series.iter().enumerate() {
        let files: Vec<String> = directory
            .instances
            .iter()
            .filter(|instance| instance.series == index)
            .map(|instance| instance.file_id.to_value())
            .collect();
        assert_eq!(files.len(), 3);
        assert!(files[0].ends_with("IM000001") && files[2].ends_with("IM000003"));
    }
}

#[test]
fn the_key_reader_stops_before_pixel_data() {
    let keys = synthetic_keys(1, 1, 1, 1);
    let mut dataset = keys.dataset().clone();
    dataset.put_u16(Tag(0x0028, 0x0100), 16);
    let head = dataset
        .encode(SmallDatasetEncoding::ImplicitVrLittleEndian)
        .unwrap();
    // Pixel Data whose value never arrives.
    let mut bytes = head.clone();
    bytes.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00]);
    bytes.extend_from_slice(&(1u32 << 30).to_le_bytes());
    let mut reader = KeyReader::new(DatasetEncoding::ImplicitVrLittleEndian);
    reader.feed(&bytes).unwrap();
    assert!(reader.is_complete());
    let read = reader.finish().unwrap();
    assert_eq!(read.sop_instance_uid(), keys.sop_instance_uid());
    // Bits Allocated is no key: not kept.
    assert!(read.dataset().get(Tag(0x0028, 0x0100)).is_none());
    assert_eq!(read.dataset().get(Tag(0x0010, 0x0010)).unwrap().vr, Vr::PN);
    // Without Pixel Data, the whole data set must be fed.
    let mut reader = KeyReader::new(DatasetEncoding::ImplicitVrLittleEndian);
    reader.feed(&head[..head.len() - 1]).unwrap();
    assert!(!reader.is_complete());
    assert!(reader.finish().is_err());
    // Keys without the UIDs are refused.
    assert!(InstanceKeys::from_dataset(SmallDataset::new()).is_err());
}

#[test]
fn one_patient_id_with_two_names_is_reported() {
    let mut writer = FileSetWriter::new(&options(Profile::GeneralCd)).unwrap();
    assert!(writer
        .add(&synthetic_keys(1, 1, 1, 1), ELE)
        .unwrap()
        .warnings
        .is_empty());
    let mut dataset = synthetic_keys(1, 1, 1, 2).dataset().clone();
    dataset.put_str(Tag(0x0010, 0x0010), Some(Vr::PN), "Roe^Richard");
    let placement = writer
        .add(&InstanceKeys::from_dataset(dataset).unwrap(), ELE)
        .unwrap();
    assert_eq!(
        placement.warnings,
        vec![KeyWarning::PatientNameDiffers {
            patient_id: "PID1".into(),
            written: "Doe^Patient1".into(),
            instance: "Roe^Richard".into(),
        }]
    );
    let directory = read_dicomdir(&whole(writer)).unwrap();
    assert_eq!(directory.patients.len(), 1);
    assert_eq!(directory.patients[0].patient_name, "Doe^Patient1");
}
