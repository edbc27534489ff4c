//! Tests of the head scanner: hand-built data sets in the three encodings.

use super::scanner::{
    vr_has_long_length, ITEM, ITEM_DELIMITATION, PIXEL_DATA, SEQUENCE_DELIMITATION,
    UNDEFINED_LENGTH,
};
use super::*;
use crate::dimse::{Status, Tag};
use crate::uid::{transfer_syntax, ts, UidError};

const ENCODINGS: [DatasetEncoding; 3] = [
    DatasetEncoding::ImplicitVrLittleEndian,
    DatasetEncoding::ExplicitVrLittleEndian,
    DatasetEncoding::ExplicitVrBigEndian,
];

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const INSTANCE: &str = "1.2.826.0.1.3680043.8.498.1";

/// A value to encode.
#[derive(Debug, Clone)]
enum V {
    /// A string, padded with space (NUL for UI).
    S(&'static str),
    /// US values, in the data set's byte order.
    U16(Vec<u16>),
    /// Opaque bytes (OB, UN).
    Bytes(Vec<u8>),
    /// OW words, in the data set's byte order.
    Words(Vec<u16>),
}

/// A node of a test data set.
#[derive(Debug, Clone)]
enum N {
    /// An element.
    E(u16, u16, [u8; 2], V),
    /// A sequence (defined or undefined length) of items.
    Seq(u16, u16, bool, Vec<Item>),
    /// Explicit VR: an undefined-length UN holding Implicit VR LE items.
    Un(u16, u16, Vec<Vec<N>>),
    /// Encapsulated Pixel Data: items (the first is the Basic Offset Table).
    Frags(Vec<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Item {
    defined: bool,
    nodes: Vec<N>,
}

fn e(group: u16, element: u16, vr: &[u8; 2], value: V) -> N {
    N::E(group, element, *vr, value)
}

fn tag_bytes(group: u16, element: u16, big: bool, out: &mut Vec<u8>) {
    if big {
        out.extend_from_slice(&group.to_be_bytes());
        out.extend_from_slice(&element.to_be_bytes());
    } else {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
    }
}

fn u32_bytes(value: u32, big: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(&if big {
        value.to_be_bytes()
    } else {
        value.to_le_bytes()
    });
}

fn header(
    group: u16,
    element: u16,
    vr: [u8; 2],
    length: u32,
    encoding: DatasetEncoding,
    out: &mut Vec<u8>,
) {
    let big = encoding == DatasetEncoding::ExplicitVrBigEndian;
    tag_bytes(group, element, big, out);
    if encoding == DatasetEncoding::ImplicitVrLittleEndian {
        u32_bytes(length, big, out);
    } else {
        out.extend_from_slice(&vr);
        if vr_has_long_length(vr) {
            out.extend_from_slice(&[0, 0]);
            u32_bytes(length, big, out);
        } else {
            let short = u16::try_from(length).unwrap();
            out.extend_from_slice(&if big {
                short.to_be_bytes()
            } else {
                short.to_le_bytes()
            });
        }
    }
}

fn value_bytes(vr: [u8; 2], value: &V, big: bool) -> Vec<u8> {
    let mut bytes = match value {
        V::S(text) => text.as_bytes().to_vec(),
        V::U16(values) | V::Words(values) => values
            .iter()
            .flat_map(|value| {
                if big {
                    value.to_be_bytes()
                } else {
                    value.to_le_bytes()
                }
            })
            .collect(),
        V::Bytes(bytes) => bytes.clone(),
    };
    if bytes.len() % 2 == 1 {
        bytes.push(if &vr == b"UI" || &vr == b"OB" {
            0
        } else {
            b' '
        });
    }
    bytes
}

fn item_header(tag: u32, length: u32, big: bool, out: &mut Vec<u8>) {
    tag_bytes((tag >> 16) as u16, tag as u16, big, out);
    u32_bytes(length, big, out);
}

fn encode(nodes: &[N], encoding: DatasetEncoding) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(nodes, encoding, &mut out);
    out
}

fn encode_into(nodes: &[N], encoding: DatasetEncoding, out: &mut Vec<u8>) {
    let big = encoding == DatasetEncoding::ExplicitVrBigEndian;
    for node in nodes {
        match node {
            N::E(group, element, vr, value) => {
                let bytes = value_bytes(*vr, value, big);
                header(*group, *element, *vr, bytes.len() as u32, encoding, out);
                out.extend_from_slice(&bytes);
            }
            N::Seq(group, element, defined, items) => {
                let mut body = Vec::new();
                for item in items {
                    let inner = encode(&item.nodes, encoding);
                    if item.defined {
                        item_header(ITEM, inner.len() as u32, big, &mut body);
                        body.extend_from_slice(&inner);
                    } else {
                        item_header(ITEM, UNDEFINED_LENGTH, big, &mut body);
                        body.extend_from_slice(&inner);
                        item_header(ITEM_DELIMITATION, 0, big, &mut body);
                    }
                }
                if *defined {
                    header(*group, *element, *b"SQ", body.len() as u32, encoding, out);
                    out.extend_from_slice(&body);
                } else {
                    header(*group, *element, *b"SQ", UNDEFINED_LENGTH, encoding, out);
                    out.extend_from_slice(&body);
                    item_header(SEQUENCE_DELIMITATION, 0, big, out);
                }
            }
            N::Un(group, element, items) => {
                // The content is Implicit VR LE whatever the outer encoding.
                let inner_encoding = DatasetEncoding::ImplicitVrLittleEndian;
                header(*group, *element, *b"UN", UNDEFINED_LENGTH, encoding, out);
                for item in items {
                    item_header(ITEM, UNDEFINED_LENGTH, false, out);
                    encode_into(item, inner_encoding, out);
                    item_header(ITEM_DELIMITATION, 0, false, out);
                }
                item_header(SEQUENCE_DELIMITATION, 0, false, out);
            }
            N::Frags(fragments) => {
                header(0x7FE0, 0x0010, *b"OB", UNDEFINED_LENGTH, encoding, out);
                for fragment in fragments {
                    item_header(ITEM, fragment.len() as u32, big, out);
                    out.extend_from_slice(fragment);
                }
                item_header(SEQUENCE_DELIMITATION, 0, big, out);
            }
        }
    }
}

/// The elements of a small CT image before the pixel data, with sequences
/// of every kind, private elements and an icon image inside a sequence.
fn ct_head(rows: u16, columns: u16) -> Vec<N> {
    let referenced = |uid: &'static str| Item {
        defined: false,
        nodes: vec![
            e(0x0008, 0x1150, b"UI", V::S(CT)),
            e(0x0008, 0x1155, b"UI", V::S(uid)),
        ],
    };
    vec![
        e(0x0008, 0x0005, b"CS", V::S("ISO_IR 100")),
        e(0x0008, 0x0008, b"CS", V::S("ORIGINAL\\PRIMARY\\AXIAL")),
        e(0x0008, 0x0016, b"UI", V::S(CT)),
        e(0x0008, 0x0018, b"UI", V::S(INSTANCE)),
        e(0x0008, 0x0020, b"DA", V::S("20240131")),
        e(0x0008, 0x0030, b"TM", V::S("101500")),
        e(0x0008, 0x0050, b"SH", V::S("ACC42")),
        e(0x0008, 0x0060, b"CS", V::S("CT")),
        e(0x0008, 0x0090, b"PN", V::S("Welby^Marcus")),
        N::Seq(
            0x0008,
            0x1110,
            true,
            vec![Item {
                defined: true,
                nodes: vec![e(0x0008, 0x1150, b"UI", V::S("1.2.3"))],
            }],
        ),
        e(0x0008, 0x1030, b"LO", V::S("CHEST")),
        e(0x0008, 0x103E, b"LO", V::S("AXIAL 5mm")),
        N::Seq(
            0x0008,
            0x1140,
            false,
            vec![referenced("1.2.3.4"), referenced("1.2.3.5")],
        ),
        e(0x0009, 0x0010, b"LO", V::S("GEMS_IDEN_01")),
        e(0x0009, 0x1001, b"UN", V::Bytes(vec![0xAB; 300])),
        e(0x0010, 0x0010, b"PN", V::Bytes(b"M\xfcller^Hans".to_vec())),
        e(0x0010, 0x0020, b"LO", V::S("PID-1")),
        e(0x0010, 0x0030, b"DA", V::S("19700101")),
        e(0x0010, 0x0040, b"CS", V::S("M")),
        e(0x0018, 0x0050, b"DS", V::S("5.0")),
        e(0x0020, 0x000D, b"UI", V::S("1.2.826.0.1.3680043.8.498.2")),
        e(0x0020, 0x000E, b"UI", V::S("1.2.826.0.1.3680043.8.498.3")),
        e(0x0020, 0x0010, b"SH", V::S("S1")),
        e(0x0020, 0x0011, b"IS", V::S("3")),
        e(0x0020, 0x0013, b"IS", V::S(" 17")),
        e(0x0028, 0x0002, b"US", V::U16(vec![1])),
        e(0x0028, 0x0004, b"CS", V::S("MONOCHROME2")),
        e(0x0028, 0x0010, b"US", V::U16(vec![rows])),
        e(0x0028, 0x0011, b"US", V::U16(vec![columns])),
        e(0x0028, 0x0100, b"US", V::U16(vec![16])),
        e(0x0028, 0x0101, b"US", V::U16(vec![12])),
        e(0x0028, 0x0102, b"US", V::U16(vec![11])),
        e(0x0028, 0x0103, b"US", V::U16(vec![0])),
        // An icon image: Rows/Columns/Pixel Data inside an item must not count.
        N::Seq(
            0x0088,
            0x0200,
            false,
            vec![Item {
                defined: false,
                nodes: vec![
                    e(0x0028, 0x0010, b"US", V::U16(vec![2])),
                    e(0x0028, 0x0011, b"US", V::U16(vec![2])),
                    e(0x7FE0, 0x0010, b"OW", V::Words(vec![1, 2, 3, 4])),
                ],
            }],
        ),
    ]
}

fn ct_image(encoding: DatasetEncoding) -> (Vec<u8>, u64) {
    let mut nodes = ct_head(4, 3);
    nodes.push(e(0x7FE0, 0x0010, b"OW", V::Words((0..12).collect())));
    nodes.push(e(0xFFFC, 0xFFFC, b"OB", V::Bytes(vec![0; 6])));
    let bytes = encode(&nodes, encoding);
    let header_length = if encoding.explicit() { 12 } else { 8 };
    let pixel_value_offset =
        (encode(&nodes[..nodes.len() - 2], encoding).len() + header_length) as u64;
    (bytes, pixel_value_offset)
}

fn store_check(syntax: &str) -> StoreCheck<'static> {
    StoreCheck {
        affected_sop_class_uid: CT,
        affected_sop_instance_uid: INSTANCE,
        transfer_syntax: transfer_syntax(syntax).unwrap().facts,
        image_class: true,
        lenient: Leniency::STRICT,
    }
}

