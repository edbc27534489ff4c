//! Command sets written: Implicit VR Little Endian, elements in ascending
//! tag order, the Command Group Length patched in last.

use super::*;
use crate::uid::{check_uid_value, UID_LENGTH_MAX};

impl Command {
    /// Encodes the command set (Implicit VR Little Endian, group length first).
    pub fn encode(&self) -> Result<Vec<u8>, DimseError> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Encodes the command set, appending to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), DimseError> {
        let start = out.len();
        let mut writer = Writer {
            out,
            command_field: Some(self.command_field()),
        };
        // Placeholder for the group length, patched below.
        writer.element_header(tags::COMMAND_GROUP_LENGTH, 4);
        writer.out.extend_from_slice(&[0; 4]);
        let body_start = writer.out.len();
        // Elements in ascending tag order (PS3.5 §7.1).
        match self {
            Self::CEchoRq(rq) => {
                writer.uid(tags::AFFECTED_SOP_CLASS_UID, &rq.affected_sop_class_uid)?;
                writer.header_common(self.command_field(), Some(rq.message_id), None, false);
            }
            Self::CEchoRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    false,
                );
                writer.status(rsp.status, &rsp.detail)?;
            }
            Self::CStoreRq(rq) => {
                writer.uid(tags::AFFECTED_SOP_CLASS_UID, &rq.affected_sop_class_uid)?;
                writer.us(tags::COMMAND_FIELD, self.command_field().0);
                writer.us(tags::MESSAGE_ID, rq.message_id);
                writer.us(tags::PRIORITY, rq.priority.to_u16());
                writer.us(tags::COMMAND_DATA_SET_TYPE, CommandDataSetType::PRESENT.0);
                writer.uid(
                    tags::AFFECTED_SOP_INSTANCE_UID,
                    &rq.affected_sop_instance_uid,
                )?;
                if let Some(originator) = &rq.move_originator {
                    writer.ae(tags::MOVE_ORIGINATOR_AE_TITLE, &originator.ae_title)?;
                    writer.us(tags::MOVE_ORIGINATOR_MESSAGE_ID, originator.message_id);
                }
            }
            Self::CStoreRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    false,
                );
                writer.status(rsp.status, &rsp.detail)?;
                writer.opt_uid(
                    tags::AFFECTED_SOP_INSTANCE_UID,
                    rsp.affected_sop_instance_uid.as_deref(),
                )?;
            }
            Self::CFindRq(CFindRq {
                message_id,
                priority,
                affected_sop_class_uid,
            })
            | Self::CGetRq(CGetRq {
                message_id,
                priority,
                affected_sop_class_uid,
            }) => {
                writer.uid(tags::AFFECTED_SOP_CLASS_UID, affected_sop_class_uid)?;
                writer.us(tags::COMMAND_FIELD, self.command_field().0);
                writer.us(tags::MESSAGE_ID, *message_id);
                writer.us(tags::PRIORITY, priority.to_u16());
                writer.us(tags::COMMAND_DATA_SET_TYPE, CommandDataSetType::PRESENT.0);
            }
            Self::CFindRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    rsp.data_set,
                );
                writer.status(rsp.status, &rsp.detail)?;
            }
            Self::CMoveRq(rq) => {
                writer.uid(tags::AFFECTED_SOP_CLASS_UID, &rq.affected_sop_class_uid)?;
                writer.us(tags::COMMAND_FIELD, self.command_field().0);
                writer.us(tags::MESSAGE_ID, rq.message_id);
                writer.ae(tags::MOVE_DESTINATION, &rq.move_destination)?;
                writer.us(tags::PRIORITY, rq.priority.to_u16());
                writer.us(tags::COMMAND_DATA_SET_TYPE, CommandDataSetType::PRESENT.0);
            }
            Self::CMoveRsp(rsp) | Self::CGetRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    rsp.data_set,
                );
                writer.status(rsp.status, &rsp.detail)?;
                let counts = rsp.sub_operations;
                writer.opt_us(tags::NUMBER_OF_REMAINING_SUB_OPERATIONS, counts.remaining);
                writer.opt_us(tags::NUMBER_OF_COMPLETED_SUB_OPERATIONS, counts.completed);
                writer.opt_us(tags::NUMBER_OF_FAILED_SUB_OPERATIONS, counts.failed);
                writer.opt_us(tags::NUMBER_OF_WARNING_SUB_OPERATIONS, counts.warning);
            }
            Self::CCancelRq(rq) => {
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rq.message_id_being_responded_to),
                    false,
                );
            }
            Self::NActionRq(rq) => {
                writer.uid(tags::REQUESTED_SOP_CLASS_UID, &rq.requested_sop_class_uid)?;
                writer.header_common(self.command_field(), Some(rq.message_id), None, rq.data_set);
                writer.uid(
                    tags::REQUESTED_SOP_INSTANCE_UID,
                    &rq.requested_sop_instance_uid,
                )?;
                writer.us(tags::ACTION_TYPE_ID, rq.action_type_id);
            }
            Self::NActionRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    rsp.data_set,
                );
                writer.status(rsp.status, &rsp.detail)?;
                writer.opt_uid(
                    tags::AFFECTED_SOP_INSTANCE_UID,
                    rsp.affected_sop_instance_uid.as_deref(),
                )?;
                writer.opt_us(tags::ACTION_TYPE_ID, rsp.action_type_id);
            }
            Self::NEventReportRq(rq) => {
                writer.uid(tags::AFFECTED_SOP_CLASS_UID, &rq.affected_sop_class_uid)?;
                writer.header_common(self.command_field(), Some(rq.message_id), None, rq.data_set);
                writer.uid(
                    tags::AFFECTED_SOP_INSTANCE_UID,
                    &rq.affected_sop_instance_uid,
                )?;
                writer.us(tags::EVENT_TYPE_ID, rq.event_type_id);
            }
            Self::NEventReportRsp(rsp) => {
                writer.opt_uid(
                    tags::AFFECTED_SOP_CLASS_UID,
                    rsp.affected_sop_class_uid.as_deref(),
                )?;
                writer.header_common(
                    self.command_field(),
                    None,
                    Some(rsp.message_id_being_responded_to),
                    rsp.data_set,
                );
                writer.status(rsp.status, &rsp.detail)?;
                writer.opt_uid(
                    tags::AFFECTED_SOP_INSTANCE_UID,
                    rsp.affected_sop_instance_uid.as_deref(),
                )?;
                writer.opt_us(tags::EVENT_TYPE_ID, rsp.event_type_id);
            }
        }
        let body_length = out.len().saturating_sub(body_start);
        let total = out.len().saturating_sub(start);
        if total > COMMAND_SET_LENGTH_MAX {
            out.truncate(start);
            return Err(DimseError::TooLong {
                length: total,
                limit: COMMAND_SET_LENGTH_MAX,
            });
        }
        let body_length = u32::try_from(body_length).unwrap_or(u32::MAX);
        if let Some(slot) = out.get_mut(body_start.saturating_sub(4)..body_start) {
            slot.copy_from_slice(&body_length.to_le_bytes());
        }
        Ok(())
    }
}

