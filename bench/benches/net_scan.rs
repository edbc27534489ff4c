//! Data-set head scan: the time `sluice_net::scan` takes to find the UIDs,
//! index keys, image geometry and Pixel Data position in a realistic CT
//! header (a few hundred elements: the standard CT attributes, GE private
//! groups with large opaque values, defined- and undefined-length sequences),
//! in Implicit and Explicit VR Little Endian.
//!
//! - `head/*`: one `feed` of the bytes up to and including the Pixel Data
//!   element header, then `finish`: the per-instance cost before the engine
//!   can decide the C-STORE status (target: single-digit microseconds).
//! - `pdv_16k/*`: the whole instance (512 x 512 x 16-bit pixel data) fed in
//!   16 KiB slices as P-DATA fragments would arrive, to the end.
//! - `check_store`: the A900/C010/C011/C012 decision on a scanned head.
//!
//! Under `cargo test --benches` criterion runs each benchmark once, as a
//! smoke test. The figures are printed as ns per scan by criterion.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_net::dimse::dataset::{Element, SmallDataset, SmallDatasetEncoding, Value, Vr};
use sluice_net::dimse::Tag;
use sluice_net::scan::{check_store, DatasetEncoding, HeadScanner, Leniency, StoreCheck};
use sluice_net::uid::{transfer_syntax, ts, CT_IMAGE_STORAGE};

const ROWS: u16 = 512;
const COLUMNS: u16 = 512;
const PDV_BYTES: usize = 16 * 1024;
const INSTANCE: &str = "1.2.840.113619.2.55.3.604688119.969.1268071029.320";

fn text(dataset: &mut SmallDataset, group: u16, element: u16, vr: Vr, value: &str) {
    dataset.put_str(Tag(group, element), Some(vr), value);
}

fn bytes(dataset: &mut SmallDataset, group: u16, element: u16, vr: Vr, value: Vec<u8>) {
    dataset.put(Element {
        tag: Tag(group, element),
        vr,
        value: Value::Bytes(value),
    });
}

fn us(dataset: &mut SmallDataset, group: u16, element: u16, value: u16) {
    dataset.put_u16(Tag(group, element), value);
}

fn referenced(class: &str, instance: &str) -> SmallDataset {
    let mut item = SmallDataset::new();
    text(&mut item, 0x0008, 0x1150, Vr::UI, class);
    text(&mut item, 0x0008, 0x1155, Vr::UI, instance);
    item
}

fn code(value: &str, scheme: &str, meaning: &str) -> SmallDataset {
    let mut item = SmallDataset::new();
    text(&mut item, 0x0008, 0x0100, Vr::SH, value);
    text(&mut item, 0x0008, 0x0102, Vr::SH, scheme);
    text(&mut item, 0x0008, 0x0104, Vr::LO, meaning);
    item
}