fn syntax_of(encoding: DatasetEncoding) -> &'static str {
    match encoding {
        DatasetEncoding::ImplicitVrLittleEndian => ts::IMPLICIT_VR_LITTLE_ENDIAN,
        DatasetEncoding::ExplicitVrLittleEndian => ts::EXPLICIT_VR_LITTLE_ENDIAN,
        DatasetEncoding::ExplicitVrBigEndian => ts::EXPLICIT_VR_BIG_ENDIAN,
    }
}

/// Everything a head says, comparable: values, cut flags, pixel data, length, end.
type Summary = (
    Vec<Option<Vec<u8>>>,
    Vec<bool>,
    Option<PixelData>,
    u64,
    Result<(), ScanError>,
);

fn summary(head: &DatasetHead) -> Summary {
    (
        Field::ALL
            .iter()
            .map(|field| head.raw(*field).map(<[u8]>::to_vec))
            .collect(),
        Field::ALL.iter().map(|field| head.is_cut(*field)).collect(),
        head.pixel_data,
        head.length,
        head.end,
    )
}

fn scan_in_chunks(bytes: &[u8], encoding: DatasetEncoding, cuts: &[usize]) -> DatasetHead {
    let mut scanner = HeadScanner::new(encoding);
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, bytes.len());
        let _ = scanner.feed(&bytes[start..cut]);
        start = cut;
    }
    let _ = scanner.feed(&bytes[start..]);
    scanner.finish()
}

#[test]
fn vr_length_table_matches_the_standard() {
    for first in b'A'..=b'Z' {
        for second in b'A'..=b'Z' {
            let vr = [first, second];
            assert_eq!(
                vr_has_long_length(vr),
                crate::dimse::dataset::Vr(vr).has_long_length(),
                "{}",
                String::from_utf8_lossy(&vr)
            );
        }
    }
    assert!(
        !vr_has_long_length(*b"US") && vr_has_long_length(*b"OB") && vr_has_long_length(*b"SQ")
    );
    // Not letters: treated as long (the header is rejected as InvalidVr anyway).
    assert!(vr_has_long_length([0, 0]) && vr_has_long_length(*b"u1"));
}

#[test]
fn fields_by_tag() {
    for field in Field::ALL {
        assert_eq!(Field::from_tag(field.tag().to_u32()), Some(*field));
    }
    assert_eq!(Field::from_tag(0x7FE0_0010), None);
    assert_eq!(Field::ALL.len(), 32);
}

#[test]
fn ct_image_in_every_encoding() {
    for encoding in ENCODINGS {
        let (bytes, pixel_value_offset) = ct_image(encoding);
        let head = scan(&bytes, encoding);
        assert_eq!(head.end, Ok(()), "{encoding:?}");
        assert_eq!(head.length, bytes.len() as u64);
        assert_eq!(head.sop_class_uid(), Some(CT));
        assert_eq!(head.sop_instance_uid(), Some(INSTANCE));
        assert_eq!(
            head.study_instance_uid(),
            Some("1.2.826.0.1.3680043.8.498.2")
        );
        assert_eq!(
            head.series_instance_uid(),
            Some("1.2.826.0.1.3680043.8.498.3")
        );
        assert_eq!(head.rows(), Some(4));
        assert_eq!(head.columns(), Some(3));
        assert_eq!(head.bits_allocated(), Some(16));
        assert_eq!(head.samples_per_pixel(), Some(1));
        assert_eq!(head.us(Field::BitsStored), Some(12));
        assert_eq!(head.number_of_frames(), Some(1));
        assert_eq!(head.integer_string(Field::InstanceNumber), Some(Some(17)));
        assert_eq!(head.integer_string(Field::SeriesNumber), Some(Some(3)));
        assert_eq!(head.text(Field::Modality), Some(&b"CT"[..]));
        assert_eq!(head.text(Field::StudyDate), Some(&b"20240131"[..]));
        assert_eq!(head.text(Field::AccessionNumber), Some(&b"ACC42"[..]));
        assert_eq!(
            head.decoded(Field::PatientName).as_deref(),
            Some("Müller^Hans")
        );
        assert_eq!(
            head.decoded(Field::ReferringPhysicianName).as_deref(),
            Some("Welby^Marcus")
        );
        assert_eq!(
            head.decoded(Field::SeriesDescription).as_deref(),
            Some("AXIAL 5mm")
        );
        assert!(!head.is_present(Field::NumberOfFrames));
        let pixel_data = head.pixel_data.unwrap();
        assert_eq!(pixel_data.length, PixelDataLength::Defined(24));
        assert_eq!(pixel_data.value_offset, pixel_value_offset);
        assert_eq!(
            &bytes[pixel_value_offset as usize..][..4],
            &{
                let mut first = Vec::new();
                first.extend_from_slice(&if encoding.big_endian() {
                    0u16.to_be_bytes()
                } else {
                    0u16.to_le_bytes()
                });
                first.extend_from_slice(&if encoding.big_endian() {
                    1u16.to_be_bytes()
                } else {
                    1u16.to_le_bytes()
                });
                first
            }[..]
        );
        if encoding.explicit() {
            assert_eq!(pixel_data.vr, Some(*b"OW"));
        }
        assert_eq!(
            check_store(&head, &store_check(syntax_of(encoding))),
            Ok(vec![])
        );
    }
}

