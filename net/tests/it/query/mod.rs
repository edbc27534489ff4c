//! The Query/Retrieve core (net/src/query): the matching rules against
//! PS3.4's own examples, identifier decoding and its refusals, response
//! identifiers and their character sets, round trips, and identifiers
//! written by pydicom.

mod identifiers;
mod matching_rules;
mod pydicom;
mod responses;
mod round_trip;

use sluice_net::dimse::dataset::{SmallDataset, SmallDatasetEncoding};
use sluice_net::dimse::Tag;
use sluice_net::query::{
    builder, CharacterSet, DatasetCandidate, IdentifierBuilder, IdentifierError, InformationModel,
    Level, Operation, Query, QueryContext,
};

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
