//! Command sets read: the elements checked (group 0000, lengths, group
//! length, no duplicates, bounded count), then typed by command field.

use super::*;

impl Command {
    /// Decodes a command set. The bytes must be exactly one command set (the
    /// concatenated command PDV fragments).
    pub fn decode(bytes: &[u8]) -> Result<Self, DimseError> {
        let elements = Elements::parse(bytes)?;
        let command_field = CommandField(elements.us(tags::COMMAND_FIELD, None)?);
        let fields = Fields {
            elements,
            command_field,
        };
        fields.command()
    }
}

/// The elements of a command set, as (element number, value) pairs in the
/// order received.
struct Elements<'a> {
    entries: Vec<(u16, &'a [u8])>,
}

impl<'a> Elements<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, DimseError> {
        if bytes.len() > COMMAND_SET_LENGTH_MAX {
            return Err(DimseError::TooLong {
                length: bytes.len(),
                limit: COMMAND_SET_LENGTH_MAX,
            });
        }
        let mut entries: Vec<(u16, &'a [u8])> = Vec::with_capacity(16);
        let mut offset = 0usize;
        let mut rest = bytes;
        while !rest.is_empty() {
            let Some((header, after_header)) = rest.split_first_chunk::<8>() else {
                return Err(DimseError::Truncated {
                    offset,
                    needed: 8,
                    available: rest.len(),
                });
            };
            let [g0, g1, e0, e1, l0, l1, l2, l3] = *header;
            let tag = Tag(u16::from_le_bytes([g0, g1]), u16::from_le_bytes([e0, e1]));
            let length = u32::from_le_bytes([l0, l1, l2, l3]);
            if tag.0 != 0x0000 {
                return Err(DimseError::ElementOutsideCommandGroup { tag });
            }
            let Some(value) = usize::try_from(length)
                .ok()
                .and_then(|length| after_header.get(..length))
            else {
                return Err(DimseError::Truncated {
                    offset,
                    needed: u64::from(length).saturating_add(8),
                    available: rest.len(),
                });
            };
            if entries.is_empty() {
                if tag != tags::COMMAND_GROUP_LENGTH {
                    return Err(DimseError::GroupLengthMissing);
                }
                let [b0, b1, b2, b3] = *value else {
                    return Err(DimseError::BadElementLength {
                        tag,
                        command_field: None,
                        length: value.len(),
                    });
                };
                let declared = u32::from_le_bytes([b0, b1, b2, b3]);
                let actual = bytes.len().saturating_sub(12);
                if usize::try_from(declared).ok() != Some(actual) {
                    return Err(DimseError::GroupLengthMismatch { declared, actual });
                }
            } else if entries.iter().any(|(element, _)| *element == tag.1) {
                return Err(DimseError::DuplicateElement { tag });
            }
            if entries.len() >= COMMAND_ELEMENTS_MAX {
                return Err(DimseError::TooManyElements {
                    limit: COMMAND_ELEMENTS_MAX,
                });
            }
            entries.push((tag.1, value));
            let consumed = value.len().saturating_add(8);
            offset = offset.saturating_add(consumed);
            rest = after_header.get(value.len()..).unwrap_or_default();
        }
        if entries.is_empty() {
            return Err(DimseError::GroupLengthMissing);
        }
        Ok(Self { entries })
    }

    fn get(&self, tag: Tag) -> Option<&'a [u8]> {
        self.entries
            .iter()
            .find(|(element, _)| *element == tag.1)
            .map(|(_, value)| *value)
    }

    fn us(&self, tag: Tag, command_field: Option<CommandField>) -> Result<u16, DimseError> {
        self.opt_us(tag, command_field)?
            .ok_or(DimseError::MissingElement { tag, command_field })
    }

    fn opt_us(
        &self,
        tag: Tag,
        command_field: Option<CommandField>,
    ) -> Result<Option<u16>, DimseError> {
        match self.get(tag) {
            None => Ok(None),
            Some(&[b0, b1]) => Ok(Some(u16::from_le_bytes([b0, b1]))),
            Some(value) => Err(DimseError::BadElementLength {
                tag,
                command_field,
                length: value.len(),
            }),
        }
    }
}

