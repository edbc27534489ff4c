//! The Part 10 file header Sluice writes in front of a received data set:
//! the 128-byte preamble, "DICM", and the file meta group (PS3.10 7.1), built
//! from the C-STORE command and the presentation context. The data set
//! itself is never touched: it follows the header byte for byte.
//!
//! The group ends with Sluice's *seal*: (0002,0100) Private Information
//! Creator UID and (0002,0102) Private Information, whose 32-byte value holds
//! the data set's length and XXH3-128 checksum. It is written as zeros first
//! and filled in once the last byte has arrived, before the file's
//! `fdatasync`; so a file whose seal matches its data set is complete, with
//! no index entry needed to tell (start-up recovery indexes such files when a
//! crash took their entry: see `docs/on-disk-format.md`).

use sluice_index::Checksum;
use thiserror::Error;

/// Sluice's Implementation Class UID (0002,0012), also sent in every
/// A-ASSOCIATE-RQ/AC: `<root>.1`. It names the implementation, not a
/// version (PS3.7 D.3.3.2); [`IMPLEMENTATION_VERSION_NAME`] tells versions apart.
pub const IMPLEMENTATION_CLASS_UID: &str = concat!(sluice_net::sluice_uid_root!(), ".1");

/// The Private Information Creator UID (0002,0100) of Sluice's seal:
/// `<root>.2`.
pub const SEAL_CREATOR_UID: &str = concat!(sluice_net::sluice_uid_root!(), ".2");

/// The seal's creator UID in files written before Sluice had its own root
/// (the placeholder `1.2.826.0.1.3680043.10.1234.2`): still read, so that
/// start-up recovery recognises those files' seals; never written.
const SEAL_CREATOR_UID_BEFORE: &str = "1.2.826.0.1.3680043.10.1234.2";

/// Length of the seal's value, (0002,0102); it is the header's last bytes.
pub const SEAL_BYTES: usize = 32;

/// The seal's first 8 bytes: what it is, and its layout's version.
const SEAL_MAGIC: &[u8; 8] = b"SLUICE\x01\x00";

/// Sluice's Implementation Version Name (0002,0013), also sent in every
/// A-ASSOCIATE-RQ/AC: `SLUICE_` and the crate's version (at most 16
/// characters, an SH value).
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("SLUICE_", env!("CARGO_PKG_VERSION"));

const _: () = assert!(IMPLEMENTATION_VERSION_NAME.len() <= 16);

/// Preamble (128 bytes) plus the "DICM" prefix.
pub const PREAMBLE_AND_PREFIX_BYTES: usize = 132;

/// Longest UID accepted in the file meta group (DICOM says 64; the index
/// accepts up to 128 for non-conformant senders, and so does this).
const UID_BYTES_MAX: usize = 128;

/// What goes into the file meta group.
#[derive(Debug, Clone, Copy)]
pub struct FileMeta<'a> {
    /// Media Storage SOP Class UID (0002,0002): the command's affected SOP class.
    pub sop_class_uid: &'a str,
    /// Media Storage SOP Instance UID (0002,0003): the command's affected SOP instance.
    pub sop_instance_uid: &'a str,
    /// Transfer Syntax UID (0002,0010): the presentation context's.
    pub transfer_syntax_uid: &'a str,
    /// Source Application Entity Title (0002,0016): the calling AE title.
    pub source_ae_title: &'a str,
}

/// A value that cannot go into the file meta group.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FileMetaError {
    /// A UID or AE title is empty, too long, or holds a byte that its VR forbids.
    #[error("{what} {value:?} cannot be written into the file meta group")]
    InvalidValue {
        /// Which element.
        what: &'static str,
        /// The value.
        value: String,
    },
}

