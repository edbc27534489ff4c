//! Encoding of PDUs into a byte vector.
//!
//! Lengths are written as placeholders and patched when the content is
//! known, each checked against its field width. On error the output vector
//! is truncated back to its length on entry.

use super::types::*;
use super::{validate_ae_title, EncodeError, PduType, AE_TITLE_LENGTH, PDU_HEADER_LENGTH};

impl Pdu {
    /// Appends this PDU's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_unchecked(out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// This PDU's bytes in a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    fn encode_unchecked(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let pdu = begin_pdu(out, self.pdu_type());
        match self {
            Pdu::AssociateRq(rq) => encode_associate_rq(rq, out)?,
            Pdu::AssociateAc(ac) => encode_associate_ac(ac, out)?,
            Pdu::AssociateRj(rj) => {
                // PS3.8 Table 9-21: 7 reserved, 8 Result, 9 Source, 10 Reason/Diag.
                out.extend_from_slice(&[
                    0,
                    rj.result as u8,
                    rj.reason.source(),
                    rj.reason.reason(),
                ]);
            }
            Pdu::PDataTf(pdvs) => {
                if pdvs.is_empty() {
                    return Err(EncodeError::NoPresentationDataValue);
                }
                for pdv in pdvs {
                    crate::pdata::write_pdv(
                        out,
                        pdv.presentation_context_id,
                        pdv.is_command,
                        pdv.is_last,
                        &pdv.value,
                    )?;
                }
            }
            // PS3.8 Tables 9-24/9-25: 7-10 reserved.
            Pdu::ReleaseRq | Pdu::ReleaseRp => out.extend_from_slice(&[0; 4]),
            Pdu::Abort(abort) => {
                // PS3.8 Table 9-26: 7-8 reserved, 9 Source, 10 Reason/Diag.
                out.extend_from_slice(&[0, 0, abort.source as u8, abort.reason.code()]);
            }
        }
        end_pdu(out, pdu)
    }
}

impl AssociateRq {
    /// Appends the encoded A-ASSOCIATE-RQ PDU to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_whole(out, PduType::AssociateRq, |out| {
            encode_associate_rq(self, out)
        })
    }
}

impl AssociateAc {
    /// Appends the encoded A-ASSOCIATE-AC PDU to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_whole(out, PduType::AssociateAc, |out| {
            encode_associate_ac(self, out)
        })
    }
}

/// Header, body written by `body`, length patched; `out` restored on error.
fn encode_whole(
    out: &mut Vec<u8>,
    pdu_type: PduType,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let pdu = begin_pdu(out, pdu_type);
    let result = body(out).and_then(|()| end_pdu(out, pdu));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Writes a PDU header with a placeholder length; returns where it starts.
fn begin_pdu(out: &mut Vec<u8>, pdu_type: PduType) -> usize {
    let start = out.len();
    // 1 PDU-type, 2 reserved, 3-6 PDU-length (patched by end_pdu).
    out.extend_from_slice(&[pdu_type.code(), 0, 0, 0, 0, 0]);
    start
}

fn end_pdu(out: &mut [u8], start: usize) -> Result<(), EncodeError> {
    let body_length = out
        .len()
        .saturating_sub(start)
        .saturating_sub(PDU_HEADER_LENGTH);
    let length = u32::try_from(body_length)
        .ok()
        .filter(|&length| length != u32::MAX)
        .ok_or(EncodeError::PduTooLong {
            length: body_length,
        })?;
    patch(out, start.saturating_add(2), &length.to_be_bytes());
    Ok(())
}

/// Writes an item header (type, reserved byte, 16-bit length placeholder).
fn begin_item(out: &mut Vec<u8>, item_type: u8, reserved: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[item_type, reserved, 0, 0]);
    start
}

fn end_item(out: &mut [u8], start: usize, item: &'static str) -> Result<(), EncodeError> {
    let body_length = out.len().saturating_sub(start).saturating_sub(4);
    let length = u16::try_from(body_length).map_err(|_| EncodeError::ItemTooLong {
        item,
        length: body_length,
    })?;
    patch(out, start.saturating_add(2), &length.to_be_bytes());
    Ok(())
}

