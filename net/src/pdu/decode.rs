//! Decoding of whole PDUs from a byte slice.
//!
//! All reads go through [`Cursor`], which checks every length before it is
//! trusted; nothing here indexes a slice directly.

use super::types::*;
use super::{
    peek_header, DecodeError, DecodeLimits, PduType, AE_TITLE_LENGTH, ASSOCIATE_FIXED_LENGTH,
    PDU_HEADER_LENGTH,
};

/// Decodes the PDU at the start of `bytes`.
///
/// `Ok(None)` when `bytes` does not yet hold the whole PDU (need more bytes);
/// otherwise the PDU and the number of bytes it took. The header is checked
/// against `limits` before the body is looked at. P-DATA-TF values are
/// copied; use [`crate::pdata`] for the zero-copy path.
pub fn decode_pdu(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<Option<(Pdu, usize)>, DecodeError> {
    let Some(header) = peek_header(bytes)? else {
        return Ok(None);
    };
    header.check_limits(limits)?;
    let Ok(total) = usize::try_from(header.total_length()) else {
        return Ok(None);
    };
    let Some(body) = bytes.get(PDU_HEADER_LENGTH..total) else {
        return Ok(None);
    };
    let pdu = decode_pdu_body(header.pdu_type, body)?;
    Ok(Some((pdu, total)))
}

/// Decodes a PDU body (the bytes after the 6-byte header) of a known type.
/// The caller has checked the PDU-length against its limits.
pub fn decode_pdu_body(pdu_type: PduType, body: &[u8]) -> Result<Pdu, DecodeError> {
    match pdu_type {
        PduType::AssociateRq => decode_associate_rq(body).map(|rq| Pdu::AssociateRq(Box::new(rq))),
        PduType::AssociateAc => decode_associate_ac(body).map(|ac| Pdu::AssociateAc(Box::new(ac))),
        PduType::AssociateRj => decode_associate_rj(body).map(Pdu::AssociateRj),
        PduType::PDataTf => {
            let pdata = crate::pdata::PDataTf::parse(body)?;
            Ok(Pdu::PDataTf(
                pdata
                    .pdvs()
                    .map(|pdv| PresentationDataValue {
                        presentation_context_id: pdv.presentation_context_id,
                        is_command: pdv.is_command,
                        is_last: pdv.is_last,
                        value: pdv.bytes.to_vec(),
                    })
                    .collect(),
            ))
        }
        PduType::ReleaseRq | PduType::ReleaseRp => {
            // PS3.8 Tables 9-24/9-25: 7-10 reserved, sent as 0, not tested.
            let mut cursor = Cursor::new(body);
            cursor.take(4, "Reserved (7-10)")?;
            expect_end(&cursor, pdu_type)?;
            Ok(if pdu_type == PduType::ReleaseRq {
                Pdu::ReleaseRq
            } else {
                Pdu::ReleaseRp
            })
        }
        PduType::Abort => decode_abort(body).map(Pdu::Abort),
    }
}

fn expect_end(cursor: &Cursor<'_>, pdu_type: PduType) -> Result<(), DecodeError> {
    if cursor.is_empty() {
        Ok(())
    } else {
        // Only reachable when a caller skipped check_limits: the fixed-size
        // PDUs are exactly 4 bytes.
        Err(DecodeError::FixedLengthMismatch {
            pdu_type,
            length: u32::try_from(cursor.remaining_len().saturating_add(4)).unwrap_or(u32::MAX),
            expected: 4,
        })
    }
}

/// Bounds-checked reader over a byte slice.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn remaining_len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .bytes
            .split_at_checked(n)
            .ok_or(DecodeError::FieldTruncated { field })?;
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        match *self.take(1, field)? {
            [b] => Ok(b),
            _ => Err(DecodeError::FieldTruncated { field }),
        }
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        match *self.take(2, field)? {
            [a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(DecodeError::FieldTruncated { field }),
        }
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        match *self.take(4, field)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(DecodeError::FieldTruncated { field }),
        }
    }

    /// Reads a 2-byte length and that many bytes.
    fn u16_prefixed(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let length = self.u16(field)?;
        self.take(usize::from(length), field)
    }

    /// Reads the next item header (1 type, 2 reserved, 3-4 item-length) and
    /// its body. `Ok(None)` at the end of the parent.
    fn item(&mut self, parent: &'static str) -> Result<Option<Item<'a>>, DecodeError> {
        let [item_type, reserved, l0, l1, ref rest @ ..] = *self.bytes else {
            if self.bytes.is_empty() {
                return Ok(None);
            }
            return Err(DecodeError::ItemHeaderTruncated {
                parent,
                available: self.bytes.len(),
            });
        };
        let length = usize::from(u16::from_be_bytes([l0, l1]));
        let Some((body, tail)) = rest.split_at_checked(length) else {
            return Err(DecodeError::ItemLengthPastParent {
                item_type,
                length,
                available: rest.len(),
                parent,
            });
        };
        self.bytes = tail;
        Ok(Some(Item {
            item_type,
            reserved,
            body,
        }))
    }
}

