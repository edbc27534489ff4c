//! The whole receive path of one C-STORE, sans I/O: a command and a data set
//! framed as P-DATA, the byte stream cut at arbitrary points (as reads from
//! a socket cut it), fed to the streaming decoder, and the data-set
//! fragments fed to the head scanner. Wherever the cuts fall, the PDVs carry
//! the same bytes and the scanner reaches the same result as a scan of the
//! whole data set in one piece.

use proptest::prelude::*;
use sluice_net::dimse::{CStoreRq, Command, Priority};
use sluice_net::pdata::{encode_message, StreamDecoder, StreamEvent};
use sluice_net::pdu::DecodeLimits;
use sluice_net::scan::{scan, DatasetEncoding, Field, HeadScanner};

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const SOP_INSTANCE: &str = "1.2.826.0.1.3680043.10.1234.5.6";

fn element(out: &mut Vec<u8>, group: u16, element: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

fn padded(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    bytes
}

/// A small explicit VR LE CT image with a private blob before the pixels.
fn ct_dataset() -> Vec<u8> {
    let mut ds = Vec::new();
    element(&mut ds, 0x0008, 0x0016, b"UI", &padded(CT));
    element(&mut ds, 0x0008, 0x0018, b"UI", &padded(SOP_INSTANCE));
    element(&mut ds, 0x0008, 0x0060, b"CS", b"CT");
    element(&mut ds, 0x0009, 0x0010, b"LO", b"SLUICE  ");
    element(&mut ds, 0x0009, 0x1010, b"OB", &[0xAB; 3000]);
    element(&mut ds, 0x0010, 0x0010, b"PN", b"Doe^Jane");
    element(
        &mut ds,
        0x0020,
        0x000D,
        b"UI",
        &padded("1.2.826.0.1.3680043.10.1234.1"),
    );
    element(
        &mut ds,
        0x0020,
        0x000E,
        b"UI",
        &padded("1.2.826.0.1.3680043.10.1234.2"),
    );
    element(&mut ds, 0x0028, 0x0002, b"US", &1u16.to_le_bytes());
    element(&mut ds, 0x0028, 0x0004, b"CS", b"MONOCHROME2 ");
    element(&mut ds, 0x0028, 0x0010, b"US", &32u16.to_le_bytes());
    element(&mut ds, 0x0028, 0x0011, b"US", &32u16.to_le_bytes());
    element(&mut ds, 0x0028, 0x0100, b"US", &16u16.to_le_bytes());
    let pixels: Vec<u8> = (0..32 * 32 * 2).map(|i| (i % 251) as u8).collect();
    element(&mut ds, 0x7FE0, 0x0010, b"OW", &pixels);
    ds
}

fn wire(dataset: &[u8], pdu_length_max: u32) -> Vec<u8> {
    let command = Command::CStoreRq(CStoreRq {
        message_id: 7,
        priority: Priority::Medium,
        affected_sop_class_uid: CT.into(),
        affected_sop_instance_uid: SOP_INSTANCE.into(),
        move_originator: None,
    })
    .encode()
    .unwrap();
    let mut stream = Vec::new();
    encode_message(1, true, &command, pdu_length_max, &mut stream).unwrap();
    encode_message(1, false, dataset, pdu_length_max, &mut stream).unwrap();
    stream
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, rng_seed: proptest::test_runner::RngSeed::Fixed(0x5111CE), ..ProptestConfig::default() })]

    #[test]
    fn cuts_anywhere_give_the_same_pdvs_and_the_same_head(
        cuts in proptest::collection::vec(1usize..3000, 0..40),
        pdu_length_max in prop_oneof![Just(4096u32), Just(16384), 1024u32..5000],
    ) {
        let dataset = ct_dataset();
        let stream = wire(&dataset, pdu_length_max);
        let whole = scan(&dataset, DatasetEncoding::ExplicitVrLittleEndian);

        let mut decoder = StreamDecoder::new(DecodeLimits::default());
        let mut scanner = HeadScanner::new(DatasetEncoding::ExplicitVrLittleEndian);
        let (mut command, mut received) = (Vec::new(), Vec::new());
        let mut offset = 0;
        let mut cut_iter = cuts.iter().cycle();
        while offset < stream.len() {
            let read_length = (*cut_iter.next().unwrap_or(&stream.len())).min(stream.len() - offset);
            let mut read = &stream[offset..offset + read_length];
            offset += read_length;
            while !read.is_empty() {
                let step = decoder.next_event(read).unwrap();
                read = &read[step.consumed..];
                match step.event {
                    None => break,
                    Some(StreamEvent::PdvFragment(fragment)) if fragment.is_command => {
                        command.extend_from_slice(fragment.bytes)
                    }
                    Some(StreamEvent::PdvFragment(fragment)) => {
                        received.extend_from_slice(fragment.bytes);
                        scanner.feed(fragment.bytes).unwrap();
                    }
                    Some(_) => {}
                }
            }
        }
        prop_assert!(matches!(Command::decode(&command).unwrap(), Command::CStoreRq(_)));
        prop_assert_eq!(&received, &dataset);
        let split = scanner.finish();
        prop_assert_eq!(format!("{split:?}"), format!("{whole:?}"));
        prop_assert_eq!(split.uid(Field::SopInstanceUid), Some(SOP_INSTANCE));
        prop_assert_eq!(split.rows(), Some(32));
        prop_assert!(split.pixel_data.is_some());
    }
}
