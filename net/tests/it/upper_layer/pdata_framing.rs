//! The P-DATA fast path: the streaming decoder against the contiguous
//! framer on the same bytes split at arbitrary points, and the encoders.

use super::strategies::{self, config};
use proptest::collection::vec;
use proptest::prelude::*;
use sluice_net::pdata::*;
use sluice_net::pdu::*;

/// What a receiver makes of a stream, independent of how it was split.
#[derive(Debug, PartialEq, Eq)]
enum Logical {
    PDataStart(u32),
    Pdv {
        presentation_context_id: u8,
        is_command: bool,
        is_last: bool,
        value: Vec<u8>,
    },
    Control(Pdu),
}

fn limits() -> DecodeLimits {
    DecodeLimits {
        pdata_length_max: 1 << 20,
        associate_length_max: 1 << 20,
    }
}

/// The contiguous framer over the whole stream.
fn framed(stream: &[u8]) -> Vec<Logical> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < stream.len() {
        let (frame, used) = frame_pdu(&stream[offset..], &limits()).unwrap().unwrap();
        match frame {
            Frame::PData(pdata) => {
                out.push(Logical::PDataStart((used - 6) as u32));
                for pdv in pdata.pdvs() {
                    out.push(Logical::Pdv {
                        presentation_context_id: pdv.presentation_context_id,
                        is_command: pdv.is_command,
                        is_last: pdv.is_last,
                        value: pdv.bytes.to_vec(),
                    });
                }
            }
            Frame::Control(pdu) => out.push(Logical::Control(pdu)),
        }
        offset += used;
    }
    out
}

/// The streaming decoder fed `stream` cut at `cuts`; checks every fragment
/// borrows from the piece it came from.
fn streamed(stream: &[u8], cuts: &[usize]) -> Vec<Logical> {
    let mut decoder = StreamDecoder::new(limits());
    let mut out = Vec::new();
    let mut value: Option<Vec<u8>> = None;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(0);
    bounds.push(stream.len());
    bounds.sort_unstable();
    for window in bounds.windows(2) {
        let piece = &stream[window[0]..window[1]];
        let piece_range = piece.as_ptr_range();
        let mut offset = 0;
        loop {
            let step = decoder.next_event(&piece[offset..]).unwrap();
            offset += step.consumed;
            let Some(event) = step.event else {
                assert_eq!(offset, piece.len(), "no event means the piece was consumed");
                break;
            };
            match event {
                StreamEvent::PDataStart { pdu_length } => out.push(Logical::PDataStart(pdu_length)),
                StreamEvent::PdvFragment(fragment) => {
                    if !fragment.bytes.is_empty() {
                        let range = fragment.bytes.as_ptr_range();
                        assert!(
                            piece_range.start <= range.start && range.end <= piece_range.end,
                            "fragment not borrowed from its piece"
                        );
                    }
                    let buffer = value.get_or_insert_with(Vec::new);
                    assert_eq!(fragment.value_offset as usize, buffer.len());
                    buffer.extend_from_slice(fragment.bytes);
                    if fragment.pdv_complete {
                        out.push(Logical::Pdv {
                            presentation_context_id: fragment.presentation_context_id,
                            is_command: fragment.is_command,
                            is_last: fragment.is_last,
                            value: value.take().unwrap(),
                        });
                    }
                }
                StreamEvent::Control(pdu) => out.push(Logical::Control(pdu)),
            }
        }
    }
    assert!(decoder.is_at_pdu_boundary());
    assert!(value.is_none(), "a PDV was left incomplete");
    out
}

