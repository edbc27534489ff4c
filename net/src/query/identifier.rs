//! Request identifiers (PS3.4 C.4.1.1.3.1, C.4.2.1.4, C.4.3.1.3): the data
//! set of a C-FIND, C-MOVE or C-GET request, decoded into a typed [`Query`].
//!
//! Decoding checks what the standard asks of an identifier and says why it
//! refuses one ([`IdentifierError`], answered A900 or C000 by the service):
//! the level is present and exists in the model, the Specific Character Set
//! is one Sluice reads, each key has the VR of its attribute and a value its
//! VR allows, a sequence key has at most one item, and a hierarchical query
//! (relational queries not negotiated) names the entity above with the
//! unique key of each level above the query level, as a single value. A
//! C-MOVE or C-GET identifier must carry the unique key of its level.
//!
//! What the SCP cannot use is kept and marked, not refused ([`Ignored`]):
//! a key of a level below the query level, a value of a binary VR, a
//! private attribute, a non-unique key in a retrieve. They are returned
//! empty, and the service answers FF01 for them.

use std::borrow::Cow;

use super::candidate::{Attribute, Candidate, CharacterSet, DatasetCandidate};
use super::matching::{self, Constraint, MatchOptions, ValueMatcher};
use super::model::{self, tags, InformationModel, KeyType, Level, Operation, DATE_TIME_PAIRS};
use super::negotiation::{FindNegotiation, RetrieveNegotiation};
use crate::charset::CharsetError;
use crate::dimse::dataset::{
    DatasetError, DatasetLimits, Element, SmallDataset, SmallDatasetEncoding, Value, Vr,
};
use crate::dimse::{Status, Tag};

/// Sequence keys nest at most this deep (an item key that is a sequence is
/// depth 2).
pub const SEQUENCE_DEPTH_MAX: usize = 4;

/// How a request identifier is read: the SOP class's model and operation,
/// what Extended Negotiation granted, and the SCP's matching choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryContext {
    /// The information model of the presentation context's SOP class.
    pub model: InformationModel,
    /// FIND, MOVE or GET.
    pub operation: Operation,
    /// Relational queries (FIND) or relational retrieval (MOVE, GET) were
    /// granted: unique keys above the level are not required.
    pub relational: bool,
    /// Combined date-time matching was granted (FIND).
    pub combined_datetime_matching: bool,
    /// Matching choices.
    pub options: MatchOptions,
    /// Bounds on the identifier data set.
    pub limits: DatasetLimits,
}

impl QueryContext {
    /// A baseline context (no Extended Negotiation), identifiers up to
    /// 4 MiB (a retrieve may list many thousand UIDs).
    pub fn new(model: InformationModel, operation: Operation) -> Self {
        Self {
            model,
            operation,
            relational: false,
            combined_datetime_matching: false,
            options: MatchOptions::default(),
            limits: DatasetLimits {
                length_max: 4 * 1024 * 1024,
                depth_max: SEQUENCE_DEPTH_MAX,
            },
        }
    }

    /// The baseline context of a Q/R SOP class UID.
    pub fn for_sop_class(sop_class_uid: &str) -> Option<Self> {
        let (model, operation) = InformationModel::from_sop_class(sop_class_uid)?;
        Some(Self::new(model, operation))
    }

    /// With what a C-FIND association granted.
    pub fn with_find_negotiation(mut self, granted: &FindNegotiation) -> Self {
        self.relational = granted.relational_queries;
        self.combined_datetime_matching = granted.combined_datetime_matching;
        self.options.empty_value_matching = granted.empty_value_matching;
        self.options.multiple_value_matching = granted.multiple_value_matching;
        self
    }

    /// With what a C-MOVE or C-GET association granted.
    pub fn with_retrieve_negotiation(mut self, granted: &RetrieveNegotiation) -> Self {
        self.relational = granted.relational_retrieval;
        self
    }
}

