//! The Query/Retrieve benchmark's data: one deterministic archive of
//! patients, studies, series and instances, written three ways.
//!
//! ```text
//! qr_load files   <out dir> <instances> [pixel bytes] [per study]  Part 10 files, for C-STORE
//! qr_load index   <data dir> <instances> <template.dcm> Sluice's index written directly
//! qr_load queries <instances> <kind> <count>             C-FIND identifiers (qr_client's format)
//! qr_load attributes <instances> <pixel bytes>           every instance's attributes, one TSV line
//! ```
//!
//! The archive: 100 instances per study (4 series of 25: CT, MR, CR, US;
//! `files` may put more in a study, for retrieval),
//! 2 studies per patient; Patient ID `PID` and 7 digits; Patient's Name
//! from 1,000 surnames of two syllables (so `Surname*` matches about one
//! patient in a thousand) and 50 given names; Study Date spread over ten
//! years (2015-2024); random-looking `2.25.` UIDs (hashes of the numbers).
//!
//! `index` is for the sizes C-STORE cannot reach in a session (10 M
//! instances): it opens the data directory's LMDB index as `sluice serve`
//! does and stores each instance's entry as ingest would, and gives every
//! entry a file: a hard link to `template.dcm` at the entry's path under
//! `objects/` (a copy of the template per 50,000 entries, under the file
//! system's link limit; start-up recovery checks that every indexed file exists and
//! has its size). The entries' attributes are the generated ones; the files
//! all hold the template's bytes, so this data serves C-FIND, not
//! retrieval.
//!
//! `attributes` is what `files` would write, as text: one line per
//! instance, tab-separated, in the order of [`ATTRIBUTE_COLUMNS`] (the
//! first line names them), ending with the length of the Part 10 file
//! `files` writes for it with that many pixel bytes. `bench/peers/orthanc_index.py`
//! writes Orthanc's index from it, so Orthanc and Sluice hold the same
//! archive from this one definition.
//!
//! `queries` kinds: `study-pid`, `study-name`, `study-date` (one week),
//! `series-pid`, `image-pid` (relational: a Patient ID and the level's
//! keys), `series-study` (hierarchical: a Study Instance UID),
//! `patient-name` (PATIENT level, Patient Root), and `study-name-upper`,
//! `patient-name-upper`: the name wildcards in capitals, which only
//! case-insensitive person-name matching finds.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use sluice_engine::store::layout::{Area, Layout};
use sluice_engine::store::part10::{file_header, FileMeta};
use sluice_index::{
    Checksum, FileId, Index, IndexOptions, InstanceRecord, NewInstance, SeriesAttributes,
    StoreRequest, StudyAttributes, Triplet, WriteOp,
};
use sluice_net::dimse::dataset::{Element, SmallDataset, SmallDatasetEncoding, Value, Vr};
use sluice_net::dimse::Tag;

const SERIES_PER_STUDY: u64 = 4;
/// Instances per study unless `files` is told otherwise.
const INSTANCES_PER_STUDY: u64 = 100;
const STUDIES_PER_PATIENT: u64 = 2;
const MODALITIES: [&str; 4] = ["CT", "MR", "CR", "US"];
const SYLLABLES: [&str; 40] = [
    "Ab", "Ba", "Ce", "Do", "Er", "Fa", "Gi", "Ho", "Il", "Jo", "Ka", "Le", "Mi", "No", "Ol", "Pa",
    "Qu", "Ri", "Sa", "Te", "Ul", "Va", "We", "Xi", "Ya", "Zo", "Am", "Bo", "Cu", "Di", "En", "Fo",
    "Gu", "Ha", "In", "Ju", "Ki", "Lo", "Mu", "Ne",
];
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// A 64-bit mix (splitmix64), for UIDs and spreads.
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

fn uid(kind: u64, number: u64) -> String {
    let high = mix(kind << 56 ^ number);
    let low = mix(high ^ number);
    format!("2.25.{}", (u128::from(high) << 64 | u128::from(low)) >> 2)
}

fn surname(patient: u64) -> String {
    let n = mix(patient) % 1000;
    let first = SYLLABLES[(n / 40 % 40) as usize];
    let second = SYLLABLES[(n % 40) as usize].to_lowercase();
    // 1,000 of the 1,600 pairs: n < 1000 keeps the first 25 first syllables.
    format!("{first}{second}")
}

/// What one instance is, from its number.
struct Generated {
    triplet: Triplet,
    study: StudyAttributes,
    series: SeriesAttributes,
    instance_number: i32,
}

fn study_date(study: u64) -> String {
    let day = mix(study ^ 0x5555) % 3650;
    let (mut year, mut rest) = (2015u64, day);
    while rest >= 365 {
        rest -= 365;
        year += 1;
    }
    let month = rest / 31 + 1;
    let day = rest % 28 + 1;
    format!("{year}{:02}{:02}", month.min(12), day)
}

