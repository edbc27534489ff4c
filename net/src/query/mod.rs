//! The Query/Retrieve core, sans-I/O (PS3.4 Annex C): what the Q/R SCP and
//! the Q/R SCU share.
//!
//! - [`model`]: Patient Root and Study Root, their levels, unique keys and
//!   the table of keys (unique, required, optional, computed) by level;
//! - [`Query`] ([`identifier`]): a C-FIND, C-MOVE or C-GET request
//!   identifier decoded and checked (level, character set, VRs, values,
//!   hierarchical or relational unique keys), with an [`IdentifierError`]
//!   that names the A900 or C000 answer and the reason;
//! - [`matching`]: the matching rules of C.2.2.2 for one key value, and the
//!   [`Constraint`]s an index can narrow a scan with;
//! - [`Candidate`] ([`candidate`]): an entity's values as a source holds
//!   them (the index's records, a stored file's head), the one interface
//!   matching and responses read;
//! - [`build_response`] ([`response`]): the response identifier of a
//!   matching entity, in the character set of the stored data;
//! - [`negotiation`]: the Extended Negotiation fields of Q/R SOP classes;
//! - [`IdentifierBuilder`] ([`builder`]): identifiers an SCU sends.
//!
//! No networking and no storage here: the engine drives the association
//! and the index finds the candidates. See `docs/design/query.md`.

pub mod builder;
pub mod candidate;
pub mod datetime;
pub mod identifier;
pub mod matching;
pub mod model;
pub mod negotiation;
pub mod response;

pub use builder::IdentifierBuilder;
pub use candidate::{
    Attribute, Candidate, CharacterSet, ComputedAttributes, DatasetCandidate, WithComputed,
};
pub use identifier::{
    IdentifierError, Ignored, Query, QueryContext, QueryKey, UniqueKeys, SEQUENCE_DEPTH_MAX,
};
pub use matching::{
    fold_person_name, person_name_groups, Constraint, MatchOptions, PersonNamePattern, ValueError,
    ValueMatcher,
};
pub use model::{InformationModel, KeyDefinition, KeyType, Level, Operation};
pub use negotiation::{FindNegotiation, RetrieveNegotiation};
pub use response::{build_response, Response, ResponseContext};