/// Why a key of the identifier is not used for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// A key of a level below the query level: there is no one value to
    /// match or return.
    BelowQueryLevel,
    /// A value of a binary VR (US, FD, OB...): not matched.
    NotMatchable,
    /// A private attribute: Sluice keeps no private keys.
    Private,
    /// A C-MOVE or C-GET identifier key other than a unique key.
    NotARetrieveKey,
    /// An attribute the SCP itself fills (Retrieve AE Title, Instance
    /// Availability, Storage Media File-Set ID/UID, Query/Retrieve View).
    ReturnedByScp,
}

/// How one key matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMatcher {
    Value(ValueMatcher),
    /// Sequence Matching (C.2.2.2.6): the item keys of the one item; none
    /// is universal.
    Sequence(Vec<QueryKey>),
    /// Combined date-time matching (C.2.2.2.5): this date key and the time
    /// key `time` match as one date-time within `low..=high`.
    DateTime {
        date: ValueMatcher,
        time: Tag,
        time_matcher: ValueMatcher,
        low: Option<i64>,
        high: Option<i64>,
    },
}

/// One key of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryKey {
    /// The attribute.
    pub tag: Tag,
    /// Its VR.
    pub vr: Vr,
    /// Its keyword, for messages.
    pub keyword: &'static str,
    /// Its level in the model; `None` for attributes outside the key table
    /// (and for item keys of sequences).
    pub level: Option<Level>,
    /// Its key type; `None` outside the key table.
    pub key_type: Option<KeyType>,
    /// Computed by the SCP (PS3.4 Table C.3-1).
    pub computed: bool,
    /// The value as received, decoded from the request's character set,
    /// padding removed (empty for sequences).
    pub value: String,
    /// Why it is not matched, if it is not.
    pub ignored: Option<Ignored>,
    matcher: KeyMatcher,
}

impl QueryKey {
    /// Whether this key constrains nothing (Universal Matching, or
    /// ignored): it only asks for a value.
    pub fn is_universal(&self) -> bool {
        if self.ignored.is_some() {
            return true;
        }
        match &self.matcher {
            KeyMatcher::Value(matcher) => matcher.is_universal(),
            KeyMatcher::Sequence(items) => items.iter().all(QueryKey::is_universal),
            KeyMatcher::DateTime { .. } => false,
        }
    }

    /// The value matcher (`None` for sequence keys).
    pub fn matcher(&self) -> Option<&ValueMatcher> {
        match &self.matcher {
            KeyMatcher::Value(matcher) | KeyMatcher::DateTime { date: matcher, .. } => {
                Some(matcher)
            }
            KeyMatcher::Sequence(_) => None,
        }
    }

    /// The item keys of a sequence key.
    pub fn item_keys(&self) -> Option<&[QueryKey]> {
        match &self.matcher {
            KeyMatcher::Sequence(items) => Some(items),
            _ => None,
        }
    }

    /// Whether `candidate` matches this key (an ignored key matches all).
    pub fn matches(&self, candidate: &dyn Candidate) -> bool {
        if self.ignored.is_some() {
            return true;
        }
        match &self.matcher {
            KeyMatcher::Value(matcher) => matcher.matches(&candidate.attribute(self.tag)),
            KeyMatcher::Sequence(items) => {
                if items.iter().all(QueryKey::is_universal) {
                    return true;
                }
                match candidate.attribute(self.tag) {
                    Attribute::Unavailable => true,
                    Attribute::Sequence {
                        items: stored,
                        charset,
                    } => stored.iter().any(|item| {
                        let item = DatasetCandidate::new(item, charset);
                        items.iter().all(|key| key.matches(&item))
                    }),
                    _ => false,
                }
            }
            KeyMatcher::DateTime {
                date,
                time,
                time_matcher,
                low,
                high,
            } => {
                let date_attribute = candidate.attribute(self.tag);
                if matches!(date_attribute, Attribute::Unavailable) {
                    return true;
                }
                let Some(day) = date_attribute
                    .text(self.vr)
                    .and_then(|text| date.point(&text))
                else {
                    return false;
                };
                // A date without a time is taken at its midnight.
                let time_attribute = candidate.attribute(*time);
                let time_of_day = time_attribute
                    .text(Vr::TM)
                    .and_then(|text| time_matcher.point(&text))
                    .unwrap_or(0);
                let point = day + time_of_day;
                low.is_none_or(|low| point >= low) && high.is_none_or(|high| point <= high)
            }
        }
    }

