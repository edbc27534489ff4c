//! Upper layer: PDU codec, P-DATA framing, association state machine and
//! negotiation (net/src/{pdu,pdata,assoc}).

mod association;
mod dicom_ul_differential;
mod malformed;
mod negotiation;
mod pdata_framing;
mod pdu_round_trip;
pub mod strategies;