/// A CT header as a GE scanner writes it, without Pixel Data.
fn ct_header() -> SmallDataset {
    let mut d = SmallDataset::new();
    text(&mut d, 0x0008, 0x0005, Vr::CS, "ISO_IR 100");
    text(&mut d, 0x0008, 0x0008, Vr::CS, "ORIGINAL\\PRIMARY\\AXIAL");
    text(&mut d, 0x0008, 0x0012, Vr::DA, "20240131");
    text(&mut d, 0x0008, 0x0013, Vr::TM, "101502");
    text(&mut d, 0x0008, 0x0016, Vr::UI, CT_IMAGE_STORAGE);
    text(&mut d, 0x0008, 0x0018, Vr::UI, INSTANCE);
    for (element, value) in [
        (0x0020, "20240131"),
        (0x0021, "20240131"),
        (0x0022, "20240131"),
        (0x0023, "20240131"),
    ] {
        text(&mut d, 0x0008, element, Vr::DA, value);
    }
    for (element, value) in [
        (0x0030, "100512"),
        (0x0031, "101011"),
        (0x0032, "101121.5"),
        (0x0033, "101502"),
    ] {
        text(&mut d, 0x0008, element, Vr::TM, value);
    }
    text(&mut d, 0x0008, 0x0050, Vr::SH, "A1234567");
    text(&mut d, 0x0008, 0x0060, Vr::CS, "CT");
    text(&mut d, 0x0008, 0x0070, Vr::LO, "GE MEDICAL SYSTEMS");
    text(&mut d, 0x0008, 0x0080, Vr::LO, "General Hospital");
    text(&mut d, 0x0008, 0x0090, Vr::PN, "Welby^Marcus^^Dr");
    text(&mut d, 0x0008, 0x1010, Vr::SH, "CTAWP00001");
    text(&mut d, 0x0008, 0x1030, Vr::LO, "CT CHEST W CONTRAST");
    d.put_sequence(
        Tag(0x0008, 0x1032),
        vec![code("71260", "C4", "CT CHEST W CONTRAST")],
    );
    text(&mut d, 0x0008, 0x103E, Vr::LO, "AXIAL 1.25 STD");
    text(&mut d, 0x0008, 0x1040, Vr::LO, "RADIOLOGY");
    text(&mut d, 0x0008, 0x1090, Vr::LO, "LightSpeed VCT");
    d.put_sequence(
        Tag(0x0008, 0x1140),
        (0..3)
            .map(|n| {
                referenced(
                    CT_IMAGE_STORAGE,
                    &format!("1.2.840.113619.2.55.3.604688119.969.1268071029.{n}"),
                )
            })
            .collect(),
    );
    d.put_sequence(
        Tag(0x0008, 0x2112),
        vec![referenced(CT_IMAGE_STORAGE, "1.2.840.113619.2.55.3.1.2.3")],
    );
    bytes(&mut d, 0x0010, 0x0010, Vr::PN, b"M\xfcller^Hans".to_vec());
    text(&mut d, 0x0010, 0x0020, Vr::LO, "PID00042");
    text(&mut d, 0x0010, 0x0030, Vr::DA, "19620214");
    text(&mut d, 0x0010, 0x0040, Vr::CS, "M");
    text(&mut d, 0x0010, 0x1010, Vr::AS, "061Y");
    text(&mut d, 0x0010, 0x1020, Vr::DS, "1.80");
    text(&mut d, 0x0010, 0x1030, Vr::DS, "82");
    text(
        &mut d,
        0x0010,
        0x21B0,
        Vr::LT,
        "Follow-up of pulmonary nodule.",
    );
    let ct_acquisition: &[(u16, Vr, &str)] = &[
        (0x0015, Vr::CS, "CHEST"),
        (0x0022, Vr::LO, "HELICAL MODE"),
        (0x0050, Vr::DS, "1.25"),
        (0x0060, Vr::DS, "120"),
        (0x0088, Vr::DS, "1.25"),
        (0x0090, Vr::DS, "500"),
        (0x1000, Vr::LO, "12345"),
        (0x1020, Vr::LO, "gmp_vct.49"),
        (0x1030, Vr::LO, "6.2 CHEST"),
        (0x1100, Vr::DS, "360"),
        (0x1110, Vr::DS, "949.075012"),
        (0x1111, Vr::DS, "541"),
        (0x1120, Vr::DS, "0"),
        (0x1130, Vr::DS, "157.5"),
        (0x1140, Vr::CS, "CW"),
        (0x1150, Vr::IS, "800"),
        (0x1151, Vr::IS, "300"),
        (0x1152, Vr::IS, "240"),
        (0x1160, Vr::SH, "BODY FILTER"),
        (0x1170, Vr::IS, "72"),
        (0x1190, Vr::DS, "0.7"),
        (0x1210, Vr::SH, "STANDARD"),
        (0x5100, Vr::CS, "FFS"),
    ];
    for (element, vr, value) in ct_acquisition {
        text(&mut d, 0x0018, *element, *vr, value);
    }
    for (element, value) in [
        (0x9305, 2.5f64),
        (0x9306, 2.5),
        (0x9307, 40.0),
        (0x9309, 1.0),
    ] {
        bytes(
            &mut d,
            0x0018,
            element,
            Vr::FD,
            value.to_le_bytes().to_vec(),
        );
    }
    text(
        &mut d,
        0x0020,
        0x000D,
        Vr::UI,
        "1.2.840.113619.2.55.3.604688119.969.1268071029.100",
    );
    text(
        &mut d,
        0x0020,
        0x000E,
        Vr::UI,
        "1.2.840.113619.2.55.3.604688119.969.1268071029.200",
    );
    text(&mut d, 0x0020, 0x0010, Vr::SH, "4711");
    text(&mut d, 0x0020, 0x0011, Vr::IS, "3");
    text(&mut d, 0x0020, 0x0012, Vr::IS, "1");
    text(&mut d, 0x0020, 0x0013, Vr::IS, "117");
    text(
        &mut d,
        0x0020,
        0x0032,
        Vr::DS,
        "-175.000\\-175.000\\-152.750",
    );
    text(
        &mut d,
        0x0020,
        0x0037,
        Vr::DS,
        "1.000000\\0.000000\\0.000000\\0.000000\\1.000000\\0.000000",
    );
    text(
        &mut d,
        0x0020,
        0x0052,
        Vr::UI,
        "1.2.840.113619.2.55.3.604688119.969.1268071029.300",
    );
    text(&mut d, 0x0020, 0x1040, Vr::LO, "SN");
    text(&mut d, 0x0020, 0x1041, Vr::DS, "-152.750");
    text(&mut d, 0x0020, 0x4000, Vr::LT, "");
    us(&mut d, 0x0028, 0x0002, 1);
    text(&mut d, 0x0028, 0x0004, Vr::CS, "MONOCHROME2");
    us(&mut d, 0x0028, 0x0010, ROWS);
    us(&mut d, 0x0028, 0x0011, COLUMNS);
    text(&mut d, 0x0028, 0x0030, Vr::DS, "0.683594\\0.683594");
    us(&mut d, 0x0028, 0x0100, 16);
    us(&mut d, 0x0028, 0x0101, 16);
    us(&mut d, 0x0028, 0x0102, 15);
    us(&mut d, 0x0028, 0x0103, 1);
    bytes(
        &mut d,
        0x0028,
        0x0120,
        Vr::SS,
        (-2000i16).to_le_bytes().to_vec(),
    );
    text(&mut d, 0x0028, 0x1050, Vr::DS, "40\\-600");
    text(&mut d, 0x0028, 0x1051, Vr::DS, "400\\1500");
    text(&mut d, 0x0028, 0x1052, Vr::DS, "-1024");
    text(&mut d, 0x0028, 0x1053, Vr::DS, "1");
    text(&mut d, 0x0028, 0x1054, Vr::LO, "HU");
    text(&mut d, 0x0032, 0x1060, Vr::LO, "CT CHEST W CONTRAST");
    let mut request = SmallDataset::new();
    text(&mut request, 0x0040, 0x0007, Vr::LO, "CT CHEST W CONTRAST");
    text(&mut request, 0x0040, 0x0009, Vr::SH, "SPS1");
    text(&mut request, 0x0040, 0x1001, Vr::SH, "RP1");
    d.put_sequence(Tag(0x0040, 0x0275), vec![request]);
    text(&mut d, 0x0040, 0x0244, Vr::DA, "20240131");
    text(&mut d, 0x0040, 0x0245, Vr::TM, "100512");
    text(&mut d, 0x0040, 0x0253, Vr::SH, "PPS42");
    // GE private groups: creators, then many small and a few large values.
    let privates: &[(u16, &str, usize)] = &[
        (0x0009, "GEMS_IDEN_01", 12),
        (0x0019, "GEMS_ACQU_01", 90),
        (0x0021, "GEMS_RELA_01", 25),
        (0x0023, "GEMS_STDY_01", 6),
        (0x0027, "GEMS_IMAG_01", 30),
        (0x0043, "GEMS_PARM_01", 70),
        (0x0045, "GEMS_HELIOS_01", 20),
    ];
    for (index, (group, creator, count)) in privates.iter().enumerate() {
        text(&mut d, *group, 0x0010, Vr::LO, creator);
        for n in 0..*count {
            let element = 0x1001 + n as u16;
            match (n + index) % 6 {
                0 => text(&mut d, *group, element, Vr::SS, "\u{1}\0"),
                1 => text(&mut d, *group, element, Vr::DS, "12.5"),
                2 => text(&mut d, *group, element, Vr::LO, "GE private value"),
                3 => bytes(&mut d, *group, element, Vr::SL, vec![1, 0, 0, 0]),
                4 => bytes(&mut d, *group, element, Vr::FL, vec![0, 0, 0x80, 0x3F]),
                _ => text(&mut d, *group, element, Vr::IS, "42"),
            }
        }
    }
    // A few large opaque private blobs (protocol data, raw headers).
    bytes(&mut d, 0x0043, 0x10A0, Vr::OB, vec![0x5A; 4096]);
    bytes(&mut d, 0x0043, 0x10A1, Vr::UN, vec![0xA5; 12_000]);
    d
}