    /// What every matching value satisfies, for an index (`None` for
    /// ignored keys, sequences and combined date-times).
    pub fn constraint(&self) -> Option<Constraint<'_>> {
        match (&self.ignored, &self.matcher) {
            (None, KeyMatcher::Value(matcher)) => matcher.constraint(),
            _ => None,
        }
    }
}

/// A decoded request identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    context: QueryContext,
    level: Level,
    charset: CharacterSet,
    timezone_offset: Option<String>,
    keys: Vec<QueryKey>,
}

/// The unique keys of a retrieve (or of a query): what identifies the
/// entities to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UniqueKeys<'a> {
    /// The query/retrieve level.
    pub level: Level,
    /// Patient ID, when given as one value.
    pub patient_id: Option<&'a str>,
    /// Study Instance UIDs (empty when not given).
    pub study_instance_uids: &'a [String],
    /// Series Instance UIDs (empty when not given).
    pub series_instance_uids: &'a [String],
    /// SOP Instance UIDs (empty when not given).
    pub sop_instance_uids: &'a [String],
}

/// Why an identifier is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifierError {
    /// The data set cannot be parsed.
    #[error("identifier cannot be parsed: {0}")]
    Malformed(DatasetError),
    /// A value of odd length (PS3.5 §7.1.1 wants even lengths).
    #[error("{keyword} {tag} has an odd length ({length} bytes)")]
    OddLength {
        /// The attribute.
        tag: Tag,
        /// Its keyword.
        keyword: &'static str,
        /// Its length.
        length: usize,
    },
    /// A Specific Character Set Sluice cannot read.
    #[error("Specific Character Set not supported: {0}")]
    CharacterSet(CharsetError),
    /// No Query/Retrieve Level (0008,0052).
    #[error("Query/Retrieve Level (0008,0052) is missing")]
    MissingLevel,
    /// A level that is not one of the four.
    #[error("Query/Retrieve Level {value:?} is not PATIENT, STUDY, SERIES or IMAGE")]
    UnknownLevel {
        /// The value received.
        value: String,
    },
    /// A level the model does not have (PATIENT in Study Root).
    #[error("level {level} is not in the {model} model")]
    LevelNotInModel {
        /// The level.
        level: Level,
        /// The model's name.
        model: &'static str,
    },
    /// A key with a VR other than its attribute's.
    #[error("{keyword} {tag} has VR {found}, expected {expected}", found = vr_name(*.found), expected = vr_name(*.expected))]
    WrongVr {
        /// The attribute.
        tag: Tag,
        /// Its keyword.
        keyword: &'static str,
        /// The VR received.
        found: Vr,
        /// The attribute's VR.
        expected: Vr,
    },
    /// A value its VR cannot match (a bad date, a wild card in a UID...).
    #[error("{keyword} {tag} {value:?}: {reason}")]
    InvalidValue {
        /// The attribute.
        tag: Tag,
        /// Its keyword.
        keyword: &'static str,
        /// The value (cut to 64 characters).
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A sequence key with more than one item (C.2.2.2.6 allows one).
    #[error("sequence key {keyword} {tag} has {items} items, at most one is allowed")]
    SequenceItems {
        /// The attribute.
        tag: Tag,
        /// Its keyword.
        keyword: &'static str,
        /// Items received.
        items: usize,
    },
    /// A hierarchical query or retrieve without the unique key of a level
    /// above its level, or with a unique key that is not a single value.
    #[error("a hierarchical {level} request needs {keyword} {tag} with a single value")]
    MissingUniqueKey {
        /// The unique key.
        tag: Tag,
        /// Its keyword.
        keyword: &'static str,
        /// The request's level.
        level: Level,
    },
    /// A C-MOVE or C-GET without the unique key of its level.
    #[error("a {level} retrieve needs {keyword} {tag}")]
    MissingRetrieveKey {
        /// The unique key.
        tag: Tag,
        /// Its keyword.
        keyword: &'static str,
        /// The retrieve's level.
        level: Level,
    },
}

