//! `pdu`: one whole PDU through [`decode_pdu`] (every type, every
//! A-ASSOCIATE sub-item), limits as an acceptor sets them before
//! negotiation but with P-DATA unlimited.
//!
//! Must hold: the stream decoder agrees with `decode_pdu` on the same bytes;
//! a decoded PDU encodes (but for two deliberate leniencies, below),
//! decodes back equal and encodes to the same bytes; a decode error maps to
//! an A-ABORT reason.

use sluice_net::assoc::InvalidPdu;
use sluice_net::pdu::{decode_pdu, DecodeLimits, EncodeError, Pdu, ASSOCIATE_LENGTH_MAX_DEFAULT};

use super::pdata_stream::{decode, Event};

const LIMITS: DecodeLimits = DecodeLimits {
    pdata_length_max: 0,
    associate_length_max: ASSOCIATE_LENGTH_MAX_DEFAULT,
};

pub(crate) fn run(input: &[u8]) {
    let (pdu, used) = match decode_pdu(input, &LIMITS) {
        Ok(Some(decoded)) => decoded,
        Ok(None) => return,
        Err(error) => {
            let _ = InvalidPdu::new(error.pdu_type(), &error);
            return;
        }
    };
    assert!(
        used <= input.len(),
        "decode_pdu used more than it was given"
    );
    let whole = input.get(..used).unwrap_or_default();
    let (events, at_boundary) = decode([whole], LIMITS);
    assert!(at_boundary, "the stream decoder did not end with the PDU");
    let expected = match pdu.clone() {
        Pdu::PDataTf(values) => {
            let pdu_length = u32::try_from(used - 6).expect("PDU-length");
            std::iter::once(Event::PDataStart(pdu_length))
                .chain(values.into_iter().map(|pdv| Event::Pdv {
                    context: pdv.presentation_context_id,
                    command: pdv.is_command,
                    last: pdv.is_last,
                    value: pdv.value,
                    complete: true,
                }))
                .collect()
        }
        control => vec![Event::Control(control)],
    };
    assert_eq!(
        events, expected,
        "the stream decoder and decode_pdu disagree"
    );

    let bytes = match pdu.to_bytes() {
        Ok(bytes) => bytes,
        // Deliberate leniency, harmless because neither side re-encodes
        // what it received: the AE titles an A-ASSOCIATE-AC echoes "shall
        // not be tested" (PS3.8 Table 9-17), so decode keeps any printable
        // title; a peer's Implementation Version Name is kept (for the log)
        // whatever its length. Encode writes only valid ones.
        Err(EncodeError::BadAeTitle { .. }) if matches!(pdu, Pdu::AssociateAc(_)) => return,
        Err(EncodeError::ImplementationVersionNameLength { .. }) => return,
        Err(error) => panic!("a decoded PDU must encode: {error}"),
    };
    let (again, used_again) = decode_pdu(&bytes, &LIMITS)
        .expect("our own encoding must decode")
        .expect("our own encoding is a whole PDU");
    assert_eq!(used_again, bytes.len(), "encoded length");
    assert_eq!(again, pdu, "decode -> encode -> decode changed the PDU");
    assert_eq!(again.to_bytes().ok(), Some(bytes), "encoding is not stable");
}