struct Item<'a> {
    item_type: u8,
    reserved: u8,
    body: &'a [u8],
}

/// Trailing NUL and space bytes are padding some peers add to UIDs and names.
fn trim_padding(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .map_or(0, |i| i.saturating_add(1));
    let start = bytes
        .iter()
        .position(|&b| b != b' ')
        .unwrap_or(end)
        .min(end);
    bytes.get(start..end).unwrap_or_default()
}

/// A UID or name: printable ASCII after trimming padding.
fn decode_text(bytes: &[u8], field: &'static str) -> Result<String, DecodeError> {
    let trimmed = trim_padding(bytes);
    if trimmed.iter().any(|b| !(0x20..=0x7e).contains(b)) {
        return Err(DecodeError::BadText { field });
    }
    // Printable ASCII is valid UTF-8.
    Ok(trimmed.iter().map(|&b| char::from(b)).collect())
}

/// An AE-title field of an A-ASSOCIATE-RQ: 16 bytes of ISO 646 G0 with
/// non-significant leading and trailing spaces; trailing NULs are tolerated
/// as padding. All spaces "shall not be used" (PS3.8 Table 9-11).
fn decode_ae_title(bytes: &[u8], field: &'static str) -> Result<String, DecodeError> {
    let trimmed = trim_padding(bytes);
    if let Some(&byte) = trimmed
        .iter()
        .find(|&&b| !(0x20..=0x7e).contains(&b) || b == b'\\')
    {
        return Err(DecodeError::BadAeTitle {
            field,
            reason: super::AeTitleError::BadCharacter { byte },
        });
    }
    if trimmed.is_empty() {
        return Err(DecodeError::BadAeTitle {
            field,
            reason: super::AeTitleError::Empty,
        });
    }
    Ok(trimmed.iter().map(|&b| char::from(b)).collect())
}

/// The echoed AE titles of an A-ASSOCIATE-AC "shall not be tested" (PS3.8
/// Table 9-17): keep what is printable, never fail.
fn decode_ae_title_untested(bytes: &[u8]) -> String {
    trim_padding(bytes)
        .iter()
        .map(|&b| {
            if (0x20..=0x7e).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// Bytes 7-74 of A-ASSOCIATE-RQ/AC.
struct AssociateFixed<'a> {
    protocol_version: u16,
    called: &'a [u8],
    calling: &'a [u8],
}

fn decode_associate_fixed<'a>(cursor: &mut Cursor<'a>) -> Result<AssociateFixed<'a>, DecodeError> {
    if cursor.remaining_len() < ASSOCIATE_FIXED_LENGTH {
        return Err(DecodeError::FieldTruncated {
            field: "A-ASSOCIATE fixed fields (7-74)",
        });
    }
    // 7-8 Protocol-version.
    let protocol_version = cursor.u16("Protocol-version")?;
    // 9-10 Reserved, not tested.
    cursor.take(2, "Reserved (9-10)")?;
    // 11-26 Called-AE-title (RQ) / reserved echo (AC).
    let called = cursor.take(AE_TITLE_LENGTH, "Called-AE-title")?;
    // 27-42 Calling-AE-title (RQ) / reserved echo (AC).
    let calling = cursor.take(AE_TITLE_LENGTH, "Calling-AE-title")?;
    // 43-74 Reserved, not tested.
    cursor.take(32, "Reserved (43-74)")?;
    Ok(AssociateFixed {
        protocol_version,
        called,
        calling,
    })
}

