//! The Query/Retrieve core (net/src/query): the matching rules against
//! PS3.4's own examples, identifier decoding and its refusals, response
//! identifiers and their character sets, round trips, and identifiers
//! written by pydicom.

mod identifiers;
mod matching_rules;
mod pydicom;
mod responses;
mod round_trip;

use sluice_net::dimse::dataset::{Element, SmallDataset, SmallDatasetEncoding, Value, Vr};
use sluice_net::dimse::Tag;
use sluice_net::query::model::{self, tags};
use sluice_net::query::{
    builder, CharacterSet, DatasetCandidate, IdentifierBuilder, IdentifierError, InformationModel,
    Level, Operation, Query, QueryContext,
};

/// PS3.5 H.3.1: Yamada^Tarou in ISO 2022 IR 87.
pub const YAMADA_IR_87: &[u8] =
    b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";

/// A stored entity: attributes with text values (ASCII or UTF-8 with the
/// given character set).
pub struct Stored {
    dataset: SmallDataset,
    charset: CharacterSet,
}

impl Stored {
    pub fn new(values: &[(Tag, &str)]) -> Self {
        let dataset = builder::item(values);
        let charset = CharacterSet::of_dataset(&dataset);
        Self { dataset, charset }
    }

    /// An entity stored in the character set `term`, its values given as
    /// bytes in that set.
    pub fn encoded(term: &str, values: &[(Tag, &[u8])]) -> Self {
        let mut dataset = SmallDataset::new();
        dataset.put_str(tags::SPECIFIC_CHARACTER_SET, None, term);
        for (tag, bytes) in values {
            dataset.put(Element {
                tag: *tag,
                vr: model::vr_of(*tag).unwrap_or(Vr::UN),
                value: Value::Bytes(bytes.to_vec()),
            });
        }
        Self::from_dataset(dataset)
    }

    /// With a sequence of `items` (in the entity's character set).
    pub fn with_sequence(mut self, tag: Tag, items: Vec<SmallDataset>) -> Self {
        self.dataset.put_sequence(tag, items);
        self
    }

    pub fn from_dataset(dataset: SmallDataset) -> Self {
        let charset = CharacterSet::of_dataset(&dataset);
        Self { dataset, charset }
    }

    pub fn candidate(&self) -> DatasetCandidate<'_> {
        DatasetCandidate::new(&self.dataset, &self.charset)
    }
}

/// A Study Root C-FIND context without Extended Negotiation.
pub fn study_root_find() -> QueryContext {
    QueryContext::new(InformationModel::StudyRoot, Operation::Find)
}

/// Encodes an identifier (Explicit VR LE) and decodes it in `context`.
pub fn decode(
    context: &QueryContext,
    level: Level,
    keys: &[(Tag, &str)],
) -> Result<Query, IdentifierError> {
    let mut identifier = IdentifierBuilder::new(level);
    for (tag, value) in keys {
        identifier = identifier.key(*tag, value);
    }
    let bytes = identifier
        .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
        .expect("encode");
    Query::decode(
        &bytes,
        SmallDatasetEncoding::ExplicitVrLittleEndian,
        context,
    )
}

/// Decodes a Study Root C-FIND identifier that must be valid.
pub fn query(level: Level, keys: &[(Tag, &str)]) -> Query {
    decode(&study_root_find(), level, keys).expect("valid identifier")
}

/// A code sequence item: Code Value and Coding Scheme Designator.
pub fn code_item(value: &str, scheme: &str) -> SmallDataset {
    builder::item(&[
        (tags::CODE_VALUE, value),
        (tags::CODING_SCHEME_DESIGNATOR, scheme),
    ])
}