fn generate(number: u64, per_study: u64) -> Generated {
    let per_series = (per_study / SERIES_PER_STUDY).max(1);
    let study = number / per_study.max(1);
    let series = number / per_series;
    let patient = study / STUDIES_PER_PATIENT;
    let modality = MODALITIES[(series % SERIES_PER_STUDY) as usize];
    Generated {
        triplet: Triplet::new(uid(1, study), uid(2, series), uid(3, number)),
        study: StudyAttributes {
            patient_name: format!("{}^Given{}", surname(patient), patient % 50),
            patient_id: format!("PID{patient:07}"),
            patient_birth_date: format!("19{:02}0101", patient % 90 + 10),
            patient_sex: if patient % 2 == 0 { "F" } else { "M" }.into(),
            study_date: study_date(study),
            study_time: format!("{:02}0000", study % 24),
            accession_number: format!("ACC{study:08}"),
            study_id: format!("{}", study % 10_000),
            study_description: format!("{modality} STUDY {}", study % 7),
            referring_physician_name: format!("Ref^Doctor{}", study % 100),
        },
        series: SeriesAttributes {
            modality: modality.into(),
            series_number: Some((series % SERIES_PER_STUDY) as i32 + 1),
            series_description: format!("{modality} series"),
        },
        instance_number: (number % per_series) as i32 + 1,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |index: usize| -> Result<u64, String> {
        args.get(index)
            .ok_or("missing argument")?
            .parse()
            .map_err(|_| format!("not a number: {:?}", args.get(index)))
    };
    let result = match args.first().map(String::as_str) {
        Some("files") if args.len() >= 3 => number(2).and_then(|count| {
            let per_study = number(4).unwrap_or(INSTANCES_PER_STUDY).max(1);
            files(
                Path::new(&args[1]),
                count,
                number(3).unwrap_or(512),
                per_study,
            )
        }),
        Some("index") if args.len() == 4 => {
            number(2).and_then(|count| index(Path::new(&args[1]), count, Path::new(&args[3])))
        }
        Some("attributes") if args.len() == 3 => {
            number(1).and_then(|count| number(2).and_then(|pixels| attributes(count, pixels)))
        }
        Some("queries") if args.len() == 4 => {
            number(1).and_then(|count| number(3).map(|n| queries(count, &args[2], n)))
        }
        _ => Err("usage: see bench/src/bin/qr_load.rs".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("qr_load: {message}");
            ExitCode::FAILURE
        }
    }
}

fn put(dataset: &mut SmallDataset, tag: (u16, u16), vr: Vr, value: &str) {
    dataset.put(Element {
        tag: Tag(tag.0, tag.1),
        vr,
        value: Value::Bytes(value.as_bytes().to_vec()),
    });
}

/// The Part 10 bytes of instance `number` with `pixel_bytes` of pixel data.
fn part10(number: u64, pixel_bytes: u64, per_study: u64) -> Result<Vec<u8>, String> {
    let generated = generate(number, per_study);
    let triplet = &generated.triplet;
    let study = &generated.study;
    let mut dataset = SmallDataset::new();
    put(&mut dataset, (0x0008, 0x0016), Vr::UI, CT_IMAGE_STORAGE);
    put(
        &mut dataset,
        (0x0008, 0x0018),
        Vr::UI,
        &triplet.sop_instance_uid,
    );
    put(&mut dataset, (0x0008, 0x0020), Vr::DA, &study.study_date);
    put(&mut dataset, (0x0008, 0x0030), Vr::TM, &study.study_time);
    put(
        &mut dataset,
        (0x0008, 0x0050),
        Vr::SH,
        &study.accession_number,
    );
    put(
        &mut dataset,
        (0x0008, 0x0060),
        Vr::CS,
        &generated.series.modality,
    );
    put(
        &mut dataset,
        (0x0008, 0x0090),
        Vr::PN,
        &study.referring_physician_name,
    );
    put(
        &mut dataset,
        (0x0008, 0x1030),
        Vr::LO,
        &study.study_description,
    );
    put(
        &mut dataset,
        (0x0008, 0x103E),
        Vr::LO,
        &generated.series.series_description,
    );
    put(&mut dataset, (0x0010, 0x0010), Vr::PN, &study.patient_name);
    put(&mut dataset, (0x0010, 0x0020), Vr::LO, &study.patient_id);
    put(
        &mut dataset,
        (0x0010, 0x0030),
        Vr::DA,
        &study.patient_birth_date,
    );
    put(&mut dataset, (0x0010, 0x0040), Vr::CS, &study.patient_sex);
    put(
        &mut dataset,
        (0x0020, 0x000D),
        Vr::UI,
        &triplet.study_instance_uid,
    );
    put(
        &mut dataset,
        (0x0020, 0x000E),
        Vr::UI,
        &triplet.series_instance_uid,
    );
    put(&mut dataset, (0x0020, 0x0010), Vr::SH, &study.study_id);
    let series_number = generated.series.series_number.unwrap_or(1).to_string();
    put(&mut dataset, (0x0020, 0x0011), Vr::IS, &series_number);
    put(
        &mut dataset,
        (0x0020, 0x0013),
        Vr::IS,
        &generated.instance_number.to_string(),
    );
    // A square 16-bit image of about `pixel_bytes`.
    let side = ((pixel_bytes / 2) as f64).sqrt().max(1.0) as u16;
    put(&mut dataset, (0x0028, 0x0004), Vr::CS, "MONOCHROME2");
    for (element, value) in [
        (0x0002u16, 1u16),
        (0x0010, side),
        (0x0011, side),
        (0x0100, 16),
        (0x0101, 12),
        (0x0102, 11),
        (0x0103, 0),
    ] {
        dataset.put(Element {
            tag: Tag(0x0028, element),
            vr: Vr::US,
            value: Value::Bytes(value.to_le_bytes().to_vec()),
        });
    }
    let pixels = usize::from(side) * usize::from(side) * 2;
    dataset.put(Element {
        tag: Tag(0x7FE0, 0x0010),
        vr: Vr::OW,
        value: Value::Bytes(
            (0..pixels)
                .map(|i| (i as u64 ^ number) as u8 & 0x0F)
                .collect(),
        ),
    });
    let mut bytes = file_header(&FileMeta {
        sop_class_uid: CT_IMAGE_STORAGE,
        sop_instance_uid: &triplet.sop_instance_uid,
        transfer_syntax_uid: EXPLICIT_VR_LE,
        source_ae_title: "QRLOAD",
    })
    .map_err(|error| error.to_string())?;
    dataset
        .encode_into(SmallDatasetEncoding::ExplicitVrLittleEndian, &mut bytes)
        .map_err(|error| error.to_string())?;
    Ok(bytes)
}

fn files(dir: &Path, count: u64, pixel_bytes: u64, per_study: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    for number in 0..count {
        let path = dir.join(format!("{number:08}.dcm"));
        std::fs::write(&path, part10(number, pixel_bytes, per_study)?)
            .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    println!("{{\"files\": {count}, \"dir\": \"{}\"}}", dir.display());
    Ok(())
}

/// Hard links one inode may have, kept under ext4's limit (65,000).
const LINKS_PER_SOURCE: u64 = 50_000;

/// The file entry `number` is a hard link to: the template for the first
/// [`LINKS_PER_SOURCE`] entries, then a copy of it beside it per as many
/// more (`template.dcm.1`, ...), made when first needed.
fn link_source(template: &Path, number: u64) -> Result<std::path::PathBuf, String> {
    let copy = number / LINKS_PER_SOURCE;
    if copy == 0 {
        return Ok(template.to_path_buf());
    }
    let mut name = template.as_os_str().to_owned();
    name.push(format!(".{copy}"));
    let source = std::path::PathBuf::from(name);
    if !source.exists() {
        std::fs::copy(template, &source).map_err(|e| format!("{}: {e}", source.display()))?;
    }
    Ok(source)
}

fn index(data: &Path, count: u64, template: &Path) -> Result<(), String> {
    let template_bytes =
        std::fs::read(template).map_err(|e| format!("{}: {e}", template.display()))?;
    let dataset_offset = sluice_engine::store::part10::read_header(&template_bytes)
        .map_err(|error| format!("template: {error}"))?
        .header_bytes;
    let layout = Layout::new(data.to_path_buf());
    layout.create_dirs().map_err(|e| e.to_string())?;
    let options = IndexOptions {
        map_size_bytes: 256 << 30,
        ..IndexOptions::default()
    };
    let index = Index::open(layout.index_dir(), options).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let batch = 10_000u64;
    let mut next = 0u64;
    while next < count {
        let end = (next + batch).min(count);
        let mut ops = Vec::with_capacity((end - next) as usize);
        for number in next..end {
            let generated = generate(number, INSTANCES_PER_STUDY);
            let file_id = FileId(u128::from(number) + 1);
            let path = layout.area_path(Area::Objects, file_id);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            let source = link_source(template, number)?;
            match std::fs::hard_link(&source, &path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(format!("{}: {error}", path.display())),
            }
            ops.push(WriteOp::Store(StoreRequest::new(NewInstance {
                triplet: generated.triplet,
                record: InstanceRecord {
                    file_id,
                    file_size_bytes: template_bytes.len() as u64,
                    dataset_offset_bytes: dataset_offset as u64,
                    transfer_syntax_uid: EXPLICIT_VR_LE.into(),
                    sop_class_uid: CT_IMAGE_STORAGE.into(),
                    checksum: Checksum([0; 16]),
                    received_at_unix_ns: 1_700_000_000_000_000_000 + number,
                    calling_ae_title: "QRLOAD".into(),
                    instance_number: Some(generated.instance_number),
                },
                study: generated.study,
                series: generated.series,
            })));
        }
        index.writer().execute(ops).map_err(|e| e.to_string())?;
        next = end;
        if next % 1_000_000 == 0 || next == count {
            eprintln!(
                "qr_load: {next} instances in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(index);
    println!(
        "{{\"instances\": {count}, \"seconds\": {:.1}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The columns `attributes` prints, in order.
const ATTRIBUTE_COLUMNS: [&str; 19] = [
    "number",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SOPInstanceUID",
    "InstanceNumber",
    "Part10Bytes",
];

/// One line per instance of an archive of `count`: its attributes as
/// `files` writes them (100 per study) and its Part 10 file's length.
fn attributes(count: u64, pixel_bytes: u64) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let write = |out: &mut std::io::BufWriter<_>, line: String| {
        out.write_all(line.as_bytes())
            .map_err(|error| format!("stdout: {error}"))
    };
    write(&mut out, ATTRIBUTE_COLUMNS.join("\t") + "\n")?;
    for number in 0..count {
        let generated = generate(number, INSTANCES_PER_STUDY);
        let bytes = part10(number, pixel_bytes, INSTANCES_PER_STUDY)?.len();
        let (study, series, triplet) = (&generated.study, &generated.series, &generated.triplet);
        let fields = [
            number.to_string(),
            study.patient_id.clone(),
            study.patient_name.clone(),
            study.patient_birth_date.clone(),
            study.patient_sex.clone(),
            triplet.study_instance_uid.clone(),
            study.study_date.clone(),
            study.study_time.clone(),
            study.accession_number.clone(),
            study.study_id.clone(),
            study.study_description.clone(),
            study.referring_physician_name.clone(),
            triplet.series_instance_uid.clone(),
            series.modality.clone(),
            series.series_number.unwrap_or(1).to_string(),
            series.series_description.clone(),
            triplet.sop_instance_uid.clone(),
            generated.instance_number.to_string(),
            bytes.to_string(),
        ];
        write(&mut out, fields.join("\t") + "\n")?;
    }
    out.flush().map_err(|error| format!("stdout: {error}"))
}

/// `count` identifiers of `kind` over an archive of `instances`.
fn queries(instances: u64, kind: &str, count: u64) {
    let studies = instances.div_ceil(INSTANCES_PER_STUDY).max(1);
    let patients = studies.div_ceil(STUDIES_PER_PATIENT).max(1);
    for round in 0..count {
        let patient = mix(round ^ 0xABCD) % patients;
        let pid = format!("PID{patient:07}");
        let line = match kind {
            "study-pid" => format!("QueryRetrieveLevel=STUDY;PatientID={pid};StudyInstanceUID=;PatientName=;StudyDate=;ModalitiesInStudy=;NumberOfStudyRelatedInstances="),
            // `-upper`: in capitals, which only case-insensitive matching finds.
            "study-name" | "study-name-upper" | "patient-name" | "patient-name-upper" => {
                let name = surname(patient);
                let name = if kind.ends_with("-upper") { name.to_uppercase() } else { name };
                if kind.starts_with("patient") {
                    format!("QueryRetrieveLevel=PATIENT;PatientName={name}*;PatientID=;PatientBirthDate=;NumberOfPatientRelatedStudies=")
                } else {
                    format!("QueryRetrieveLevel=STUDY;PatientName={name}*;PatientID=;StudyInstanceUID=;StudyDate=")
                }
            }
            "study-date" => {
                let date = study_date(mix(round) % studies);
                let start = date.clone();
                let end = format!("{}{:02}", &date[..6], (date[6..].parse::<u32>().unwrap_or(1) + 6).min(28));
                format!("QueryRetrieveLevel=STUDY;StudyDate={start}-{end};StudyInstanceUID=;PatientID=;PatientName=")
            }
            "series-pid" => format!("QueryRetrieveLevel=SERIES;PatientID={pid};SeriesInstanceUID=;Modality=;StudyInstanceUID="),
            "image-pid" => format!("QueryRetrieveLevel=IMAGE;PatientID={pid};SOPInstanceUID=;InstanceNumber=;SeriesInstanceUID="),
            "series-study" => {
                let study = (patient * STUDIES_PER_PATIENT).min(studies - 1);
                format!("QueryRetrieveLevel=SERIES;StudyInstanceUID={};SeriesInstanceUID=;Modality=", uid(1, study))
            }
            _ => "QueryRetrieveLevel=STUDY;StudyInstanceUID=".into(),
        };
        println!("{line}");
    }
}