#[test]
fn every_two_way_split_gives_the_same_head() {
    for encoding in ENCODINGS {
        let (bytes, _) = ct_image(encoding);
        let whole = summary(&scan(&bytes, encoding));
        for cut in 0..=bytes.len() {
            assert_eq!(
                summary(&scan_in_chunks(&bytes, encoding, &[cut])),
                whole,
                "{encoding:?} cut {cut}"
            );
        }
        // Byte by byte.
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(summary(&scan_in_chunks(&bytes, encoding, &cuts)), whole);
    }
}

#[test]
fn undefined_length_un_sequence_in_explicit_vr_is_implicit_inside() {
    for encoding in [
        DatasetEncoding::ExplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrBigEndian,
    ] {
        let nodes = vec![
            e(0x0008, 0x0016, b"UI", V::S(CT)),
            N::Un(
                0x0009,
                0x1010,
                vec![vec![
                    e(0x0008, 0x0018, b"UI", V::S("9.9.9")),
                    N::Seq(
                        0x0008,
                        0x1140,
                        false,
                        vec![Item {
                            defined: false,
                            nodes: vec![],
                        }],
                    ),
                ]],
            ),
            e(0x0008, 0x0018, b"UI", V::S(INSTANCE)),
        ];
        let head = scan(&encode(&nodes, encoding), encoding);
        assert_eq!(head.end, Ok(()));
        assert_eq!(
            head.sop_instance_uid(),
            Some(INSTANCE),
            "nested value must not be taken"
        );
    }
}

#[test]
fn nested_undefined_sequences_and_delimiters() {
    fn nest(depth: usize) -> N {
        let inner = if depth == 0 {
            vec![e(0x0010, 0x0010, b"PN", V::S("Inner^Name"))]
        } else {
            vec![nest(depth - 1)]
        };
        N::Seq(
            0x0040,
            0x0275,
            false,
            vec![
                Item {
                    defined: false,
                    nodes: inner,
                },
                Item {
                    defined: true,
                    nodes: vec![],
                },
            ],
        )
    }
    for encoding in ENCODINGS {
        let nodes = vec![nest(10), e(0x0010, 0x0010, b"PN", V::S("Outer^Name"))];
        let head = scan(&encode(&nodes, encoding), encoding);
        assert_eq!(head.end, Ok(()));
        assert_eq!(head.text(Field::PatientName), Some(&b"Outer^Name"[..]));
        // Deeper than the limit is an error, not a stack overflow.
        let deep = vec![nest(40)];
        let head = scan(&encode(&deep, encoding), encoding);
        assert!(
            matches!(head.end, Err(ScanError::TooDeep { limit: 32, .. })),
            "{:?}",
            head.end
        );
    }
}

#[test]
fn encapsulated_pixel_data() {
    for encoding in [
        DatasetEncoding::ExplicitVrLittleEndian,
        DatasetEncoding::ExplicitVrBigEndian,
    ] {
        let mut nodes = ct_head(4, 3);
        nodes.push(N::Frags(vec![
            vec![],
            vec![0xFF, 0xD8, 0xFF, 0xD9],
            vec![1, 2],
        ]));
        nodes.push(e(0xFFFC, 0xFFFC, b"OB", V::Bytes(vec![0; 4])));
        let bytes = encode(&nodes, encoding);
        let head = scan(&bytes, encoding);
        assert_eq!(head.end, Ok(()));
        let pixel_data = head.pixel_data.unwrap();
        assert_eq!(pixel_data.length, PixelDataLength::Undefined);
        assert_eq!(pixel_data.items, 3);
        assert_eq!(pixel_data.end_offset, Some((bytes.len() - 16) as u64));
        let jpeg = store_check(ts::JPEG_BASELINE);
        assert_eq!(check_store(&head, &jpeg), Ok(vec![]));
        // Native transfer syntax with encapsulated pixel data: C012.
        let native = store_check(syntax_of(encoding));
        let rejection = check_store(&head, &native).unwrap_err();
        assert_eq!(
            rejection,
            StoreRejection::PixelDataEncapsulationMismatch { encapsulated: true }
        );
        assert_eq!(rejection.status(), Status::PIXEL_DATA_UNREADABLE);

        // Only the Basic Offset Table: C012.
        let mut nodes = ct_head(4, 3);
        nodes.push(N::Frags(vec![vec![]]));
        let head = scan(&encode(&nodes, encoding), encoding);
        assert_eq!(
            check_store(&head, &jpeg),
            Err(StoreRejection::NoPixelDataFragments)
        );

        // A fragment item of undefined length: C012.
        let mut bytes = encode(&ct_head(4, 3), encoding);
        let big = encoding.big_endian();
        header(
            0x7FE0,
            0x0010,
            *b"OB",
            UNDEFINED_LENGTH,
            encoding,
            &mut bytes,
        );
        item_header(ITEM, 0, big, &mut bytes);
        item_header(ITEM, UNDEFINED_LENGTH, big, &mut bytes);
        let head = scan(&bytes, encoding);
        assert!(matches!(
            head.end,
            Err(ScanError::PixelDataFragments { .. })
        ));
        assert_eq!(
            check_store(&head, &jpeg).unwrap_err().status(),
            Status::PIXEL_DATA_UNREADABLE
        );

        // An element inside the fragments: C012.
        let mut bytes = encode(&ct_head(4, 3), encoding);
        header(
            0x7FE0,
            0x0010,
            *b"OB",
            UNDEFINED_LENGTH,
            encoding,
            &mut bytes,
        );
        item_header(ITEM, 0, big, &mut bytes);
        header(0x0010, 0x0010, *b"PN", 2, encoding, &mut bytes);
        let head = scan(&bytes, encoding);
        assert_eq!(
            check_store(&head, &jpeg).unwrap_err().status(),
            Status::PIXEL_DATA_UNREADABLE
        );

        // No sequence delimiter: truncated, C010.
        let mut bytes = encode(&ct_head(4, 3), encoding);
        header(
            0x7FE0,
            0x0010,
            *b"OB",
            UNDEFINED_LENGTH,
            encoding,
            &mut bytes,
        );
        item_header(ITEM, 0, big, &mut bytes);
        item_header(ITEM, 2, big, &mut bytes);
        bytes.extend_from_slice(&[1, 2]);
        let head = scan(&bytes, encoding);
        assert_eq!(
            head.end,
            Err(ScanError::Truncated {
                offset: bytes.len() as u64,
                inside: TruncatedIn::PixelData
            })
        );
        assert_eq!(
            check_store(&head, &jpeg).unwrap_err().status(),
            Status::CANNOT_PARSE
        );
    }
}