fn decode_associate_rq(body: &[u8]) -> Result<AssociateRq, DecodeError> {
    const PARENT: &str = "A-ASSOCIATE-RQ";
    let mut cursor = Cursor::new(body);
    let fixed = decode_associate_fixed(&mut cursor)?;
    let called_ae_title = decode_ae_title(fixed.called, "Called-AE-title")?;
    let calling_ae_title = decode_ae_title(fixed.calling, "Calling-AE-title")?;

    // 75-xxx Variable items: one application context (10H), one or more
    // presentation contexts (20H), one user information (50H).
    let (application_context_name, presentation_contexts, user_information) =
        decode_associate_items(
            &mut cursor,
            PARENT,
            0x20,
            decode_presentation_context_rq,
            true,
        )?;
    Ok(AssociateRq {
        protocol_version: fixed.protocol_version,
        called_ae_title,
        calling_ae_title,
        application_context_name,
        presentation_contexts,
        user_information,
    })
}

fn decode_associate_ac(body: &[u8]) -> Result<AssociateAc, DecodeError> {
    const PARENT: &str = "A-ASSOCIATE-AC";
    let mut cursor = Cursor::new(body);
    let fixed = decode_associate_fixed(&mut cursor)?;

    // 75-xxx Variable items: one application context (10H), presentation
    // context results (21H), one user information (50H).
    let (application_context_name, presentation_contexts, user_information) =
        decode_associate_items(
            &mut cursor,
            PARENT,
            0x21,
            decode_presentation_context_ac,
            false,
        )?;
    Ok(AssociateAc {
        protocol_version: fixed.protocol_version,
        called_ae_title: decode_ae_title_untested(fixed.called),
        calling_ae_title: decode_ae_title_untested(fixed.calling),
        application_context_name,
        presentation_contexts,
        user_information,
    })
}

/// The variable items shared by A-ASSOCIATE-RQ and -AC (PS3.8 9.3.2, 9.3.3):
/// exactly one application context (10H) and one user information (50H),
/// and any number of presentation context items of `context_item_type`
/// (20H in an RQ, 21H in an AC, where `contexts_required` says whether at
/// least one must be present), in any order.
fn decode_associate_items<T>(
    cursor: &mut Cursor<'_>,
    parent: &'static str,
    context_item_type: u8,
    decode_context: fn(&[u8]) -> Result<T, DecodeError>,
    contexts_required: bool,
) -> Result<(String, Vec<T>, UserInformation), DecodeError> {
    let mut application_context_name = None;
    let mut presentation_contexts = Vec::new();
    let mut user_information = None;
    while let Some(item) = cursor.item(parent)? {
        match item.item_type {
            0x10 => {
                if application_context_name.is_some() {
                    return Err(duplicate(0x10, parent));
                }
                application_context_name =
                    Some(decode_text(item.body, "Application-context-name")?);
            }
            0x50 => {
                if user_information.is_some() {
                    return Err(duplicate(0x50, parent));
                }
                user_information = Some(decode_user_information(item.body)?);
            }
            other if other == context_item_type => {
                presentation_contexts.push(decode_context(item.body)?);
            }
            other => return Err(unexpected(other, parent)),
        }
    }
    let application_context_name = application_context_name.ok_or(DecodeError::MissingItem {
        item: "Application Context Item",
    })?;
    if contexts_required && presentation_contexts.is_empty() {
        return Err(DecodeError::MissingItem {
            item: "Presentation Context Item",
        });
    }
    let user_information = user_information.ok_or(DecodeError::MissingItem {
        item: "User Information Item",
    })?;
    Ok((
        application_context_name,
        presentation_contexts,
        user_information,
    ))
}

fn duplicate(item_type: u8, parent: &'static str) -> DecodeError {
    DecodeError::DuplicateItem { item_type, parent }
}

fn unexpected(item_type: u8, parent: &'static str) -> DecodeError {
    DecodeError::UnexpectedItem { item_type, parent }
}