fn vr_name(vr: Vr) -> String {
    String::from_utf8_lossy(&vr.0).into_owned()
}

impl IdentifierError {
    /// The failure status (PS3.4 C.4.1.1.4, C.4.2.1.5): C000 "unable to
    /// process" when the identifier cannot be read, A900 "identifier does
    /// not match SOP class" when it breaks the model's rules.
    pub fn status(&self) -> Status {
        match self {
            Self::Malformed(_) | Self::OddLength { .. } | Self::CharacterSet(_) => {
                Status::CANNOT_UNDERSTAND
            }
            _ => Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
        }
    }

    /// The element to name in Offending Element (0000,0901).
    pub fn offending_element(&self) -> Option<Tag> {
        match self {
            Self::OddLength { tag, .. }
            | Self::WrongVr { tag, .. }
            | Self::InvalidValue { tag, .. }
            | Self::SequenceItems { tag, .. }
            | Self::MissingUniqueKey { tag, .. }
            | Self::MissingRetrieveKey { tag, .. } => Some(*tag),
            Self::CharacterSet(_) => Some(tags::SPECIFIC_CHARACTER_SET),
            Self::MissingLevel | Self::UnknownLevel { .. } | Self::LevelNotInModel { .. } => {
                Some(tags::QUERY_RETRIEVE_LEVEL)
            }
            Self::Malformed(_) => None,
        }
    }
}

/// Whether two VRs name the same attribute encoding (multi-VR attributes,
/// and UN, which any VR may travel as).
fn vr_compatible(found: Vr, expected: Vr) -> bool {
    found == expected
        || found == Vr::UN
        || matches!(
            (&found.0, &expected.0),
            (b"SS", b"US") | (b"OB", b"OW") | (b"OW", b"US")
        )
}

/// The elements an identifier decoder reads, whatever their encoding.
struct Reader<'a> {
    context: &'a QueryContext,
    charset: &'a CharacterSet,
    /// Whether element VRs came from the stream (Explicit VR).
    explicit: bool,
}