/// The preamble, prefix and file meta group, ready to be written at offset
/// 0; the data set starts at `header.len()`.
pub fn file_header(meta: &FileMeta<'_>) -> Result<Vec<u8>, FileMetaError> {
    let uid = |what: &'static str, value: &str| -> Result<(), FileMetaError> {
        let valid = !value.is_empty()
            && value.len() <= UID_BYTES_MAX
            && value
                .bytes()
                .all(|byte| byte.is_ascii_digit() || byte == b'.');
        if valid {
            Ok(())
        } else {
            Err(FileMetaError::InvalidValue {
                what,
                value: value.to_owned(),
            })
        }
    };
    uid("Media Storage SOP Class UID", meta.sop_class_uid)?;
    uid("Media Storage SOP Instance UID", meta.sop_instance_uid)?;
    uid("Transfer Syntax UID", meta.transfer_syntax_uid)?;
    let ae = meta.source_ae_title.trim();
    if ae.len() > 16
        || ae
            .bytes()
            .any(|byte| !(0x20..0x7f).contains(&byte) || byte == b'\\')
    {
        return Err(FileMetaError::InvalidValue {
            what: "Source Application Entity Title",
            value: meta.source_ae_title.to_owned(),
        });
    }

    let mut group = Vec::with_capacity(256);
    // (0002,0001) File Meta Information Version: OB, 4-byte length, value 00 01.
    group.extend_from_slice(&[0x02, 0x00, 0x01, 0x00, b'O', b'B', 0, 0]);
    group.extend_from_slice(&2u32.to_le_bytes());
    group.extend_from_slice(&[0x00, 0x01]);
    short_element(&mut group, 0x0002, *b"UI", meta.sop_class_uid.as_bytes(), 0);
    short_element(
        &mut group,
        0x0003,
        *b"UI",
        meta.sop_instance_uid.as_bytes(),
        0,
    );
    short_element(
        &mut group,
        0x0010,
        *b"UI",
        meta.transfer_syntax_uid.as_bytes(),
        0,
    );
    short_element(
        &mut group,
        0x0012,
        *b"UI",
        IMPLEMENTATION_CLASS_UID.as_bytes(),
        0,
    );
    short_element(
        &mut group,
        0x0013,
        *b"SH",
        IMPLEMENTATION_VERSION_NAME.as_bytes(),
        b' ',
    );
    if !ae.is_empty() {
        short_element(&mut group, 0x0016, *b"AE", ae.as_bytes(), b' ');
    }
    short_element(&mut group, 0x0100, *b"UI", SEAL_CREATOR_UID.as_bytes(), 0);
    // (0002,0102) Private Information: OB, 4-byte length; zeros until sealed.
    group.extend_from_slice(&[0x02, 0x00, 0x02, 0x01, b'O', b'B', 0, 0]);
    group.extend_from_slice(&(SEAL_BYTES as u32).to_le_bytes());
    group.extend_from_slice(&[0; SEAL_BYTES]);

    let mut header = Vec::with_capacity(PREAMBLE_AND_PREFIX_BYTES + 12 + group.len());
    header.resize(128, 0);
    header.extend_from_slice(b"DICM");
    // (0002,0000) File Meta Information Group Length: UL, the bytes after it.
    header.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L']);
    header.extend_from_slice(&4u16.to_le_bytes());
    // The group is a few hundred bytes at most (values are checked above).
    header.extend_from_slice(&(group.len() as u32).to_le_bytes());
    header.extend_from_slice(&group);
    Ok(header)
}

/// The seal's value for a data set of `dataset_bytes` bytes with checksum
/// `checksum`, to be written over the header's last [`SEAL_BYTES`] bytes:
/// the magic, the length (u64, little-endian), the checksum (as the index
/// stores it).
pub fn seal(dataset_bytes: u64, checksum: Checksum) -> [u8; SEAL_BYTES] {
    let mut value = [0u8; SEAL_BYTES];
    value[..8].copy_from_slice(SEAL_MAGIC);
    value[8..16].copy_from_slice(&dataset_bytes.to_le_bytes());
    value[16..].copy_from_slice(&checksum.0);
    value
}

/// What a sealed file says of its data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    /// The data set's length in bytes.
    pub dataset_bytes: u64,
    /// Its XXH3-128 checksum.
    pub checksum: Checksum,
}

/// The file meta group of a Part 10 file, as read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadHeader {
    /// Where the data set starts.
    pub header_bytes: u64,
    /// (0002,0002), padding removed.
    pub sop_class_uid: String,
    /// (0002,0003), padding removed.
    pub sop_instance_uid: String,
    /// (0002,0010), padding removed.
    pub transfer_syntax_uid: String,
    /// (0002,0016), padding removed; empty when absent.
    pub source_ae_title: String,
    /// Sluice's seal, when the file carries a filled one.
    pub seal: Option<Seal>,
}

/// Reads the preamble, prefix and file meta group at the start of `bytes`
/// (which must hold at least the whole group). Any Part 10 file's group is
/// read; the seal is recognised only when Sluice's creator UID precedes it
/// and it is filled.
pub fn read_header(bytes: &[u8]) -> Result<ReadHeader, String> {
    if bytes.get(128..132) != Some(b"DICM") {
        return Err("no DICM prefix at offset 128".into());
    }
    let mut header = ReadHeader::default();
    let mut creator = String::new();
    let mut position = PREAMBLE_AND_PREFIX_BYTES;
    let mut group_end = None;
    loop {
        if group_end.is_some_and(|end| position >= end) {
            break;
        }
        let Some(head) = bytes.get(position..position + 8) else {
            return Err(format!("file meta group cut at offset {position}"));
        };
        let group = u16::from_le_bytes([head[0], head[1]]);
        let element = u16::from_le_bytes([head[2], head[3]]);
        if group != 0x0002 {
            break;
        }
        let vr = [head[4], head[5]];
        let (length, value_start) = if matches!(&vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
            let Some(length) = bytes.get(position + 8..position + 12) else {
                return Err(format!("file meta group cut at offset {position}"));
            };
            (
                u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize,
                position + 12,
            )
        } else {
            (
                u16::from_le_bytes([head[6], head[7]]) as usize,
                position + 8,
            )
        };
        let Some(value) = bytes.get(value_start..value_start + length) else {
            return Err(format!(
                "element (0002,{element:04X}) of {length} bytes runs past the data read"
            ));
        };
        let text = || {
            String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_owned()
        };
        match element {
            0x0000 if value.len() == 4 => {
                let length = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
                group_end = Some(value_start + 4 + length as usize);
            }
            0x0002 => header.sop_class_uid = text(),
            0x0003 => header.sop_instance_uid = text(),
            0x0010 => header.transfer_syntax_uid = text(),
            0x0016 => header.source_ae_title = text(),
            0x0100 => creator = text(),
            0x0102
                if (creator == SEAL_CREATOR_UID || creator == SEAL_CREATOR_UID_BEFORE)
                    && value.len() == SEAL_BYTES
                    && value[..8] == *SEAL_MAGIC =>
            {
                let mut checksum = [0u8; 16];
                checksum.copy_from_slice(&value[16..]);
                let mut length = [0u8; 8];
                length.copy_from_slice(&value[8..16]);
                header.seal = Some(Seal {
                    dataset_bytes: u64::from_le_bytes(length),
                    checksum: Checksum(checksum),
                });
            }
            _ => {}
        }
        position = value_start + length;
    }
    if group_end.is_none() {
        return Err("no file meta group length (0002,0000)".into());
    }
    header.header_bytes = position as u64;
    Ok(header)
}

