//! The engine's encoding of a commitment record's `payload` (the index keeps
//! it as opaque bytes): the references of the request, and once decided the
//! report (which references failed, and why), the outcome of delivery and
//! when things happened.
//!
//! Layout (little endian), version 2: version byte `2`; `u32` count of the
//! references the request named; the references kept, packed
//! ([`References::encode_into`]: about 33 bytes each); `u32` failed count,
//! each as `u32` index into the references kept and `u16` failure reason;
//! `u64` decided-at and `u64` finished-at (Unix ns, 0 = not yet); `u16` last
//! N-EVENT-REPORT-RSP status (0xFFFF = none); the last error text (a `u16`
//! length and UTF-8 bytes). A finished transaction (delivered or given up)
//! keeps only its failed references, which is all `sluice commitments
//! show` lists: a delivered report of 50,000 instances shrinks from about
//! 2.2 MB to a few dozen bytes for its 7 days of retention.
//!
//! Version 1 (still read): each reference as two strings (class, instance),
//! every reference kept. Every read is bounds-checked: a damaged payload is
//! an error, never a panic.

use sluice_net::dimse::commitment::{CommitmentResult, FailedSopReference, SopReference};
use sluice_net::dimse::Status;

use super::references::References;

const PAYLOAD_VERSION: u8 = 2;
/// The first layout, read for records written before version 2.
const PAYLOAD_VERSION_1: u8 = 1;

/// "No N-EVENT-REPORT-RSP status recorded".
pub const NO_STATUS: u16 = 0xFFFF;

/// The longest error text kept.
const ERROR_TEXT_BYTES_MAX: usize = 512;

/// What the engine keeps of one commitment transaction beside the index's
/// own fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload {
    /// The references of the N-ACTION, in request order; once finished,
    /// only the failed ones ([`Payload::prune`]).
    pub references: References,
    /// How many references the N-ACTION named.
    pub reference_count: u32,
    /// Once decided: the references that failed (index into `references`)
    /// with their Failure Reason. Empty for a success (or while pending).
    pub failed: Vec<(u32, u16)>,
    /// When the report was decided (0: still pending).
    pub decided_at_unix_ns: u64,
    /// When delivery ended, delivered or given up (0: not yet).
    pub finished_at_unix_ns: u64,
    /// The last N-EVENT-REPORT-RSP status received ([`NO_STATUS`]: none).
    pub last_status: u16,
    /// The last delivery error, for the operator view.
    pub last_error: String,
}

