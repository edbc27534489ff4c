//! The DICOM audit messages (PS3.15 A.5): what each audited event says, as
//! the XML of the audit message schema (A.5.1), with the codes of the event
//! definitions (A.5.3) and PS3.16's DCM code system.
//!
//! Pure: values in, an XML string out. Every text that came from a peer
//! (AE titles, patient names, error texts) is escaped by quick-xml, and
//! characters XML 1.0 cannot carry (ISO 2022 escapes in a name, other C0
//! controls) are replaced first, so every message is well-formed.

use std::io;
use std::net::SocketAddr;
use std::time::SystemTime;

use base64::Engine as _;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

/// A coded value: code, code system name, meaning (`csd-code`,
/// `codeSystemName`, `originalText`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Code(pub &'static str, pub &'static str, pub &'static str);

/// Event IDs (PS3.16 CID 400) and event type codes (CID 401) Sluice uses.
pub(crate) mod codes {
    use super::Code;

    pub(crate) const APPLICATION_ACTIVITY: Code = Code("110100", "DCM", "Application Activity");
    pub(crate) const INSTANCES_TRANSFERRED: Code =
        Code("110104", "DCM", "DICOM Instances Transferred");
    pub(crate) const QUERY: Code = Code("110112", "DCM", "Query");
    pub(crate) const SECURITY_ALERT: Code = Code("110113", "DCM", "Security Alert");
    pub(crate) const USER_AUTHENTICATION: Code = Code("110114", "DCM", "User Authentication");

    pub(crate) const APPLICATION_START: Code = Code("110120", "DCM", "Application Start");
    pub(crate) const APPLICATION_STOP: Code = Code("110121", "DCM", "Application Stop");
    pub(crate) const LOGIN: Code = Code("110122", "DCM", "Login");
    pub(crate) const LOGOUT: Code = Code("110123", "DCM", "Logout");
    pub(crate) const NODE_AUTHENTICATION: Code = Code("110126", "DCM", "Node Authentication");
    pub(crate) const USE_OF_RESTRICTED_FUNCTION: Code =
        Code("110132", "DCM", "Use of Restricted Function");

    /// Active participant roles (CID 402).
    pub(crate) const APPLICATION: Code = Code("110150", "DCM", "Application");
    pub(crate) const DESTINATION: Code = Code("110152", "DCM", "Destination Role ID");
    pub(crate) const SOURCE: Code = Code("110153", "DCM", "Source Role ID");

    /// Participant object ID types (CID 404, RFC 3881).
    pub(crate) const PATIENT_NUMBER: Code = Code("2", "RFC-3881", "Patient Number");
    pub(crate) const STUDY_INSTANCE_UID: Code = Code("110180", "DCM", "Study Instance UID");
    pub(crate) const SOP_CLASS_UID: Code = Code("110181", "DCM", "SOP Class UID");
    pub(crate) const NODE_ID: Code = Code("110182", "DCM", "Node ID");
}

/// EventOutcomeIndicator: nominal success or a minor failure (the event was
/// refused; Sluice goes on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    MinorFailure,
}

impl Outcome {
    pub(crate) fn indicator(self) -> &'static str {
        match self {
            Outcome::Success => "0",
            Outcome::MinorFailure => "4",
        }
    }
}

/// An active participant (A.5.2: a process, here an AE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Participant {
    /// UserID: the AE title (or the process, for the application itself).
    pub user_id: String,
    /// AlternativeUserID (the process id of Sluice itself).
    pub alternative_user_id: Option<String>,
    pub requestor: bool,
    /// The node: an IP address, or (for Sluice) its host name.
    pub access_point: Option<AccessPoint>,
    pub role: Option<Code>,
}

/// NetworkAccessPointID and its type code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AccessPoint {
    /// Type 1: a machine name.
    HostName(String),
    /// Type 2: an IP address.
    Ip(std::net::IpAddr),
}

impl AccessPoint {
    pub(crate) fn of(peer: Option<SocketAddr>) -> Option<AccessPoint> {
        peer.map(|peer| AccessPoint::Ip(peer.ip()))
    }
}

/// A participant object (A.5.2): a patient, a study, a query, a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Object {
    pub type_code: &'static str,
    pub type_code_role: &'static str,
    pub id_type: Code,
    pub id: String,
    pub name_or_query: NameOrQuery,
    /// ParticipantObjectDetail pairs (type, value before base64).
    pub details: Vec<(&'static str, Vec<u8>)>,
    /// ParticipantObjectDescription of a study: accession numbers and SOP
    /// classes with their instance counts.
    pub study_description: Option<StudyContents>,
}