/// An explicit VR element of group 0002 with a 2-byte length, padded to even
/// length with `pad`. Callers bound `value` well below 64 KiB.
fn short_element(out: &mut Vec<u8>, element: u16, vr: [u8; 2], value: &[u8], pad: u8) {
    let padded_length = value.len() + value.len() % 2;
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&vr);
    out.extend_from_slice(&(padded_length as u16).to_le_bytes());
    out.extend_from_slice(value);
    if value.len() % 2 == 1 {
        out.push(pad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> FileMeta<'static> {
        FileMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid: "1.2.3.4.5",
            transfer_syntax_uid: "1.2.840.10008.1.2.1",
            source_ae_title: "STORESCU",
        }
    }

    #[test]
    fn header_has_preamble_prefix_and_consistent_group_length() {
        let header = file_header(&meta()).unwrap();
        assert!(header[..128].iter().all(|byte| *byte == 0));
        assert_eq!(&header[128..132], b"DICM");
        let group_length = u32::from_le_bytes(header[140..144].try_into().unwrap()) as usize;
        assert_eq!(header.len(), 144 + group_length);
        assert_eq!(header.len() % 2, 0);
        let text = String::from_utf8_lossy(&header);
        assert!(text.contains("1.2.3.4.5\0"), "odd UID padded with NUL");
        assert!(text.contains("STORESCU"));
        assert!(text.contains(IMPLEMENTATION_CLASS_UID));
        assert!(sluice_net::uid::check_uid(IMPLEMENTATION_CLASS_UID.as_bytes()).is_ok());
        assert!(sluice_net::uid::check_uid(SEAL_CREATOR_UID.as_bytes()).is_ok());
        // The seal is the last element, zeros until filled.
        assert!(header[header.len() - SEAL_BYTES..].iter().all(|b| *b == 0));
        let read = read_header(&header).unwrap();
        assert_eq!(read.header_bytes, header.len() as u64);
        assert_eq!(read.sop_instance_uid, "1.2.3.4.5");
        assert_eq!(read.source_ae_title, "STORESCU");
        assert_eq!(read.seal, None, "an unfilled seal is no seal");
    }

    #[test]
    fn a_filled_seal_reads_back() {
        let mut header = file_header(&meta()).unwrap();
        let at = header.len() - SEAL_BYTES;
        let checksum = Checksum([7; 16]);
        header[at..].copy_from_slice(&seal(1234, checksum));
        header.extend_from_slice(b"data set bytes follow");
        let read = read_header(&header).unwrap();
        assert_eq!(
            read.seal,
            Some(Seal {
                dataset_bytes: 1234,
                checksum
            })
        );
        assert_eq!(read.header_bytes as usize, at + SEAL_BYTES);
        assert_eq!(read.transfer_syntax_uid, "1.2.840.10008.1.2.1");
        assert!(read_header(&header[..at]).is_err(), "cut inside the group");

        // A file written under the placeholder root: its seal still counts.
        let creator = header
            .windows(SEAL_CREATOR_UID.len())
            .position(|window| window == SEAL_CREATOR_UID.as_bytes())
            .unwrap();
        let mut before = SEAL_CREATOR_UID_BEFORE.as_bytes().to_vec();
        before.resize(SEAL_CREATOR_UID.len(), 0);
        header[creator..creator + before.len()].copy_from_slice(&before);
        assert_eq!(read_header(&header).unwrap().seal, read.seal);
        header[creator] = b'9';
        assert_eq!(
            read_header(&header).unwrap().seal,
            None,
            "another creator's"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let mut bad = meta();
        bad.sop_instance_uid = "../../etc/passwd";
        assert!(file_header(&bad).is_err());
        let mut bad = meta();
        bad.source_ae_title = "A\\B";
        assert!(file_header(&bad).is_err());
    }
}
