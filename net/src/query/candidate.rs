//! What a query is matched against: a [`Candidate`], one entity's attribute
//! values as some source holds them.
//!
//! The source may be the index (values already decoded to Unicode, counts
//! kept per study), a data set read from a stored file's head (bytes in the
//! file's character set), or both layered ([`WithComputed`] puts the
//! computed keys of PS3.4 Table C.3-1 over another candidate). A source says
//! which attributes it cannot supply at all ([`Attribute::Unavailable`]):
//! a key on such an attribute cannot constrain the match, and the response
//! returns it empty and flags it (FF01).

use std::borrow::Cow;

use crate::charset::SpecificCharacterSet;
use crate::dimse::dataset::{SmallDataset, Value, Vr};
use crate::dimse::Tag;

use super::model::tags;

/// A Specific Character Set (0008,0005) value: the term as written, to put
/// back in a response, and its decoder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CharacterSet {
    term: Vec<u8>,
    decoder: SpecificCharacterSet,
}

impl CharacterSet {
    /// The character set of a stored value: unknown terms are skipped (the
    /// bytes are stored as received; a best-effort decode beats none).
    pub fn stored(term: &[u8]) -> Self {
        Self {
            term: trim_term(term).to_vec(),
            decoder: SpecificCharacterSet::parse_lenient(term),
        }
    }

    /// The character set of a request: an unknown term is an error.
    pub fn strict(term: &[u8]) -> Result<Self, crate::charset::CharsetError> {
        Ok(Self {
            term: trim_term(term).to_vec(),
            decoder: SpecificCharacterSet::parse(term)?,
        })
    }

    /// UTF-8, written `ISO_IR 192`.
    pub fn utf8() -> Self {
        Self {
            term: b"ISO_IR 192".to_vec(),
            decoder: SpecificCharacterSet::UTF_8,
        }
    }

    /// The character set a data set declares in (0008,0005) (lenient).
    pub fn of_dataset(dataset: &SmallDataset) -> Self {
        dataset
            .bytes(tags::SPECIFIC_CHARACTER_SET)
            .map_or_else(Self::default, Self::stored)
    }

    /// The (0008,0005) value as written (padding trimmed); empty for the
    /// default repertoire.
    pub fn term(&self) -> &[u8] {
        &self.term
    }

    /// Whether this is the default repertoire (no (0008,0005) needed).
    pub fn is_default(&self) -> bool {
        self.term.is_empty()
    }

    /// Decodes a value of VR `vr` (person names reset the designations at
    /// `^` and `=`, PS3.5 §6.1.2.5.3).
    pub fn decode<'a>(&self, vr: Vr, bytes: &'a [u8]) -> Cow<'a, str> {
        if vr == Vr::PN {
            self.decoder.decode_person_name(bytes)
        } else {
            self.decoder.decode(bytes)
        }
    }
}

/// The term without its padding (spaces, and NULs some writers use);
/// "\\ISO 2022 IR 87" keeps its empty first value.
fn trim_term(mut term: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | 0] = term {
        term = rest;
    }
    term.trim_ascii_start()
}

/// One attribute of a candidate.
#[derive(Debug, Clone)]
pub enum Attribute<'a> {
    /// The source does not hold this attribute (an index without the
    /// column): it cannot be matched nor returned.
    Unavailable,
    /// The entity has no value: absent, or zero length.
    Empty,
    /// The value as Unicode text; values of a multi-valued attribute
    /// separated by `\`.
    Text(Cow<'a, str>),
    /// The value as stored, in `charset`.
    Encoded {
        /// The raw value bytes (padding included).
        bytes: &'a [u8],
        /// The character set of the stored object.
        charset: &'a CharacterSet,
    },
    /// A sequence, its items as stored.
    Sequence {
        /// The items.
        items: &'a [SmallDataset],
        /// The character set of the stored object.
        charset: &'a CharacterSet,
    },
}

impl Attribute<'_> {
    /// The value as text for matching (`None` for unavailable, empty and
    /// sequence attributes).
    pub fn text(&self, vr: Vr) -> Option<Cow<'_, str>> {
        match self {
            Attribute::Text(text) => Some(Cow::Borrowed(text.as_ref())),
            Attribute::Encoded { bytes, charset } => Some(charset.decode(vr, bytes)),
            Attribute::Unavailable | Attribute::Empty | Attribute::Sequence { .. } => None,
        }
    }
}

/// One entity's attributes, as a source holds them.
pub trait Candidate {
    /// The attribute `tag` of this entity.
    fn attribute(&self, tag: Tag) -> Attribute<'_>;
}

/// A data set (a stored file's head, a sequence item, a test fixture) as a
/// candidate: every attribute is available; absent ones are empty.
#[derive(Debug, Clone, Copy)]
pub struct DatasetCandidate<'a> {
    dataset: &'a SmallDataset,
    charset: &'a CharacterSet,
}

impl<'a> DatasetCandidate<'a> {
    /// `dataset`, its text in `charset` (see [`CharacterSet::of_dataset`]).
    pub fn new(dataset: &'a SmallDataset, charset: &'a CharacterSet) -> Self {
        Self { dataset, charset }
    }
}