#[test]
fn truncation_is_detected_everywhere() {
    for encoding in ENCODINGS {
        let nodes = ct_head(4, 3);
        let bytes = encode(&nodes, encoding);
        // Element boundaries at the top level, from encoding prefixes.
        let mut boundaries = vec![0];
        for index in 1..=nodes.len() {
            boundaries.push(encode(&nodes[..index], encoding).len());
        }
        for cut in 0..bytes.len() {
            let head = scan(&bytes[..cut], encoding);
            assert_eq!(
                head.end.is_ok(),
                boundaries.contains(&cut),
                "{encoding:?} cut {cut}: {:?}",
                head.end
            );
            if let Err(error) = head.end {
                assert!(matches!(error, ScanError::Truncated { .. }), "{error:?}");
                assert_eq!(
                    check_store(&head, &store_check(syntax_of(encoding)))
                        .unwrap_err()
                        .status(),
                    Status::CANNOT_PARSE
                );
            }
        }
    }
}

#[test]
fn malformed_structures_are_c010() {
    let check = store_check(ts::EXPLICIT_VR_LITTLE_ENDIAN);
    let explicit = DatasetEncoding::ExplicitVrLittleEndian;
    let base = encode(&ct_head(4, 3), explicit);
    let status_of = |bytes: &[u8]| {
        check_store(&scan(bytes, explicit), &check)
            .unwrap_err()
            .status()
    };

    // Invalid VR.
    let mut bytes = base.clone();
    bytes.extend_from_slice(&[0x10, 0x00, 0x10, 0x10, b'x', b'1', 0, 0]);
    assert!(matches!(
        scan(&bytes, explicit).end,
        Err(ScanError::InvalidVr {
            vr: [b'x', b'1'],
            ..
        })
    ));
    assert_eq!(status_of(&bytes), Status::CANNOT_PARSE);
    // Undefined length on a US.
    let mut bytes = base.clone();
    bytes.extend_from_slice(&[0x28, 0x00, 0x30, 0x00, b'U', b'L', 0xFF, 0xFF]);
    bytes.extend_from_slice(&[0xFF, 0xFF, 0, 0]);
    let mut long_form = base.clone();
    long_form.extend_from_slice(&[
        0x28, 0x00, 0x30, 0x00, b'U', b'T', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    assert!(matches!(
        scan(&long_form, explicit).end,
        Err(ScanError::UndefinedLength { .. })
    ));
    // Item delimiter at the top level.
    let mut bytes = base.clone();
    bytes.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
    assert!(matches!(
        scan(&bytes, explicit).end,
        Err(ScanError::UnexpectedDelimiter { .. })
    ));
    assert_eq!(status_of(&bytes), Status::CANNOT_PARSE);
    // A non-item inside an undefined-length sequence.
    let mut bytes = base.clone();
    bytes.extend_from_slice(&[
        0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    bytes.extend_from_slice(&[0x08, 0x00, 0x18, 0x00, b'U', b'I', 2, 0, b'1', 0]);
    assert!(matches!(
        scan(&bytes, explicit).end,
        Err(ScanError::ExpectedItem { .. })
    ));
    // An undefined-length sequence that never ends.
    let mut bytes = base.clone();
    bytes.extend_from_slice(&[
        0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    let head = scan(&bytes, explicit);
    assert_eq!(
        head.end,
        Err(ScanError::Truncated {
            offset: bytes.len() as u64,
            inside: TruncatedIn::Sequence
        })
    );
    assert_eq!(status_of(&bytes), Status::CANNOT_PARSE);
    // A huge length: the data set ends inside the value.
    let mut bytes = base.clone();
    bytes.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFE, 0xFF, 0xFF, 0xFF,
    ]);
    bytes.extend_from_slice(&[0; 100]);
    let head = scan(&bytes, explicit);
    assert!(matches!(
        head.end,
        Err(ScanError::Truncated {
            inside: TruncatedIn::Value(Tag(0x7FE0, 0x0010)),
            ..
        })
    ));
    assert_eq!(status_of(&bytes), Status::CANNOT_PARSE);
    // After a structure error, more bytes are only counted.
    let mut scanner = HeadScanner::new(explicit);
    let _ = scanner.feed(&base);
    assert!(scanner.feed(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]).is_err());
    assert!(scanner.feed(&[0; 10]).is_err());
    assert_eq!(scanner.position(), base.len() as u64 + 18);
}

#[test]
fn store_checks_give_the_seed_statuses() {
    let encoding = DatasetEncoding::ExplicitVrLittleEndian;
    let check = store_check(ts::EXPLICIT_VR_LITTLE_ENDIAN);
    let with = |edit: &dyn Fn(&mut Vec<N>)| {
        let mut nodes = ct_head(4, 3);
        nodes.push(e(0x7FE0, 0x0010, b"OW", V::Words((0..12).collect())));
        edit(&mut nodes);
        nodes.sort_by_key(|node| match node {
            N::E(group, element, ..) | N::Seq(group, element, ..) | N::Un(group, element, _) => {
                (u32::from(*group) << 16) | u32::from(*element)
            }
            N::Frags(_) => PIXEL_DATA,
        });
        check_store(&scan(&encode(&nodes, encoding), encoding), &check)
    };
    let remove = |group: u16, element: u16| {
        move |nodes: &mut Vec<N>| {
            nodes.retain(|node| !matches!(node, N::E(g, e, ..) if (*g, *e) == (group, element)))
        }
    };
    let replace = |group: u16, element: u16, node: N| {
        move |nodes: &mut Vec<N>| {
            nodes.retain(|n| !matches!(n, N::E(g, e, ..) if (*g, *e) == (group, element)));
            nodes.push(node.clone());
        }
    };
    assert_eq!(with(&|_| {}), Ok(vec![]));
    for (group, element) in [
        (0x0008, 0x0016),
        (0x0008, 0x0018),
        (0x0020, 0x000D),
        (0x0020, 0x000E),
    ] {
        let rejection = with(&remove(group, element)).unwrap_err();
        assert_eq!(
            rejection,
            StoreRejection::MissingAttribute(Tag(group, element))
        );
        assert_eq!(
            rejection.status(),
            Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        );
        let rejection =
            with(&replace(group, element, e(group, element, b"UI", V::S("")))).unwrap_err();
        assert_eq!(
            rejection,
            StoreRejection::EmptyAttribute(Tag(group, element))
        );
    }
    let rejection = with(&replace(
        0x0008,
        0x0016,
        e(0x0008, 0x0016, b"UI", V::S("1.2.840.10008.5.1.4.1.1.4")),
    ))
    .unwrap_err();
    assert!(matches!(rejection, StoreRejection::SopClassMismatch { .. }));
    assert_eq!(
        rejection.status(),
        Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    );
    let rejection = with(&replace(
        0x0008,
        0x0018,
        e(0x0008, 0x0018, b"UI", V::S("1.2.3")),
    ))
    .unwrap_err();
    assert!(matches!(
        rejection,
        StoreRejection::SopInstanceMismatch { .. }
    ));
    // Image attributes.
    for (group, element) in [
        (0x0028, 0x0010),
        (0x0028, 0x0011),
        (0x0028, 0x0100),
        (0x0028, 0x0002),
        (0x0028, 0x0004),
    ] {
        let rejection = with(&remove(group, element)).unwrap_err();
        assert_eq!(
            rejection,
            StoreRejection::MissingAttribute(Tag(group, element))
        );
        assert_eq!(
            rejection.status(),
            Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        );
    }
    assert_eq!(
        with(&replace(
            0x0028,
            0x0010,
            e(0x0028, 0x0010, b"US", V::U16(vec![0]))
        )),
        Err(StoreRejection::EmptyAttribute(Tag(0x0028, 0x0010)))
    );
    assert!(matches!(
        with(&replace(
            0x0028,
            0x0008,
            e(0x0028, 0x0008, b"IS", V::S("x"))
        )),
        Err(StoreRejection::InvalidAttribute { .. })
    ));
    // No pixel data: C010.
    let rejection = with(&remove(0x7FE0, 0x0010)).unwrap_err();
    assert_eq!(rejection, StoreRejection::NoPixelData);
    assert_eq!(rejection.status(), Status::CANNOT_PARSE);
    // Wrong length: C011.
    let rejection = with(&replace(
        0x7FE0,
        0x0010,
        e(0x7FE0, 0x0010, b"OW", V::Words((0..11).collect())),
    ))
    .unwrap_err();
    assert_eq!(
        rejection,
        StoreRejection::PixelDataLengthMismatch {
            expected: 24,
            actual: 22
        }
    );
    assert_eq!(rejection.status(), Status::PIXEL_DATA_LENGTH_MISMATCH);
    // Two frames declared, one present: C011.
    let rejection = with(&replace(
        0x0028,
        0x0008,
        e(0x0028, 0x0008, b"IS", V::S("2")),
    ))
    .unwrap_err();
    assert_eq!(
        rejection,
        StoreRejection::PixelDataLengthMismatch {
            expected: 48,
            actual: 24
        }
    );
}

#[test]
fn pixel_length_rules() {
    let encoding = DatasetEncoding::ExplicitVrLittleEndian;
    let check = store_check(ts::EXPLICIT_VR_LITTLE_ENDIAN);
    let image = |rows: u16,
                 columns: u16,
                 bits: u16,
                 samples: u16,
                 photometric: &'static str,
                 pixel_bytes: usize| {
        let mut nodes: Vec<N> = ct_head(rows, columns)
            .into_iter()
            .filter(|node| !matches!(node, N::E(0x0028, 0x0100 | 0x0002 | 0x0004, ..)))
            .collect();
        nodes.push(e(0x0028, 0x0002, b"US", V::U16(vec![samples])));
        nodes.push(e(0x0028, 0x0004, b"CS", V::S(photometric)));
        nodes.push(e(0x0028, 0x0100, b"US", V::U16(vec![bits])));
        nodes.sort_by_key(|node| match node {
            N::E(group, element, ..) | N::Seq(group, element, ..) | N::Un(group, element, _) => {
                (u32::from(*group) << 16) | u32::from(*element)
            }
            N::Frags(_) => PIXEL_DATA,
        });
        let mut bytes = encode(&nodes, encoding);
        header(
            0x7FE0,
            0x0010,
            *b"OB",
            pixel_bytes as u32,
            encoding,
            &mut bytes,
        );
        bytes.extend(std::iter::repeat_n(0u8, pixel_bytes));
        check_store(&scan(&bytes, encoding), &check)
    };
    // 3x3 8-bit: 9 bytes, padded to 10 is fine, 9 (odd, tolerated) too, 11 is not.
    assert_eq!(image(3, 3, 8, 1, "MONOCHROME2", 10), Ok(vec![]));
    assert_eq!(image(3, 3, 8, 1, "MONOCHROME2", 9), Ok(vec![]));
    assert_eq!(
        image(3, 3, 8, 1, "MONOCHROME2", 12),
        Err(StoreRejection::PixelDataLengthMismatch {
            expected: 9,
            actual: 12
        })
    );
    // RGB.
    assert_eq!(image(2, 2, 8, 3, "RGB", 12), Ok(vec![]));
    // YBR_FULL_422: two samples' worth per pixel.
    assert_eq!(image(2, 2, 8, 3, "YBR_FULL_422", 8), Ok(vec![]));
    assert!(image(2, 2, 8, 3, "YBR_FULL_422", 12).is_err());
    // 1-bit: 3x5 = 15 bits = 2 bytes.
    assert_eq!(image(3, 5, 1, 1, "MONOCHROME2", 2), Ok(vec![]));
    // 65535 x 65535 x 16 bits does not overflow.
    assert!(matches!(
        image(65535, 65535, 16, 3, "RGB", 2),
        Err(StoreRejection::PixelDataLengthMismatch {
            expected: 25_769_017_350,
            actual: 2
        })
    ));
}

#[test]
fn non_image_classes_skip_the_image_checks() {
    let encoding = DatasetEncoding::ImplicitVrLittleEndian;
    let sr = "1.2.840.10008.5.1.4.1.1.88.11";
    let nodes = vec![
        e(0x0008, 0x0016, b"UI", V::S(sr)),
        e(0x0008, 0x0018, b"UI", V::S(INSTANCE)),
        e(0x0020, 0x000D, b"UI", V::S("1.2.3")),
        e(0x0020, 0x000E, b"UI", V::S("1.2.4")),
    ];
    let head = scan(&encode(&nodes, encoding), encoding);
    let check = StoreCheck {
        affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.88.11\0",
        affected_sop_instance_uid: INSTANCE,
        transfer_syntax: transfer_syntax(ts::IMPLICIT_VR_LITTLE_ENDIAN)
            .unwrap()
            .facts,
        image_class: crate::uid::is_image_sop_class(sr),
        lenient: Leniency::STRICT,
    };
    assert_eq!(check_store(&head, &check), Ok(vec![]));
    // The same data set claimed as an image class: Rows missing.
    let check = StoreCheck {
        image_class: true,
        ..check
    };
    assert_eq!(
        check_store(&head, &check),
        Err(StoreRejection::MissingAttribute(Tag(0x0028, 0x0010)))
    );
}

#[test]
fn deflated_and_unknown_syntaxes_are_not_scannable() {
    assert_eq!(
        HeadScanner::for_transfer_syntax(ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN).err(),
        Some(NotScannable::Deflated)
    );
    assert_eq!(
        HeadScanner::for_transfer_syntax("1.2.3.4").err(),
        Some(NotScannable::UnknownTransferSyntax)
    );
    assert_eq!(
        DatasetEncoding::from_transfer_syntax(ts::EXPLICIT_VR_BIG_ENDIAN),
        Ok(DatasetEncoding::ExplicitVrBigEndian)
    );
    assert_eq!(
        DatasetEncoding::from_transfer_syntax(ts::JPEG_2000),
        Ok(DatasetEncoding::ExplicitVrLittleEndian)
    );
    assert_eq!(
        DatasetEncoding::from_transfer_syntax("1.2.840.10008.1.2\0"),
        Ok(DatasetEncoding::ImplicitVrLittleEndian)
    );
}

#[test]
fn long_values_are_cut_at_the_cap() {
    let encoding = DatasetEncoding::ExplicitVrLittleEndian;
    let long: &'static str = Box::leak("A".repeat(3000).into_boxed_str());
    let nodes = vec![
        e(0x0008, 0x1030, b"LO", V::S(long)),
        e(0x0010, 0x0010, b"PN", V::S("Doe^John")),
    ];
    let bytes = encode(&nodes, encoding);
    let mut scanner = HeadScanner::with_limits(
        encoding,
        ScanLimits {
            value_capture_max: 100,
            depth_max: 4,
        },
    );
    scanner.feed(&bytes[..1000]).unwrap();
    scanner.feed(&bytes[1000..]).unwrap();
    let head = scanner.finish();
    assert_eq!(head.end, Ok(()));
    assert_eq!(head.raw(Field::StudyDescription).unwrap().len(), 100);
    assert!(head.is_cut(Field::StudyDescription));
    assert!(!head.is_cut(Field::PatientName));
    assert_eq!(head.text(Field::PatientName), Some(&b"Doe^John"[..]));
}

#[test]
fn first_occurrence_wins_and_empty_values_are_present() {
    let encoding = DatasetEncoding::ImplicitVrLittleEndian;
    let nodes = vec![
        e(0x0008, 0x0018, b"UI", V::S("1.1")),
        e(0x0008, 0x0018, b"UI", V::S("2.2")),
        e(0x0010, 0x0010, b"PN", V::S("")),
    ];
    let head = scan(&encode(&nodes, encoding), encoding);
    assert_eq!(head.sop_instance_uid(), Some("1.1"));
    assert!(head.is_present(Field::PatientName));
    assert_eq!(head.text(Field::PatientName), Some(&b""[..]));
    assert!(!head.is_present(Field::PatientId));
    assert_eq!(head.text(Field::PatientId), None);
}

#[test]
fn japanese_patient_name_decodes() {
    let encoding = DatasetEncoding::ExplicitVrLittleEndian;
    let nodes = vec![
        e(0x0008, 0x0005, b"CS", V::S("\\ISO 2022 IR 87")),
        e(
            0x0010,
            0x0010,
            b"PN",
            V::Bytes(b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B".to_vec()),
        ),
    ];
    let head = scan(&encode(&nodes, encoding), encoding);
    assert_eq!(
        head.decoded(Field::PatientName).as_deref(),
        Some("Yamada^Tarou=山田^太郎=やまだ^たろう")
    );
}

/// A random but well-formed node list (for the split property).
fn arbitrary_node() -> impl proptest::strategy::Strategy<Value = N> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        (
            0u16..4,
            proptest::sample::select(vec!["1.2.3", "ABC", "", "Doe^J"])
        )
            .prop_map(|(which, text)| e(
                0x0008 + which * 8,
                0x0018 + which,
                b"LO",
                V::S(text)
            )),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|bytes| e(
            0x0009,
            0x1001,
            b"OB",
            V::Bytes(bytes)
        )),
        any::<u16>().prop_map(|value| e(0x0028, 0x0010, b"US", V::U16(vec![value]))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            (
                any::<bool>(),
                proptest::collection::vec(
                    (
                        any::<bool>(),
                        proptest::collection::vec(inner.clone(), 0..3)
                    ),
                    0..3
                )
            )
                .prop_map(|(defined, items)| N::Seq(
                    0x0040,
                    0xA730,
                    defined,
                    items
                        .into_iter()
                        .map(|(defined, nodes)| Item { defined, nodes })
                        .collect()
                )),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..10), 1..4)
                .prop_map(N::Frags),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 128,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5CA7_0001),
        ..proptest::prelude::ProptestConfig::default()
    })]

    #[test]
    fn split_anywhere_gives_the_same_head(
        encoding_index in 0usize..3,
        nodes in proptest::collection::vec(arbitrary_node(), 0..6),
        cuts in proptest::collection::vec(0usize..2000, 0..12),
    ) {
        let encoding = ENCODINGS[encoding_index];
        let mut all = ct_head(4, 3);
        all.extend(nodes);
        all.push(e(0x7FE0, 0x0010, b"OW", V::Words((0..12).collect())));
        let bytes = encode(&all, encoding);
        let whole = scan(&bytes, encoding);
        proptest::prop_assert_eq!(whole.end, Ok(()));
        let mut cuts = cuts;
        cuts.sort_unstable();
        proptest::prop_assert_eq!(summary(&scan_in_chunks(&bytes, encoding, &cuts)), summary(&whole));
    }

    #[test]
    fn random_bytes_never_panic_and_split_agrees(
        encoding_index in 0usize..3,
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        cuts in proptest::collection::vec(0usize..400, 0..8),
    ) {
        let encoding = ENCODINGS[encoding_index];
        let whole = scan(&bytes, encoding);
        let mut cuts = cuts;
        cuts.sort_unstable();
        proptest::prop_assert_eq!(summary(&scan_in_chunks(&bytes, encoding, &cuts)), summary(&whole));
        let _ = check_store(&whole, &store_check(syntax_of(encoding)));
    }

    #[test]
    fn mutated_ct_never_panics(encoding_index in 0usize..3, position in 0usize..2000, byte in proptest::prelude::any::<u8>()) {
        let encoding = ENCODINGS[encoding_index];
        let (mut bytes, _) = ct_image(encoding);
        let position = position % bytes.len();
        bytes[position] = byte;
        let head = scan(&bytes, encoding);
        let _ = check_store(&head, &store_check(syntax_of(encoding)));
        let _ = head.decoded(Field::PatientName);
    }
}