fn count_elements(dataset: &SmallDataset) -> usize {
    dataset
        .elements()
        .iter()
        .map(|element| match &element.value {
            Value::Bytes(_) => 1,
            Value::Sequence(items) => 1 + items.iter().map(count_elements).sum::<usize>(),
        })
        .sum()
}

/// The header bytes up to and including the Pixel Data element header, and
/// the whole instance.
fn instance(encoding: SmallDatasetEncoding) -> (Vec<u8>, Vec<u8>) {
    let mut head = ct_header().encode(encoding).expect("encodable header");
    let pixel_bytes = usize::from(ROWS) * usize::from(COLUMNS) * 2;
    head.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00]);
    if encoding == SmallDatasetEncoding::ExplicitVrLittleEndian {
        head.extend_from_slice(b"OW\0\0");
    }
    head.extend_from_slice(&(pixel_bytes as u32).to_le_bytes());
    let mut whole = head.clone();
    whole.extend((0..pixel_bytes).map(|i| (i % 253) as u8));
    (head, whole)
}

fn scan_encoding(encoding: SmallDatasetEncoding) -> DatasetEncoding {
    match encoding {
        SmallDatasetEncoding::ImplicitVrLittleEndian => DatasetEncoding::ImplicitVrLittleEndian,
        SmallDatasetEncoding::ExplicitVrLittleEndian => DatasetEncoding::ExplicitVrLittleEndian,
    }
}