impl Reader<'_> {
    /// One key (top-level when `level` is the query level, an item key
    /// when `None`).
    fn key(
        &self,
        element: &Element,
        query_level: Option<Level>,
        depth: usize,
    ) -> Result<QueryKey, IdentifierError> {
        let tag = element.tag;
        let keyword = model::keyword_of(tag);
        let definition = model::key_definition(tag);
        let expected = model::vr_of(tag);
        let vr = match expected {
            Some(expected) => {
                if self.explicit && !vr_compatible(element.vr, expected) {
                    return Err(IdentifierError::WrongVr {
                        tag,
                        keyword,
                        found: element.vr,
                        expected,
                    });
                }
                expected
            }
            None => element.vr,
        };
        let level = query_level.and(definition.map(|key| key.level(self.context.model)));
        let mut key = QueryKey {
            tag,
            vr,
            keyword,
            level,
            key_type: definition.map(|key| key.key_type(self.context.model)),
            computed: definition.is_some_and(|key| key.computed),
            value: String::new(),
            ignored: None,
            matcher: KeyMatcher::Value(ValueMatcher::universal(vr)),
        };
        if tag.0 % 2 == 1 {
            key.ignored = Some(Ignored::Private);
        } else if model::is_control_attribute(tag) {
            key.ignored = Some(Ignored::ReturnedByScp);
        } else if let (Some(query_level), Some(level)) = (query_level, level) {
            if level > query_level {
                key.ignored = Some(Ignored::BelowQueryLevel);
            } else if self.context.operation != Operation::Find && tag != level.unique_key() {
                key.ignored = Some(Ignored::NotARetrieveKey);
            }
        } else if query_level.is_some() && self.context.operation != Operation::Find {
            key.ignored = Some(Ignored::NotARetrieveKey);
        }
        let items = match (&element.value, vr) {
            (Value::Sequence(items), _) => Some(Cow::Borrowed(items.as_slice())),
            (Value::Bytes(bytes), Vr::SQ) if !bytes.is_empty() => {
                Some(Cow::Owned(self.reparse_sequence(tag, bytes)?))
            }
            (Value::Bytes(_), Vr::SQ) => Some(Cow::Owned(Vec::new())),
            (Value::Bytes(bytes), _) => {
                if bytes.len() % 2 == 1 {
                    return Err(IdentifierError::OddLength {
                        tag,
                        keyword,
                        length: bytes.len(),
                    });
                }
                key.value = self
                    .charset
                    .decode(vr, bytes)
                    .trim_end_matches([' ', '\0'])
                    .to_owned();
                None
            }
        };
        if let Some(items) = items {
            key.vr = Vr::SQ;
            let item_keys = match items.as_ref() {
                [] => Vec::new(),
                [item] => {
                    if depth >= SEQUENCE_DEPTH_MAX {
                        return Err(IdentifierError::Malformed(DatasetError::TooDeep {
                            offset: 0,
                            limit: SEQUENCE_DEPTH_MAX,
                        }));
                    }
                    item.elements()
                        .iter()
                        .filter(|element| element.tag.1 != 0x0000)
                        .map(|element| self.key(element, None, depth.saturating_add(1)))
                        .collect::<Result<Vec<_>, _>>()?
                }
                _ => {
                    return Err(IdentifierError::SequenceItems {
                        tag,
                        keyword,
                        items: items.len(),
                    })
                }
            };
            key.matcher = KeyMatcher::Sequence(item_keys);
            return Ok(key);
        }
        if key.ignored.is_some() || key.value.is_empty() {
            return Ok(key);
        }
        if !matching::is_matchable(vr) {
            key.ignored = Some(Ignored::NotMatchable);
            return Ok(key);
        }
        let matcher =
            ValueMatcher::parse(vr, &key.value, &self.context.options).map_err(|error| {
                IdentifierError::InvalidValue {
                    tag,
                    keyword,
                    value: key.value.chars().take(64).collect(),
                    reason: error.reason,
                }
            })?;
        key.matcher = KeyMatcher::Value(matcher);
        Ok(key)
    }

    /// A sequence that arrived as bytes (Implicit VR with a defined length,
    /// or UN): its items, read as Implicit VR Little Endian as PS3.5 §6.2.2
    /// says of UN sequences and as an Implicit VR stream is.
    fn reparse_sequence(
        &self,
        tag: Tag,
        bytes: &[u8],
    ) -> Result<Vec<SmallDataset>, IdentifierError> {
        // Frame the value as an undefined-length sequence element and
        // decode that: the small data set codec then walks the items.
        let mut framed = Vec::with_capacity(bytes.len().saturating_add(16));
        framed.extend_from_slice(&tag.0.to_le_bytes());
        framed.extend_from_slice(&tag.1.to_le_bytes());
        framed.extend_from_slice(&[0xFF; 4]);
        framed.extend_from_slice(bytes);
        framed.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let limits = DatasetLimits {
            length_max: framed.len(),
            depth_max: self.context.limits.depth_max,
        };
        let dataset = SmallDataset::decode(
            &framed,
            SmallDatasetEncoding::ImplicitVrLittleEndian,
            limits,
        )
        .map_err(IdentifierError::Malformed)?;
        Ok(dataset
            .sequence(tag)
            .map(<[SmallDataset]>::to_vec)
            .unwrap_or_default())
    }
}

impl Query {
    /// Decodes the identifier `bytes` of a request in `encoding` (the
    /// presentation context's transfer syntax).
    pub fn decode(
        bytes: &[u8],
        encoding: SmallDatasetEncoding,
        context: &QueryContext,
    ) -> Result<Self, IdentifierError> {
        let dataset = SmallDataset::decode(bytes, encoding, context.limits)
            .map_err(IdentifierError::Malformed)?;
        Self::read(
            &dataset,
            encoding == SmallDatasetEncoding::ExplicitVrLittleEndian,
            context,
        )
    }