/// The schema's choice between ParticipantObjectName and
/// ParticipantObjectQuery (one of them, always).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NameOrQuery {
    Name(String),
    /// Its bytes (written base64).
    Query(Vec<u8>),
}

/// What of a study took part: accession number, SOP classes and counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StudyContents {
    pub accession_number: String,
    /// SOP Class UID -> number of instances.
    pub sop_classes: std::collections::BTreeMap<String, u64>,
}

/// One audit message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AuditMessage {
    pub event_id: Code,
    pub action: &'static str,
    pub time: SystemTime,
    pub outcome: Outcome,
    pub event_types: Vec<Code>,
    pub description: Option<String>,
    pub participants: Vec<Participant>,
    /// AuditSourceID: Sluice's AE title.
    pub source_id: String,
    pub objects: Vec<Object>,
}

impl AuditMessage {
    /// The event's name, for the JSON line and the syslog severity.
    pub(crate) fn event_name(&self) -> &'static str {
        self.event_types
            .first()
            .map_or(self.event_id.2, |event_type| event_type.2)
    }

    /// The `<AuditMessage>` element.
    pub(crate) fn to_xml(&self) -> io::Result<String> {
        debug_assert!(
            !self.participants.is_empty(),
            "the schema wants an active participant"
        );
        let mut writer = Writer::new(Vec::with_capacity(1024));
        writer.write_event(Event::Start(BytesStart::new("AuditMessage")))?;

        let time = humantime::format_rfc3339_micros(self.time).to_string();
        let mut event = BytesStart::new("EventIdentification");
        event.push_attribute(("EventActionCode", self.action));
        event.push_attribute(("EventDateTime", time.as_str()));
        event.push_attribute(("EventOutcomeIndicator", self.outcome.indicator()));
        writer.write_event(Event::Start(event))?;
        code(&mut writer, "EventID", self.event_id)?;
        for event_type in &self.event_types {
            code(&mut writer, "EventTypeCode", *event_type)?;
        }
        if let Some(description) = &self.description {
            text_element(&mut writer, "EventOutcomeDescription", description)?;
        }
        writer.write_event(Event::End(BytesEnd::new("EventIdentification")))?;

        for participant in &self.participants {
            let mut element = BytesStart::new("ActiveParticipant");
            let user_id = xml_text(&participant.user_id);
            element.push_attribute(("UserID", user_id.as_str()));
            let alternative = participant.alternative_user_id.as_deref().map(xml_text);
            if let Some(alternative) = &alternative {
                element.push_attribute(("AlternativeUserID", alternative.as_str()));
            }
            element.push_attribute((
                "UserIsRequestor",
                if participant.requestor {
                    "true"
                } else {
                    "false"
                },
            ));
            let access_point = participant.access_point.as_ref().map(|point| match point {
                AccessPoint::HostName(name) => (xml_text(name), "1"),
                AccessPoint::Ip(ip) => (ip.to_string(), "2"),
            });
            if let Some((id, type_code)) = &access_point {
                element.push_attribute(("NetworkAccessPointID", id.as_str()));
                element.push_attribute(("NetworkAccessPointTypeCode", *type_code));
            }
            match participant.role {
                Some(role) => {
                    writer.write_event(Event::Start(element))?;
                    code(&mut writer, "RoleIDCode", role)?;
                    writer.write_event(Event::End(BytesEnd::new("ActiveParticipant")))?;
                }
                None => writer.write_event(Event::Empty(element))?,
            }
        }

        let mut source = BytesStart::new("AuditSourceIdentification");
        let source_id = xml_text(&self.source_id);
        source.push_attribute(("AuditSourceID", source_id.as_str()));
        writer.write_event(Event::Start(source))?;
        // 4: application server process (A.5.1.2.1).
        let mut type_code = BytesStart::new("AuditSourceTypeCode");
        type_code.push_attribute(("csd-code", "4"));
        writer.write_event(Event::Empty(type_code))?;
        writer.write_event(Event::End(BytesEnd::new("AuditSourceIdentification")))?;

        for object in &self.objects {
            write_object(&mut writer, object)?;
        }
        writer.write_event(Event::End(BytesEnd::new("AuditMessage")))?;
        String::from_utf8(writer.into_inner())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
    }
}

