//! The Part 10 file header Sluice writes in front of a received data set:
//! the 128-byte preamble, "DICM", and the file meta group (PS3.10 7.1), built
//! from the C-STORE command and the presentation context. The data set
//! itself is never touched: it follows the header byte for byte.

use thiserror::Error;

/// Sluice's Implementation Class UID (0002,0012).
///
/// Under the 1.2.826.0.1.3680043.10 root that the team's test acceptor
/// also uses; to be replaced by a registered root before release.
pub const IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.1234.1";

/// Sluice's Implementation Version Name (0002,0013), at most 16 characters.
pub const IMPLEMENTATION_VERSION_NAME: &str = "SLUICE_0_1";

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
