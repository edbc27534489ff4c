//! `commitment`: Storage Commitment action and event information. The first
//! input byte picks the encoding and nesting limit as in `small_dataset`
//! (bits 0-3), a request or a result (bit 4) and the result's Event Type ID
//! (bit 5: 1 or 2); the rest is the data set.
//!
//! Must hold: a decoded request or result encodes and decodes back equal.

use sluice_net::dimse::commitment::{
    CommitmentRequest, CommitmentResult, EVENT_TYPE_FAILURES_EXIST, EVENT_TYPE_SUCCESSFUL,
};

use super::small_dataset::knobs;

pub(crate) fn run(input: &[u8]) {
    let Some((first, bytes)) = input.split_first() else {
        return;
    };
    let (encoding, limits) = knobs(*first);
    if first & 0x10 == 0 {
        let Ok(request) = CommitmentRequest::decode(bytes, encoding, limits) else {
            return;
        };
        let encoded = request
            .encode(encoding)
            .expect("a decoded request must encode");
        let again = CommitmentRequest::decode(&encoded, encoding, limits)
            .expect("our own encoding must decode");
        assert_eq!(again, request, "request round trip");
    } else {
        let event_type_id = if first & 0x20 == 0 {
            EVENT_TYPE_SUCCESSFUL
        } else {
            EVENT_TYPE_FAILURES_EXIST
        };
        let Ok(result) = CommitmentResult::decode(bytes, encoding, limits, event_type_id) else {
            return;
        };
        let encoded = result
            .encode(encoding)
            .expect("a decoded result must encode");
        let again = CommitmentResult::decode(&encoded, encoding, limits, result.event_type_id())
            .expect("our own encoding must decode");
        assert_eq!(again, result, "result round trip");
    }
}