/// A payload that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("commitment payload is damaged: {0}")]
pub struct PayloadError(pub &'static str);

impl Payload {
    /// A pending request's payload.
    pub fn pending(references: References) -> Payload {
        Payload {
            reference_count: u32::try_from(references.len()).unwrap_or(u32::MAX),
            references,
            last_status: NO_STATUS,
            ..Payload::default()
        }
    }

    /// Keeps only the failed references (a finished transaction: nothing
    /// will be reported again, and the operator view lists the failures).
    pub fn prune(&mut self) {
        self.failed.sort_unstable();
        let kept = self
            .references
            .subset(self.failed.iter().map(|(index, _)| *index as usize));
        for (new_index, (index, _)) in self.failed.iter_mut().enumerate() {
            *index = new_index as u32;
        }
        self.references = kept;
    }

    /// How many references are committed, once decided.
    pub fn committed_count(&self) -> u32 {
        self.reference_count
            .saturating_sub(u32::try_from(self.failed.len()).unwrap_or(u32::MAX))
    }

    /// The N-EVENT-REPORT event information of a decided report (of a
    /// transaction not yet pruned).
    pub fn result(&self, transaction_uid: &str) -> CommitmentResult {
        let mut failed_flags = vec![false; self.references.len()];
        let mut failed = Vec::with_capacity(self.failed.len());
        for &(index, reason) in &self.failed {
            if let Some(reference) = self.references.get(index as usize) {
                if let Some(flag) = failed_flags.get_mut(index as usize) {
                    *flag = true;
                }
                failed.push(FailedSopReference {
                    reference,
                    failure_reason: Status(reason),
                });
            }
        }
        let committed = self
            .references
            .iter()
            .zip(&failed_flags)
            .filter(|(_, failed)| !**failed)
            .map(|(reference, _)| reference)
            .collect();
        CommitmentResult {
            transaction_uid: transaction_uid.to_owned(),
            retrieve_ae_title: None,
            committed,
            failed,
        }
    }

    /// The bytes stored in the index.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.references.len() * 36 + self.failed.len() * 6);
        out.push(PAYLOAD_VERSION);
        out.extend_from_slice(&self.reference_count.to_le_bytes());
        self.references.encode_into(&mut out);
        put_u32(&mut out, self.failed.len());
        for &(index, reason) in &self.failed {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&reason.to_le_bytes());
        }
        out.extend_from_slice(&self.decided_at_unix_ns.to_le_bytes());
        out.extend_from_slice(&self.finished_at_unix_ns.to_le_bytes());
        out.extend_from_slice(&self.last_status.to_le_bytes());
        let mut error = self.last_error.as_str();
        while error.len() > ERROR_TEXT_BYTES_MAX {
            let mut end = ERROR_TEXT_BYTES_MAX;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error = error.get(..end).unwrap_or("");
        }
        put_str(&mut out, error);
        out
    }

    /// Reads the bytes stored in the index (version 2, or 1).
    pub fn decode(bytes: &[u8]) -> Result<Payload, PayloadError> {
        let mut reader = Reader { bytes };
        let (references, reference_count) = match reader.u8()? {
            PAYLOAD_VERSION => {
                let reference_count = reader.u32()?;
                let (references, rest) = References::decode(reader.bytes)
                    .map_err(|_| PayloadError("references damaged"))?;
                reader.bytes = rest;
                (references, reference_count)
            }
            PAYLOAD_VERSION_1 => {
                let references = reader.references_version_1()?;
                let count = u32::try_from(references.len()).unwrap_or(u32::MAX);
                (references, count)
            }
            _ => return Err(PayloadError("unknown version")),
        };
        let count = reader.u32()? as usize;
        let mut failed = Vec::with_capacity(count.min(reader.bytes.len() / 6));
        for _ in 0..count {
            let index = reader.u32()?;
            let reason = reader.u16()?;
            if index as usize >= references.len() {
                return Err(PayloadError("failed reference out of range"));
            }
            failed.push((index, reason));
        }
        Ok(Payload {
            references,
            reference_count,
            failed,
            decided_at_unix_ns: reader.u64()?,
            finished_at_unix_ns: reader.u64()?,
            last_status: reader.u16()?,
            last_error: reader.string()?,
        })
    }
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(&u32::try_from(value).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    // UIDs are at most 128 bytes (the codec checks) and errors are capped.
    let length = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(text.as_bytes().get(..usize::from(length)).unwrap_or(&[]));
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], PayloadError> {
        if self.bytes.len() < count {
            return Err(PayloadError("truncated"));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, PayloadError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self) -> Result<u16, PayloadError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes(
            bytes.try_into().map_err(|_| PayloadError("truncated"))?,
        ))
    }

    fn u32(&mut self) -> Result<u32, PayloadError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(
            bytes.try_into().map_err(|_| PayloadError("truncated"))?,
        ))
    }

    fn u64(&mut self) -> Result<u64, PayloadError> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| PayloadError("truncated"))?,
        ))
    }

    fn string(&mut self) -> Result<String, PayloadError> {
        let length = usize::from(self.u16()?);
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| PayloadError("text is not UTF-8"))
    }

    /// Version 1's references: a count, then two strings each.
    fn references_version_1(&mut self) -> Result<References, PayloadError> {
        let count = self.u32()? as usize;
        // Each reference takes at least 4 bytes: bound the allocation by
        // what the bytes can hold.
        let mut references = Vec::with_capacity(count.min(self.bytes.len() / 4));
        for _ in 0..count {
            let sop_class_uid = self.string()?;
            let sop_instance_uid = self.string()?;
            references.push(SopReference {
                sop_class_uid,
                sop_instance_uid,
            });
        }
        References::pack(&references).map_err(|_| PayloadError("references cannot be packed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(n: u32) -> SopReference {
        SopReference {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: format!("1.2.3.{n}"),
        }
    }

    fn packed(count: u32) -> References {
        References::pack(&(0..count).map(reference).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn round_trip_and_result() {
        let mut payload = Payload::pending(packed(5));
        payload.failed = vec![(1, 0x0112), (3, 0x0119)];
        payload.decided_at_unix_ns = 7;
        payload.last_error = "refused".into();
        let decoded = Payload::decode(&payload.encode()).unwrap();
        assert_eq!(decoded, payload);
        let result = decoded.result("9.9");
        assert_eq!(result.committed.len(), 3);
        assert_eq!(result.failed.len(), 2);
        assert_eq!(result.failed[1].failure_reason, Status(0x0119));
        assert_eq!(result.event_type_id(), 2);
        assert_eq!(result.failed[0].reference, reference(1));
        assert_eq!(result.committed[2], reference(4));

        // Finished: only the failed references stay, counts intact.
        let mut finished = decoded.clone();
        finished.prune();
        assert_eq!(finished.references.len(), 2);
        assert_eq!(finished.reference_count, 5);
        assert_eq!(finished.committed_count(), 3);
        assert_eq!(finished.failed, vec![(0, 0x0112), (1, 0x0119)]);
        assert_eq!(finished.references.get(1), Some(reference(3)));
        assert_eq!(Payload::decode(&finished.encode()).unwrap(), finished);
    }

    #[test]
    fn version_1_records_are_still_read() {
        // Version 1: u8 1, u32 count, (class, instance) strings, u32 failed
        // count, (u32 index, u16 reason), u64, u64, u16, string.
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(&2u32.to_le_bytes());
        for n in [7, 8] {
            let reference = reference(n);
            for text in [&reference.sop_class_uid, &reference.sop_instance_uid] {
                bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
                bytes.extend_from_slice(text.as_bytes());
            }
        }
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&0x0112u16.to_le_bytes());
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(&6u64.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(&3u16.to_le_bytes());
        bytes.extend_from_slice(b"err");
        let payload = Payload::decode(&bytes).unwrap();
        assert_eq!(payload.reference_count, 2);
        assert_eq!(payload.references.get(1), Some(reference(8)));
        assert_eq!(payload.failed, vec![(1, 0x0112)]);
        assert_eq!(
            (payload.decided_at_unix_ns, payload.finished_at_unix_ns),
            (5, 6)
        );
        assert_eq!(payload.last_error, "err");
    }

    #[test]
    fn damaged_payloads_are_errors() {
        let bytes = Payload::pending(packed(1)).encode();
        for end in 0..bytes.len() {
            assert!(Payload::decode(&bytes[..end]).is_err(), "prefix {end}");
        }
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 9;
        assert!(Payload::decode(&wrong_version).is_err());
    }
}