/// Writes Implicit VR LE elements.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    command_field: Option<CommandField>,
}

impl Writer<'_> {
    fn element_header(&mut self, tag: Tag, length: u32) {
        self.out.extend_from_slice(&tag.0.to_le_bytes());
        self.out.extend_from_slice(&tag.1.to_le_bytes());
        self.out.extend_from_slice(&length.to_le_bytes());
    }

    fn us(&mut self, tag: Tag, value: u16) {
        self.element_header(tag, 2);
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn opt_us(&mut self, tag: Tag, value: Option<u16>) {
        if let Some(value) = value {
            self.us(tag, value);
        }
    }

    /// Writes a string padded to even length with `pad`.
    fn padded(
        &mut self,
        tag: Tag,
        value: &[u8],
        pad: u8,
        length_max: usize,
    ) -> Result<(), DimseError> {
        if value.len() > length_max {
            return Err(DimseError::BadElementLength {
                tag,
                command_field: self.command_field,
                length: value.len(),
            });
        }
        let padded_length = value.len().saturating_add(value.len() % 2);
        self.element_header(tag, u32::try_from(padded_length).unwrap_or(u32::MAX));
        self.out.extend_from_slice(value);
        if value.len() % 2 == 1 {
            self.out.push(pad);
        }
        Ok(())
    }

    /// A UID element: the value must be one the UI VR allows (1 to 64
    /// digits and dots), not necessarily a well-formed UID, so a response
    /// can echo the UID a request carried (a component with a leading zero,
    /// an empty component) and the requester recognises its instance.
    fn uid(&mut self, tag: Tag, value: &str) -> Result<(), DimseError> {
        check_uid_value(value.as_bytes()).map_err(|error| DimseError::InvalidUid {
            tag,
            command_field: self.command_field,
            error,
        })?;
        self.padded(tag, value.as_bytes(), 0, UID_LENGTH_MAX)
    }

    fn opt_uid(&mut self, tag: Tag, value: Option<&str>) -> Result<(), DimseError> {
        match value {
            Some(value) => self.uid(tag, value),
            None => Ok(()),
        }
    }

    fn ae(&mut self, tag: Tag, value: &str) -> Result<(), DimseError> {
        let trimmed = value.trim_matches(' ');
        if trimmed.is_empty()
            || !trimmed
                .bytes()
                .all(|byte| (0x20..0x7F).contains(&byte) && byte != b'\\')
        {
            return Err(DimseError::InvalidValue {
                tag,
                command_field: self.command_field,
                reason: "an AE title is 1 to 16 printable ASCII characters without backslash",
            });
        }
        self.padded(tag, trimmed.as_bytes(), b' ', AE_TITLE_LENGTH_MAX)
    }

    /// Command Field, Message ID or Message ID Being Responded To, and
    /// Command Data Set Type: the elements between 0000,0100 and 0000,0800
    /// that every command but the request-specific ones share.
    fn header_common(
        &mut self,
        command_field: CommandField,
        message_id: Option<u16>,
        message_id_being_responded_to: Option<u16>,
        data_set: bool,
    ) {
        self.us(tags::COMMAND_FIELD, command_field.0);
        self.opt_us(tags::MESSAGE_ID, message_id);
        self.opt_us(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            message_id_being_responded_to,
        );
        self.us(
            tags::COMMAND_DATA_SET_TYPE,
            CommandDataSetType::from_present(data_set).0,
        );
    }

    fn status(&mut self, status: Status, detail: &StatusDetail) -> Result<(), DimseError> {
        self.us(tags::STATUS, status.0);
        if !detail.offending_elements.is_empty() {
            let length = detail.offending_elements.len().saturating_mul(4);
            if length > COMMAND_SET_LENGTH_MAX {
                return Err(DimseError::TooLong {
                    length,
                    limit: COMMAND_SET_LENGTH_MAX,
                });
            }
            self.element_header(
                tags::OFFENDING_ELEMENT,
                u32::try_from(length).unwrap_or(u32::MAX),
            );
            for tag in &detail.offending_elements {
                self.out.extend_from_slice(&tag.0.to_le_bytes());
                self.out.extend_from_slice(&tag.1.to_le_bytes());
            }
        }
        if let Some(comment) = &detail.error_comment {
            // Backslash would split the LO into two values.
            if comment
                .bytes()
                .any(|byte| !(0x20..0x7F).contains(&byte) || byte == b'\\')
            {
                return Err(DimseError::InvalidValue {
                    tag: tags::ERROR_COMMENT,
                    command_field: self.command_field,
                    reason: "Error Comment must be printable ASCII without backslash",
                });
            }
            self.padded(tags::ERROR_COMMENT, comment.as_bytes(), b' ', LO_LENGTH_MAX)?;
        }
        self.opt_us(tags::ERROR_ID, detail.error_id);
        Ok(())
    }
}