/// The scanner on data sets written by dicom-object, an encoder that is not ours.
mod differential {
    use super::*;
    use dicom_core::value::{DataSetSequence, PixelFragmentSequence, PrimitiveValue, Value};
    use dicom_core::{DataElement, Length, Tag as DicomTag, VR};
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries;

    fn put(object: &mut InMemDicomObject, group: u16, element: u16, vr: VR, value: PrimitiveValue) {
        object.put(DataElement::new(DicomTag(group, element), vr, value));
    }

    fn object(encapsulated: bool) -> InMemDicomObject {
        let mut object = InMemDicomObject::new_empty();
        put(&mut object, 0x0008, 0x0005, VR::CS, "ISO_IR 100".into());
        put(&mut object, 0x0008, 0x0016, VR::UI, CT.into());
        put(&mut object, 0x0008, 0x0018, VR::UI, INSTANCE.into());
        put(&mut object, 0x0008, 0x0060, VR::CS, "CT".into());
        let items: Vec<InMemDicomObject> = (0..2)
            .map(|n| {
                let mut item = InMemDicomObject::new_empty();
                put(&mut item, 0x0008, 0x1150, VR::UI, CT.into());
                put(
                    &mut item,
                    0x0008,
                    0x1155,
                    VR::UI,
                    format!("1.2.3.{n}").into(),
                );
                // A nested Rows must not be taken for the top-level one.
                put(&mut item, 0x0028, 0x0010, VR::US, 999u16.into());
                item
            })
            .collect();
        object.put(DataElement::new(
            DicomTag(0x0008, 0x1140),
            VR::SQ,
            Value::from(DataSetSequence::new(items.clone(), Length::UNDEFINED)),
        ));
        object.put(DataElement::new(
            DicomTag(0x0008, 0x2112),
            VR::SQ,
            Value::from(DataSetSequence::new(items, Length::UNDEFINED)),
        ));
        put(&mut object, 0x0009, 0x0010, VR::LO, "PRIVATE".into());
        put(
            &mut object,
            0x0009,
            0x1001,
            VR::OB,
            PrimitiveValue::from(vec![0x5Au8; 101]),
        );
        put(&mut object, 0x0010, 0x0010, VR::PN, "Doe^Jane".into());
        put(
            &mut object,
            0x0020,
            0x000D,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.2".into(),
        );
        put(
            &mut object,
            0x0020,
            0x000E,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.3".into(),
        );
        put(&mut object, 0x0020, 0x0013, VR::IS, "17".into());
        put(&mut object, 0x0028, 0x0002, VR::US, 1u16.into());
        put(&mut object, 0x0028, 0x0004, VR::CS, "MONOCHROME2".into());
        put(&mut object, 0x0028, 0x0010, VR::US, 4u16.into());
        put(&mut object, 0x0028, 0x0011, VR::US, 3u16.into());
        put(&mut object, 0x0028, 0x0100, VR::US, 16u16.into());
        if encapsulated {
            object.put(DataElement::new(
                DicomTag(0x7FE0, 0x0010),
                VR::OB,
                Value::from(PixelFragmentSequence::new(
                    Vec::<u32>::new(),
                    vec![vec![0xFFu8, 0xD8, 0xFF, 0xD9]],
                )),
            ));
        } else {
            let words: Vec<u16> = (0..12).collect();
            put(
                &mut object,
                0x7FE0,
                0x0010,
                VR::OW,
                PrimitiveValue::U16(words.into()),
            );
        }
        object
    }

