//! The Part 10 header of media files (PS3.10 §7.1): the 128-byte preamble,
//! "DICM" and the file meta group, written for the DICOMDIR and for
//! instances whose data set is transcoded on export; and read back from a
//! DICOMDIR.

use sluice_net::dimse::dataset::{DatasetLimits, SmallDataset, SmallDatasetEncoding, Vr};
use sluice_net::dimse::Tag;

/// Preamble plus the "DICM" prefix.
pub const PREAMBLE_AND_PREFIX_BYTES: usize = 132;

/// What goes into a file meta group.
#[derive(Debug, Clone, Copy)]
pub struct FileMeta<'a> {
    /// Media Storage SOP Class UID (0002,0002).
    pub sop_class_uid: &'a str,
    /// Media Storage SOP Instance UID (0002,0003).
    pub sop_instance_uid: &'a str,
    /// Transfer Syntax UID (0002,0010).
    pub transfer_syntax_uid: &'a str,
    /// Implementation Class UID (0002,0012).
    pub implementation_class_uid: &'a str,
    /// Implementation Version Name (0002,0013), at most 16 characters.
    pub implementation_version_name: &'a str,
}

/// Why a file meta group cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileMetaError {
    /// A value that its VR does not allow.
    #[error("{what} {value:?} cannot be written into the file meta group")]
    InvalidValue {
        /// Which element.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// No "DICM" at offset 128.
    #[error("not a DICOM file: no DICM prefix at offset 128")]
    NoPrefix,
    /// The file meta group cannot be parsed.
    #[error("file meta group cannot be parsed: {0}")]
    Malformed(String),
}

/// The preamble, prefix and file meta group; the data set follows.
pub fn file_header(meta: &FileMeta<'_>) -> Result<Vec<u8>, FileMetaError> {
    let uid = |what: &'static str, value: &str| -> Result<(), FileMetaError> {
        sluice_net::uid::check_uid(value.as_bytes())
            .map(|_| ())
            .map_err(|_| FileMetaError::InvalidValue {
                what,
                value: value.to_owned(),
            })
    };
    uid("Media Storage SOP Class UID", meta.sop_class_uid)?;
    uid("Media Storage SOP Instance UID", meta.sop_instance_uid)?;
    uid("Transfer Syntax UID", meta.transfer_syntax_uid)?;
    uid("Implementation Class UID", meta.implementation_class_uid)?;
    let name = meta.implementation_version_name;
    if name.len() > 16
        || !name
            .bytes()
            .all(|byte| (0x20..0x7F).contains(&byte) && byte != b'\\')
    {
        return Err(FileMetaError::InvalidValue {
            what: "Implementation Version Name",
            value: name.to_owned(),
        });
    }
    let mut group = SmallDataset::new();
    group.put(sluice_net::dimse::dataset::Element {
        tag: Tag(0x0002, 0x0001),
        vr: Vr::OB,
        value: sluice_net::dimse::dataset::Value::Bytes(vec![0, 1]),
    });
    group.put_str(Tag(0x0002, 0x0002), Some(Vr::UI), meta.sop_class_uid);
    group.put_str(Tag(0x0002, 0x0003), Some(Vr::UI), meta.sop_instance_uid);
    group.put_str(Tag(0x0002, 0x0010), Some(Vr::UI), meta.transfer_syntax_uid);
    group.put_str(
        Tag(0x0002, 0x0012),
        Some(Vr::UI),
        meta.implementation_class_uid,
    );
    if !name.is_empty() {
        group.put_str(Tag(0x0002, 0x0013), Some(Vr::SH), name);
    }
    let body = group
        .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
        .map_err(|error| FileMetaError::Malformed(error.to_string()))?;
    let mut header = vec![0u8; 128];
    header.extend_from_slice(b"DICM");
    header.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    let length = u32::try_from(body.len()).map_err(|_| FileMetaError::InvalidValue {
        what: "File Meta Information",
        value: format!("{} bytes", body.len()),
    })?;
    header.extend_from_slice(&length.to_le_bytes());
    header.extend_from_slice(&body);
    Ok(header)
}