fn decode_presentation_context_rq(body: &[u8]) -> Result<PresentationContextProposed, DecodeError> {
    const PARENT: &str = "Presentation Context Item (RQ)";
    let mut cursor = Cursor::new(body);
    // 5 Presentation-context-ID; 6, 7, 8 reserved.
    let id = cursor.u8("Presentation-context-ID")?;
    cursor.take(3, "Reserved (6-8)")?;
    // 9-xxx one abstract syntax sub-item (30H), one or more transfer syntax sub-items (40H).
    let mut abstract_syntax = None;
    let mut transfer_syntaxes = Vec::new();
    while let Some(item) = cursor.item(PARENT)? {
        match item.item_type {
            0x30 => {
                if abstract_syntax.is_some() {
                    return Err(duplicate(0x30, PARENT));
                }
                abstract_syntax = Some(decode_text(item.body, "Abstract-syntax-name")?);
            }
            0x40 => transfer_syntaxes.push(decode_text(item.body, "Transfer-syntax-name")?),
            other => return Err(unexpected(other, PARENT)),
        }
    }
    let abstract_syntax = abstract_syntax.ok_or(DecodeError::MissingItem {
        item: "Abstract Syntax Sub-Item",
    })?;
    if transfer_syntaxes.is_empty() {
        return Err(DecodeError::MissingItem {
            item: "Transfer Syntax Sub-Item",
        });
    }
    Ok(PresentationContextProposed {
        id,
        abstract_syntax,
        transfer_syntaxes,
    })
}

fn decode_presentation_context_ac(body: &[u8]) -> Result<PresentationContextResult, DecodeError> {
    const PARENT: &str = "Presentation Context Item (AC)";
    let mut cursor = Cursor::new(body);
    // 5 Presentation-context-ID; 6 reserved; 7 Result/Reason; 8 reserved.
    let id = cursor.u8("Presentation-context-ID")?;
    cursor.take(1, "Reserved (6)")?;
    let result_code = cursor.u8("Result/Reason")?;
    let result = PresentationContextResultReason::from_code(result_code).ok_or(
        DecodeError::InvalidFieldValue {
            field: "Result/Reason",
            value: result_code,
        },
    )?;
    cursor.take(1, "Reserved (8)")?;
    // 9-xxx one transfer syntax sub-item (40H); "not significant" unless accepted.
    let mut transfer_syntax = None;
    while let Some(item) = cursor.item(PARENT)? {
        match item.item_type {
            0x40 => {
                if transfer_syntax.is_some() {
                    return Err(duplicate(0x40, PARENT));
                }
                transfer_syntax = Some(decode_text(item.body, "Transfer-syntax-name")?);
            }
            other => return Err(unexpected(other, PARENT)),
        }
    }
    let transfer_syntax = match transfer_syntax {
        Some(uid) => uid,
        None if result != PresentationContextResultReason::Acceptance => String::new(),
        None => {
            return Err(DecodeError::MissingItem {
                item: "Transfer Syntax Sub-Item",
            })
        }
    };
    Ok(PresentationContextResult {
        id,
        result,
        transfer_syntax,
    })
}