fn head_scan(criterion: &mut Criterion) {
    let elements = count_elements(&ct_header());
    let mut group = criterion.benchmark_group("net_scan");
    for (name, encoding) in [
        ("implicit_le", SmallDatasetEncoding::ImplicitVrLittleEndian),
        ("explicit_le", SmallDatasetEncoding::ExplicitVrLittleEndian),
    ] {
        let (head, whole) = instance(encoding);
        let scan_as = scan_encoding(encoding);
        eprintln!(
            "net_scan {name}: {elements} elements, header {} bytes, instance {} bytes",
            head.len(),
            whole.len()
        );
        // Sanity: the scan finds what the engine needs.
        let mut scanner = HeadScanner::new(scan_as);
        scanner.feed(&whole).expect("well-formed");
        let scanned = scanner.finish();
        assert_eq!(scanned.end, Ok(()));
        assert_eq!(scanned.sop_instance_uid(), Some(INSTANCE));
        let syntax = match encoding {
            SmallDatasetEncoding::ImplicitVrLittleEndian => ts::IMPLICIT_VR_LITTLE_ENDIAN,
            SmallDatasetEncoding::ExplicitVrLittleEndian => ts::EXPLICIT_VR_LITTLE_ENDIAN,
        };
        let check = StoreCheck {
            affected_sop_class_uid: CT_IMAGE_STORAGE,
            affected_sop_instance_uid: INSTANCE,
            transfer_syntax: transfer_syntax(syntax).expect("catalogued").facts,
            image_class: true,
            lenient: Leniency::STRICT,
        };
        assert_eq!(check_store(&scanned, &check), Ok(Vec::new()));

        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("head", name), &head, |bencher, head| {
            bencher.iter(|| {
                let mut scanner = HeadScanner::new(scan_as);
                let _ = scanner.feed(black_box(head));
                black_box(scanner.pixel_data_seen());
                black_box(scanner.finish())
            })
        });
        group.bench_with_input(
            BenchmarkId::new("pdv_16k", name),
            &whole,
            |bencher, whole| {
                bencher.iter(|| {
                    let mut scanner = HeadScanner::new(scan_as);
                    for pdv in whole.chunks(PDV_BYTES) {
                        let _ = scanner.feed(black_box(pdv));
                    }
                    black_box(scanner.finish())
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("check_store", name),
            &scanned,
            |bencher, scanned| bencher.iter(|| black_box(check_store(black_box(scanned), &check))),
        );
    }
    group.finish();
}

criterion_group!(benches, head_scan);
criterion_main!(benches);