fn patch(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(target) = out.get_mut(at..at.saturating_add(bytes.len())) {
        target.copy_from_slice(bytes);
    }
}

fn check_text<'a>(text: &'a str, field: &'static str) -> Result<&'a [u8], EncodeError> {
    if text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Ok(text.as_bytes())
    } else {
        Err(EncodeError::BadText { field })
    }
}

/// A text item: header and the text, unpadded (PS3.8 Annex F: UIDs in the
/// upper layer are not padded).
fn text_item(
    out: &mut Vec<u8>,
    item_type: u8,
    text: &str,
    field: &'static str,
) -> Result<(), EncodeError> {
    let bytes = check_text(text, field)?;
    let item = begin_item(out, item_type, 0);
    out.extend_from_slice(bytes);
    end_item(out, item, field)
}

/// A 2-byte length and the bytes.
fn u16_prefixed(out: &mut Vec<u8>, bytes: &[u8], field: &'static str) -> Result<(), EncodeError> {
    let length = u16::try_from(bytes.len()).map_err(|_| EncodeError::ItemTooLong {
        item: field,
        length: bytes.len(),
    })?;
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn ae_title_field(out: &mut Vec<u8>, title: &str, field: &'static str) -> Result<(), EncodeError> {
    let trimmed =
        validate_ae_title(title).map_err(|reason| EncodeError::BadAeTitle { field, reason })?;
    let mut padded = [b' '; AE_TITLE_LENGTH];
    if let Some(target) = padded.get_mut(..trimmed.len()) {
        target.copy_from_slice(trimmed.as_bytes());
    }
    out.extend_from_slice(&padded);
    Ok(())
}

fn associate_fixed(
    out: &mut Vec<u8>,
    protocol_version: u16,
    called: &str,
    calling: &str,
) -> Result<(), EncodeError> {
    // 7-8 Protocol-version, 9-10 reserved.
    out.extend_from_slice(&protocol_version.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    // 11-26 Called-AE-title, 27-42 Calling-AE-title: 16 bytes, space padded.
    ae_title_field(out, called, "Called-AE-title")?;
    ae_title_field(out, calling, "Calling-AE-title")?;
    // 43-74 reserved.
    out.extend_from_slice(&[0; 32]);
    Ok(())
}

fn encode_associate_rq(rq: &AssociateRq, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if rq.presentation_contexts.is_empty() {
        return Err(EncodeError::NoPresentationContext);
    }
    associate_fixed(
        out,
        rq.protocol_version,
        &rq.called_ae_title,
        &rq.calling_ae_title,
    )?;
    // 75-xxx: application context (10H), presentation contexts (20H), user information (50H).
    text_item(
        out,
        0x10,
        &rq.application_context_name,
        "Application-context-name",
    )?;
    for context in &rq.presentation_contexts {
        // PS3.8 Table 9-13: 5 ID, 6-8 reserved, 9-xxx sub-items.
        let item = begin_item(out, 0x20, 0);
        out.extend_from_slice(&[context.id, 0, 0, 0]);
        text_item(out, 0x30, &context.abstract_syntax, "Abstract-syntax-name")?;
        for transfer_syntax in &context.transfer_syntaxes {
            text_item(out, 0x40, transfer_syntax, "Transfer-syntax-name")?;
        }
        end_item(out, item, "Presentation Context Item (RQ)")?;
    }
    encode_user_information(&rq.user_information, out)
}

fn encode_associate_ac(ac: &AssociateAc, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    associate_fixed(
        out,
        ac.protocol_version,
        &ac.called_ae_title,
        &ac.calling_ae_title,
    )?;
    text_item(
        out,
        0x10,
        &ac.application_context_name,
        "Application-context-name",
    )?;
    for context in &ac.presentation_contexts {
        // PS3.8 Table 9-18: 5 ID, 6 reserved, 7 Result/Reason, 8 reserved, 9-xxx sub-item.
        let item = begin_item(out, 0x21, 0);
        out.extend_from_slice(&[context.id, 0, context.result.code(), 0]);
        text_item(out, 0x40, &context.transfer_syntax, "Transfer-syntax-name")?;
        end_item(out, item, "Presentation Context Item (AC)")?;
    }
    encode_user_information(&ac.user_information, out)
}

fn encode_user_information(info: &UserInformation, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    const ITEM: &str = "User Information Item";
    let user = begin_item(out, 0x50, 0);
    if let Some(maximum_length) = info.maximum_length {
        // PS3.8 D.1: 51H, length 4, Maximum-length-received.
        let item = begin_item(out, 0x51, 0);
        out.extend_from_slice(&maximum_length.to_be_bytes());
        end_item(out, item, "Maximum Length Sub-Item")?;
    }
    if let Some(uid) = &info.implementation_class_uid {
        text_item(out, 0x52, uid, "Implementation-class-uid")?;
    }
    if let Some(window) = info.asynchronous_operations_window {
        // PS3.7 D.3.3.3: 53H, length 4, invoked, performed.
        let item = begin_item(out, 0x53, 0);
        out.extend_from_slice(&window.operations_invoked_max.to_be_bytes());
        out.extend_from_slice(&window.operations_performed_max.to_be_bytes());
        end_item(out, item, "Asynchronous Operations Window Sub-Item")?;
    }
    for role in &info.role_selections {
        // PS3.7 D.3.3.4: 54H, UID-length, SOP-class-uid, SCU-role, SCP-role.
        let item = begin_item(out, 0x54, 0);
        u16_prefixed(
            out,
            check_text(&role.sop_class_uid, "SOP-class-uid")?,
            "SOP-class-uid",
        )?;
        out.extend_from_slice(&[u8::from(role.scu_role), u8::from(role.scp_role)]);
        end_item(out, item, "SCP/SCU Role Selection Sub-Item")?;
    }
    if let Some(name) = &info.implementation_version_name {
        if name.is_empty() || name.len() > 16 {
            return Err(EncodeError::ImplementationVersionNameLength { length: name.len() });
        }
        text_item(out, 0x55, name, "Implementation-version-name")?;
    }
    for negotiation in &info.sop_class_extended_negotiations {
        // PS3.7 D.3.3.5: 56H, SOP-class-uid-length, SOP-class-uid, application information.
        let item = begin_item(out, 0x56, 0);
        u16_prefixed(
            out,
            check_text(&negotiation.sop_class_uid, "SOP-class-uid")?,
            "SOP-class-uid",
        )?;
        out.extend_from_slice(&negotiation.service_class_application_information);
        end_item(out, item, "SOP Class Extended Negotiation Sub-Item")?;
    }
    for negotiation in &info.sop_class_common_extended_negotiations {
        // PS3.7 D.3.3.6: 57H, sub-item-version in byte 2, then three
        // length-prefixed fields, the last holding length-prefixed UIDs.
        let item = begin_item(out, 0x57, negotiation.sub_item_version);
        u16_prefixed(
            out,
            check_text(&negotiation.sop_class_uid, "SOP-class-uid")?,
            "SOP-class-uid",
        )?;
        u16_prefixed(
            out,
            check_text(&negotiation.service_class_uid, "Service-class-uid")?,
            "Service-class-uid",
        )?;
        let mut related = Vec::new();
        for uid in &negotiation.related_general_sop_class_uids {
            u16_prefixed(
                &mut related,
                check_text(uid, "Related-general-sop-class-uid")?,
                "Related-general-sop-class-uid",
            )?;
        }
        u16_prefixed(out, &related, "Related-general-sop-class-identification")?;
        end_item(out, item, "SOP Class Common Extended Negotiation Sub-Item")?;
    }
    if let Some(identity) = &info.user_identity_request {
        // PS3.7 D.3.3.7.1: 58H, type, positive-response-requested, primary, secondary.
        let item = begin_item(out, 0x58, 0);
        out.extend_from_slice(&[
            identity.identity_type,
            u8::from(identity.positive_response_requested),
        ]);
        u16_prefixed(out, &identity.primary_field, "Primary-field")?;
        u16_prefixed(out, &identity.secondary_field, "Secondary-field")?;
        end_item(out, item, "User Identity Sub-Item (RQ)")?;
    }
    if let Some(response) = &info.user_identity_response {
        // PS3.7 D.3.3.7.2: 59H, server-response-length, server-response.
        let item = begin_item(out, 0x59, 0);
        u16_prefixed(out, &response.server_response, "Server-response")?;
        end_item(out, item, "User Identity Sub-Item (AC)")?;
    }
    for unknown in &info.unknown_sub_items {
        let item = begin_item(out, unknown.item_type, 0);
        out.extend_from_slice(&unknown.bytes);
        end_item(out, item, "unknown user information sub-item")?;
    }
    end_item(out, user, ITEM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{decode_pdu, DecodeLimits};

    #[test]
    fn release_rq_bytes_are_exact() {
        assert_eq!(
            Pdu::ReleaseRq.to_bytes().unwrap(),
            [5, 0, 0, 0, 0, 4, 0, 0, 0, 0]
        );
    }

    #[test]
    fn abort_bytes_are_exact() {
        let abort = Pdu::Abort(Abort {
            source: AbortSource::ServiceProvider,
            reason: AbortReason::UnexpectedPdu,
        });
        assert_eq!(abort.to_bytes().unwrap(), [7, 0, 0, 0, 0, 4, 0, 0, 2, 2]);
    }

    #[test]
    fn bad_ae_title_leaves_output_untouched() {
        let rq = AssociateRq {
            protocol_version: 1,
            called_ae_title: "WAY-TOO-LONG-AE-TITLE".into(),
            calling_ae_title: "SCU".into(),
            application_context_name: crate::pdu::DICOM_APPLICATION_CONTEXT_NAME.into(),
            presentation_contexts: vec![PresentationContextProposed {
                id: 1,
                abstract_syntax: "1.2.840.10008.1.1".into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
            }],
            user_information: UserInformation::default(),
        };
        let mut out = vec![9, 9];
        assert!(matches!(
            rq.encode(&mut out),
            Err(EncodeError::BadAeTitle {
                field: "Called-AE-title",
                ..
            })
        ));
        assert_eq!(out, [9, 9]);
    }

    #[test]
    fn common_extended_negotiation_matches_known_bytes() {
        // Layout of PS3.7 Table D.3-12 with CT/SR UIDs.
        let mut info = UserInformation::default();
        info.sop_class_common_extended_negotiations
            .push(SopClassCommonExtendedNegotiation {
                sub_item_version: 0,
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
                service_class_uid: "1.2.840.10008.4.2".into(),
                related_general_sop_class_uids: vec!["1.2.840.10008.5.1.4.1.1.88.22".into()],
            });
        let mut out = Vec::new();
        encode_user_information(&info, &mut out).unwrap();
        let mut expected = vec![0x50, 0, 0, 83, 0x57, 0, 0, 79, 0, 25];
        expected.extend_from_slice(b"1.2.840.10008.5.1.4.1.1.4");
        expected.extend_from_slice(&[0, 17]);
        expected.extend_from_slice(b"1.2.840.10008.4.2");
        expected.extend_from_slice(&[0, 31, 0, 29]);
        expected.extend_from_slice(b"1.2.840.10008.5.1.4.1.1.88.22");
        assert_eq!(out, expected);
    }

    #[test]
    fn release_round_trips() {
        for pdu in [Pdu::ReleaseRq, Pdu::ReleaseRp] {
            let bytes = pdu.to_bytes().unwrap();
            let (decoded, used) = decode_pdu(&bytes, &DecodeLimits::default())
                .unwrap()
                .unwrap();
            assert_eq!(decoded, pdu);
            assert_eq!(used, bytes.len());
        }
    }
}
