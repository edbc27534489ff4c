//! Building request identifiers: what a Q/R SCU sends (and what the tests
//! feed the decoder).

use super::model::{self, tags, Level};
use crate::dimse::dataset::{DatasetError, Element, SmallDataset, SmallDatasetEncoding, Value, Vr};
use crate::dimse::Tag;

/// A request identifier under construction: the level, then keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierBuilder {
    dataset: SmallDataset,
}

impl IdentifierBuilder {
    /// An identifier at `level`, no keys yet.
    pub fn new(level: Level) -> Self {
        let mut dataset = SmallDataset::new();
        dataset.put_str(tags::QUERY_RETRIEVE_LEVEL, Some(Vr::CS), level.as_str());
        Self { dataset }
    }

    /// Declares the character set of the values (0008,0005), e.g.
    /// `"ISO_IR 192"` or `"\\ISO 2022 IR 87"`.
    pub fn character_set(mut self, term: &str) -> Self {
        self.dataset
            .put_str(tags::SPECIFIC_CHARACTER_SET, Some(Vr::CS), term);
        self
    }

    /// A key with a text value, written as UTF-8 (ASCII in practice, or
    /// with `ISO_IR 192`); empty asks for the attribute. The VR is the
    /// attribute's (UN when unknown).
    pub fn key(self, tag: Tag, value: &str) -> Self {
        self.key_bytes(tag, value.as_bytes().to_vec())
    }

    /// A key with a value already encoded in the declared character set.
    pub fn key_bytes(mut self, tag: Tag, value: Vec<u8>) -> Self {
        self.dataset.put(Element {
            tag,
            vr: model::vr_of(tag).unwrap_or(Vr::UN),
            value: Value::Bytes(value),
        });
        self
    }

    /// A sequence key: no item (return the whole sequence) or one item of
    /// item keys.
    pub fn sequence(mut self, tag: Tag, item: Option<SmallDataset>) -> Self {
        self.dataset.put_sequence(tag, item.into_iter().collect());
        self
    }

    /// The identifier as a data set.
    pub fn dataset(&self) -> &SmallDataset {
        &self.dataset
    }

    /// The identifier's bytes in `encoding`.
    pub fn encode(&self, encoding: SmallDatasetEncoding) -> Result<Vec<u8>, DatasetError> {
        self.dataset.encode(encoding)
    }
}

/// An item of a sequence key: item keys with text values.
pub fn item(keys: &[(Tag, &str)]) -> SmallDataset {
    let mut item = SmallDataset::new();
    for (tag, value) in keys {
        item.put(Element {
            tag: *tag,
            vr: model::vr_of(*tag).unwrap_or(Vr::UN),
            value: Value::Bytes(value.as_bytes().to_vec()),
        });
    }
    item
}
