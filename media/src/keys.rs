//! The record selection keys of one instance, read from the head of its
//! stored data set: every top-level attribute some directory record takes
//! (PATIENT, STUDY, SERIES and the instance-level record of its SOP class),
//! transcoded to Explicit VR Little Endian as records hold them. Nothing
//! after the last such tag is read, so pixel data is never reached.

use std::sync::OnceLock;

use sluice_net::dimse::dataset::{DatasetLimits, SmallDataset, SmallDatasetEncoding};
use sluice_net::dimse::Tag;
use sluice_net::scan::DatasetEncoding;

use crate::record::all_key_tags;
use crate::transcode::{TranscodeError, Transcoder};

/// Most bytes of keys kept for one instance (a Referenced Series Sequence
/// of a presentation state naming thousands of images fits).
pub const INSTANCE_KEY_BYTES_MAX: usize = 1024 * 1024;

/// Why an instance's keys cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The data set's encoding is not a native one the transcoder reads.
    #[error("data set cannot be read: {0}")]
    Transcode(#[from] TranscodeError),
    /// The keys take more than [`INSTANCE_KEY_BYTES_MAX`].
    #[error("the instance's directory keys take more than {INSTANCE_KEY_BYTES_MAX} bytes")]
    TooLarge,
    /// A key could not be decoded from the transcoded bytes.
    #[error("directory keys cannot be decoded: {0}")]
    Decode(String),
    /// SOP Class, SOP Instance, Study or Series Instance UID absent or empty.
    #[error("the instance has no {0}")]
    MissingUid(&'static str),
}

fn key_tags() -> &'static [Tag] {
    static TAGS: OnceLock<Vec<Tag>> = OnceLock::new();
    TAGS.get_or_init(all_key_tags)
}

fn is_key_tag(tag: Tag) -> bool {
    key_tags().binary_search(&tag).is_ok()
}

/// Reads the keys: feed the data set (after the file meta group) until
/// [`is_complete`](Self::is_complete) or its end, then [`finish`](Self::finish).
#[derive(Debug)]
pub struct KeyReader {
    transcoder: Transcoder,
    keys: Vec<u8>,
    last_key_tag: Tag,
}

impl KeyReader {
    /// A reader for a data set in `encoding` (any native or encapsulated
    /// syntax: encapsulated ones are Explicit VR Little Endian up to the
    /// pixel data; a deflated data set must be inflated first).
    pub fn new(encoding: DatasetEncoding) -> Self {
        let transcoder = match Transcoder::new(encoding, DatasetEncoding::ExplicitVrLittleEndian) {
            Ok(transcoder) => transcoder,
            // Explicit VR Little Endian output is always supported.
            Err(_) => unreachable!("Explicit VR Little Endian output is supported"),
        };
        Self {
            transcoder: transcoder.keep_top_level(is_key_tag),
            keys: Vec::with_capacity(512),
            last_key_tag: key_tags().last().copied().unwrap_or(Tag(0xFFFF, 0xFFFF)),
        }
    }

    /// Feeds the next bytes of the data set.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), KeyError> {
        if self.is_complete() {
            return Ok(());
        }
        self.transcoder.feed(chunk, &mut self.keys)?;
        if self.keys.len() > INSTANCE_KEY_BYTES_MAX {
            return Err(KeyError::TooLarge);
        }
        Ok(())
    }

    /// Whether every key has been read (an element after the last key tag
    /// has begun): the caller may stop reading the file.
    pub fn is_complete(&self) -> bool {
        self.transcoder
            .last_top_level_tag()
            .is_some_and(|tag| tag > self.last_key_tag)
    }

    /// The keys read. Before [`is_complete`](Self::is_complete), the whole
    /// data set must have been fed.
    pub fn finish(mut self) -> Result<InstanceKeys, KeyError> {
        if !self.is_complete() {
            self.transcoder.finish(&mut self.keys)?;
        }
        let dataset = SmallDataset::decode(
            &self.keys,
            SmallDatasetEncoding::ExplicitVrLittleEndian,
            DatasetLimits {
                length_max: INSTANCE_KEY_BYTES_MAX,
                depth_max: 16,
            },
        )
        .map_err(|error| KeyError::Decode(error.to_string()))?;
        InstanceKeys::from_dataset(dataset)
    }
}

/// Reads the keys of a data set held whole in memory.
pub fn read_keys(dataset: &[u8], encoding: DatasetEncoding) -> Result<InstanceKeys, KeyError> {
    let mut reader = KeyReader::new(encoding);
    reader.feed(dataset)?;
    reader.finish()
}

/// One instance's directory keys, in Explicit VR Little Endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceKeys {
    dataset: SmallDataset,
}

impl InstanceKeys {
    /// Keys from a data set already holding them (Explicit VR Little Endian
    /// values; other elements are ignored). SOP Class, SOP Instance, Study
    /// and Series Instance UIDs must be present.
    pub fn from_dataset(dataset: SmallDataset) -> Result<Self, KeyError> {
        for (tag, name) in [
            (Tag(0x0008, 0x0016), "SOP Class UID"),
            (Tag(0x0008, 0x0018), "SOP Instance UID"),
            (Tag(0x0020, 0x000D), "Study Instance UID"),
            (Tag(0x0020, 0x000E), "Series Instance UID"),
        ] {
            if dataset.str(tag).is_none_or(str::is_empty) {
                return Err(KeyError::MissingUid(name));
            }
        }
        Ok(Self { dataset })
    }

    /// The elements.
    pub fn dataset(&self) -> &SmallDataset {
        &self.dataset
    }

    fn uid(&self, tag: Tag) -> &str {
        // Present and non-empty: checked in `from_dataset`.
        self.dataset.str(tag).unwrap_or_default()
    }

    /// SOP Class UID.
    pub fn sop_class_uid(&self) -> &str {
        self.uid(Tag(0x0008, 0x0016))
    }

    /// SOP Instance UID.
    pub fn sop_instance_uid(&self) -> &str {
        self.uid(Tag(0x0008, 0x0018))
    }

    /// Study Instance UID.
    pub fn study_instance_uid(&self) -> &str {
        self.uid(Tag(0x0020, 0x000D))
    }

    /// Series Instance UID.
    pub fn series_instance_uid(&self) -> &str {
        self.uid(Tag(0x0020, 0x000E))
    }
}