/// A file meta group read back, and where the data set starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMeta {
    /// The group's elements.
    pub group: SmallDataset,
    /// Offset of the data set's first byte in the file.
    pub dataset_offset: usize,
}

impl ReadMeta {
    /// Transfer Syntax UID (0002,0010).
    pub fn transfer_syntax_uid(&self) -> Option<&str> {
        self.group.str(Tag(0x0002, 0x0010))
    }

    /// Media Storage SOP Class UID (0002,0002).
    pub fn sop_class_uid(&self) -> Option<&str> {
        self.group.str(Tag(0x0002, 0x0002))
    }
}

/// Reads the file meta group of a Part 10 file's first bytes (Explicit VR
/// Little Endian, as PS3.10 requires; the group's length element may be
/// wrong or absent, so the group ends at the first non-0002 tag).
pub fn read_file_meta(file: &[u8]) -> Result<ReadMeta, FileMetaError> {
    if file.get(128..132) != Some(b"DICM".as_slice()) {
        return Err(FileMetaError::NoPrefix);
    }
    let mut end = PREAMBLE_AND_PREFIX_BYTES;
    while let Some(header) = file.get(end..end.saturating_add(8)) {
        if header.get(..2) != Some([0x02, 0x00].as_slice()) {
            break;
        }
        let vr = Vr([
            header.get(4).copied().unwrap_or(0),
            header.get(5).copied().unwrap_or(0),
        ]);
        let (header_length, length) = if vr.has_long_length() {
            let bytes = file
                .get(end.saturating_add(8)..end.saturating_add(12))
                .ok_or_else(|| FileMetaError::Malformed("truncated".into()))?;
            let mut length = [0u8; 4];
            length.copy_from_slice(bytes);
            (12usize, u32::from_le_bytes(length))
        } else {
            let bytes = header.get(6..8).unwrap_or_default();
            let mut length = [0u8; 2];
            length.copy_from_slice(bytes);
            (8usize, u32::from(u16::from_le_bytes(length)))
        };
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        end = end
            .checked_add(header_length)
            .and_then(|end| end.checked_add(length))
            .filter(|end| *end <= file.len())
            .ok_or_else(|| FileMetaError::Malformed("element runs past the end".into()))?;
    }
    let bytes = file.get(PREAMBLE_AND_PREFIX_BYTES..end).unwrap_or_default();
    let group = SmallDataset::decode(
        bytes,
        SmallDatasetEncoding::ExplicitVrLittleEndian,
        DatasetLimits::default(),
    )
    .map_err(|error| FileMetaError::Malformed(error.to_string()))?;
    Ok(ReadMeta {
        group,
        dataset_offset: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let meta = FileMeta {
            sop_class_uid: "1.2.840.10008.1.3.10",
            sop_instance_uid: "1.2.3.4",
            transfer_syntax_uid: "1.2.840.10008.1.2.1",
            implementation_class_uid: "1.2.826.0.1.3680043.10.1234.1",
            implementation_version_name: "SLUICE_0_1",
        };
        let header = file_header(&meta).unwrap();
        let read = read_file_meta(&header).unwrap();
        assert_eq!(read.dataset_offset, header.len());
        assert_eq!(read.transfer_syntax_uid(), Some("1.2.840.10008.1.2.1"));
        assert_eq!(read.sop_class_uid(), Some("1.2.840.10008.1.3.10"));
        assert!(file_header(&FileMeta {
            sop_instance_uid: "1.2.x",
            ..meta
        })
        .is_err());
        assert_eq!(read_file_meta(&header[..100]), Err(FileMetaError::NoPrefix));
        assert!(read_file_meta(&header[..header.len() - 3]).is_err());
    }
}