    #[test]
    fn dicom_object_data_sets_scan_in_every_encoding() {
        let cases = [
            (
                entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                DatasetEncoding::ImplicitVrLittleEndian,
                ts::IMPLICIT_VR_LITTLE_ENDIAN,
            ),
            (
                entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
                DatasetEncoding::ExplicitVrLittleEndian,
                ts::EXPLICIT_VR_LITTLE_ENDIAN,
            ),
            (
                entries::EXPLICIT_VR_BIG_ENDIAN.erased(),
                DatasetEncoding::ExplicitVrBigEndian,
                ts::EXPLICIT_VR_BIG_ENDIAN,
            ),
        ];
        for (syntax, encoding, uid) in cases {
            let mut bytes = Vec::new();
            object(false)
                .write_dataset_with_ts(&mut bytes, &syntax)
                .unwrap();
            let head = scan(&bytes, encoding);
            assert_eq!(head.end, Ok(()), "{uid}");
            assert_eq!(head.length, bytes.len() as u64);
            assert_eq!(head.sop_class_uid(), Some(CT));
            assert_eq!(head.sop_instance_uid(), Some(INSTANCE));
            assert_eq!(
                head.series_instance_uid(),
                Some("1.2.826.0.1.3680043.8.498.3")
            );
            assert_eq!(head.rows(), Some(4), "{uid}");
            assert_eq!(head.columns(), Some(3));
            assert_eq!(head.integer_string(Field::InstanceNumber), Some(Some(17)));
            assert_eq!(
                head.decoded(Field::PatientName).as_deref(),
                Some("Doe^Jane")
            );
            let pixel_data = head.pixel_data.unwrap();
            assert_eq!(pixel_data.length, PixelDataLength::Defined(24));
            // The value starts where the scanner says: words 0, 1, 2 in the
            // encoding's byte order.
            let value = &bytes[pixel_data.value_offset as usize..][..4];
            let second = if encoding.big_endian() {
                u16::from_be_bytes([value[2], value[3]])
            } else {
                u16::from_le_bytes([value[2], value[3]])
            };
            assert_eq!(second, 1);
            assert_eq!(pixel_data.value_offset + 24, bytes.len() as u64);
            assert_eq!(check_store(&head, &store_check(uid)), Ok(vec![]));
            // Split in PDV-sized pieces: the same head.
            let cuts: Vec<usize> = (1..bytes.len()).step_by(7).collect();
            assert_eq!(
                summary(&scan_in_chunks(&bytes, encoding, &cuts)),
                summary(&head)
            );
        }
        // Encapsulated, Explicit VR LE.
        let mut bytes = Vec::new();
        object(true)
            .write_dataset_with_ts(&mut bytes, &entries::EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        let head = scan(&bytes, DatasetEncoding::ExplicitVrLittleEndian);
        assert_eq!(head.end, Ok(()));
        let pixel_data = head.pixel_data.unwrap();
        assert_eq!(pixel_data.length, PixelDataLength::Undefined);
        assert_eq!(pixel_data.items, 2);
        assert_eq!(pixel_data.end_offset, Some(bytes.len() as u64));
        assert_eq!(
            check_store(&head, &store_check(ts::JPEG_BASELINE)),
            Ok(vec![])
        );
    }
}

/// A CT image deflated as PS3.5 A.5 says (raw RFC 1951, no zlib header).
fn deflated_ct_image() -> (Vec<u8>, Vec<u8>) {
    let (plain, _) = ct_image(DatasetEncoding::ExplicitVrLittleEndian);
    let deflated = miniz_oxide::deflate::compress_to_vec(&plain, 6);
    (plain, deflated)
}

fn scan_deflated_in_chunks(bytes: &[u8], cuts: &[usize]) -> DatasetHead {
    let mut scanner =
        DatasetScanner::for_transfer_syntax(ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN).unwrap();
    assert!(scanner.is_deflated());
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, bytes.len());
        let _ = scanner.feed(&bytes[start..cut]);
        start = cut;
    }
    let _ = scanner.feed(&bytes[start..]);
    scanner.finish()
}

