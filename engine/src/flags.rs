//! What Sluice records of an instance it stored although a lenient check
//! found something (`[validation]`, docs/design/ingest.md "Validation"): the
//! instance's UIDs and the findings, kept in the index beside its file
//! (`sluice_index::StoreRequest::flagged`, the `flagged` table) and listed
//! by `sluice flagged`, as quarantine entries are by `sluice quarantine
//! list`. The index keeps the bytes opaque; this module is their layout.
//!
//! Layout: version byte `1`; the SOP Instance UID, the Study Instance UID,
//! the calling AE title, then each finding's text, each as a `u16`
//! little-endian length and UTF-8 bytes; at most
//! [`sluice_index::FLAGGED_PAYLOAD_BYTES_MAX`] bytes in all (findings past
//! it are left out, and the last kept says so).

use sluice_index::FLAGGED_PAYLOAD_BYTES_MAX;

const VERSION: u8 = 1;

/// One flagged instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlaggedInstance {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// The sender's AE title.
    pub calling_ae_title: String,
    /// What the lenient checks found, one sentence each.
    pub findings: Vec<String>,
}

/// A payload that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flagged record is damaged: {0}")]
pub struct FlaggedError(&'static str);

impl FlaggedInstance {
    /// The bytes the index keeps.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        let fixed = [
            &self.sop_instance_uid,
            &self.study_instance_uid,
            &self.calling_ae_title,
        ];
        for text in fixed {
            put(&mut out, text);
        }
        for finding in &self.findings {
            if out.len() + 2 + finding.len() > FLAGGED_PAYLOAD_BYTES_MAX {
                put(&mut out, "(more findings left out)");
                break;
            }
            put(&mut out, finding);
        }
        out.truncate(FLAGGED_PAYLOAD_BYTES_MAX);
        out
    }

    /// Reads the bytes the index keeps.
    pub fn decode(bytes: &[u8]) -> Result<FlaggedInstance, FlaggedError> {
        let (&version, mut rest) = bytes.split_first().ok_or(FlaggedError("empty"))?;
        if version != VERSION {
            return Err(FlaggedError("unknown version"));
        }
        let mut texts = Vec::new();
        while !rest.is_empty() {
            let (length, after) = rest
                .split_first_chunk::<2>()
                .ok_or(FlaggedError("truncated"))?;
            let length = usize::from(u16::from_le_bytes(*length));
            let text = after.get(..length).ok_or(FlaggedError("truncated"))?;
            texts.push(String::from_utf8_lossy(text).into_owned());
            rest = after.get(length..).unwrap_or_default();
        }
        let mut texts = texts.into_iter();
        let (Some(sop_instance_uid), Some(study_instance_uid), Some(calling_ae_title)) =
            (texts.next(), texts.next(), texts.next())
        else {
            return Err(FlaggedError("UIDs missing"));
        };
        Ok(FlaggedInstance {
            sop_instance_uid,
            study_instance_uid,
            calling_ae_title,
            findings: texts.collect(),
        })
    }
}

/// A `u16` length and the text (cut at a character boundary to fit).
fn put(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = text.get(..end).unwrap_or_default().as_bytes();
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flagged_instances_round_trip_and_stay_bounded() {
        let flagged = FlaggedInstance {
            sop_instance_uid: "1.2.3".into(),
            study_instance_uid: "1.2".into(),
            calling_ae_title: "CT1".into(),
            findings: vec!["a finding".into(), "é".into()],
        };
        assert_eq!(FlaggedInstance::decode(&flagged.encode()), Ok(flagged));
        let many = FlaggedInstance {
            sop_instance_uid: "1".into(),
            study_instance_uid: "2".into(),
            calling_ae_title: "X".into(),
            findings: vec!["x".repeat(1000); 10],
        };
        let bytes = many.encode();
        assert!(bytes.len() <= FLAGGED_PAYLOAD_BYTES_MAX);
        let decoded = FlaggedInstance::decode(&bytes).unwrap();
        assert_eq!(
            decoded.findings.last().map(String::as_str),
            Some("(more findings left out)")
        );
        for end in 0..bytes.len().min(12) {
            let _ = FlaggedInstance::decode(&bytes[..end]);
        }
        assert!(FlaggedInstance::decode(&[2]).is_err());
    }
}