fn stream_pdu() -> impl Strategy<Value = Pdu> {
    prop_oneof![
        4 => strategies::pdata_tf(600),
        1 => Just(Pdu::ReleaseRq),
        1 => strategies::abort().prop_map(Pdu::Abort),
        1 => strategies::associate_rq().prop_map(|rq| Pdu::AssociateRq(Box::new(rq))),
        1 => strategies::associate_rj().prop_map(Pdu::AssociateRj),
    ]
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn splitting_a_stream_anywhere_yields_the_same_pdvs(
        pdus in vec(stream_pdu(), 1..6),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for pdu in &pdus {
            pdu.encode(&mut stream).unwrap();
        }
        let expected = framed(&stream);
        prop_assert_eq!(streamed(&stream, &cuts), expected);
    }

    #[test]
    fn byte_at_a_time_matches_the_framer(pdus in vec(stream_pdu(), 1..3)) {
        let mut stream = Vec::new();
        for pdu in &pdus {
            pdu.encode(&mut stream).unwrap();
        }
        let cuts: Vec<usize> = (1..stream.len()).collect();
        prop_assert_eq!(streamed(&stream, &cuts), framed(&stream));
    }

    /// A message fragmented for a peer's maximum comes back whole, every
    /// PDU within the maximum and the last bit only on the last PDV.
    #[test]
    fn fragmenter_output_reassembles(
        message in strategies::bytes(5000),
        pdu_length_max_peer in 7u32..2048,
        is_command in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        encode_message(7, is_command, &message, pdu_length_max_peer, &mut wire).unwrap();
        let limits = DecodeLimits { pdata_length_max: pdu_length_max_peer, ..DecodeLimits::default() };
        let mut offset = 0;
        let mut reassembled = Vec::new();
        let mut lasts = Vec::new();
        while offset < wire.len() {
            let (Frame::PData(pdata), used) = frame_pdu(&wire[offset..], &limits).unwrap().unwrap() else {
                panic!("not P-DATA")
            };
            for pdv in pdata.pdvs() {
                prop_assert_eq!(pdv.presentation_context_id, 7);
                prop_assert_eq!(pdv.is_command, is_command);
                reassembled.extend_from_slice(pdv.bytes);
                lasts.push(pdv.is_last);
            }
            offset += used;
        }
        prop_assert_eq!(reassembled, message);
        prop_assert_eq!(lasts.iter().filter(|&&l| l).count(), 1);
        prop_assert!(*lasts.last().unwrap());
    }
}

#[test]
fn fragmenter_headers_plus_slices_equal_the_contiguous_encoding() {
    let message: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    let mut contiguous = Vec::new();
    encode_message(3, false, &message, 16_384, &mut contiguous).unwrap();
    // What a sender would writev: headers, then a slice of its own buffer.
    let mut gathered = Vec::new();
    let fragmenter = PDataFragmenter::new(3, false, message.len() as u64, 16_384).unwrap();
    assert_eq!(fragmenter.fragment_count(), 3);
    for fragment in fragmenter {
        gathered.extend_from_slice(&fragment.headers);
        gathered.extend_from_slice(&message[fragment.value_range().unwrap()]);
    }
    assert_eq!(gathered, contiguous);
    // Every PDU-length is the peer's maximum or less: 16384 = 6 + 16378.
    assert_eq!(
        u32::from_be_bytes(contiguous[2..6].try_into().unwrap()),
        16_384
    );
}

#[test]
fn peer_without_maximum_gets_one_mib_pdus() {
    let fragments: Vec<_> = PDataFragmenter::new(1, false, 3 << 20, 0)
        .unwrap()
        .collect();
    assert_eq!(fragments.len(), 4);
    assert!(fragments
        .iter()
        .all(|f| f.value_length <= PDATA_LENGTH_WHEN_PEER_UNLIMITED - 6));
}

#[test]
fn several_pdvs_in_one_pdu_are_all_yielded() {
    let pdvs = [
        Pdv {
            presentation_context_id: 1,
            is_command: true,
            is_last: true,
            bytes: b"command",
        },
        Pdv {
            presentation_context_id: 1,
            is_command: false,
            is_last: false,
            bytes: b"data-1",
        },
        Pdv {
            presentation_context_id: 1,
            is_command: false,
            is_last: true,
            bytes: b"data-2",
        },
    ];
    let mut bytes = Vec::new();
    encode_pdata_tf(&pdvs, &mut bytes).unwrap();
    let (Frame::PData(pdata), _) = frame_pdu(&bytes, &DecodeLimits::default())
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(pdata.pdvs().collect::<Vec<_>>(), pdvs);
    let events: Vec<_> = StreamDecoder::new(DecodeLimits::default())
        .feed(&bytes)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events.len(), 4);
}

#[test]
fn feed_reports_bytes_consumed() {
    let mut bytes = Pdu::ReleaseRq.to_bytes().unwrap();
    bytes.extend_from_slice(&[4, 0, 0]); // start of a P-DATA header
    let mut decoder = StreamDecoder::new(DecodeLimits::default());
    let mut feed = decoder.feed(&bytes);
    assert_eq!(feed.next(), Some(Ok(StreamEvent::Control(Pdu::ReleaseRq))));
    assert_eq!(feed.consumed(), 10);
    assert_eq!(feed.next(), None);
    assert_eq!(feed.consumed(), 13);
    assert!(!decoder.is_at_pdu_boundary());
}

#[test]
fn negotiated_maximum_can_be_raised_after_association() {
    let mut bytes = Vec::new();
    encode_message(1, false, &[0u8; 30_000], 40_000, &mut bytes).unwrap();
    let mut decoder = StreamDecoder::new(DecodeLimits {
        pdata_length_max: 16_384,
        ..DecodeLimits::default()
    });
    decoder.set_pdata_length_max(40_000);
    assert_eq!(decoder.limits().pdata_length_max, 40_000);
    assert!(decoder.feed(&bytes).all(|event| event.is_ok()));
}