fn decode_user_information(body: &[u8]) -> Result<UserInformation, DecodeError> {
    const PARENT: &str = "User Information Item";
    let mut info = UserInformation::default();
    let mut cursor = Cursor::new(body);
    while let Some(item) = cursor.item(PARENT)? {
        let mut sub = Cursor::new(item.body);
        let item_length = item.body.len();
        match item.item_type {
            0x51 => {
                // PS3.8 D.1: 3-4 item-length 0004H, 5-8 Maximum-length-received.
                fixed_length(item.item_type, item_length, 4)?;
                set_once(
                    &mut info.maximum_length,
                    sub.u32("Maximum-length-received")?,
                    0x51,
                )?;
            }
            0x52 => {
                // PS3.7 D.3.3.2: 5-xxx Implementation-class-uid.
                let uid = decode_text(item.body, "Implementation-class-uid")?;
                set_once(&mut info.implementation_class_uid, uid, 0x52)?;
            }
            0x53 => {
                // PS3.7 D.3.3.3: 5-6 Maximum-number-operations-invoked,
                // 7-8 Maximum-number-operations-performed.
                fixed_length(item.item_type, item_length, 4)?;
                let window = AsynchronousOperationsWindow {
                    operations_invoked_max: sub.u16("Maximum-number-operations-invoked")?,
                    operations_performed_max: sub.u16("Maximum-number-operations-performed")?,
                };
                set_once(&mut info.asynchronous_operations_window, window, 0x53)?;
            }
            0x54 => {
                // PS3.7 D.3.3.4: 5-6 UID-length, 7-xxx SOP-class-uid, then SCU-role, SCP-role.
                let uid = sub.u16_prefixed("SOP-class-uid")?;
                let sop_class_uid = decode_text(uid, "SOP-class-uid")?;
                let scu_role = sub.u8("SCU-role")? != 0;
                let scp_role = sub.u8("SCP-role")? != 0;
                no_trailing(item.item_type, item_length, &sub)?;
                info.role_selections.push(RoleSelection {
                    sop_class_uid,
                    scu_role,
                    scp_role,
                });
            }
            0x55 => {
                // PS3.7 D.3.3.2: 5-xxx Implementation-version-name.
                let name = decode_text(item.body, "Implementation-version-name")?;
                set_once(&mut info.implementation_version_name, name, 0x55)?;
            }
            0x56 => {
                // PS3.7 D.3.3.5: 5-6 SOP-class-uid-length, 7-xxx SOP-class-uid,
                // xxx-xxx Service-class-application-information.
                let uid = sub.u16_prefixed("SOP-class-uid")?;
                info.sop_class_extended_negotiations
                    .push(SopClassExtendedNegotiation {
                        sop_class_uid: decode_text(uid, "SOP-class-uid")?,
                        service_class_application_information: sub.rest().to_vec(),
                    });
            }
            0x57 => {
                // PS3.7 D.3.3.6: 2 Sub-item-version, 5-6 SOP-class-uid-length,
                // 7-x SOP-class-uid, x+1-x+2 Service-class-uid-length,
                // x+3-y Service-class-uid, y+1-y+2 Related-general-sop-class-
                // identification-length, y+3-z Related general SOP class
                // identification sub-items (each 1-2 length, 3-n UID).
                let sop_class_uid =
                    decode_text(sub.u16_prefixed("SOP-class-uid")?, "SOP-class-uid")?;
                let service_class_uid =
                    decode_text(sub.u16_prefixed("Service-class-uid")?, "Service-class-uid")?;
                let related = sub.u16_prefixed("Related-general-sop-class-identification")?;
                no_trailing(item.item_type, item_length, &sub)?;
                let mut related_cursor = Cursor::new(related);
                let mut related_general_sop_class_uids = Vec::new();
                while !related_cursor.is_empty() {
                    let uid = related_cursor.u16_prefixed("Related-general-sop-class-uid")?;
                    related_general_sop_class_uids
                        .push(decode_text(uid, "Related-general-sop-class-uid")?);
                }
                info.sop_class_common_extended_negotiations.push(
                    SopClassCommonExtendedNegotiation {
                        sub_item_version: item.reserved,
                        sop_class_uid,
                        service_class_uid,
                        related_general_sop_class_uids,
                    },
                );
            }
            0x58 => {
                // PS3.7 D.3.3.7.1: 5 User-Identity-Type, 6 Positive-response-
                // requested, 7-8 Primary-field-length, 9-n Primary-field,
                // n+1-n+2 Secondary-field-length, n+3-m Secondary-field.
                let identity_type = sub.u8("User-Identity-Type")?;
                let positive_response_requested = sub.u8("Positive-response-requested")? != 0;
                let primary_field = sub.u16_prefixed("Primary-field")?.to_vec();
                let secondary_field = sub.u16_prefixed("Secondary-field")?.to_vec();
                no_trailing(item.item_type, item_length, &sub)?;
                let request = UserIdentityRequest {
                    identity_type,
                    positive_response_requested,
                    primary_field,
                    secondary_field,
                };
                set_once(&mut info.user_identity_request, request, 0x58)?;
            }
            0x59 => {
                // PS3.7 D.3.3.7.2: 5-6 Server-response-length, 7-n Server-response.
                let server_response = sub.u16_prefixed("Server-response")?.to_vec();
                no_trailing(item.item_type, item_length, &sub)?;
                set_once(
                    &mut info.user_identity_response,
                    UserIdentityResponse { server_response },
                    0x59,
                )?;
            }
            item_type => info.unknown_sub_items.push(UnknownSubItem {
                item_type,
                bytes: item.body.to_vec(),
            }),
        }
    }
    Ok(info)
}