#[test]
fn deflated_data_set_scans_like_the_inflated_one_across_every_cut() {
    let (plain, deflated) = deflated_ct_image();
    let expected = summary(&scan(&plain, DatasetEncoding::ExplicitVrLittleEndian));
    assert_eq!(expected.4, Ok(()));
    for cut in 0..=deflated.len() {
        let head = scan_deflated_in_chunks(&deflated, &[cut]);
        assert_eq!(summary(&head), expected, "cut at {cut}");
    }
    let head = scan_deflated_in_chunks(&deflated, &(1..deflated.len()).collect::<Vec<_>>());
    assert_eq!(summary(&head), expected, "one byte at a time");
    assert_eq!(
        check_store(&head, &store_check(ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)),
        Ok(vec![])
    );
}

#[test]
fn deflated_data_set_larger_than_the_window_is_inflated_whole() {
    // A 300 KiB pixel value inflates through the 32 KiB window many times.
    let mut nodes = ct_head(320, 480);
    nodes.push(e(
        0x7FE0,
        0x0010,
        b"OW",
        V::Words((0..320u32 * 480).map(|word| (word % 4096) as u16).collect()),
    ));
    let plain = encode(&nodes, DatasetEncoding::ExplicitVrLittleEndian);
    let deflated = miniz_oxide::deflate::compress_to_vec(&plain, 1);
    let head = scan_deflated_in_chunks(&deflated, &[deflated.len() / 3, deflated.len() / 2]);
    assert_eq!(head.end, Ok(()));
    assert_eq!(head.length, plain.len() as u64);
    assert_eq!(
        summary(&head),
        summary(&scan(&plain, DatasetEncoding::ExplicitVrLittleEndian))
    );
}

#[test]
fn deflated_stream_cut_short_is_truncated() {
    let (_, deflated) = deflated_ct_image();
    let head = scan_deflated_in_chunks(&deflated[..deflated.len() - 3], &[]);
    assert!(
        matches!(head.end, Err(ScanError::Truncated { .. })),
        "{:?}",
        head.end
    );
}

#[test]
fn corrupt_deflated_stream_is_an_inflate_error() {
    let (_, deflated) = deflated_ct_image();
    // Block type 3 is reserved (RFC 1951 3.2.3): BFINAL=1, BTYPE=11.
    let mut corrupt = vec![0b0000_0111];
    corrupt.extend_from_slice(&deflated);
    let head = scan_deflated_in_chunks(&corrupt, &[]);
    assert!(
        matches!(head.end, Err(ScanError::Inflate { .. })),
        "{:?}",
        head.end
    );
}

#[test]
fn bytes_after_the_stream_are_counted_unless_a_pad_or_a_gzip_trailer() {
    let (plain, deflated) = deflated_ct_image();
    // A zero pad byte (PS3.5 A.5), even arriving in its own chunk.
    let mut padded = deflated.clone();
    padded.push(0);
    let head = scan_deflated_in_chunks(&padded, &[deflated.len()]);
    assert_eq!(head.end, Ok(()));
    assert_eq!(head.length, plain.len() as u64);
    assert_eq!(head.trailing_bytes, 0);
    // A gzip member trailer: CRC-32 (not checked) and the inflated size
    // modulo 2^32, as in pydicom's image_dfl.dcm, split across chunks.
    let mut gzip = deflated.clone();
    gzip.extend_from_slice(&[0x4e, 0xd0, 0x58, 0x45]);
    gzip.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    let head = scan_deflated_in_chunks(&gzip, &[deflated.len() + 3]);
    assert_eq!((head.end, head.trailing_bytes), (Ok(()), 0));
    // Anything else is counted, for the C-STORE check to judge; the data
    // set itself is fine.
    for trailer in [&[0u8, 0][..], &[7][..], &[1, 2, 3, 4, 0, 0, 0, 0][..]] {
        let mut extra = deflated.clone();
        extra.extend_from_slice(trailer);
        let head = scan_deflated_in_chunks(&extra, &[]);
        assert_eq!(head.end, Ok(()), "{trailer:?}");
        assert_eq!(head.trailing_bytes, trailer.len() as u64, "{trailer:?}");
        let check = store_check(ts::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN);
        let refusal = check_store(&head, &check).unwrap_err();
        assert_eq!(refusal.status(), Status::CANNOT_PARSE);
        let lenient = StoreCheck {
            lenient: Leniency::STRICT.with(LenientCheck::DeflateTrailingBytes),
            ..check
        };
        assert_eq!(check_store(&head, &lenient), Ok(vec![refusal]));
    }
}