/// Typed access to the elements of one command.
struct Fields<'a> {
    elements: Elements<'a>,
    command_field: CommandField,
}

impl Fields<'_> {
    fn cf(&self) -> Option<CommandField> {
        Some(self.command_field)
    }

    fn us(&self, tag: Tag) -> Result<u16, DimseError> {
        self.elements.us(tag, self.cf())
    }

    fn opt_us(&self, tag: Tag) -> Result<Option<u16>, DimseError> {
        self.elements.opt_us(tag, self.cf())
    }

    fn uid(&self, tag: Tag) -> Result<String, DimseError> {
        self.opt_uid(tag)?.ok_or(DimseError::MissingElement {
            tag,
            command_field: self.cf(),
        })
    }

    /// A UID element, as received: trailing NUL or space padding removed,
    /// nothing else checked (bounded by the command set's length). Whether
    /// the value is a valid UID is the service's question
    /// ([`crate::uid::check_uid`]), because its answer is a status, not an
    /// abort: a C-STORE whose Affected SOP Instance UID is malformed is
    /// refused A900 with the reason, like the same UID in its data set,
    /// and the association goes on (issue #19).
    fn opt_uid(&self, tag: Tag) -> Result<Option<String>, DimseError> {
        let Some(value) = self.elements.get(tag) else {
            return Ok(None);
        };
        let trimmed = trim_end(value, |byte| byte == 0 || byte == b' ');
        Ok(Some(String::from_utf8_lossy(trimmed).into_owned()))
    }

    fn string(&self, tag: Tag, length_max: usize) -> Result<Option<String>, DimseError> {
        let Some(value) = self.elements.get(tag) else {
            return Ok(None);
        };
        if value.len() > length_max.saturating_add(1) {
            return Err(DimseError::BadElementLength {
                tag,
                command_field: self.cf(),
                length: value.len(),
            });
        }
        let trimmed = trim_end(value, |byte| byte == b' ' || byte == 0);
        let trimmed = trimmed.get(
            trimmed
                .iter()
                .position(|byte| *byte != b' ')
                .unwrap_or(trimmed.len())..,
        );
        let trimmed = trimmed.unwrap_or_default();
        if trimmed.len() > length_max || !trimmed.iter().all(|byte| (0x20..0x7F).contains(byte)) {
            return Err(DimseError::InvalidValue {
                tag,
                command_field: self.cf(),
                reason: "not a printable ASCII string of the allowed length",
            });
        }
        Ok(Some(String::from_utf8_lossy(trimmed).into_owned()))
    }

    fn ae(&self, tag: Tag) -> Result<String, DimseError> {
        match self.string(tag, AE_TITLE_LENGTH_MAX)? {
            Some(title) if !title.is_empty() => Ok(title),
            Some(_) => Err(DimseError::InvalidValue {
                tag,
                command_field: self.cf(),
                reason: "empty AE title",
            }),
            None => Err(DimseError::MissingElement {
                tag,
                command_field: self.cf(),
            }),
        }
    }

    fn priority(&self) -> Result<Priority, DimseError> {
        let value = self.us(tags::PRIORITY)?;
        Priority::from_u16(value).ok_or(DimseError::InvalidValue {
            tag: tags::PRIORITY,
            command_field: self.cf(),
            reason: "priority must be 0, 1 or 2",
        })
    }

    fn data_set(&self) -> Result<bool, DimseError> {
        Ok(CommandDataSetType(self.us(tags::COMMAND_DATA_SET_TYPE)?).is_present())
    }

    fn require_data_set(&self) -> Result<(), DimseError> {
        if self.data_set()? {
            Ok(())
        } else {
            Err(DimseError::DataSetRequired {
                command_field: self.command_field,
            })
        }
    }

    fn forbid_data_set(&self) -> Result<(), DimseError> {
        if self.data_set()? {
            Err(DimseError::UnexpectedDataSet {
                command_field: self.command_field,
            })
        } else {
            Ok(())
        }
    }

    fn status(&self) -> Result<Status, DimseError> {
        Ok(Status(self.us(tags::STATUS)?))
    }

    fn detail(&self) -> Result<StatusDetail, DimseError> {
        let offending_elements = match self.elements.get(tags::OFFENDING_ELEMENT) {
            None => Vec::new(),
            Some(value) => {
                if value.len() % 4 != 0 {
                    return Err(DimseError::BadElementLength {
                        tag: tags::OFFENDING_ELEMENT,
                        command_field: self.cf(),
                        length: value.len(),
                    });
                }
                value
                    .chunks_exact(4)
                    .map(|chunk| match *chunk {
                        [g0, g1, e0, e1] => {
                            Tag(u16::from_le_bytes([g0, g1]), u16::from_le_bytes([e0, e1]))
                        }
                        _ => Tag(0, 0),
                    })
                    .collect()
            }
        };
        // Error Comment is LO: be lenient with its content (it is only logged).
        let error_comment = self.elements.get(tags::ERROR_COMMENT).map(|value| {
            let trimmed = trim_end(value, |byte| byte == b' ' || byte == 0);
            String::from_utf8_lossy(
                trimmed
                    .get(..trimmed.len().min(LO_LENGTH_MAX * 4))
                    .unwrap_or_default(),
            )
            .into_owned()
        });
        Ok(StatusDetail {
            error_comment,
            offending_elements,
            error_id: self.opt_us(tags::ERROR_ID)?,
        })
    }

    fn message_id(&self) -> Result<u16, DimseError> {
        self.us(tags::MESSAGE_ID)
    }

    fn responded_to(&self) -> Result<u16, DimseError> {
        self.us(tags::MESSAGE_ID_BEING_RESPONDED_TO)
    }

    fn command(&self) -> Result<Command, DimseError> {
        let command = match self.command_field {
            CommandField::C_ECHO_RQ => {
                self.forbid_data_set()?;
                Command::CEchoRq(CEchoRq {
                    message_id: self.message_id()?,
                    affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                })
            }
            CommandField::C_ECHO_RSP => {
                self.forbid_data_set()?;
                Command::CEchoRsp(CEchoRsp {
                    message_id_being_responded_to: self.responded_to()?,
                    affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                    status: self.status()?,
                    detail: self.detail()?,
                })
            }
            CommandField::C_STORE_RQ => {
                self.require_data_set()?;
                let move_originator = match self.elements.get(tags::MOVE_ORIGINATOR_AE_TITLE) {
                    None => None,
                    // Some SCUs send an empty originator for non-move stores.
                    Some(value) if trim_end(value, |byte| byte == b' ' || byte == 0).is_empty() => {
                        None
                    }
                    Some(_) => Some(MoveOriginator {
                        ae_title: self.ae(tags::MOVE_ORIGINATOR_AE_TITLE)?,
                        message_id: self.us(tags::MOVE_ORIGINATOR_MESSAGE_ID)?,
                    }),
                };
                Command::CStoreRq(CStoreRq {
                    message_id: self.message_id()?,
                    priority: self.priority()?,
                    affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                    affected_sop_instance_uid: self.uid(tags::AFFECTED_SOP_INSTANCE_UID)?,
                    move_originator,
                })
            }
            CommandField::C_STORE_RSP => {
                self.forbid_data_set()?;
                Command::CStoreRsp(CStoreRsp {
                    message_id_being_responded_to: self.responded_to()?,
                    affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                    affected_sop_instance_uid: self.opt_uid(tags::AFFECTED_SOP_INSTANCE_UID)?,
                    status: self.status()?,
                    detail: self.detail()?,
                })
            }
            CommandField::C_FIND_RQ => {
                self.require_data_set()?;
                Command::CFindRq(CFindRq {
                    message_id: self.message_id()?,
                    priority: self.priority()?,
                    affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                })
            }
            CommandField::C_GET_RQ => {
                self.require_data_set()?;
                Command::CGetRq(CGetRq {
                    message_id: self.message_id()?,
                    priority: self.priority()?,
                    affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                })
            }
            CommandField::C_FIND_RSP => Command::CFindRsp(CFindRsp {
                message_id_being_responded_to: self.responded_to()?,
                affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                status: self.status()?,
                data_set: self.data_set()?,
                detail: self.detail()?,
            }),
            CommandField::C_MOVE_RQ => {
                self.require_data_set()?;
                Command::CMoveRq(CMoveRq {
                    message_id: self.message_id()?,
                    priority: self.priority()?,
                    affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                    move_destination: self.ae(tags::MOVE_DESTINATION)?,
                })
            }
            CommandField::C_MOVE_RSP | CommandField::C_GET_RSP => {
                let rsp = CMoveRsp {
                    message_id_being_responded_to: self.responded_to()?,
                    affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                    status: self.status()?,
                    sub_operations: SubOperationCounts {
                        remaining: self.opt_us(tags::NUMBER_OF_REMAINING_SUB_OPERATIONS)?,
                        completed: self.opt_us(tags::NUMBER_OF_COMPLETED_SUB_OPERATIONS)?,
                        failed: self.opt_us(tags::NUMBER_OF_FAILED_SUB_OPERATIONS)?,
                        warning: self.opt_us(tags::NUMBER_OF_WARNING_SUB_OPERATIONS)?,
                    },
                    data_set: self.data_set()?,
                    detail: self.detail()?,
                };
                if self.command_field == CommandField::C_MOVE_RSP {
                    Command::CMoveRsp(rsp)
                } else {
                    Command::CGetRsp(rsp)
                }
            }
            CommandField::C_CANCEL_RQ => {
                self.forbid_data_set()?;
                Command::CCancelRq(CCancelRq {
                    message_id_being_responded_to: self.responded_to()?,
                })
            }
            CommandField::N_ACTION_RQ => Command::NActionRq(NActionRq {
                message_id: self.message_id()?,
                requested_sop_class_uid: self.uid(tags::REQUESTED_SOP_CLASS_UID)?,
                requested_sop_instance_uid: self.uid(tags::REQUESTED_SOP_INSTANCE_UID)?,
                action_type_id: self.us(tags::ACTION_TYPE_ID)?,
                data_set: self.data_set()?,
            }),
            CommandField::N_ACTION_RSP => Command::NActionRsp(NActionRsp {
                message_id_being_responded_to: self.responded_to()?,
                affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                affected_sop_instance_uid: self.opt_uid(tags::AFFECTED_SOP_INSTANCE_UID)?,
                action_type_id: self.opt_us(tags::ACTION_TYPE_ID)?,
                status: self.status()?,
                data_set: self.data_set()?,
                detail: self.detail()?,
            }),
            CommandField::N_EVENT_REPORT_RQ => Command::NEventReportRq(NEventReportRq {
                message_id: self.message_id()?,
                affected_sop_class_uid: self.uid(tags::AFFECTED_SOP_CLASS_UID)?,
                affected_sop_instance_uid: self.uid(tags::AFFECTED_SOP_INSTANCE_UID)?,
                event_type_id: self.us(tags::EVENT_TYPE_ID)?,
                data_set: self.data_set()?,
            }),
            CommandField::N_EVENT_REPORT_RSP => Command::NEventReportRsp(NEventReportRsp {
                message_id_being_responded_to: self.responded_to()?,
                affected_sop_class_uid: self.opt_uid(tags::AFFECTED_SOP_CLASS_UID)?,
                affected_sop_instance_uid: self.opt_uid(tags::AFFECTED_SOP_INSTANCE_UID)?,
                event_type_id: self.opt_us(tags::EVENT_TYPE_ID)?,
                status: self.status()?,
                data_set: self.data_set()?,
                detail: self.detail()?,
            }),
            command_field => return Err(DimseError::UnknownCommandField { command_field }),
        };
        Ok(command)
    }
}

/// `bytes` without the trailing bytes for which `strip` holds.
fn trim_end(bytes: &[u8], strip: impl Fn(u8) -> bool) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|byte| !strip(*byte))
        .map_or(0, |last| last.saturating_add(1));
    bytes.get(..end).unwrap_or_default()
}