fn set_once<T>(slot: &mut Option<T>, value: T, item_type: u8) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(duplicate(item_type, "User Information Item"));
    }
    *slot = Some(value);
    Ok(())
}

fn fixed_length(item_type: u8, length: usize, expected: usize) -> Result<(), DecodeError> {
    if length == expected {
        Ok(())
    } else {
        Err(DecodeError::ItemLengthMismatch {
            item_type,
            length,
            expected,
        })
    }
}

fn no_trailing(item_type: u8, length: usize, sub: &Cursor<'_>) -> Result<(), DecodeError> {
    if sub.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::ItemLengthMismatch {
            item_type,
            length,
            expected: length.saturating_sub(sub.remaining_len()),
        })
    }
}

fn decode_associate_rj(body: &[u8]) -> Result<AssociateRj, DecodeError> {
    // PS3.8 Table 9-21: 7 reserved, 8 Result, 9 Source, 10 Reason/Diag.
    let mut cursor = Cursor::new(body);
    cursor.take(1, "Reserved (7)")?;
    let result_code = cursor.u8("Result")?;
    let source = cursor.u8("Source")?;
    let reason_code = cursor.u8("Reason/Diag.")?;
    expect_end(&cursor, PduType::AssociateRj)?;
    let result = match result_code {
        1 => RejectResult::Permanent,
        2 => RejectResult::Transient,
        value => {
            return Err(DecodeError::InvalidFieldValue {
                field: "Result",
                value,
            })
        }
    };
    let reason =
        RejectReason::from_codes(source, reason_code).ok_or(DecodeError::InvalidFieldValue {
            field: "Source",
            value: source,
        })?;
    Ok(AssociateRj { result, reason })
}

fn decode_abort(body: &[u8]) -> Result<Abort, DecodeError> {
    // PS3.8 Table 9-26: 7 reserved, 8 reserved, 9 Source, 10 Reason/Diag.
    let mut cursor = Cursor::new(body);
    cursor.take(2, "Reserved (7-8)")?;
    let source_code = cursor.u8("Source")?;
    let reason_code = cursor.u8("Reason/Diag.")?;
    expect_end(&cursor, PduType::Abort)?;
    let source = AbortSource::from_code(source_code).ok_or(DecodeError::InvalidFieldValue {
        field: "Source",
        value: source_code,
    })?;
    Ok(Abort {
        source,
        reason: AbortReason::from_code(reason_code),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_padding_strips_spaces_and_nuls() {
        assert_eq!(trim_padding(b"  AB C \0\0"), b"AB C");
        assert_eq!(trim_padding(b"    "), b"");
        assert_eq!(trim_padding(b""), b"");
        assert_eq!(trim_padding(b"1.2\0"), b"1.2");
    }

    #[test]
    fn ae_title_all_spaces_is_rejected() {
        assert_eq!(
            decode_ae_title(&[b' '; 16], "Called-AE-title"),
            Err(DecodeError::BadAeTitle {
                field: "Called-AE-title",
                reason: super::super::AeTitleError::Empty
            })
        );
    }

    #[test]
    fn ae_title_control_character_is_rejected() {
        let mut field = [b' '; 16];
        field[0] = b'A';
        field[1] = 0x07;
        assert!(matches!(
            decode_ae_title(&field, "Calling-AE-title"),
            Err(DecodeError::BadAeTitle { .. })
        ));
    }

    #[test]
    fn item_length_past_parent_is_reported() {
        // Item 10H claiming 9 bytes with 2 present.
        let mut cursor = Cursor::new(&[0x10, 0, 0, 9, b'1', b'.']);
        assert_eq!(
            cursor.item("A-ASSOCIATE-RQ").err(),
            Some(DecodeError::ItemLengthPastParent {
                item_type: 0x10,
                length: 9,
                available: 2,
                parent: "A-ASSOCIATE-RQ"
            })
        );
    }
}
