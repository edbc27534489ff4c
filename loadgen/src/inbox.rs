//! The receive side of one association, requestor or acceptor: feeds
//! received bytes to `sluice-net`'s stream decoder and hands back owned
//! [`Incoming`] items in order (control PDUs, P-DATA starts, complete DIMSE
//! messages). Responses and reports are small: a message is buffered
//! whole, up to [`MESSAGE_LENGTH_MAX`].

use sluice_net::assoc::InvalidPdu;
use sluice_net::dimse::Command;
use sluice_net::pdata::{StreamDecoder, StreamEvent};
use sluice_net::pdu::{AbortReason, DecodeLimits, Pdu};

/// Largest command or data set buffered (a commitment report for ~100 000
/// instances fits).
pub const MESSAGE_LENGTH_MAX: usize = 16 * 1024 * 1024;

/// What arrived, owned, in order.
#[derive(Debug)]
pub enum Incoming {
    /// A control PDU.
    Control(Pdu),
    /// A P-DATA-TF begins (the state machine must hear of it).
    PDataStart,
    /// A complete command set, and its data set if one was announced.
    Message {
        /// Presentation context it arrived on.
        context_id: u8,
        /// The command set.
        command: Vec<u8>,
        /// The data set.
        data: Option<Vec<u8>>,
    },
    /// Bytes that do not decode, or a message over the limit.
    Invalid(InvalidPdu),
}

/// Decoder state of one association.
#[derive(Debug)]
pub struct Inbox {
    decoder: StreamDecoder,
    command: Vec<u8>,
    data: Vec<u8>,
    awaiting_data: bool,
}

impl Default for Inbox {
    fn default() -> Inbox {
        Inbox::new()
    }
}

fn announces_data_set(command: &[u8]) -> bool {
    match Command::decode(command) {
        Ok(Command::NEventReportRq(rq)) => rq.data_set,
        Ok(Command::NActionRsp(rsp)) => rsp.data_set,
        Ok(Command::NEventReportRsp(rsp)) => rsp.data_set,
        Ok(Command::CFindRsp(rsp)) => rsp.data_set,
        _ => false,
    }
}

impl Inbox {
    /// A fresh decoder.
    pub fn new() -> Inbox {
        Inbox {
            decoder: StreamDecoder::new(DecodeLimits::default()),
            command: Vec::new(),
            data: Vec::new(),
            awaiting_data: false,
        }
    }

    /// The maximum P-DATA-TF length we announced (acceptor side).
    pub fn set_pdata_length_max(&mut self, length: u32) {
        self.decoder.set_pdata_length_max(length);
    }

    /// Decodes `bytes`, appending what completed to `out`.
    pub fn take(&mut self, bytes: &[u8], out: &mut Vec<Incoming>) {
        let mut offset = 0;
        while let Some(rest) = bytes.get(offset..) {
            if rest.is_empty() {
                break;
            }
            let step = match self.decoder.next_event(rest) {
                Ok(step) => step,
                Err(error) => {
                    out.push(Incoming::Invalid(InvalidPdu::new(
                        self.decoder.failed_pdu_type(),
                        &error,
                    )));
                    return;
                }
            };
            offset += step.consumed;
            let Some(event) = step.event else {
                return;
            };
            match event {
                StreamEvent::Control(pdu) => out.push(Incoming::Control(pdu)),
                StreamEvent::PDataStart { .. } => out.push(Incoming::PDataStart),
                StreamEvent::PdvFragment(fragment) => {
                    let buffer = if fragment.is_command {
                        &mut self.command
                    } else {
                        &mut self.data
                    };
                    if buffer.len() + fragment.bytes.len() > MESSAGE_LENGTH_MAX {
                        out.push(Incoming::Invalid(InvalidPdu {
                            pdu_type: None,
                            reason: AbortReason::InvalidPduParameterValue,
                        }));
                        return;
                    }
                    buffer.extend_from_slice(fragment.bytes);
                    if !(fragment.is_last && fragment.pdv_complete) {
                        continue;
                    }
                    let context_id = fragment.presentation_context_id;
                    if fragment.is_command {
                        if announces_data_set(&self.command) {
                            // The data set follows; keep the command.
                            self.awaiting_data = true;
                        } else {
                            out.push(Incoming::Message {
                                context_id,
                                command: std::mem::take(&mut self.command),
                                data: None,
                            });
                        }
                    } else {
                        self.awaiting_data = false;
                        out.push(Incoming::Message {
                            context_id,
                            command: std::mem::take(&mut self.command),
                            data: Some(std::mem::take(&mut self.data)),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_net::dimse::{CStoreRsp, NEventReportRq, Status, StatusDetail};
    use sluice_net::pdata::encode_message;

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_split() {
        let report = Command::NEventReportRq(NEventReportRq {
            message_id: 7,
            affected_sop_class_uid: "1.2.840.10008.1.20.1".into(),
            affected_sop_instance_uid: "1.2.840.10008.1.20.1.1".into(),
            event_type_id: 1,
            data_set: true,
        })
        .encode()
        .unwrap();
        let response = Command::CStoreRsp(CStoreRsp {
            message_id_being_responded_to: 3,
            affected_sop_class_uid: None,
            affected_sop_instance_uid: None,
            status: Status::SUCCESS,
            detail: StatusDetail::default(),
        })
        .encode()
        .unwrap();
        let data_set = vec![0x42u8; 300];
        let mut wire = Vec::new();
        encode_message(3, true, &response, 16384, &mut wire).unwrap();
        encode_message(5, true, &report, 64, &mut wire).unwrap();
        encode_message(5, false, &data_set, 100, &mut wire).unwrap();
        for split in [1, 7, 50, wire.len()] {
            let mut inbox = Inbox::new();
            let mut out = Vec::new();
            for piece in wire.chunks(split) {
                inbox.take(piece, &mut out);
            }
            let messages: Vec<_> = out
                .iter()
                .filter_map(|item| match item {
                    Incoming::Message {
                        context_id,
                        command,
                        data,
                    } => Some((*context_id, command.clone(), data.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(messages.len(), 2, "split {split}");
            assert_eq!(messages[0], (3, response.clone(), None));
            assert_eq!(messages[1], (5, report.clone(), Some(data_set.clone())));
            let starts = out
                .iter()
                .filter(|item| matches!(item, Incoming::PDataStart))
                .count();
            assert!(starts >= 3);
        }
    }

    #[test]
    fn garbage_is_reported_invalid() {
        let mut inbox = Inbox::new();
        let mut out = Vec::new();
        inbox.take(&[0x99, 0, 0, 0, 0, 4, 1, 2, 3, 4], &mut out);
        assert!(matches!(out.last(), Some(Incoming::Invalid(_))));
    }
}
