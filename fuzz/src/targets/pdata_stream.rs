//! `pdata_stream`: the receive path's framer. The input is a byte stream
//! from a peer; it is decoded twice by [`StreamDecoder`], once in one slice
//! and once in input-derived cuts, and once by [`frame_pdu`] PDU by PDU.
//!
//! Must hold: the two stream decodes give the same events (PDV values
//! coalesced) and the same error; every fragment is the tail of what its
//! step consumed; every PDU `frame_pdu` frames comes out of the stream
//! decoder the same, and where `frame_pdu` fails the stream decoder fails in
//! that PDU too.

use sluice_net::pdata::{frame_pdu, Frame, StreamDecoder, StreamEvent};
use sluice_net::pdu::{DecodeError, DecodeLimits, Pdu, PduType};

use crate::cuts::Cuts;

/// A stream event with PDV fragments coalesced into whole values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    PDataStart(u32),
    Pdv {
        context: u8,
        command: bool,
        last: bool,
        value: Vec<u8>,
        complete: bool,
    },
    Control(Pdu),
    Failed(DecodeError, Option<PduType>),
}

/// The events of `pieces` fed in order, and whether the decoder ended at a
/// PDU boundary.
pub(crate) fn decode<'a>(
    pieces: impl IntoIterator<Item = &'a [u8]>,
    limits: DecodeLimits,
) -> (Vec<Event>, bool) {
    let mut decoder = StreamDecoder::new(limits);
    let mut events = Vec::new();
    for piece in pieces {
        let mut rest = piece;
        loop {
            match decoder.next_event(rest) {
                Ok(step) => {
                    assert!(step.consumed <= rest.len(), "consumed past the slice");
                    let (taken, after) = rest.split_at(step.consumed);
                    rest = after;
                    let Some(event) = step.event else {
                        assert!(rest.is_empty(), "no event but bytes left unconsumed");
                        break;
                    };
                    push(&mut events, event, taken);
                }
                Err(error) => {
                    events.push(Event::Failed(error, decoder.failed_pdu_type()));
                    assert_eq!(
                        decoder.next_event(b"\x05\x00"),
                        Err(DecodeError::DecoderFailed),
                        "a failed decoder stays failed"
                    );
                    assert!(!decoder.is_at_pdu_boundary());
                    return (events, false);
                }
            }
        }
    }
    (events, decoder.is_at_pdu_boundary())
}

fn push(events: &mut Vec<Event>, event: StreamEvent<'_>, taken: &[u8]) {
    let fragment = match event {
        StreamEvent::PDataStart { pdu_length } => {
            assert_no_open_pdv(events);
            events.push(Event::PDataStart(pdu_length));
            return;
        }
        StreamEvent::Control(pdu) => {
            assert_no_open_pdv(events);
            assert!(!matches!(pdu, Pdu::PDataTf(_)), "P-DATA as a control PDU");
            events.push(Event::Control(pdu));
            return;
        }
        StreamEvent::PdvFragment(fragment) => fragment,
    };
    // The documented zero-copy contract: the fragment is the tail of the
    // bytes its step consumed.
    let tail = taken
        .len()
        .checked_sub(fragment.bytes.len())
        .and_then(|start| taken.get(start..))
        .expect("fragment longer than the bytes consumed");
    assert_eq!(tail, fragment.bytes, "fragment is not the consumed tail");
    if let Some(Event::Pdv {
        context,
        command,
        last,
        value,
        complete: complete @ false,
    }) = events.last_mut()
    {
        assert_eq!(
            (*context, *command, *last),
            (
                fragment.presentation_context_id,
                fragment.is_command,
                fragment.is_last
            ),
            "a PDV's fragments disagree on its header"
        );
        assert_eq!(
            fragment.value_offset as usize,
            value.len(),
            "fragment offset"
        );
        value.extend_from_slice(fragment.bytes);
        *complete = fragment.pdv_complete;
        return;
    }
    assert_eq!(fragment.value_offset, 0, "first fragment of a PDV not at 0");
    events.push(Event::Pdv {
        context: fragment.presentation_context_id,
        command: fragment.is_command,
        last: fragment.is_last,
        value: fragment.bytes.to_vec(),
        complete: fragment.pdv_complete,
    });
}

fn assert_no_open_pdv(events: &[Event]) {
    assert!(
        !matches!(
            events.last(),
            Some(Event::Pdv {
                complete: false,
                ..
            })
        ),
        "a new PDU began inside a PDV"
    );
}

/// The events `frame_pdu` implies for the whole buffer, how far it framed,
/// and whether it stopped at an error.
fn framed(input: &[u8], limits: &DecodeLimits) -> (Vec<Event>, usize, bool) {
    let mut events = Vec::new();
    let mut offset = 0;
    loop {
        let rest = input.get(offset..).unwrap_or_default();
        match frame_pdu(rest, limits) {
            Ok(Some((frame, used))) => {
                assert!(used > 0 && used <= rest.len(), "frame length");
                match frame {
                    Frame::PData(pdata) => {
                        let pdu_length = u32::try_from(used - 6).expect("PDU-length");
                        events.push(Event::PDataStart(pdu_length));
                        events.extend(pdata.pdvs().map(|pdv| Event::Pdv {
                            context: pdv.presentation_context_id,
                            command: pdv.is_command,
                            last: pdv.is_last,
                            value: pdv.bytes.to_vec(),
                            complete: true,
                        }));
                    }
                    Frame::Control(pdu) => events.push(Event::Control(pdu)),
                }
                offset += used;
            }
            Ok(None) => return (events, offset, false),
            Err(_) => return (events, offset, true),
        }
    }
}

pub(crate) fn run(input: &[u8]) {
    let limits = DecodeLimits::default();
    let (whole, whole_at_boundary) = decode([input], limits);
    let pieces = Cuts::for_input(input).split(input);
    let (cut, cut_at_boundary) = decode(pieces, limits);
    assert_eq!(whole, cut, "cuts changed the events");
    assert_eq!(whole_at_boundary, cut_at_boundary);

    let (expected, framed_to, framing_failed) = framed(input, &limits);
    assert_eq!(
        whole.get(..expected.len()),
        Some(expected.as_slice()),
        "the stream decoder and frame_pdu disagree on whole PDUs"
    );
    let tail = whole.get(expected.len()..).unwrap_or_default();
    assert!(
        !tail.iter().any(|event| matches!(event, Event::Control(_))),
        "the stream decoder completed a PDU frame_pdu did not"
    );
    let stream_failed = matches!(tail.last(), Some(Event::Failed(..)));
    if framing_failed {
        assert!(
            stream_failed,
            "frame_pdu failed, the stream decoder did not"
        );
    } else if stream_failed {
        // Only a P-DATA-TF's PDV items are judged before the PDU is whole.
        assert_eq!(
            input.get(framed_to),
            Some(&PduType::PDataTf.code()),
            "the stream decoder failed an incomplete control PDU"
        );
    }
    assert_eq!(
        whole_at_boundary,
        !framing_failed && !stream_failed && framed_to == input.len(),
        "PDU boundary"
    );
}