fn write_object(writer: &mut Writer<Vec<u8>>, object: &Object) -> io::Result<()> {
    let mut element = BytesStart::new("ParticipantObjectIdentification");
    let id = xml_text(&object.id);
    element.push_attribute(("ParticipantObjectID", id.as_str()));
    element.push_attribute(("ParticipantObjectTypeCode", object.type_code));
    element.push_attribute(("ParticipantObjectTypeCodeRole", object.type_code_role));
    writer.write_event(Event::Start(element))?;
    code(writer, "ParticipantObjectIDTypeCode", object.id_type)?;
    match &object.name_or_query {
        NameOrQuery::Name(name) => text_element(writer, "ParticipantObjectName", name)?,
        NameOrQuery::Query(query) => text_element(
            writer,
            "ParticipantObjectQuery",
            &base64::engine::general_purpose::STANDARD.encode(query),
        )?,
    }
    for (kind, value) in &object.details {
        let mut detail = BytesStart::new("ParticipantObjectDetail");
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        detail.push_attribute(("type", *kind));
        detail.push_attribute(("value", encoded.as_str()));
        writer.write_event(Event::Empty(detail))?;
    }
    if let Some(contents) = &object.study_description {
        writer.write_event(Event::Start(BytesStart::new(
            "ParticipantObjectDescription",
        )))?;
        if !contents.accession_number.is_empty() {
            let mut accession = BytesStart::new("Accession");
            let number = xml_text(&contents.accession_number);
            accession.push_attribute(("Number", number.as_str()));
            writer.write_event(Event::Empty(accession))?;
        }
        for (sop_class_uid, count) in &contents.sop_classes {
            let mut sop_class = BytesStart::new("SOPClass");
            let uid = xml_text(sop_class_uid);
            let count = count.to_string();
            sop_class.push_attribute(("UID", uid.as_str()));
            sop_class.push_attribute(("NumberOfInstances", count.as_str()));
            writer.write_event(Event::Empty(sop_class))?;
        }
        writer.write_event(Event::End(BytesEnd::new("ParticipantObjectDescription")))?;
    }
    writer.write_event(Event::End(BytesEnd::new("ParticipantObjectIdentification")))?;
    Ok(())
}

/// An empty element of a coded value.
fn code(writer: &mut Writer<Vec<u8>>, name: &str, code: Code) -> io::Result<()> {
    let mut element = BytesStart::new(name);
    element.push_attribute(("csd-code", code.0));
    element.push_attribute(("codeSystemName", code.1));
    element.push_attribute(("originalText", code.2));
    writer.write_event(Event::Empty(element))?;
    Ok(())
}

fn text_element(writer: &mut Writer<Vec<u8>>, name: &str, text: &str) -> io::Result<()> {
    writer.write_event(Event::Start(BytesStart::new(name)))?;
    let text = xml_text(text);
    writer.write_event(Event::Text(BytesText::new(&text)))?;
    writer.write_event(Event::End(BytesEnd::new(name)))?;
    Ok(())
}

/// `text` with the characters XML 1.0 cannot hold (C0 controls other than
/// tab, line feed and carriage return; U+FFFE, U+FFFF) replaced by U+FFFD.
/// quick-xml escapes markup, not these.
pub(crate) fn xml_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(calling_ae: &str) -> AuditMessage {
        AuditMessage {
            event_id: codes::USER_AUTHENTICATION,
            action: "E",
            time: SystemTime::UNIX_EPOCH,
            outcome: Outcome::Success,
            event_types: vec![codes::LOGIN],
            description: None,
            participants: vec![Participant {
                user_id: calling_ae.to_owned(),
                alternative_user_id: None,
                requestor: true,
                access_point: Some(AccessPoint::Ip("10.1.2.3".parse().unwrap())),
                role: None,
            }],
            source_id: "SLUICE".into(),
            objects: Vec::new(),
        }
    }

    #[test]
    fn peer_text_is_escaped_and_made_xml_safe() {
        let xml = login("A<\"&\u{1b}$B").to_xml().unwrap();
        assert!(
            xml.contains("UserID=\"A&lt;&quot;&amp;\u{fffd}$B\""),
            "{xml}"
        );
        assert!(xml.contains(r#"EventDateTime="1970-01-01T00:00:00.000000Z""#));
        assert!(xml.contains(r#"NetworkAccessPointID="10.1.2.3" NetworkAccessPointTypeCode="2""#));
    }

    #[test]
    fn a_query_is_base64() {
        let mut message = login("VIEWER");
        message.objects.push(Object {
            type_code: "2",
            type_code_role: "24",
            id_type: codes::SOP_CLASS_UID,
            id: "1.2.840.10008.5.1.4.1.2.2.1".into(),
            name_or_query: NameOrQuery::Query(b"\x10\x00\x20\x00".to_vec()),
            details: vec![("TransferSyntax", b"1.2.840.10008.1.2".to_vec())],
            study_description: None,
        });
        let xml = message.to_xml().unwrap();
        assert!(xml.contains("<ParticipantObjectQuery>EAAgAA==</ParticipantObjectQuery>"));
        assert!(xml.contains(r#"type="TransferSyntax" value="MS4yLjg0MC4xMDAwOC4xLjI=""#));
    }
}