    /// Reads an identifier already decoded; element VRs are checked when
    /// `explicit_vr` (they came from the stream).
    pub fn read(
        dataset: &SmallDataset,
        explicit_vr: bool,
        context: &QueryContext,
    ) -> Result<Self, IdentifierError> {
        let charset = match dataset.get(tags::SPECIFIC_CHARACTER_SET) {
            None => CharacterSet::default(),
            Some(element) => match &element.value {
                Value::Bytes(term) => {
                    CharacterSet::strict(term).map_err(IdentifierError::CharacterSet)?
                }
                Value::Sequence(_) => {
                    return Err(IdentifierError::WrongVr {
                        tag: tags::SPECIFIC_CHARACTER_SET,
                        keyword: "SpecificCharacterSet",
                        found: Vr::SQ,
                        expected: Vr::CS,
                    })
                }
            },
        };
        let level_text = match dataset
            .get(tags::QUERY_RETRIEVE_LEVEL)
            .map(|element| &element.value)
        {
            Some(Value::Bytes(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(Value::Sequence(_)) | None => return Err(IdentifierError::MissingLevel),
        };
        let level = Level::parse(&level_text).ok_or_else(|| IdentifierError::UnknownLevel {
            value: level_text
                .trim_matches([' ', '\0'])
                .chars()
                .take(64)
                .collect(),
        })?;
        if !context.model.has_level(level) {
            return Err(IdentifierError::LevelNotInModel {
                level,
                model: context.model.name(),
            });
        }
        let reader = Reader {
            context,
            charset: &charset,
            explicit: explicit_vr,
        };
        let mut timezone_offset = None;
        let mut keys = Vec::with_capacity(dataset.elements().len());
        for element in dataset.elements() {
            match element.tag {
                // Group lengths are structure, not keys.
                Tag(_, 0x0000) | tags::SPECIFIC_CHARACTER_SET | tags::QUERY_RETRIEVE_LEVEL => {}
                tags::TIMEZONE_OFFSET_FROM_UTC => {
                    if let Value::Bytes(bytes) = &element.value {
                        let text = String::from_utf8_lossy(bytes);
                        let text = text.trim_matches([' ', '\0']);
                        timezone_offset = (!text.is_empty()).then(|| text.to_owned());
                    }
                }
                _ => keys.push(reader.key(element, Some(level), 0)?),
            }
        }
        let mut query = Self {
            context: *context,
            level,
            charset,
            timezone_offset,
            keys,
        };
        query.check_unique_keys()?;
        if context.combined_datetime_matching && context.operation == Operation::Find {
            query.combine_dates_and_times();
        }
        Ok(query)
    }

    /// Hierarchical rules: unique keys above the level, as single values,
    /// unless relational; a retrieve's own unique key.
    fn check_unique_keys(&self) -> Result<(), IdentifierError> {
        let unique_present = |tag: Tag, single: bool| {
            self.key(tag).is_some_and(|key| {
                key.ignored.is_none()
                    && !key.is_universal()
                    && key
                        .matcher()
                        .is_some_and(|matcher| !single || matcher.is_single_value())
            })
        };
        if !self.context.relational {
            for &above in self
                .context
                .model
                .levels()
                .iter()
                .take_while(|level| **level < self.level)
            {
                let tag = above.unique_key();
                if !unique_present(tag, true) {
                    return Err(IdentifierError::MissingUniqueKey {
                        tag,
                        keyword: model::keyword_of(tag),
                        level: self.level,
                    });
                }
            }
        }
        if self.context.operation != Operation::Find {
            let tag = self.level.unique_key();
            // Patient ID is LO: one value. UIDs may be a list.
            if !unique_present(tag, self.level == Level::Patient) {
                return Err(IdentifierError::MissingRetrieveKey {
                    tag,
                    keyword: model::keyword_of(tag),
                    level: self.level,
                });
            }
        }
        Ok(())
    }

    fn combine_dates_and_times(&mut self) {
        for (date_tag, time_tag) in DATE_TIME_PAIRS {
            let (Some(date), Some(time)) = (self.key(*date_tag), self.key(*time_tag)) else {
                continue;
            };
            let (KeyMatcher::Value(date_matcher), KeyMatcher::Value(time_matcher)) =
                (&date.matcher, &time.matcher)
            else {
                continue;
            };
            if date.ignored.is_some() || time.ignored.is_some() {
                continue;
            }
            let Some((low, high)) = matching::combined_interval(date_matcher, time_matcher) else {
                continue;
            };
            let combined = KeyMatcher::DateTime {
                date: date_matcher.clone(),
                time: *time_tag,
                time_matcher: time_matcher.clone(),
                low,
                high,
            };
            let time_universal = KeyMatcher::Value(ValueMatcher::universal(Vr::TM));
            for key in &mut self.keys {
                if key.tag == *date_tag {
                    key.matcher = combined.clone();
                } else if key.tag == *time_tag {
                    key.matcher = time_universal.clone();
                }
            }
        }
    }

    /// The context the identifier was read in.
    pub fn context(&self) -> &QueryContext {
        &self.context
    }

    /// The query/retrieve level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The request's character set.
    pub fn charset(&self) -> &CharacterSet {
        &self.charset
    }

    /// Timezone Offset From UTC (0008,0201) of the request, if given.
    pub fn timezone_offset(&self) -> Option<&str> {
        self.timezone_offset.as_deref()
    }

    /// Every key, in tag order (control attributes the SCP fills included,
    /// marked [`Ignored::ReturnedByScp`]).
    pub fn keys(&self) -> &[QueryKey] {
        &self.keys
    }

    /// The key for `tag`.
    pub fn key(&self, tag: Tag) -> Option<&QueryKey> {
        self.keys
            .binary_search_by(|key| key.tag.cmp(&tag))
            .ok()
            .and_then(|index| self.keys.get(index))
    }

    /// Whether `candidate` (an entity holding attributes of every level,
    /// such as a stored file's head) matches every key.
    pub fn matches(&self, candidate: &dyn Candidate) -> bool {
        self.keys.iter().all(|key| key.matches(candidate))
    }

    /// Whether `candidate`, an entity of `level` (an index's study or
    /// series record), matches the keys of that level. Keys outside the key
    /// table are taken as keys of the query level.
    pub fn matches_level(&self, level: Level, candidate: &dyn Candidate) -> bool {
        self.keys
            .iter()
            .filter(|key| key.level.unwrap_or(self.level) == level)
            .all(|key| key.matches(candidate))
    }

    /// The constraints an index may use to narrow its scan, with the keys
    /// they come from.
    pub fn constraints(&self) -> impl Iterator<Item = (&QueryKey, Constraint<'_>)> {
        self.keys
            .iter()
            .filter_map(|key| key.constraint().map(|constraint| (key, constraint)))
    }

    /// The keys that make a C-FIND answer FF01 ("optional keys not
    /// supported for existence and/or matching") for a source holding the
    /// attributes `holds` says it holds: the keys the SCP ignores (it can
    /// neither match nor return them) and the keys of attributes the source
    /// does not hold. The SCP's own attributes (Retrieve AE Title...) are
    /// never among them.
    pub fn unsupported_keys(&self, holds: &dyn Fn(Tag) -> bool) -> Vec<Tag> {
        self.keys
            .iter()
            .filter(|key| match key.ignored {
                Some(Ignored::ReturnedByScp) => false,
                Some(_) => true,
                None => !holds(key.tag),
            })
            .map(|key| key.tag)
            .collect()
    }

    /// The unique keys the request names.
    pub fn unique_keys(&self) -> UniqueKeys<'_> {
        let uids = |tag: Tag| {
            self.key(tag)
                .filter(|key| key.ignored.is_none())
                .and_then(QueryKey::matcher)
                .and_then(ValueMatcher::uids)
                .unwrap_or_default()
        };
        UniqueKeys {
            level: self.level,
            patient_id: self
                .key(tags::PATIENT_ID)
                .filter(|key| key.ignored.is_none())
                .and_then(QueryKey::matcher)
                .and_then(ValueMatcher::exact_text),
            study_instance_uids: uids(tags::STUDY_INSTANCE_UID),
            series_instance_uids: uids(tags::SERIES_INSTANCE_UID),
            sop_instance_uids: uids(tags::SOP_INSTANCE_UID),
        }
    }
}