impl Candidate for DatasetCandidate<'_> {
    fn attribute(&self, tag: Tag) -> Attribute<'_> {
        match self.dataset.get(tag).map(|element| &element.value) {
            None => Attribute::Empty,
            Some(Value::Bytes(bytes)) if bytes.is_empty() => Attribute::Empty,
            Some(Value::Bytes(bytes)) => Attribute::Encoded {
                bytes,
                charset: self.charset,
            },
            Some(Value::Sequence(items)) => Attribute::Sequence {
                items,
                charset: self.charset,
            },
        }
    }
}

/// The keys an SCP computes from the entities below one (PS3.4 Table
/// C.3-1: the Number of ... Related ... counts, Modalities in Study, SOP
/// Classes in Study), filled by the caller from its index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComputedAttributes {
    values: Vec<(Tag, String)>,
}

impl ComputedAttributes {
    /// No computed keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a count key (IS), such as Number of Study Related Instances.
    pub fn set_count(&mut self, tag: Tag, count: u64) {
        debug_assert!(
            super::model::key_definition(tag).is_some_and(|key| key.computed && key.vr == Vr::IS),
            "{tag} is not a computed count"
        );
        self.set(tag, count.to_string());
    }

    /// Sets a multi-valued key (Modalities in Study, SOP Classes in Study).
    pub fn set_values<I, S>(&mut self, tag: Tag, values: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut joined = String::new();
        for value in values {
            if !joined.is_empty() {
                joined.push('\\');
            }
            joined.push_str(value.as_ref());
        }
        self.set(tag, joined);
    }

    fn set(&mut self, tag: Tag, value: String) {
        match self
            .values
            .iter_mut()
            .find(|(existing, _)| *existing == tag)
        {
            Some(slot) => slot.1 = value,
            None => self.values.push((tag, value)),
        }
    }

    /// These keys layered over `inner`.
    pub fn over<'a>(&'a self, inner: &'a dyn Candidate) -> WithComputed<'a> {
        WithComputed {
            computed: self,
            inner,
        }
    }
}

/// A candidate with computed keys layered over it.
#[derive(Clone, Copy)]
pub struct WithComputed<'a> {
    computed: &'a ComputedAttributes,
    inner: &'a dyn Candidate,
}

impl std::fmt::Debug for WithComputed<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WithComputed")
            .field("computed", self.computed)
            .finish_non_exhaustive()
    }
}

impl Candidate for WithComputed<'_> {
    fn attribute(&self, tag: Tag) -> Attribute<'_> {
        match self.computed.values.iter().find(|(key, _)| *key == tag) {
            Some((_, value)) if value.is_empty() => Attribute::Empty,
            Some((_, value)) => Attribute::Text(Cow::Borrowed(value)),
            None => self.inner.attribute(tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_keep_their_empty_first_value() {
        assert_eq!(
            CharacterSet::stored(b"\\ISO 2022 IR 87 ").term(),
            b"\\ISO 2022 IR 87"
        );
        assert!(CharacterSet::stored(b"  ").is_default());
        assert!(CharacterSet::strict(b"ISO_IR 999").is_err());
    }

    #[test]
    fn datasets_and_computed_keys_as_candidates() {
        let mut dataset = SmallDataset::new();
        dataset.put_str(tags::SPECIFIC_CHARACTER_SET, None, "ISO_IR 100");
        dataset.put(crate::dimse::dataset::Element {
            tag: tags::PATIENT_NAME,
            vr: Vr::PN,
            value: Value::Bytes(b"B\xfcrger^Ren\xe9".to_vec()),
        });
        dataset.put_str(tags::PATIENT_ID, None, "");
        let charset = CharacterSet::of_dataset(&dataset);
        let candidate = DatasetCandidate::new(&dataset, &charset);
        assert_eq!(
            candidate
                .attribute(tags::PATIENT_NAME)
                .text(Vr::PN)
                .as_deref(),
            Some("Bürger^René")
        );
        assert!(matches!(
            candidate.attribute(tags::PATIENT_ID),
            Attribute::Empty
        ));
        assert!(matches!(
            candidate.attribute(tags::STUDY_DATE),
            Attribute::Empty
        ));
        let mut computed = ComputedAttributes::new();
        computed.set_count(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, 12);
        computed.set_values(tags::MODALITIES_IN_STUDY, ["CT", "SR"]);
        let layered = computed.over(&candidate);
        assert_eq!(
            layered
                .attribute(tags::MODALITIES_IN_STUDY)
                .text(Vr::CS)
                .as_deref(),
            Some("CT\\SR")
        );
        assert_eq!(
            layered
                .attribute(tags::NUMBER_OF_STUDY_RELATED_INSTANCES)
                .text(Vr::IS)
                .as_deref(),
            Some("12")
        );
        assert!(layered.attribute(tags::PATIENT_NAME).text(Vr::PN).is_some());
    }
}