#[test]
fn dataset_scanner_passes_plain_syntaxes_through() {
    let (plain, _) = ct_image(DatasetEncoding::ImplicitVrLittleEndian);
    let mut scanner = DatasetScanner::for_transfer_syntax(ts::IMPLICIT_VR_LITTLE_ENDIAN).unwrap();
    assert!(!scanner.is_deflated());
    scanner.feed(&plain).unwrap();
    assert_eq!(
        summary(&scanner.finish()),
        summary(&scan(&plain, DatasetEncoding::ImplicitVrLittleEndian))
    );
    assert_eq!(
        DatasetScanner::for_transfer_syntax("1.2.3.4").err(),
        Some(NotScannable::UnknownTransferSyntax)
    );
}

/// A CT head with `replace` applied to its elements (by tag; `None` drops
/// the element) and `pixel_words` words of Pixel Data (4 x 3 expects 12).
fn ct_with(replace: &[((u16, u16), Option<&'static str>)], pixel_words: u16) -> DatasetHead {
    let encoding = DatasetEncoding::ExplicitVrLittleEndian;
    let mut nodes: Vec<N> = ct_head(4, 3)
        .into_iter()
        .filter_map(|node| {
            let N::E(group, element, vr, value) = node else {
                return Some(node);
            };
            match replace.iter().find(|(tag, _)| *tag == (group, element)) {
                Some((_, None)) => None,
                Some((_, Some(text))) => Some(N::E(group, element, vr, V::S(text))),
                None => Some(N::E(group, element, vr, value)),
            }
        })
        .collect();
    nodes.push(e(
        0x7FE0,
        0x0010,
        b"OW",
        V::Words((0..pixel_words).collect()),
    ));
    scan(&encode(&nodes, encoding), encoding)
}

#[test]
fn uids_malformed_always_refuse_and_leading_zeros_follow_the_leniency() {
    let strict = store_check(ts::EXPLICIT_VR_LITTLE_ENDIAN);
    let lenient = StoreCheck {
        lenient: Leniency::STRICT.with(LenientCheck::UidLeadingZero),
        ..strict
    };
    let study = Field::StudyInstanceUid.tag();
    // Malformed: refused whatever the leniency.
    for (uid, error) in [
        ("1.2..3", UidError::EmptyComponent { position: 4 }),
        (".1.2", UidError::EmptyComponent { position: 0 }),
        ("1.2.", UidError::EmptyComponent { position: 4 }),
        (
            "1.2a",
            UidError::InvalidCharacter {
                position: 3,
                byte: b'a',
            },
        ),
    ] {
        let head = ct_with(&[((0x0020, 0x000D), Some(uid))], 12);
        for check in [&strict, &lenient] {
            assert_eq!(
                check_store(&head, check),
                Err(StoreRejection::InvalidUid { tag: study, error }),
                "{uid}"
            );
        }
    }
    let long = "1.2.3456789012345678901234567890123456789012345678901234567890123";
    assert_eq!(long.len(), 65);
    let head = ct_with(&[((0x0020, 0x000E), Some(long))], 12);
    assert!(matches!(
        check_store(&head, &lenient),
        Err(StoreRejection::InvalidUid {
            error: UidError::TooLong { length: 65 },
            ..
        })
    ));
    // A leading zero: A900 when strict, a warning when lenient.
    let head = ct_with(&[((0x0020, 0x000D), Some("1.2.03"))], 12);
    let finding = StoreRejection::UidLeadingZero {
        tag: study,
        position: 4,
    };
    assert_eq!(check_store(&head, &strict), Err(finding.clone()));
    assert_eq!(finding.status(), Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS);
    assert_eq!(check_store(&head, &lenient), Ok(vec![finding]));
    // The command's own UIDs, under the same rules.
    let command = |instance: &'static str, check: &StoreCheck<'static>| {
        check_command(&StoreCheck {
            affected_sop_instance_uid: instance,
            ..*check
        })
    };
    assert_eq!(command(INSTANCE, &strict), Ok(vec![]));
    assert_eq!(
        command("1.2..3\0", &lenient),
        Err(StoreRejection::InvalidUid {
            tag: crate::dimse::tags::AFFECTED_SOP_INSTANCE_UID,
            error: UidError::EmptyComponent { position: 4 }
        })
    );
    let leading = StoreRejection::UidLeadingZero {
        tag: crate::dimse::tags::AFFECTED_SOP_INSTANCE_UID,
        position: 2,
    };
    assert_eq!(command("1.02", &strict), Err(leading.clone()));
    assert_eq!(command("1.02", &lenient), Ok(vec![leading]));
}

#[test]
fn each_lenient_check_turns_its_refusal_into_a_warning() {
    let strict = store_check(ts::EXPLICIT_VR_LITTLE_ENDIAN);
    let only = |check: LenientCheck| StoreCheck {
        lenient: Leniency::STRICT.with(check),
        ..strict
    };
    let cases: [(&str, DatasetHead, LenientCheck, u16); 5] = [
        (
            "no SOP Class UID",
            ct_with(&[((0x0008, 0x0016), None)], 12),
            LenientCheck::SopUidsMissing,
            0xA900,
        ),
        (
            "empty SOP Instance UID",
            ct_with(&[((0x0008, 0x0018), Some(""))], 12),
            LenientCheck::SopUidsMissing,
            0xA900,
        ),
        (
            "no Rows",
            ct_with(&[((0x0028, 0x0010), None)], 12),
            LenientCheck::ImagePixelModule,
            0xA900,
        ),
        (
            "trailing bytes",
            ct_with(&[], 12 + 64),
            LenientCheck::PixelDataTrailingBytes,
            0xC011,
        ),
        (
            "short",
            ct_with(&[], 6),
            LenientCheck::PixelDataShort,
            0xC011,
        ),
    ];
    for (name, head, check, status) in cases {
        let refusal = check_store(&head, &strict).unwrap_err();
        assert_eq!(refusal.status(), Status(status), "{name}");
        assert_eq!(refusal.check(), Some(check), "{name}");
        assert_eq!(
            check_store(&head, &only(check)),
            Ok(vec![refusal]),
            "{name}"
        );
        // Another check's leniency does not help.
        for other in LenientCheck::ALL
            .into_iter()
            .filter(|other| *other != check)
        {
            assert!(
                check_store(&head, &only(other)).is_err(),
                "{name} {other:?}"
            );
        }
    }
    // What always refuses: Study/Series missing, a mismatch with the command.
    let all = StoreCheck {
        lenient: LenientCheck::ALL
            .into_iter()
            .fold(Leniency::STRICT, Leniency::with),
        ..strict
    };
    for (name, head) in [
        ("no Study", ct_with(&[((0x0020, 0x000D), None)], 12)),
        ("no Series", ct_with(&[((0x0020, 0x000E), Some(""))], 12)),
        (
            "other instance",
            ct_with(&[((0x0008, 0x0018), Some("1.2.3"))], 12),
        ),
    ] {
        let refusal = check_store(&head, &all).unwrap_err();
        assert_eq!(refusal.check(), None, "{name}");
    }
}
